"""Faults: injected oom / nan / error, --fail-fast, SIGKILL at random moments, concurrent sweeps,
a full disk, and fuzzed configs. Nothing finished may be lost, nothing half-written read as valid."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import DATA_DIR, HARNESS, harness, read_json, snapshot, trained_numbers, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.config import load_config
from harness.errors import ConfigError
from harness.plan import expand
from harness.record.results import STATUSES

FOUR = {
    "name": "faults",
    "train": {"epochs": 2, "images_per_epoch": 2048, "untimed_steps": 2},
    "data": {"train_eval_size": 500},
    "sweep": {"train.batch_size": [32, 64, 128, 256]},
}


def statuses(sweep: Path) -> dict[int, dict]:
    return {read_json(p)["settings"]["train"]["batch_size"]: read_json(p) for p in sweep.glob("*/result.json")}


@pytest.mark.slow
def test_each_fault_gets_its_status_and_the_sweep_goes_on(tmp_path):
    config = write_config(tmp_path, FOUR)
    fault = "oom@3:bs32,nan@5:bs64,error@2:bs128"  # the documented switch, see harness/record/faults.py
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), env={"HARNESS_FAULT": fault})
    assert proc.returncode == 1, proc.stderr
    found = statuses(tmp_path / "r" / "faults")
    assert {b: r["status"] for b, r in found.items()} == {32: "oom", 64: "diverged", 128: "failed", 256: "done"}
    assert "OutOfMemoryError" in found[32]["error"] and "RuntimeError: injected fault" in found[128]["error"]
    assert found[64]["summary"]["diverged_at_step"] == 5 and found[64]["summary"]["epochs_completed"] == 0
    for batch in (32, 128):
        assert (tmp_path / "r" / "faults" / found[batch]["cell_id"] / "traceback.txt").exists()
    html = (tmp_path / "r" / "faults" / "report.html").read_text()
    assert "oom" in html and "diverged" in html and "RuntimeError: injected fault" in html
    assert "No batch size fit; batch size 32 ran out of memory." in html  # 32 is the smallest here


@pytest.mark.slow
def test_fail_fast_stops_at_the_first_failure(tmp_path):
    config = write_config(tmp_path, FOUR)
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--fail-fast",
                   env={"HARNESS_FAULT": "error@2:bs64"})
    assert proc.returncode == 1 and "--fail-fast stops the sweep" in proc.stdout
    assert {b: r["status"] for b, r in statuses(tmp_path / "r" / "faults").items()} == {32: "done", 64: "failed"}


KILLED = {
    "name": "killed",
    "train": {"epochs": 3, "images_per_epoch": 1600, "untimed_steps": 2},
    "data": {"train_eval_size": 500},
    "sweep": {"train.batch_size": [16, 64]},
    "checks": {"budget": None},  # every scheduled check: a resumed run's evals.csv equals an uninterrupted one's
}


def all_files_valid(root: Path, after_rerun: bool = True) -> None:
    """Every result.json parses and every checkpoint loads. SIGKILL may leave a writer's temp
    file (nothing can clean up then); the next run must remove it."""
    import torch

    for path in root.rglob("result.json"):
        record = json.loads(path.read_text())
        assert record["status"] in STATUSES, path
    for path in root.rglob("checkpoint-rank*.pt"):
        torch.load(path, map_location="cpu", weights_only=True)  # atomic: never torn; plain data only
    temps = list(root.rglob("*.tmp"))
    assert not (after_rerun and temps), f"a dead writer's temp file survived the rerun: {temps}"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    config = write_config(tmp_path, KILLED)
    env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR)}
    reference = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "ref"), "--no-report")
    assert reference.returncode == 0, reference.stderr
    ref = {p.parent.name: trained_numbers(p.parent) for p in (tmp_path / "ref" / "killed").glob("*/result.json")}
    rng = random.Random(20261126)
    for trial in range(20):
        results = tmp_path / f"trial{trial}"
        cmd = [str(HARNESS), "run", "--config", str(config), "--results-dir", str(results), "--no-report", "--quiet"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 9.0))  # start-up is ~2.5 s; a whole run ~8 s
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if results.exists():
            all_files_valid(results, after_rerun=False)
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        all_files_valid(results)
        final = {p.parent.name: trained_numbers(p.parent) for p in (results / "killed").glob("*/result.json")}
        assert final == ref, f"trial {trial}"
        assert all(read_json(p)["status"] == "done" for p in (results / "killed").glob("*/result.json"))


@pytest.mark.slow
def test_two_concurrent_sweeps_train_each_cell_once(tmp_path):
    config = write_config(tmp_path, FOUR)
    env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR)}
    cmd = [str(HARNESS), "run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    sweep = tmp_path / "r" / "faults"
    for cell_dir in (p.parent for p in sweep.glob("*/result.json")):
        trained = sum(f"{cell_dir.name} epoch 1/2" in out for out in outs)
        assert trained == 1, (cell_dir.name, outs)
        assert read_json(cell_dir / "result.json")["status"] == "done" and not (cell_dir / "lock").exists()
    assert len(list(sweep.glob("*/result.json"))) == 4


@pytest.mark.slow
def test_four_array_tasks_running_the_same_plan_train_each_cell_once(slurm, tmp_path):
    """Four Slurm tasks each run the whole sweep (no --array-index): the locks share the work."""
    config = write_config(tmp_path, FOUR)
    results = tmp_path / "r"
    command = f"{HARNESS} run --config {config} --results-dir {results} --no-report"
    out = subprocess.run(["sbatch", "--parsable", "--array=0-3", f"--output={tmp_path}/task_%a.out", "--wrap", command],
                         env={**slurm.env, "HARNESS_DATA_DIR": str(DATA_DIR)}, capture_output=True, text=True,
                         check=True)
    job = out.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 600
    while slurm.run("squeue", "-h", "-j", job, check=False).stdout.strip():
        assert time.monotonic() < deadline
        time.sleep(1)
    logs = [(tmp_path / f"task_{i}.out").read_text() for i in range(4)]
    sweep = results / "faults"
    for cell_dir in (p.parent for p in sweep.glob("*/result.json")):
        assert sum(f"{cell_dir.name} epoch 1/2" in log for log in logs) == 1, logs
        assert read_json(cell_dir / "result.json")["status"] == "done"
    assert len(list(sweep.glob("*/result.json"))) == 4


HANGS = """
import pathlib, time
import torch
def build(options):
    return torch.nn.Linear(8, 3)
