"""Real multi-process runs on CPU (gloo): accelerate launch and torchrun, 2 processes vs 1.

With a GLOBAL batch B, each of P ranks trains on its B/P slice of the same permutation and DDP
averages the gradients, so step k sees the same images and the same weights as in one process:
the first-step losses must agree up to float32 summation order (tolerance 1e-5 absolute).
"""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import BIN, DATA_DIR, REPO, read_json, trained_numbers, write_config

pytestmark = pytest.mark.slow

ONE_CELL = {
    "name": "dist",
    "train": {"batch_size": 64, "epochs": 1, "images_per_epoch": 3200, "untimed_steps": 6},
    "data": {"train_eval_size": 1000},
    "checks": {"budget": None},  # every scheduled check, so 1 and 2 processes check at the same steps
}
LOSS_TOLERANCE = 1e-5
CORES = len(os.sched_getaffinity(0))


def launch(prefix: list[str], config, results, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR), "OMP_NUM_THREADS": "1"}
    cmd = [*prefix, str(REPO / "harness" / "run.py"), "--config", str(config), "--results-dir", str(results),
           "--quiet", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


ACCELERATE_2 = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2"]
ACCELERATE_1 = [str(BIN / "accelerate"), "launch", "--num_processes", "1"]
TORCHRUN_2 = [str(BIN / "torchrun"), "--nproc_per_node", "2"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    proc = launch(ACCELERATE_1, write_config(root, ONE_CELL), root / "results")
    assert proc.returncode == 0, proc.stderr
    (cell,) = (root / "results" / "dist").glob("*/result.json")
    return read_json(cell) | {"path": cell}


def test_the_same_cell_gets_the_same_threads_however_it_is_launched(one_process, tmp_path):
    """`accelerate launch` sets OMP_NUM_THREADS=1 before Python starts, `harness run` leaves torch
    every core: the thread policy gives the cell the same count either way, and records it."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"HARNESS_DATA_DIR": str(DATA_DIR)}
    proc = subprocess.run([str(BIN / "harness"), "run", "--config", str(write_config(tmp_path, ONE_CELL)),
                           "--results-dir", str(tmp_path / "results"), "--quiet", "--no-report"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (cell,) = (tmp_path / "results" / "dist").glob("*/result.json")
    plain = read_json(cell)
    launched = one_process["environment"]
    assert plain["cell_id"] == one_process["cell_id"]
    assert plain["environment"]["cpu_threads"] == launched["cpu_threads"] == CORES
    auto = f"auto: {CORES} cores / 1 process per node"
    assert plain["environment"]["threads_source"] == launched["threads_source"] == auto


@pytest.mark.parametrize("launcher", [ACCELERATE_2, TORCHRUN_2], ids=["accelerate", "torchrun"])
def test_two_processes_match_one(launcher, one_process, tmp_path):
    proc = launch(launcher, write_config(tmp_path, ONE_CELL), tmp_path / "results")
    assert proc.returncode == 0, proc.stderr
    (cell,) = (tmp_path / "results" / "dist").glob("*/result.json")
    two = read_json(cell)
    assert two["cell_id"] == one_process["cell_id"]
    assert two["environment"]["num_processes"] == 2
    assert two["environment"]["distributed_type"] == "DistributedType.MULTI_CPU"
    # the thread policy: the cores owned, shared by the two processes on this node
    assert two["environment"]["cpu_threads"] == max(1, CORES // 2)
    assert two["summary"]["local_batch_size"] == 32 and one_process["summary"]["local_batch_size"] == 64
    assert two["summary"]["images_seen"] == one_process["summary"]["images_seen"] == 3200
    losses, reference = two["summary"]["first_step_losses"], one_process["summary"]["first_step_losses"]
    assert len(losses) == len(reference) == 6
    assert losses == pytest.approx(reference, abs=LOSS_TOLERANCE)
    # the losses move, so agreement after step 1 means the gradients were averaged across ranks
    assert abs(reference[5] - reference[0]) > 100 * LOSS_TOLERANCE
    # one progress summary and one report from the main process only
    assert proc.stdout.count("sweep dist:") == 1 and proc.stdout.count("report:") == 1
    # the validation checks fall on the same global steps; their accuracies agree up to the float
    # summation order of two ranks' gradients (a few images of 5,000)
    checks, reference_checks = (trained_numbers(p.parent)["evals.csv"] for p in (cell, one_process["path"]))
    assert [c["step"] for c in checks] == [c["step"] for c in reference_checks] and len(checks) > 10
    for mine, theirs in zip(checks, reference_checks):
        assert float(mine["val_accuracy"]) == pytest.approx(float(theirs["val_accuracy"]), abs=0.002)


def test_global_batch_not_divisible_is_refused(tmp_path):
    config = write_config(tmp_path, {**ONE_CELL, "train": {**ONE_CELL["train"], "batch_size": 63}})
    proc = launch(ACCELERATE_2, config, tmp_path / "results")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("harness: error:")]
    assert len(errors) == 1 and "train.batch_size=63" in errors[0] and "not divisible by the 2 processes" in errors[0]
    assert not list((tmp_path / "results").rglob("result.json"))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """The cell on one machine with two processes: what two machines must reproduce."""
    root = tmp_path_factory.mktemp("two")
    proc = launch(ACCELERATE_2, write_config(root, ONE_CELL), root / "results")
    assert proc.returncode == 0, proc.stderr
    (cell,) = (root / "results" / "dist").glob("*/result.json")
    return read_json(cell)


def machine(rank: int, port: int, config, results) -> subprocess.Popen:
    """`accelerate launch` as on machine `rank` of 2 (one process each), gloo over loopback."""
    env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR), "OMP_NUM_THREADS": "1"}
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "2",
           "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
           str(REPO / "harness" / "run.py"), "--config", str(config), "--results-dir", str(results), "--quiet"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_same_training(record: dict, reference: dict) -> None:
    assert record["cell_id"] == reference["cell_id"] and record["status"] == "done"
    assert record["environment"]["num_processes"] == 2
    assert record["summary"]["first_step_losses"] == pytest.approx(reference["summary"]["first_step_losses"],
                                                                   abs=LOSS_TOLERANCE)
    for key in ("best_val_accuracy", "test_accuracy_at_best_val"):  # a few images of 5,000 / 10,000
        assert record["summary"][key] == pytest.approx(reference["summary"][key], abs=0.002)


def test_two_machines_on_one_host_train_what_two_processes_do(tmp_path, two_processes):
    """Two `accelerate launch` invocations with --num_machines 2 (two "machines" on this host)."""
    config, results = write_config(tmp_path, ONE_CELL), tmp_path / "results"
    port = free_port()
    machines = [machine(rank, port, config, results) for rank in (0, 1)]
    outs = [m.communicate(timeout=600) for m in machines]
    assert [m.returncode for m in machines] == [0, 0], [err[-2000:] for _, err in outs]
    assert sum(out.count("report:") for out, _ in outs) == 1  # one main process in the whole job
    (cell,) = (results / "dist").glob("*/result.json")
    assert_same_training(read_json(cell), two_processes)


def test_short_runs_and_the_timing_pass_take_the_slowest_rank(tmp_path):
    """Two gloo processes, rank 1 slowed by SLEEP_S a step: both ranks record rank 1's time for
    every timed window of a short run and of the timing pass (training/steps.py reduces it)."""
    from slow_rank import SLEEP_S

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "tests")}
    proc = subprocess.run([*ACCELERATE_2, str(REPO / "tests" / "slow_rank.py"), str(DATA_DIR), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    written = all((tmp_path / f"rank{rank}.json").exists() for rank in (0, 1))
    # gloo can abort a process in its teardown, after both ranks wrote what this test reads (seen once
    # in ~20 runs); that is not what this test is about, so only such an abort is let through
    teardown = written and "terminate called without an active exception" in proc.stderr
    assert proc.returncode == 0 or teardown, proc.stderr[-3000:]
    by_rank = {rank: read_json(tmp_path / f"rank{rank}.json") for rank in (0, 1)}
    assert by_rank[0]["windows"] == by_rank[1]["windows"] and len(by_rank[0]["windows"]) >= 3
    assert all(seconds >= steps * SLEEP_S for steps, seconds in by_rank[0]["windows"])
    assert by_rank[0]["timing_windows"] == by_rank[1]["timing_windows"]
    assert min(by_rank[0]["timing_windows"]) >= SLEEP_S
