"""harness/record/locks.py: one trainer per cell. Racing processes never share a lock; a lock whose
holder is gone (dead or reused pid, a requeued Slurm task, no renewal for the lease) is taken
over; status and run name a live holder."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import DATA_DIR, HARNESS, harness, read_json, write_config
from hostile import JSON_VALUES, ONE, golden_folder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.record import locks


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
        proc = harness("run", "--config", str(config), "--results-dir", str(results))  # nothing to report: said
    finally:
        holder.kill()
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    assert f"1 cell(s) not trained here: another live process holds them ({cell_id})" in proc.stdout


def test_a_trainer_paused_past_its_lease_stops_without_writing_once_another_run_took_its_cell(tmp_path):
    """Run A is paused (SIGSTOP) mid-cell and its lock left unrenewed past the lease (its mtime
    set back: what 300 s of pause does); run B takes the cell over and finishes it. A, resumed,
    finds at its next epoch end that the lock is no longer its own and stops: B's record stands."""
    config = write_config(tmp_path, {**ONE, "name": "paused", "train": {**ONE["train"], "epochs": 12,
                                                                         "images_per_epoch": 2560}})
    args = ("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report")
    env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR)}
    first = subprocess.Popen([str(HARNESS), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not list((tmp_path / "r" / "paused").glob("*/epochs.csv")) and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)
        (cell,) = [p.parent for p in (tmp_path / "r" / "paused").glob("*/epochs.csv")]
        long_ago = time.time() - locks.LEASE_S - 60
        os.utime(cell / locks.NAME, (long_ago, long_ago))
        second = harness(*args, timeout=900)
        assert second.returncode == 0 and read_json(cell / "result.json")["status"] == "done", second.stderr[-2000:]
        written = {name: (cell / name).read_bytes() for name in ("result.json", "epochs.csv", "evals.csv")}
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert f"{cell.name}: its lock was taken over at step" in out and "stopped without writing" in out, out[-2000:]
    assert {name: (cell / name).read_bytes() for name in written} == written  # B's record, tables as B left them
    assert not (cell / locks.NAME).exists()  # B released it; A took nothing back


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
