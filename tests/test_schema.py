"""The results contract, pinned: a real cell reproduces tests/golden field for field, the reader
reads the golden files, and the committed reports under results/ rebuild with the same numbers.

tests/golden/epochs.csv was written by commit 5262ce9, before the metrics registry existed
(`harness run --config tests/golden/golden.yaml`, CPU, fp32); the refactored trainer, and the one
that checks validation accuracy within epochs, must give the same rows: no behaviour change.
tests/golden/evals.csv holds that cell's 21 checks (steps 10..21, then every ~10%, and epoch ends).
tests/golden/result.json is the same cell's record, read by hand:
2 epochs of 20 steps at batch 32 (640 images each), 3 warm-up steps, so 17 + 20 timed steps and
1,184 timed images; best validation accuracy at epoch 2. Values that differ from run to run or
machine to machine (clocks, memory, host, versions) are masked; floats from training are compared
to 1e-4 relative, the headroom for another CPU's float kernels (this machine reproduces them bit
for bit).
"""

from __future__ import annotations

import csv
import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, harness, read_json

from harness.analysis.collect import collect
from harness.record.metrics import CELL_KEYS, CHECK_COLUMNS, EPOCH_COLUMNS

GOLDEN = REPO / "tests" / "golden"
# what the machine was doing while the cell was timed (harness/timing.py)
TIMING_CONDITIONS = ("cpu_share", "load_average", "cores_owned", "machine_cores", "time_spread", "time_cv",
                     "timing_disturbed", "timing_disturbed_reason")
# what changes from run to run or machine to machine
VARIES = {"started_utc", "finished_utc", "summary.warmup_seconds", "summary.train_seconds", "summary.time_per_image_s",
          "summary.images_per_second", "summary.eval_seconds", "summary.check_seconds", "summary.peak_rss_bytes",
          "environment.device_name",
          "environment.cpu", "environment.cpu_threads", "environment.host", "environment.torch",
          "environment.accelerate", "environment.python", "environment.git_commit", "environment.command",
          "environment.startup_s", "environment.omp_wait_policy", *(f"summary.{k}" for k in TIMING_CONDITIONS)}
EPOCH_VARIES = {"train_seconds", "time_per_image_s", "eval_seconds", "diagnostics_seconds", "peak_rss_bytes",
                "window_seconds", "window_warmup_seconds", "check_seconds", "cpu_share", "load_at_end",
                "window_cpu_share", "window_load_start", "window_load_end"}


def flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def same_value(got: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(got, float):
        return got == pytest.approx(want, rel=1e-4, abs=1e-12)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(same_value(g, w) for g, w in zip(got, want))
    return type(got) is type(want) and got == want


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_a_real_cell_reproduces_the_golden_files(tmp_path):
    proc = harness("run", "--config", str(GOLDEN / "golden.yaml"), "--results-dir", str(tmp_path), "--no-report")
    assert proc.returncode == 0, proc.stderr
    (cell_dir,) = [p.parent for p in (tmp_path / "golden").glob("*/result.json")]
    got, want = flat(read_json(cell_dir / "result.json")), flat(read_json(GOLDEN / "result.json"))
    assert list(got) == list(want), "result.json gained, lost or reordered a field: update the golden file on purpose"
    wrong = {k: (got[k], want[k]) for k in want if k not in VARIES and not same_value(got[k], want[k])}
    assert not wrong
    for name, columns in (("epochs.csv", EPOCH_COLUMNS), ("evals.csv", CHECK_COLUMNS)):
        rows, golden_rows = read_rows(cell_dir / name), read_rows(GOLDEN / name)
        assert list(rows[0]) == list(golden_rows[0]) == list(columns), name
        for row, golden in zip(rows, golden_rows, strict=True):
            for key in columns:
                if key in EPOCH_VARIES or golden[key] == "":
                    assert (row[key] == "") == (golden[key] == ""), key  # unknown stays unknown
                    continue
                assert float(row[key]) == pytest.approx(float(golden[key]), rel=1e-4, abs=1e-12), (name, key)


def test_the_reader_reads_the_golden_files(tmp_path):
    record = read_json(GOLDEN / "result.json")
    cell_dir = tmp_path / "golden" / record["cell_id"]
    cell_dir.mkdir(parents=True)
    shutil.copy(GOLDEN / "result.json", cell_dir)
    shutil.copy(GOLDEN / "epochs.csv", cell_dir)
    shutil.copy(GOLDEN / "evals.csv", cell_dir)
    found = collect([tmp_path / "golden"])
    assert not found.warnings and len(found.cells) == 1 and len(found.epochs) == 2 and len(found.checks) == 21
    row = found.cells.iloc[0]
    assert (row["cell_id"], row["status"], row["batch_size"], row["seed"]) == (record["cell_id"], "done", 32, 0)
    for key in CELL_KEYS:
        value = record["summary"].get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert row[key] == value, key
        elif value is None:
            assert row[key] is None or (isinstance(row[key], float) and math.isnan(row[key])), key
    epochs = found.epochs.sort_values("epoch")
    assert epochs["val_accuracy"].tolist() == [0.5914, 0.7558] and epochs["optimizer_steps"].tolist() == [20, 40]
    assert harness("report", str(tmp_path / "golden"), "-o", str(tmp_path / "r.html")).returncode == 0


COMMITTED = sorted(p.parent for p in (REPO / "results").rglob("report.html"))


@pytest.mark.slow
@pytest.mark.parametrize("folder", COMMITTED, ids=[str(p.relative_to(REPO / "results")) for p in COMMITTED])
def test_committed_reports_rebuild_with_the_same_numbers(folder, tmp_path):
    """The tidy CSV beside each committed report is the report's data: rebuilt from the same
    result files, every column they share holds the same values."""
    out = tmp_path / "report.html"
    proc = harness("report", str(folder), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    before = pd.read_csv(folder / "report.csv").set_index("cell_id").sort_index()
    after = pd.read_csv(out.with_suffix(".csv")).set_index("cell_id").sort_index()
    assert list(before.index) == list(after.index)
    for column in before.columns.intersection(after.columns):
        same = (before[column] == after[column]) | (before[column].isna() & after[column].isna())
        if pd.api.types.is_float_dtype(before[column]) and pd.api.types.is_float_dtype(after[column]):
            # the last bits of a least-squares fit move with the BLAS and numpy build: 1e-9 is ~10^6 ulps
            same |= np.isclose(before[column], after[column], rtol=1e-9, atol=0.0)
        assert same.all(), (column, before.loc[~same, column].head(3).tolist(),
                            after.loc[~same, column].head(3).tolist())
    committed, rebuilt = (folder / "report.html").read_text(), out.read_text()
    assert re.findall(r'data-batch-size="(\d*)"', committed) == re.findall(r'data-batch-size="(\d*)"', rebuilt)
    verdict = re.compile(r'id="collapse-verdict-1">([^<]*)<')
    assert verdict.findall(committed) == verdict.findall(rebuilt)


def test_dry_run_text_matches_the_golden_file(tmp_path):
    """What `harness slurm submit --dry-run` prints, paths replaced by placeholders, is pinned."""
    import sys

    config = tmp_path / "four.yaml"
    config.write_text("name: four\nsweep:\n  train.batch_size: [64, 128, 256, 512]\n")
    texts = []
    for extra in (["--gpus-per-task", "4", "--max-parallel", "2"], ["--nodes", "2", "--gpus-per-task", "4"]):
        proc = harness("slurm", "submit", "--config", str(config), "--results-dir", str(tmp_path / "r"),
                       "--set", "train.epochs=1", "--dry-run", *extra)
        assert proc.returncode == 0, proc.stderr
        texts.append(proc.stdout)
    text = "\n".join(texts)
    for path, placeholder in ((sys.executable, "<PYTHON>"), (str(Path(sys.executable).parent), "<BIN>"),
                              (str(REPO), "<REPO>"), (str(tmp_path), "<TMP>")):
        text = text.replace(path, placeholder)
    assert text == (GOLDEN / "sbatch-dry-run.txt").read_text()
