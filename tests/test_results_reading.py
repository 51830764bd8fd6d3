"""Reading a results folder that was tampered with, by class: corrupt or foreign result files, every
field of every file typed, reading bounded (regular files, size, depth), the cell's own copy wins,
duplicates counted once. Each case asserts the exact outcome: one warning naming the file and
field, the cell not done, and the report going on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, harness, read_json, write_config
from hostile import GOLDEN, JSON_VALUES, ONE, golden_folder, report
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from records import epoch_rows, write_cell

from harness.analysis.collect import collect
from harness.cli import main
from harness.config import SweepConfig
from harness.prediction import output
from harness.record import documents, files, schema
from harness.report.page import build_report


def edit_record(change):
    def apply(cell: Path) -> None:
        record = read_json(cell / "result.json")
        change(record)
        (cell / "result.json").write_text(json.dumps(record))
    return apply


CORRUPT = {
    "empty epochs.csv": (lambda c: (c / "epochs.csv").write_text(""), "epochs.csv: no rows"),
    "malformed epochs.csv": (lambda c: (c / "epochs.csv").write_text(
        "epoch,val_accuracy,test_accuracy,optimizer_steps\n1,0.5,abc,10\n"),
                             "epochs.csv: line 2, column test_accuracy: 'abc' is not a number"),
    "evals.csv without its columns": (lambda c: (c / "evals.csv").write_text("a,b\n1,2\n"),
                                      "evals.csv: column step is missing"),
    "a string where a number belongs": (edit_record(lambda r: r["summary"].update(time_per_image_s="fast")),
                                        "field summary.time_per_image_s:"),
    "a string schema_version": (edit_record(lambda r: r.update(schema_version="2")), "field schema_version:"),
    "settings not an object": (edit_record(lambda r: r.update(settings=[1, 2])), "field settings:"),
    "a status no harness writes": (edit_record(lambda r: r.update(status="finished")), "field status:"),
    "valid JSON, not an object": (lambda c: (c / "result.json").write_text("[1, 2]"), "not a result record"),
    "truncated JSON": (lambda c: (c / "result.json").write_text('{"schema_version": 2, "swe'), "unreadable"),
    "a newer schema": (edit_record(lambda r: r.update(schema_version=99)), "schema_version 99 is newer"),
    "another cell's record": (lambda c: c.rename(c.parent / "bs32-seed0-00000000"), "is not the folder it lies in"),
}


@pytest.mark.parametrize("case", list(CORRUPT), ids=list(CORRUPT))
def test_the_report_skips_a_bad_file_with_one_warning_and_goes_on(tmp_path, case):
    corrupt, expected = CORRUPT[case]
    cell = golden_folder(tmp_path)
    corrupt(cell)
    proc = harness("report", str(tmp_path / "golden"), "-o", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == 1 and expected in warnings[0], proc.stderr
    assert "Traceback" not in proc.stderr and (tmp_path / "r.html").exists()


MUTATION = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(["schema_version", "sweep", "cell_id", "settings", "status",
                                                  "summary", "swept"])),
    st.tuples(st.just("set"), st.sampled_from(["schema_version", "sweep", "cell_id", "settings", "status", "summary",
                                               "summary/time_per_image_s", "summary/epochs_completed",
                                               "summary/first_step_losses", "settings/train", "environment",
                                               "settings/train/batch_size", "settings/train/seed", "settings/optim/lr",
                                               "swept/variant", "swept/train.batch_size", "environment/command",
                                               "environment/num_processes", "environment/device_name"])),
    st.tuples(st.just("extra"), st.text(min_size=1, max_size=10)),
    st.tuples(st.just("replace"), st.just("document")),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(MUTATION, min_size=1, max_size=3), values=st.lists(JSON_VALUES, min_size=3, max_size=3))
def test_any_mutated_record_is_read_or_refused_with_its_file_and_field(tmp_path_factory, mutations, values):
    """Fuzzed over the record model: every reader either believes the record (it validates) or
    skips it with a warning naming the file and what is wrong; none raises."""
    root = tmp_path_factory.mktemp("fuzz")
    record = read_json(GOLDEN / "result.json")
    cell = root / "s" / record["cell_id"]
    document: object = record
    for (kind, where), value in zip(mutations, values):
        if kind == "replace":
            document = value
        elif isinstance(document, dict) and kind == "extra":
            document[f"x_{where}"] = value
        elif isinstance(document, dict):
            *parents, leaf = where.split("/")
            node = document
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(leaf, None) if kind == "delete" else node.__setitem__(leaf, value)
    cell.mkdir(parents=True)
    path = cell / "result.json"
    path.write_text(json.dumps(document))
    try:
        schema.read_record(path)
        believed = True
    except schema.Invalid as exc:
        believed = False
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
    found = collect([root / "s"])
    # a believed record may still carry summary keys the registry does not know: named, not dropped
    # a believed done record without a validation or test score is left out of the comparison: a note
    unscored = [w for w in found.warnings if "left out as failed" in w]
    refusals = [w for w in found.warnings if "registry does not know" not in w and w not in unscored]
    assert len(found.cells) == int(believed) and len(refusals) == int(not believed) and len(unscored) <= 1
    assert len(found.warnings) - len(refusals) - len(unscored) == int(bool(found.unregistered))


NUMBERS_READ = ["test_accuracy_at_best_val", "best_val_accuracy", "time_per_image_s", "train_seconds",
                "images_per_second", "final_val_accuracy", "steps_per_epoch", "learning_rate"]


@pytest.mark.parametrize("key", NUMBERS_READ)
def test_a_null_number_in_a_done_record_never_stops_the_report_or_status(tmp_path, key, capsys):
    """A metric that was NaN is written as null; a planted null reads the same. The folder stays
    reportable: the cell is left out (as failed, one warning) where the comparison needs it."""
    cell = golden_folder(tmp_path)
    record = read_json(cell / "result.json")
    record["summary"][key] = None
    (cell / "result.json").write_text(json.dumps(record))
    built = build_report([tmp_path / "golden"], tmp_path / "r.html")
    assert (tmp_path / "r.html").exists() and built.answers
    if key in ("test_accuracy_at_best_val", "best_val_accuracy"):
        assert collect([tmp_path / "golden"]).cells.set_index("cell_id").loc[record["cell_id"], "status"] == "failed"
    assert main(["status", str(tmp_path / "golden")]) == 0
    assert record["cell_id"] in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("case", ["valid JSON, not an object", "a newer schema", "a string schema_version"])
def test_plan_status_and_run_treat_a_bad_record_as_not_done_and_keep_it(tmp_path, case):
    config = write_config(tmp_path, ONE)
    results = tmp_path / "r"
    assert harness("run", "--config", str(config), "--results-dir", str(results), "--no-report").returncode == 0
    (cell,) = [p.parent for p in results.rglob("result.json")]
    CORRUPT[case][0](cell)
    bad = (cell / "result.json").read_bytes()
    plan = harness("plan", "--config", str(config), "--results-dir", str(results))
    assert plan.returncode == 0 and " invalid " in plan.stdout and CORRUPT[case][1] in plan.stdout
    status = harness("status", str(results))
    assert status.returncode == 0 and "invalid" in status.stdout and "Traceback" not in status.stderr
    run = harness("run", "--config", str(config), "--results-dir", str(results), "--no-report")
    assert run.returncode == 0, run.stderr
    assert "not done, its record cannot be used" in run.stdout and "training it again" in run.stdout
    (kept,) = cell.glob("result.json.unreadable-*")
    assert kept.read_bytes() == bad and read_json(cell / "result.json")["status"] == "done"


def test_a_folder_given_twice_or_copied_inside_counts_each_cell_once(tmp_path):
    sweep = tmp_path / "s"
    for seed in (0, 1):
        write_cell(sweep, {"train": {"batch_size": 64, "seed": seed, "images_per_epoch": 640, "epochs": 1}},
                   epoch_rows(64, 10, 1e-4, [0.9], [0.9]))
    found = collect([sweep, sweep])
    assert len(found.cells) == 2 and found.warnings == [f"skipped {sweep}: the same folder as {sweep}, given twice"]
    shutil.copytree(sweep, sweep / "backup")
    found = collect([sweep])
    assert len(found.cells) == 2 and len(found.warnings) == 2
    assert all("the same cell (id and settings) as" in w and "/backup/" in w for w in found.warnings)


@pytest.mark.slow
def test_a_record_copied_into_another_cells_folder_does_not_mark_it_done(tmp_path):
    config = write_config(tmp_path, {**ONE, "sweep": {"train.batch_size": [128, 256], "train.seed": [0]}})
    results = tmp_path / "r"
    assert harness("run", "--config", str(config), "--results-dir", str(results), "--no-report",
                   "--set", "train.batch_size=256").returncode == 0
    lines = harness("plan", "--config", str(config), "--results-dir", str(results)).stdout.splitlines()[1:3]
    (small_id, _), (big_id, _) = [line.split()[1:3] for line in lines]
    (results / "small" / small_id).mkdir(parents=True)
    shutil.copy(results / "small" / big_id / "result.json", results / "small" / small_id / "result.json")
    plan = harness("plan", "--config", str(config), "--results-dir", str(results))
    (row,) = [line.split() for line in plan.stdout.splitlines() if small_id in line.split()]
    assert row[2] == "invalid"  # index, id, status
    assert "is not the folder it lies in" in plan.stdout
    run = harness("run", "--config", str(config), "--results-dir", str(results), "--no-report")
    assert run.returncode == 0 and f"{small_id}: not done" in run.stdout
    assert read_json(results / "small" / small_id / "result.json")["cell_id"] == small_id


def skipped(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("warning: skipped")]


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


def test_cells_of_one_batch_size_and_seed_from_two_configs_are_never_averaged(tmp_path):
    sweep = tmp_path / "s"
    for dataset in ("mnist", "fashion_mnist"):
        write_cell(sweep, {"train": {"batch_size": 64, "seed": 0, "images_per_epoch": 640, "epochs": 1},
                           "data": {"dataset": dataset}}, epoch_rows(64, 10, 1e-4, [0.9], [0.9]))
    found = collect([sweep])
    assert sorted(found.cells["variant"]) == ["data.dataset=fashion_mnist", "data.dataset=mnist"]
    assert any("differ in data.dataset" in w for w in found.warnings)


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
