"""Hostile input, by class: corrupt or foreign result files, code in a checkpoint, the lock race,
validation gaps, configs that try to exhaust the machine, permissions, duplicates. Each case
asserts the exact outcome: one line and its exit code, the recorded status, or the warning."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DATA_DIR, HARNESS, REPO, SMALL, harness, read_json, snapshot, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from records import epoch_rows, write_cell

from harness.analysis.collect import collect
from harness.record import locks, schema

GOLDEN = REPO / "tests" / "golden"
ONE = {**SMALL, "train": {**SMALL["train"], "epochs": 1, "images_per_epoch": 2560},
       "sweep": {"train.batch_size": [256], "train.seed": [0]}}
# Root reads anything; these drop that power so file permissions apply (the process stays root).
NO_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


def one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("harness: error: "), proc.stderr
    return proc.stderr


# --- 1. corrupt or foreign result files --------------------------------------------------------

def golden_folder(root: Path) -> Path:
    """A sweep folder holding the golden cell (a record in the real schema) and its tables."""
    record = read_json(GOLDEN / "result.json")
    cell = root / "golden" / record["cell_id"]
    cell.mkdir(parents=True)
    for name in ("result.json", "epochs.csv", "evals.csv"):
        shutil.copy(GOLDEN / name, cell)
    write_cell(root / "golden", {"train": {"batch_size": 64, "seed": 0, "images_per_epoch": 640, "epochs": 1}},
               epoch_rows(64, 10, 1e-4, [0.9], [0.9]))  # a second, healthy cell
    return cell


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
# no subnormals: an earlier test in the same process sets torch.set_flush_denormal(True), and
# hypothesis refuses to draw floats it cannot represent
FLOATS = st.floats(allow_nan=False, allow_subnormal=False)
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | FLOATS | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3), max_leaves=5)


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
    refusals = [w for w in found.warnings if "registry does not know" not in w]
    assert len(found.cells) == int(believed) and len(refusals) == int(not believed)
    assert len(found.warnings) - len(refusals) == int(bool(found.unregistered))


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


# --- 2. no code runs from a results folder ----------------------------------------------------

class Payload:
    def __reduce__(self):
        return os.system, (f"touch {os.environ['PWNED']}",)


@pytest.mark.slow
def test_a_planted_pickle_in_a_checkpoint_is_refused_with_one_line(tmp_path):
    import torch

    config = write_config(tmp_path, ONE)
    results = tmp_path / "r"
    plan = harness("plan", "--config", str(config), "--results-dir", str(results))
    cell_id = plan.stdout.splitlines()[1].split()[1]
    cell = results / "small" / cell_id
    cell.mkdir(parents=True)
    pwned = tmp_path / "pwned"
    os.environ["PWNED"] = str(pwned)
    torch.save({"world": 1, "state": Payload()}, cell / "checkpoint-rank0.pt")
    proc = harness("run", "--config", str(config), "--results-dir", str(results), "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert not pwned.exists()  # the payload never ran
    refused = [line for line in proc.stderr.splitlines() if "not a plain-data checkpoint" in line]
    assert len(refused) == 1 and refused[0].startswith("warning: refused ")
    assert (cell / "checkpoint-rank0.pt.refused").exists() and read_json(cell / "result.json")["status"] == "done"


# --- 3. the lock ---------------------------------------------------------------------------------

def _racer(cell_root: str, ready, go, results, trials: int) -> None:
    for trial in range(trials):
        ready.wait()
        go.wait()
        cell = Path(cell_root) / str(trial)
        held = locks.acquire(cell)
        results.put((trial, os.getpid(), held))


def test_eight_processes_racing_over_a_thousand_locks_never_share_one(tmp_path):
    """8 processes start every trial together (a barrier); half the cells begin with a stale lock
    of a dead process, so takeovers race too. Exactly one process may hold each cell."""
    trials, racers = 1000, 8
    dead = subprocess.Popen(["true"])
    dead.wait()
    for trial in range(trials):
        cell = tmp_path / str(trial)
        cell.mkdir()
        if trial % 2:
            (cell / "lock").write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid, "token": f"t{trial}"}))
    context = multiprocessing.get_context("fork")
    ready, go, results = context.Barrier(racers), context.Barrier(racers), context.Queue()
    workers = [context.Process(target=_racer, args=(str(tmp_path), ready, go, results, trials)) for _ in range(racers)]
    for worker in workers:
        worker.start()
    holders: dict[int, list[int]] = {}
    for _ in range(trials * racers):
        trial, pid, held = results.get(timeout=120)
        if held:
            holders.setdefault(trial, []).append(pid)
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(holders) == list(range(trials))  # every cell got a holder
    assert {trial: pids for trial, pids in holders.items() if len(pids) > 1} == {}  # and never two


def test_a_reused_pid_or_a_requeued_slurm_task_does_not_keep_a_lock(tmp_path, monkeypatch):
    me = os.getpid()
    cell = tmp_path / "a"
    cell.mkdir()
    # a live pid (this one) that started at another time: a reused pid, not the holder
    (cell / "lock").write_text(json.dumps({"host": os.uname().nodename, "pid": me, "start": 1.0, "token": "old"}))
    assert locks.acquire(cell)
    locks.release(cell)
    # another host, recent: its holder may be alive; the same Slurm task from another host: a requeue
    other = {"host": "elsewhere", "pid": 1, "token": "x", "slurm_job": "77_3/0"}
    (cell / "lock").write_text(json.dumps(other))
    assert not locks.acquire(cell)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert locks.acquire(cell)
    assert read_json(cell / "lock")["pid"] == me


@pytest.mark.slow
def test_a_run_that_leaves_cells_to_a_live_holder_says_so(tmp_path):
    config = write_config(tmp_path, ONE)
    results = tmp_path / "r"
    cell_id = harness("plan", "--config", str(config), "--results-dir", str(results)).stdout.splitlines()[1].split()[1]
    holder = subprocess.Popen(["sleep", "60"])
    try:
        start = __import__("psutil").Process(holder.pid).create_time()
        cell = results / "small" / cell_id
        cell.mkdir(parents=True)
        (cell / "lock").write_text(json.dumps({"host": os.uname().nodename, "pid": holder.pid, "start": start,
                                               "token": "live"}))
        proc = harness("run", "--config", str(config), "--results-dir", str(results), "--no-report")
    finally:
        holder.kill()
    assert proc.returncode == 0
    assert f"1 cell(s) not trained here: another live process holds them ({cell_id})" in proc.stdout


# --- 4. validation gaps and 5. resource abuse ----------------------------------------------------

BAD_CONFIGS = {
    "infinite lr": (["--set", "optim.lr=.inf"], "optim.lr: Input should be a finite number"),
    "infinite eps": (["--set", "optim.eps=.inf"], "optim.eps: Input should be a finite number"),
    "nan init_std": (["--set", "model.init_std=.nan"], "model.init_std: Input should be a finite number"),
    "infinite weight_decay": (["--set", "optim.weight_decay=.inf"], "optim.weight_decay: Input should be a finite"),
    "a boolean batch size": (["--set", "sweep.train.batch_size=[64, true]"], "train.batch_size=True"),
    "a boolean learning rate": (["--set", "optim.lr=true"], "optim.lr: a boolean is not a number"),
    "seed 1e23": (["--set", "train.seed=1e23"], "train.seed: Input should be a valid integer"),
    "unknown tracker": (["--set", "log_with=[bogus]"], "log_with.0: Input should be"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
@pytest.mark.parametrize("command", ["run", "plan", "slurm submit"])
def test_a_bad_value_is_one_line_before_anything_is_written(tmp_path, case, command):
    args, expected = BAD_CONFIGS[case]
    config = write_config(tmp_path, ONE)
    proc = harness(*command.split(), "--config", str(config), "--results-dir", str(tmp_path / "r"), *args,
                   *(["--dry-run"] if command == "slurm submit" else []))
    assert expected in one_line_error(proc) and not (tmp_path / "r").exists()


def test_a_section_given_twice_is_refused(tmp_path):
    config = tmp_path / "twice.yaml"
    config.write_text("name: twice\ntrain:\n  epochs: 3\nsweep:\n  train.seed: [0]\ntrain:\n  batch_size: 64\n")
    assert "'train' is given twice (line 6); keep one" in one_line_error(harness("plan", "--config", str(config)))


def test_slurm_refuses_a_process_count_that_does_not_divide_the_batch(tmp_path):
    config = write_config(tmp_path, {**ONE, "sweep": {"train.batch_size": [64, 96]}})
    proc = harness("slurm", "submit", "--config", str(config), "--results-dir", str(tmp_path / "r"),
                   "--gpus-per-task", "3", "--dry-run")
    assert "train.batch_size=64" in one_line_error(proc) and "not divisible by 3" in proc.stderr


def test_an_alias_bomb_and_a_huge_config_are_refused_quickly_and_in_one_line(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    lines = ["name: bomb", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(10))}]" for i in range(1, 12)]
    lines += ["model:", "  activation: *a11"]
    bomb.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    assert "aliases (*name) expand to more than 100,000 values" in one_line_error(harness("plan", "--config",
                                                                                          str(bomb)))
    assert time.monotonic() - started < 30
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: huge\n# " + "x" * (50 * 2**20) + "\n")
    assert "at most 1,048,576 (1 MiB)" in one_line_error(harness("plan", "--config", str(huge)))
    long_value = tmp_path / "long.yaml"
    long_value.write_text("name: long\nmodel:\n  activation: " + "y" * 100_000 + "\n")
    line = one_line_error(harness("plan", "--config", str(long_value)))
    assert "model.activation" in line and len(line) < 400  # the value is shown as a short prefix


# --- 6. permissions --------------------------------------------------------------------------------

def denied(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The harness as root without root's power to ignore file permissions."""
    full = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR), **(env or {})}
    return subprocess.run([*NO_OVERRIDE, str(HARNESS), *args], env=full, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv (Debian: util-linux)")
def test_unreadable_data_and_unwritable_results_are_one_line(tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    for name in (p.name for p in DATA_DIR.glob("*.gz")):
        shutil.copy(DATA_DIR / name, data / name)
    config = write_config(tmp_path, ONE)
    (data / "t10k-labels-idx1-ubyte.gz").chmod(0)
    line = one_line_error(denied("run", "--config", str(config), "--results-dir", str(tmp_path / "r"),
                                 "--data-dir", str(data)))
    assert "t10k-labels-idx1-ubyte.gz cannot be read" in line and "Permission denied" in line
    (data / "t10k-labels-idx1-ubyte.gz").chmod(0o644)
    data.chmod(0)
    line = one_line_error(denied("run", "--config", str(config), "--results-dir", str(tmp_path / "r"),
                                 "--data-dir", str(data)))
    assert f"cannot read the folder {data} (permission denied)" in line
    data.chmod(0o755)
    results = tmp_path / "ro"
    results.mkdir()
    results.chmod(0o555)
    line = one_line_error(denied("run", "--config", str(config), "--results-dir", str(results), "--data-dir",
                                 str(data)))
    assert f"--results-dir: cannot write in {results}" in line


def test_a_report_path_below_a_file_names_the_option(tmp_path):
    sweep = tmp_path / "s"
    write_cell(sweep, {"train": {"batch_size": 64, "seed": 0, "images_per_epoch": 640, "epochs": 1}},
               epoch_rows(64, 10, 1e-4, [0.9], [0.9]))
    (tmp_path / "file").write_text("x")
    line = one_line_error(harness("report", str(sweep), "-o", str(tmp_path / "file" / "r.html")))
    assert line.startswith("harness: error: -o ") and "--results-dir" not in line


# --- 7. duplicates ---------------------------------------------------------------------------------

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


# --- 8. small ------------------------------------------------------------------------------------

def test_the_dry_run_line_pastes_safely_into_a_shell(tmp_path):
    from harness.cluster.slurm import shell_line

    marker = tmp_path / "expanded"
    line = shell_line(["echo", "--set", f"name=$(touch {marker})", "--array-index", "$SLURM_ARRAY_TASK_ID"])
    out = subprocess.run(["bash", "-c", line], env={**os.environ, "SLURM_ARRAY_TASK_ID": "7"}, capture_output=True,
                         text=True)
    assert out.stdout.strip() == f"--set name=$(touch {marker}) --array-index 7" and not marker.exists()


def test_nothing_already_written_changes_when_a_command_is_refused(tmp_path):
    config = write_config(tmp_path, ONE)
    sweep = tmp_path / "r" / "small"
    write_cell(sweep, {"train": {"batch_size": 64, "seed": 0, "images_per_epoch": 640, "epochs": 1}},
               epoch_rows(64, 10, 1e-4, [0.9], [0.9]))
    before = snapshot(sweep)
    for args in (["run", "--set", "optim.lr=.inf"], ["plan", "--set", "train.seed=1e23"]):
        one_line_error(harness(args[0], "--config", str(config), "--results-dir", str(tmp_path / "r"), *args[1:]))
    assert snapshot(sweep) == before