def load(options):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 8, generator=g), torch.randint(3, (400,), generator=g)
    return {"train": (x[:300], y[:300]), "test": (x[300:], y[300:])}
calls = 0
def loss(outputs, targets):
    global calls
    calls += 1 if torch.is_grad_enabled() else 0
    if calls > 5:  # the 6th training step never returns, and its author swallows what it can
        pathlib.Path(__file__).with_name("hung").touch()
        while True:
            try:
                time.sleep(3600)
            except Exception:
                pass
    return torch.nn.functional.cross_entropy(outputs, targets)
"""


def test_a_second_sigterm_ends_a_hung_step_and_records_the_cell_interrupted(tmp_path):
    """The first SIGTERM asks for a stop at the next step, which never comes; the second ends the
    step: the cell is recorded failed ("interrupted: ..."), the run exits 1 with one line."""
    (tmp_path / "mine.py").write_text(HANGS)
    config = write_config(tmp_path, {"name": "hangs", "workload": {"model": "mine.py:build", "data": "mine.py:load",
                                                                   "loss": "mine.py:loss"},
                                     "data": {"val_size": 50, "train_eval_size": 50}, "train": {"batch_size": 10}})
    proc = subprocess.Popen([str(HARNESS), "run", "--config", str(config), "--results-dir", str(tmp_path / "r")],
                            env={**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (tmp_path / "hung").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    time.sleep(3)
    assert proc.poll() is None  # the first asks, and the step does not return
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and err.count("\n") == 1, (proc.returncode, err[-2000:])
    assert err.startswith("harness: stopped: a second SIGTERM arrived before the step in progress returned")
    (record,) = statuses(tmp_path / "r" / "hangs").values()
    assert record["status"] == "failed" and record["error"].startswith("interrupted: a second SIGTERM"), record
    assert not list((tmp_path / "r" / "hangs").glob("*/lock"))  # released on the way out


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    from harness.record import locks

    cell = tmp_path / "cell"
    dead = subprocess.Popen(["true"])
    dead.wait()
    cell.mkdir()
    (cell / "lock").write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid, "since": 0}))
    assert locks.acquire(cell)  # its holder is gone
    assert not locks.acquire(cell)  # now this live process holds it
    locks.release(cell)
    assert locks.acquire(cell)


def test_a_dead_writers_temp_file_is_removed_and_a_live_ones_kept(tmp_path):
    from harness.record import results

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = os.uname().nodename
    orphan = tmp_path / f".result.json~{host}~{dead.pid}~abc.tmp"
    live = tmp_path / f".result.json~{host}~{os.getpid()}~def.tmp"
    orphan.write_text("{")
    live.write_text("{")
    results.remove_stale_temps(tmp_path)
    assert not orphan.exists() and live.exists()
    results.write_atomic(tmp_path / "result.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "result.json"])
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o666 & ~umask  # readable by others, not 0600


@pytest.fixture
def small_disk(tmp_path):
    """A real 3 MB tmpfs (root can mount one here); tests are told which way they ran."""
    mount = tmp_path / "disk"
    mount.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                        capture_output=True).returncode == 0
    yield mount if ok else None
    if ok:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_full_disk_is_one_line_and_leaves_nothing_that_looks_complete(tmp_path, small_disk):
    """On a 3 MB tmpfs a cell's ~11 MB checkpoint cannot be written. Where mounting is not
    allowed, the same failure is injected at the write call (HARNESS_FAULT=enospc@N)."""
    config = write_config(tmp_path, FOUR)
    results = small_disk if small_disk is not None else tmp_path / "r"
    env = {} if small_disk is not None else {"HARNESS_FAULT": "enospc@4"}
    proc = harness("run", "--config", str(config), "--results-dir", str(results), env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "cannot write" in proc.stderr and "No space left on device" in proc.stderr
    assert not list(results.rglob("*.tmp")) and not list(results.rglob("checkpoint-*.pt"))
    for path in results.rglob("result.json"):
        assert read_json(path)["status"] == "running"  # unfinished, and says so
    before = snapshot(results)
    assert harness("plan", "--config", str(config), "--results-dir", str(results)).returncode == 0
    assert snapshot(results) == before


YAML_VALUES = st.recursive(
    # no subnormals: the engine tests flush denormals process-wide, and hypothesis then refuses them
    st.none() | st.booleans() | st.integers(-10, 100_000) | st.floats(allow_nan=True, allow_subnormal=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8)
KEYS = st.sampled_from(["name", "model", "optim", "data", "train", "sweep", "report", "log_with", "train.batch_size",
                        "batch_size", "epochs", "lr", "activation", "seed", "x"])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.dictionaries(KEYS, YAML_VALUES, max_size=5) | YAML_VALUES)
def test_any_yaml_loads_or_is_refused_with_one_line(document, tmp_path):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(document))
    try:
        cells = expand(load_config(path))
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert len({c.id for c in cells}) == len(cells) >= 1


@settings(max_examples=100, deadline=None)
@given(batches=st.lists(st.integers(1, 55_000), min_size=1, max_size=5, unique=True),
       seeds=st.lists(st.integers(0, 10_000), min_size=1, max_size=4, unique=True),
       lrs=st.lists(st.floats(1e-6, 1.0, allow_subnormal=False), min_size=1, max_size=3, unique=True))
def test_grid_expansion_is_the_full_product_with_stable_distinct_ids(batches, seeds, lrs):
    from harness.config import SweepConfig

    config = SweepConfig(name="p", sweep={"train.batch_size": batches, "train.seed": seeds, "optim.lr": lrs})
    cells = expand(config)
    assert len(cells) == len(batches) * len(seeds) * len(lrs)
    assert [c.id for c in cells] == [c.id for c in expand(config)]
    assert len({c.id for c in cells}) == len(cells)
    assert {(c.batch_size, c.settings.train.seed, c.settings.optim.lr) for c in cells} == {
        (b, s, lr) for b in batches for s in seeds for lr in lrs}


def test_fuzzed_command_line_never_tracebacks(tmp_path, capsys):
    config = write_config(tmp_path, FOUR)
    for override in ("train=5", "sweep=3", "sweep.train.batch_size={a: 1}", "report.tolerance=[1]", "=", "a.b.c.d=1"):
        assert main(["plan", "--config", str(config), "--set", override]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
