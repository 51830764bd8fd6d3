"""A real training sweep on real MNIST: result.json and epochs.csv field by field, determinism, skip on rerun."""

from __future__ import annotations

import csv
import math
import shutil

import pytest
from conftest import SMALL, harness, read_json, snapshot, write_config

from harness.config import CheckSettings
from harness.record.metrics import EPOCH_COLUMNS
from harness.record.results import SCHEMA_VERSION

pytestmark = pytest.mark.slow


def read_epochs(cell_dir):
    with open(cell_dir / "epochs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == EPOCH_COLUMNS
    return [{k: (None if v == "" else float(v)) for k, v in r.items()} for r in rows]


def cell_dirs(sweep):
    return sorted(p for p in sweep.iterdir() if p.is_dir())


def test_every_cell_has_a_complete_result(small_sweep):
    dirs = cell_dirs(small_sweep)
    assert [d.name.split("-")[0] for d in dirs] == ["bs256", "bs64"]
    for d in dirs:
        r = read_json(d / "result.json")
        batch = r["settings"]["train"]["batch_size"]
        assert r["schema_version"] == SCHEMA_VERSION and r["status"] == "done" and r["error"] is None
        assert r["cell_id"] == d.name and r["sweep"] == "small"
        assert r["swept"] == {"train.batch_size": batch, "train.seed": 0}
        assert r["settings"]["train"]["images_per_epoch"] == 12_800 and "report" not in r  # the rules are in plan.json
        env = r["environment"]
        assert env["device_type"] == "cpu" and env["num_processes"] == 1 and env["cuda"] is None
        assert env["torch"] and env["accelerate"] and env["python"] and env["host"]
        assert r["started_utc"] <= r["finished_utc"]

        s, rows = r["summary"], read_epochs(d)
        steps = 12_800 // batch
        assert s["steps_per_epoch"] == steps and s["epochs_completed"] == len(rows) == 2
        assert [row["optimizer_steps"] for row in rows] == [steps, 2 * steps]
        assert [row["images_seen"] for row in rows] == [steps * batch, 2 * steps * batch]
        # warm-up: the first 3 steps of the cell, outside the clock, losses recorded
        assert s["warmup_steps"] == 3 and len(s["first_step_losses"]) == 3 and s["warmup_seconds"] > 0
        assert [row["timed_steps"] for row in rows] == [steps - 3, steps]
        for row in rows:
            assert row["time_per_image_s"] == pytest.approx(row["train_seconds"] / (row["timed_steps"] * batch))
            assert row["eval_seconds"] > 0 and row["peak_rss_bytes"] > 50 * 2**20
            assert row["peak_allocated_bytes"] is None  # no CUDA here: unknown, not 0
            for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
                assert 0.5 < row[key] <= 1.0
            # accuracies are whole counts over 2000 / 5000 / 10000 images
            assert row["val_accuracy"] * 5000 == pytest.approx(round(row["val_accuracy"] * 5000))
        timed_images = (2 * steps - 3) * batch
        assert s["timed_images"] == timed_images
        assert s["train_seconds"] == pytest.approx(sum(row["train_seconds"] for row in rows))
        assert s["time_per_image_s"] == pytest.approx(s["train_seconds"] / timed_images)
        assert s["images_per_second"] == pytest.approx(1 / s["time_per_image_s"])
        best = max(rows, key=lambda row: row["val_accuracy"])
        assert s["best_epoch"] == best["epoch"] and s["test_accuracy_at_best_val"] == best["test_accuracy"]
        assert s["train_loss_at_best_val"] == best["train_loss"]
        assert s["final_test_accuracy"] == rows[-1]["test_accuracy"]
        assert s["peak_allocated_bytes"] is None and s["peak_rss_bytes"] == rows[-1]["peak_rss_bytes"]
    best = max(read_json(d / "result.json")["summary"]["test_accuracy_at_best_val"] for d in dirs)
    assert best > 0.9


def test_rerun_skips_done_cells_and_touches_nothing(small_sweep, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(small_sweep, results / "small")
    config = write_config(tmp_path, SMALL)
    before = snapshot(results / "small")
    proc = harness("run", "--config", str(config), "--results-dir", str(results), "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("already done") == 2 + 1  # one line per cell and the summary line
    assert snapshot(results / "small") == before


def test_same_seed_same_numbers_and_a_cell_resumes_the_rest(small_sweep, tmp_path):
    """Rerunning one cell from scratch reproduces its accuracies and losses exactly (CPU, fp32)."""
    results = tmp_path / "results"
    shutil.copytree(small_sweep, results / "small")
    victim = cell_dirs(results / "small")[0]
    shutil.rmtree(victim)
    config = write_config(tmp_path, SMALL)
    proc = harness("run", "--config", str(config), "--results-dir", str(results), "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("already done") == 1 + 1
    again, original = read_epochs(victim), read_epochs(small_sweep / victim.name)
    for a, b in zip(again, original, strict=True):
        for key in ("train_loss", "train_accuracy", "val_accuracy", "test_accuracy", "optimizer_steps"):
            assert a[key] == b[key], key
    a, b = read_json(victim / "result.json")["summary"], read_json(small_sweep / victim.name / "result.json")["summary"]
    assert a["first_step_losses"] == b["first_step_losses"]
    assert all(math.isfinite(x) for x in a["first_step_losses"])


def test_plan_shows_status(small_sweep, tmp_path):
    config = write_config(tmp_path, SMALL, "c.yaml")
    proc = harness("plan", "--config", str(config), "--results-dir", str(small_sweep.parent),
                   "--set", "sweep.train.seed=[0,1]")
    assert proc.returncode == 0, proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert [(line[0], line[2]) for line in lines] == [("0", "done"), ("1", "pending"), ("2", "done"), ("3", "pending")]
    assert {line[1] for line in lines if line[2] == "done"} == {d.name for d in cell_dirs(small_sweep)}


def test_checks_stay_outside_the_timed_windows_and_within_their_budget(tmp_path):
    """With a check scheduled after every step, checking would cost far more than training: the
    budget (harness/checks.py) skips checks, the first and last still run, every check that ran
    obeyed the rule on the times it recorded, and the epoch's timed seconds are still exactly its
    windows between checks, so no check entered time per image."""
    config = write_config(tmp_path, {**SMALL, "sweep": {}, "train": {**SMALL["train"], "batch_size": 256, "epochs": 1}})
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report",
                   "--set", "checks.per_decade=1000", "--set", "checks.first_step=1")
    assert proc.returncode == 0, proc.stderr
    (cell_dir,) = [p.parent for p in (tmp_path / "r").rglob("result.json")]
    with open(cell_dir / "evals.csv") as fh:
        checks = [{k: float(v) if v != "" else None for k, v in row.items()} for row in csv.DictReader(fh)]
    (epoch,) = read_epochs(cell_dir)
    steps = [int(c["step"]) for c in checks]
    assert steps[0] == 1 and steps[-1] == 50 and steps == sorted(set(steps))  # 12,800 images / 256 = 50 steps
    for i in range(1, len(checks) - 1):  # every check between the first and the last kept to the budget
        spent = sum(c["check_seconds"] for c in checks[:i])
        assert spent + 2 * checks[i - 1]["check_seconds"] <= CheckSettings().budget * checks[i]["train_seconds"] + 1e-12
    windows = sum(c["window_seconds"] for c in checks)
    assert epoch["train_seconds"] == pytest.approx(windows, rel=1e-9)
    assert sum(c["window_steps"] + c["window_warmup_steps"] for c in checks) == 50
    assert checks[-1]["train_seconds"] == pytest.approx(windows + sum(c["window_warmup_seconds"] for c in checks))
    summary = read_json(cell_dir / "result.json")["summary"]
    assert summary["checks"] == len(checks) and summary["checks"] + summary["checks_skipped"] == 50
    assert summary["checks_skipped"] > 0
    assert summary["check_seconds"] == pytest.approx(sum(c["check_seconds"] for c in checks))
