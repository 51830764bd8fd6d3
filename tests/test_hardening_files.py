"""Hostile files, second round (by class): every field of every file we read is typed, reading is
bounded (regular files, size, depth), writers replace only regular files, a lock whose holder
does not renew is taken over, a checkpoint that does not fit is set aside, the own-folder copy
wins, a folder holds one config, flags obey the config's bounds. Each case asserts the exact
outcome: one warning naming the file and field, or one line and exit 2, and nothing lost."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO, harness, read_json, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from records import epoch_rows, write_cell
from test_hardening import GOLDEN, JSON_VALUES, ONE, denied, golden_folder, one_line_error

from harness.analysis.collect import collect
from harness.config import SweepConfig
from harness.prediction import output
from harness.record import documents, files, locks, schema


def report(folder: Path, out: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return harness("report", str(folder), "-o", str(out), timeout=timeout)


def skipped(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("warning: skipped")]


# --- 1. typed: every field a reader uses --------------------------------------------------------

def set_path(document: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split("/")
    for part in parents:
        document = document[part]
    document[leaf] = value


RECORD_CASES = {  # result.json: (field path, value, what the warning names)
    "batch size a string": ("settings/train/batch_size", "512", "settings.train.batch_size"),
    "batch size a fraction": ("settings/train/batch_size", 512.5, "settings.train.batch_size"),
    "batch size null": ("settings/train/batch_size", None, "settings.train.batch_size"),
    "batch size an object": ("settings/train/batch_size", {"a": 1}, "settings.train.batch_size"),
    "batch size 10**400": ("settings/train/batch_size", 10**400, "settings.train.batch_size"),
    "seed a word": ("settings/train/seed", "zero", "settings.train.seed"),
    "variant a list": ("swept/variant", [1, 2], "field swept"),
    "command a list": ("environment/command", [1], "environment.command"),
    "processes a word": ("environment/num_processes", "two", "environment.num_processes"),
}


@pytest.mark.parametrize("case", list(RECORD_CASES), ids=list(RECORD_CASES))
def test_a_record_field_of_the_wrong_type_is_one_warning_and_the_cell_invalid(tmp_path, case):
    where, value, named = RECORD_CASES[case]
    cell = golden_folder(tmp_path)
    record = read_json(cell / "result.json")
    set_path(record, where, value)
    (cell / "result.json").write_text(json.dumps(record))
    proc = report(tmp_path / "golden", tmp_path / "r.html")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(skipped(proc)) == 1 and named in skipped(proc)[0], proc.stderr
    status = harness("status", str(tmp_path / "golden"))
    assert status.returncode == 0 and "invalid" in status.stdout and named in status.stdout


def plant(tmp_path: Path, name: str, document: dict, change, folder_exists: bool = False) -> Path:
    """The golden sweep folder with `document`, changed by `change`, written as `name` in it."""
    if not folder_exists:
        golden_folder(tmp_path)
    change(document)
    path = tmp_path / "golden" / name
    path.write_text(json.dumps(document))
    return path


def plan_document() -> dict:
    return {"schema_version": 1, "sweep": "golden", "config": {"name": "golden", "report": {"target_accuracy": 0.9}},
            "cells": [{"index": 0, "id": read_json(GOLDEN / "result.json")["cell_id"],
                       "swept": {"train.batch_size": 32}}]}


PLAN_CASES = {
    "cells a number": (lambda d: d.update(cells=5), "field cells"),
    "cells of strings": (lambda d: d.update(cells=["a", "b"]), "field cells.0"),
    "report a list": (lambda d: d["config"].update(report=[1]), "field config.report"),
    "optim a list": (lambda d: d["config"].update(optim=[1]), "field config.optim"),
    "target a word": (lambda d: d["config"]["report"].update(target_accuracy="high"),
                      "field config.report.target_accuracy"),
    "a string batch size": (lambda d: d["cells"][0]["swept"].update({"train.batch_size": "32"}), "field cells.0.swept"),
    "a newer schema": (lambda d: d.update(schema_version=99), "schema_version 99 is newer"),
}


@pytest.mark.parametrize("case", list(PLAN_CASES), ids=list(PLAN_CASES))
def test_a_bad_plan_json_is_one_warning_and_the_report_goes_on(tmp_path, case):
    change, named = PLAN_CASES[case]
    plant(tmp_path, "plan.json", plan_document(), change)
    proc = report(tmp_path / "golden", tmp_path / "r.html")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(skipped(proc)) == 1 and named in skipped(proc)[0] and "plan.json" in skipped(proc)[0], proc.stderr


def test_a_newer_harness_s_extra_plan_key_is_read_with_a_note(tmp_path):
    golden_folder(tmp_path)
    (tmp_path / "golden" / "plan.json").write_text(json.dumps({**plan_document(), "shards": [1, 2]}))
    proc = report(tmp_path / "golden", tmp_path / "r.html")
    assert proc.returncode == 0 and not skipped(proc)
    assert "has keys this harness does not know (shards)" in proc.stderr
    assert collect([tmp_path / "golden"]).plans  # read, without them


def prediction_document() -> dict:
    doc = read_json(REPO / "results" / "predict_fixed" / "predict.json")
    doc["config"]["name"] = "golden"
    return doc


PREDICT_CASES = {
    "cost missing": (lambda d: d.pop("cost"), "field cost"),
    "inputs a list": (lambda d: d.update(inputs=[1]), "field inputs"),
    "fit a string": (lambda d: d.update(fit="x"), "field fit"),
    "s_min null": (lambda d: d["fit"].update(s_min=None), "field fit.s_min"),
    "train seconds null": (lambda d: d["cost"].update(train_seconds=None), "field cost.train_seconds"),
    "string batch sizes": (lambda d: d["inputs"].update(grid=["8"]), "field inputs.grid.0"),
    "a 1-element interval": (lambda d: d["fit"]["predictions"][0].update(steps_interval=[1.0]),
                             "field fit.predictions.0.steps_interval"),
    "steps 0": (lambda d: d["fit"]["predictions"][0].update(steps_to_target=0), "steps_to_target"),
    "sweet spot a string": (lambda d: d.update(sweet_spot="x"), "field sweet_spot"),
    "sweet spot off the grid": (lambda d: d["sweet_spot"].update(batch_size=3), "is not a batch size of"),
    "a win share of 7": (lambda d: d["fit"]["predictions"][0].update(win_share=7), "win_share"),
    "a newer schema": (lambda d: d.update(schema_version=99), "schema_version 99 is newer"),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES), ids=list(PREDICT_CASES))
def test_a_bad_predict_json_is_one_warning_and_neither_report_nor_verify_uses_it(tmp_path, case):
    change, named = PREDICT_CASES[case]
    config = SweepConfig.model_validate(prediction_document()["config"])
    plant(tmp_path, "predict.json", prediction_document(), lambda d: None)
    assert output.reusable(config, tmp_path / "golden") is not None  # as written, --verify would reuse it
    path = plant(tmp_path, "predict.json", prediction_document(), change, folder_exists=True)
    with pytest.raises(schema.Invalid, match=named):
        documents.read_prediction(path)
    assert output.reusable(config, tmp_path / "golden") is None
    found = collect([tmp_path / "golden"])
    assert not found.predictions and sum(named in w for w in found.warnings) == 1


def test_nulls_the_harness_itself_writes_are_read(tmp_path):
    """No resample converged: intervals and win shares null (forecast.fit_and_predict)."""
    document = prediction_document()
    for row in document["fit"]["predictions"]:
        row.update(steps_interval=None, steps_grid_interval=None, time_interval_s=None, win_share=None)
    document["fit"].update(s_min_interval=None, b_noise_interval=None)
    path = tmp_path / "predict.json"
    path.write_text(json.dumps(document))
    assert documents.read_prediction(path)["fit"]["predictions"][0]["win_share"] is None


CSV_CASES = {
    "a step of inf": ("evals.csv", "step", "inf", "is not a finite count or duration"),
    "window seconds nan": ("evals.csv", "window_seconds", "nan", "is not a finite count or duration"),
    "an accuracy of 7": ("evals.csv", "val_accuracy", "7", "is not an accuracy in [0, 1]"),
    "accuracies nan": ("epochs.csv", "val_accuracy", "nan", "is not an accuracy in [0, 1]"),
}


@pytest.mark.parametrize("case", list(CSV_CASES), ids=list(CSV_CASES))
def test_a_csv_value_out_of_its_range_is_one_warning(tmp_path, case):
    name, column, value, expected = CSV_CASES[case]
    cell = golden_folder(tmp_path)
    lines = (cell / name).read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index(column)] = value
    (cell / name).write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    proc = report(tmp_path / "golden", tmp_path / "r.html")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(skipped(proc)) == 1 and expected in skipped(proc)[0] and name in skipped(proc)[0]


def test_binary_bytes_in_epochs_csv_do_not_stop_status(tmp_path):
    cell = golden_folder(tmp_path)
    (cell / "epochs.csv").write_bytes(b"\xff\xfe\x00binary")
    proc = harness("status", str(tmp_path / "golden"))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


DOCUMENT_MUTATION = st.tuples(st.sampled_from(["delete", "set"]), st.sampled_from(
    ["schema_version", "sweep", "config", "config/name", "config/report", "config/report/target_accuracy", "cells",
     "cells/0", "cells/0/id", "cells/0/swept", "inputs", "inputs/grid", "inputs/target", "fit", "fit/s_min",
     "fit/predictions", "fit/predictions/0", "fit/predictions/0/batch_size", "fit/predictions/0/steps_interval",
     "fit/predictions/0/win_share", "sweet_spot", "sweet_spot/batch_size", "cost", "cost/train_seconds", "doubts"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["plan.json", "predict.json"]), mutations=st.lists(DOCUMENT_MUTATION, min_size=1,
       max_size=3), values=st.lists(JSON_VALUES, min_size=3, max_size=3))
def test_any_mutated_plan_or_prediction_is_read_or_refused_with_its_file_and_field(tmp_path_factory, kind, mutations,
                                                                                   values):
    """Fuzzed over every field a reader uses: collect believes the document (it validates) or
    skips it with one warning naming the file; nothing raises."""
    root = tmp_path_factory.mktemp("fuzz")
    document = plan_document() if kind == "plan.json" else prediction_document()
    for (action, where), value in zip(mutations, values):
        *parents, leaf = where.split("/")
        node = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) and part.isdigit() and int(part) < len(node) else \
                node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None) if action == "delete" else node.__setitem__(leaf, value)
        elif isinstance(node, list) and leaf.isdigit() and int(leaf) < len(node):
            node.pop(int(leaf)) if action == "delete" else node.__setitem__(int(leaf), value)
    (root / "s").mkdir()
    (root / "s" / kind).write_text(json.dumps(document))
    read = documents.read_plan if kind == "plan.json" else documents.read_prediction
    try:
        read(root / "s" / kind)
        believed = True
    except schema.Invalid as exc:
        believed = False
        assert str(exc).startswith(str(root / "s" / kind)) and "\n" not in str(exc)
    found = collect([root / "s"])
    held = found.plans if kind == "plan.json" else found.predictions
    assert len(held) == int(believed) and sum(w.startswith("skipped") for w in found.warnings) == int(not believed)


# --- 2. depth and size ----------------------------------------------------------------------------

def test_json_nested_100000_deep_or_too_big_is_refused_before_parsing(tmp_path):
    cell = golden_folder(tmp_path)
    text = (cell / "result.json").read_text()
    (cell / "result.json").write_text(text.rstrip()[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (tmp_path / "golden" / "predict.json").write_text("[" * 100_000 + "]" * 100_000)
    started = time.monotonic()
    proc = report(tmp_path / "golden", tmp_path / "r.html")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert sum("nested more than 64 deep" in w for w in skipped(proc)) == 2, proc.stderr
    status = harness("status", str(tmp_path / "golden"))
    assert status.returncode == 0 and "nested more than 64 deep" in status.stdout
    big = tmp_path / "golden" / "predict.json"
    big.write_text(json.dumps({"pad": "x" * (9 * 2**20)}))
    proc = report(tmp_path / "golden", tmp_path / "r.html")
    assert any("more than the 8,388,608 a predict.json may have" in w for w in skipped(proc)), proc.stderr
    assert time.monotonic() - started < 60


def test_a_config_or_a_set_value_nested_500_deep_is_one_line(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: deep\nmodel: " + "[" * 500 + "]" * 500 + "\n")
    assert "nested more than 64 deep" in one_line_error(harness("plan", "--config", str(deep)))
    proc = harness("plan", "--set", "model.activation=" + "[" * 500 + "]" * 500)
    assert "--set model.activation: nested more than 64 deep" in one_line_error(proc)


# --- 3. special files -------------------------------------------------------------------------------

def test_fifos_devices_and_links_out_of_the_folder_are_refused_not_read(tmp_path):
    cell = golden_folder(tmp_path)
    (cell / "epochs.csv").unlink()
    (cell / "epochs.csv").symlink_to("/dev/zero")
    fifo_cell = tmp_path / "golden" / "bs64-seed0-fifo0000"
    fifo_cell.mkdir()
    os.mkfifo(fifo_cell / "result.json")
    dangling = tmp_path / "golden" / "bs16-seed0-dangling"
    dangling.mkdir()
    (dangling / "result.json").symlink_to(tmp_path / "golden" / "gone.json")  # inside the folder, to nothing
    (tmp_path / "golden" / "predict.json").symlink_to(tmp_path / "golden" / "gone.json")  # documents: the same walk
    proc = report(tmp_path / "golden", tmp_path / "r.html", timeout=60)  # a FIFO read would block: timeout
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warnings = skipped(proc)
    assert any("epochs.csv: unreadable (Refused: a symlink to /dev/zero" in w for w in warnings), warnings
    assert any("fifo0000/result.json: unreadable (Refused: not a regular file (a FIFO))" in w for w in warnings)
    assert any("dangling/result.json: unreadable (FileNotFoundError" in w for w in warnings)
    assert any("golden/predict.json: unreadable (FileNotFoundError" in w for w in warnings), warnings
    status = harness("status", str(tmp_path / "golden"), timeout=60)
    assert status.returncode == 0 and status.stdout.count("invalid") == 2, status.stdout


def test_report_o_replaces_only_regular_files(tmp_path):
    golden_folder(tmp_path)
    device = tmp_path / "null"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a second /dev/null
    fifo = tmp_path / "fifo.html"
    os.mkfifo(fifo)
    link = tmp_path / "link.html"
    link.symlink_to(tmp_path / "elsewhere.html")
    for target, kind in ((device, "a character device"), (fifo, "a FIFO"), (link, "a symlink")):
        line = one_line_error(report(tmp_path / "golden", target))
        assert f"{target} is {kind}; the harness replaces only regular files" in line and "choose another -o" in line
    assert stat.S_ISCHR(device.lstat().st_mode) and stat.S_ISFIFO(fifo.lstat().st_mode) and link.is_symlink()
    assert not (tmp_path / "elsewhere.html").exists() and not (tmp_path / "null.csv").exists()


def test_temp_files_left_by_a_killed_writer_go_at_the_folder_s_next_write(tmp_path):
    golden_folder(tmp_path)
    host = socket.gethostname()
    dead = tmp_path / f".r.html~{host}~999999999~abcd.tmp"  # no such pid
    old = tmp_path / f".predict.json~{host}~{os.getpid()}~ef01.tmp"  # a live pid, but an hour old
    live = tmp_path / f".plan.json~{host}~{os.getpid()}~2345.tmp"  # a live writer's, just now
    for path in (dead, old, live):
        path.write_text("partial")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert report(tmp_path / "golden", tmp_path / "r.html").returncode == 0
    assert not dead.exists() and not old.exists() and live.exists()


# --- 4. locks --------------------------------------------------------------------------------------

def test_a_lock_naming_a_live_pid_that_no_longer_renews_is_taken_over(tmp_path):
    cell = tmp_path / "cell"
    cell.mkdir()
    for pid in (1, "1", 1.5):  # pid 1 is always alive; no start time recorded
        (cell / locks.NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "token": "t"}))
        assert not locks.acquire(cell)  # renewed just now: held
        two_days = time.time() - 2 * 86400
        os.utime(cell / locks.NAME, (two_days, two_days))
        assert locks.acquire(cell)  # not renewed for the lease: whatever holds pid 1 is not training it
        locks.release(cell)
    # renewed just now, pid 1 alive, but its start time is not the holder's: a reused pid, taken over at once
    born = psutil.Process(1).create_time()
    for start, held in ((born, True), (born - 3600, False)):
        (cell / locks.NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": 1, "start": start,
                                                   "token": "t"}))
        assert locks.acquire(cell) is not held
        locks.release(cell)


def test_status_names_a_running_cell_s_holder_and_its_age(tmp_path):
    cell = golden_folder(tmp_path)
    record = read_json(cell / "result.json")
    record.update(status="running", summary=None)
    (cell / "result.json").write_text(json.dumps(record))
    (cell / locks.NAME).write_text(json.dumps({"host": "node7", "pid": 4242, "token": "t"}))
    an_hour = time.time() - 3600
    os.utime(cell / locks.NAME, (an_hour, an_hour))
    proc = harness("status", str(tmp_path / "golden"))
    line = next(line for line in proc.stdout.splitlines() if line.startswith(record["cell_id"]))
    assert "running" in line and "node7 pid 4242, renewed 1.0 h ago (stale: the next run takes it over)" in line


# --- 5. a checkpoint that does not fit --------------------------------------------------------------

@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_the_model_is_set_aside_and_the_cell_trains(tmp_path):
    import torch

    from harness.training.checkpoint import LoopState

    config = write_config(tmp_path, ONE)
    results = tmp_path / "r"
    cell_id = harness("plan", "--config", str(config), "--results-dir", str(results)).stdout.splitlines()[1].split()[1]
    cell = results / "small" / cell_id
    cell.mkdir(parents=True)
    state = dataclasses.asdict(LoopState(warmup_left=3))
    torch.save({"world": 1, "state": state, "model": {"not.a.weight": torch.zeros(3)}, "optimizer": {},
                "torch_rng": torch.get_rng_state()}, cell / "checkpoint-rank0.pt")
    proc = harness("run", "--config", str(config), "--results-dir", str(results), "--no-report")
    assert proc.returncode == 0, proc.stderr
    refused = [line for line in proc.stderr.splitlines() if "does not fit this cell's model" in line]
    assert len(refused) == 1 and refused[0].startswith("warning: refused ") and "kept as checkpoint-rank0.pt.refused" \
        in refused[0], proc.stderr
    assert read_json(cell / "result.json")["status"] == "done" and (cell / "checkpoint-rank0.pt.refused").exists()
    assert not (cell / "checkpoint-rank0.pt").exists()  # a rerun never meets it again


# --- 6. permissions (as root without its power to ignore them) --------------------------------------

@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv (Debian: util-linux)")
def test_unreadable_cell_and_sweep_folders_are_one_line_in_every_command(tmp_path):
    cell = golden_folder(tmp_path)
    sweep = tmp_path / "golden"
    config = write_config(tmp_path, {**ONE, "name": "golden"})
    commands = (["status", str(sweep)], ["report", str(sweep), "-o", str(tmp_path / "r.html")],
                ["plan", "--config", str(config), "--results-dir", str(tmp_path)],
                ["run", "--config", str(config), "--results-dir", str(tmp_path), "--no-report"])
    for locked in (cell, sweep):
        locked.chmod(0)
        try:
            for args in commands:
                line = one_line_error(denied(*args))
                assert "cannot read" in line and "(Permission denied)" in line and "fix its permissions" in line
        finally:
            locked.chmod(0o755)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv (Debian: util-linux)")
def test_an_unwritable_cell_folder_whose_record_must_be_kept_aside_is_one_line(tmp_path):
    config = write_config(tmp_path, ONE)
    results = tmp_path / "r"
    cell_id = harness("plan", "--config", str(config), "--results-dir", str(results)).stdout.splitlines()[1].split()[1]
    cell = results / "small" / cell_id
    cell.mkdir(parents=True)
    (cell / "result.json").write_text("[1, 2]")  # not a record: run keeps it aside before training again
    cell.chmod(0o555)
    try:
        line = one_line_error(denied("run", "--config", str(config), "--results-dir", str(results), "--no-report"))
    finally:
        cell.chmod(0o755)
    assert "cannot keep" in line and "aside" in line and "writable" in line
    assert (cell / "result.json").read_text() == "[1, 2]"


# --- 7. which copy wins -----------------------------------------------------------------------------

def test_the_copy_in_the_cell_s_own_folder_wins_over_a_backup_that_sorts_first(tmp_path):
    cell = golden_folder(tmp_path)
    backup = tmp_path / "golden" / "000-backup" / cell.name
    shutil.copytree(cell, backup)
    record = read_json(backup / "result.json")
    record.update(status="failed", summary=None, error="an old failure")
    (backup / "result.json").write_text(json.dumps(record))
    found = collect([tmp_path / "golden"])
    mine = found.cells[found.cells["cell_id"] == cell.name]
    assert len(mine) == 1 and mine["status"].item() == "done"
    assert any("000-backup" in w and "counted once" in w for w in found.warnings)


# --- 8. one config per folder -----------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_config_into_one_folder_is_refused_and_forced_cells_are_kept_apart(tmp_path):
    config = write_config(tmp_path, ONE)
    results = tmp_path / "r"
    assert harness("run", "--config", str(config), "--results-dir", str(results), "--no-report").returncode == 0
    plan_before = (results / "small" / "plan.json").read_bytes()
    other = ["--set", "train.warmup_steps=2", "--set", "model.activation=softplus"]
    line = one_line_error(harness("run", "--config", str(config), "--results-dir", str(results), *other))
    assert "planned with another config (model.activation: \"relu\" -> \"softplus\", train.warmup_steps: 3 -> 2)" \
        in line and "--force" in line
    assert (results / "small" / "plan.json").read_bytes() == plan_before
    # extending the grid is the same config
    wider = harness("run", "--config", str(config), "--results-dir", str(results), "--no-report",
                    "--set", "sweep.train.batch_size=[256,512]")
    assert wider.returncode == 0, wider.stderr
    forced = harness("run", "--config", str(config), "--results-dir", str(results), *other, "--force", "--no-report")
    assert forced.returncode == 0, forced.stderr
    found = collect([results / "small"])
    assert len(found.cells) == 3 and found.cells["variant"].nunique() == 2  # never two seeds of one cell
    assert any("differ in model.activation, train.warmup_steps" in w for w in found.warnings), found.warnings


def test_cells_of_one_batch_size_and_seed_from_two_configs_are_never_averaged(tmp_path):
    sweep = tmp_path / "s"
    for dataset in ("mnist", "fashion_mnist"):
        write_cell(sweep, {"train": {"batch_size": 64, "seed": 0, "images_per_epoch": 640, "epochs": 1},
                           "data": {"dataset": dataset}}, epoch_rows(64, 10, 1e-4, [0.9], [0.9]))
    found = collect([sweep])
    assert sorted(found.cells["variant"]) == ["data.dataset=fashion_mnist", "data.dataset=mnist"]
    assert any("differ in data.dataset" in w for w in found.warnings)


# --- 9. flags and sizes -----------------------------------------------------------------------------

@pytest.mark.parametrize("flag,value,expected", [("--tolerance", "nan", "input should be a finite number"),
                                                 ("--tolerance", "-5", "greater than or equal to 0"),
                                                 ("--tolerance", "inf", "finite number"),
                                                 ("--target", "-1", "greater than 0")])
def test_report_flags_obey_the_config_s_bounds(tmp_path, flag, value, expected):
    golden_folder(tmp_path)
    line = one_line_error(harness("report", str(tmp_path / "golden"), "-o", str(tmp_path / "r.html"), flag, value))
    assert line.startswith(f"harness: error: {flag} ") and expected in line
    assert not (tmp_path / "r.html").exists()


def test_a_plan_of_a_million_cells_is_refused_at_once_in_one_line(tmp_path):
    started = time.monotonic()
    proc = harness("plan", "--set", f"sweep.train.seed=[{','.join(map(str, range(1000)))}]",
                   "--set", f"sweep.optim.lr=[{','.join(f'{1e-4 * (1 + i / 1000):.6g}' for i in range(1000))}]",
                   "--results-dir", str(tmp_path))
    assert "a sweep may have at most 10,000" in one_line_error(proc) and time.monotonic() - started < 30
    assert not any(tmp_path.iterdir())


def test_bounded_reading_in_itself():
    assert files.limit_for(Path("x/result.json")) == 8 * 2**20 and files.limit_for(Path("notes.txt")) == 16 * 2**20
    files.check_depth('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',
                      "x")  # in a string
    with pytest.raises(files.Refused, match="nested more than 64 deep"):
        files.check_depth("[" * 65 + "]" * 65, "x")
    files.check_depth("[" * 64 + "]" * 64, "x")


CSV_TEXT = st.one_of(st.text(max_size=8), st.floats(allow_subnormal=False).map(repr), st.integers().map(str),
                     st.sampled_from(["", "nan", "inf", "-inf", "1e400", "7", "-1", "\x00", "0x10"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["epochs.csv", "evals.csv"]), row=st.integers(0, 3), column=st.integers(0, 40),
       text=CSV_TEXT)
def test_any_mutated_csv_value_is_read_or_refused_with_its_file(tmp_path_factory, name, row, column, text):
    """Fuzzed over every cell of both tables: read as numbers in range, or one warning naming the
    file (the cell stays, without that table)."""
    root = tmp_path_factory.mktemp("csv")
    cell = golden_folder(root)
    lines = (cell / name).read_text().splitlines()
    body = [line.split(",") for line in lines]
    row, column = 1 + row % (len(body) - 1), column % len(body[0])
    body[row][column] = text.replace(",", ";").replace("\n", " ").replace("\r", " ").replace('"', "'")
    (cell / name).write_text("\n".join(",".join(r) for r in body) + "\n")
    try:
        schema.read_table(cell / name)
        believed = True
    except schema.Invalid as exc:
        believed = False
        assert str(exc).startswith(str(cell / name)) and "\n" not in str(exc)
    found = collect([root / "golden"])
    assert len(found.cells) == 2 and sum(name in w for w in found.warnings) == int(not believed)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(JSON_VALUES.map(json.dumps), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))),
       age=st.sampled_from([0, 10, 400, 2 * 86400]))
def test_any_lock_file_is_held_or_taken_over_never_an_error(tmp_path_factory, content, age):
    """Whatever a lock file holds, acquire answers: a record of no one, or one not renewed for the
    lease, is taken over; a live one renewed just now (only a real record can be) is held."""
    cell = tmp_path_factory.mktemp("lock")
    (cell / locks.NAME).write_text(content)
    then = time.time() - age
    os.utime(cell / locks.NAME, (then, then))
    held = locks.acquire(cell)
    try:
        record = json.loads(content)
    except ValueError:
        record = None
    could_hold = isinstance(record, dict) and isinstance(record.get("host"), str) and "pid" in record
    assert held or (age < locks.LEASE_S and could_hold)
    if held:
        locks.release(cell)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.one_of(JSON_VALUES, st.fixed_dictionaries({"world": JSON_VALUES, "state": JSON_VALUES}),
                         st.fixed_dictionaries({"world": st.just(1), "state": st.dictionaries(
                             st.sampled_from(["epoch", "step", "steps_done", "bogus"]), JSON_VALUES, max_size=3)})))
def test_any_plain_data_checkpoint_loads_or_counts_as_none(tmp_path_factory, payload):
    """Whatever plain data a checkpoint holds, load() returns a usable payload or None (the cell
    starts over); what does not fit the model after loading is refused by the resume (the e2e test)."""
    import torch

    from harness.training import checkpoint

    cell = tmp_path_factory.mktemp("ckpt")
    torch.save(payload, checkpoint.path_for(cell, 0))
    warned = []
    loaded = checkpoint.load(cell, 0, 1, warn=warned.append)
    assert loaded is None or (isinstance(loaded["state"], checkpoint.LoopState) and loaded["world"] == 1)
    if loaded is not None:
        assert all(isinstance(getattr(loaded["state"], name), int) for name in checkpoint.COUNTERS)
    assert len(warned) <= 1 and all(line.startswith("refused ") for line in warned)


def test_a_checkpoint_save_wrote_loads_as_it_was(tmp_path):
    """The other half of the property above: load() is not a function that always says None. A
    real checkpoint (save's own payload, mid-epoch, with a model and optimizer) loads field for field."""
    import torch

    from harness.training import checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    state = checkpoint.LoopState(epoch=2, step=5, steps_done=40, order=torch.arange(12).view(3, 4),
                                 losses=torch.ones(3), first_losses=[2.3, 2.2])
    state.window.steps, state.window.seconds = 5, 0.25
    checkpoint.save(tmp_path, 0, 1, state, model, optimizer)
    loaded = checkpoint.load(tmp_path, 0, 1, warn=pytest.fail)
    assert loaded is not None and loaded["world"] == 1
    got = loaded["state"]
    assert (got.epoch, got.step, got.steps_done, got.first_losses) == (2, 5, 40, [2.3, 2.2])
    assert (got.window.steps, got.window.seconds) == (5, 0.25) and torch.equal(got.order, state.order)
    assert torch.equal(loaded["model"]["weight"], model.state_dict()["weight"])
