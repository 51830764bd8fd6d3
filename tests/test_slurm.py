"""Slurm: the sbatch text, submission errors, and array sweeps on a REAL local cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DATA_DIR, HARNESS, REPO, harness, read_json, snapshot, trained_numbers, write_config

from harness.cluster.slurm import SlurmOptions, SubmissionError, array_spec, parse_job_id, sbatch_argv
from harness.cluster.slurm_task import RUN_PY, launch_argv

FOUR = {
    "name": "four",
    "train": {"epochs": 1, "images_per_epoch": 4096, "untimed_steps": 2},
    "data": {"train_eval_size": 1000},
    "sweep": {"train.batch_size": [64, 128, 256, 512]},
}

def test_array_spec_and_job_id():
    assert array_spec([0, 1, 2, 5, 7, 8], None) == "0-2,5,7-8"
    assert array_spec([3], 2) == "3%2"
    assert parse_job_id("1234\n") == "1234" and parse_job_id("99;cluster") == "99"
    with pytest.raises(SubmissionError, match="not a job id"):
        parse_job_id("sbatch: error: something")


def test_sbatch_command_and_launch_lines():
    argv = sbatch_argv(SlurmOptions(max_parallel=3, partition="gpu", gpus_per_task=4, time="01:00:00", account="ml"),
                       [0, 1, 4], "full", Path("/r/full/slurm"), Path("/c/full.yaml"), ["--results-dir", "/r"])
    assert argv == ["sbatch", "--parsable", "--array=0-1,4%3", "--job-name=harness-full",
                    "--output=/r/full/slurm/%A_%a.out", "--partition=gpu", "--account=ml", "--time=01:00:00",
                    "--gpus-per-task=4", str(REPO / "slurm" / "sweep.sbatch"), "/c/full.yaml", "--results-dir", "/r"]
    assert launch_argv("/py", 1, 1, ["--config", "c"]) == ["/py", str(RUN_PY), "--config", "c"]
    multi = launch_argv("/py", 4, 2, ["--config", "c"], node_rank="1", head="node7", port=29500)
    assert multi[-3:] == [str(RUN_PY), "--config", "c"]
    assert multi[multi.index("--multi_gpu"):-3] == ["--multi_gpu", "--num_processes", "8", "--num_machines", "2",
                                                    "--machine_rank", "1", "--main_process_ip", "node7",
                                                    "--main_process_port", "29500"]


def test_dry_run_for_4_gpus_and_for_multinode(tmp_path):
    config = write_config(tmp_path, FOUR)
    proc = harness("slurm", "submit", "--config", str(config), "--results-dir", str(tmp_path / "r"),
                   "--gpus-per-task", "4", "--max-parallel", "2", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].strip().startswith("sbatch --parsable --array=0-3%2 --job-name=harness-four")
    assert "--gpus-per-task=4" in lines[1] and str(REPO / "slurm" / "sweep.sbatch") in lines[1]
    task = lines[4].strip()
    assert " launch --multi_gpu --num_processes 4 " + str(RUN_PY) in task
    assert task.endswith("--array-index $SLURM_ARRAY_TASK_ID --quiet")
    assert "#SBATCH --signal=B:USR1@120" in proc.stdout and "#SBATCH --requeue" in proc.stdout
    assert not (tmp_path / "r").exists()  # a dry run writes nothing

    proc = harness("slurm", "submit", "--config", str(config), "--results-dir", str(tmp_path / "r"),
                   "--nodes", "2", "--gpus-per-task", "4", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "--nodes=2" in proc.stdout and str(REPO / "slurm" / "multinode.sbatch") in proc.stdout
    assert ("launch --multi_gpu --num_processes 8 --num_machines 2 --machine_rank $SLURM_PROCID "
            "--main_process_ip '<first host of the allocation>' --main_process_port '<29500 + job id mod 1000>'"
            ) in proc.stdout
    assert "srun --kill-on-bad-exit=1" in proc.stdout


def test_no_sbatch_is_a_one_line_error(tmp_path):
    config = write_config(tmp_path, FOUR)
    bare = tmp_path / "bin"
    bare.mkdir()
    proc = harness("slurm", "submit", "--config", str(config), "--results-dir", str(tmp_path / "r"),
                   env={"PATH": str(bare)})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Slurm is not installed" in proc.stderr


def wait_for_job(slurm, job: str, timeout: float = 420) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not slurm.run("squeue", "-h", "-j", job, check=False).stdout.strip():
            return
        time.sleep(1)
    raise AssertionError(f"job {job} still queued after {timeout} s:\n" + slurm.run("squeue").stdout)


def submit(slurm, config: Path, results: Path, *extra: str, env: dict | None = None) -> tuple[str, str]:
    proc = subprocess.run([str(HARNESS), "slurm", "submit", "--config", str(config), "--results-dir", str(results),
                           *extra],
                          env={**slurm.env, "HARNESS_DATA_DIR": str(DATA_DIR), **(env or {})},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.split("submitted array job ")[1].split(":")[0] if "submitted" in proc.stdout else ""
    return job, proc.stdout


def statuses(sweep: Path) -> dict[int, str]:
    found = {}
    for path in sweep.glob("*/result.json"):
        record = read_json(path)
        found[record["settings"]["train"]["batch_size"]] = record["status"]
    return found


@pytest.mark.slow
def test_array_sweep_with_a_failing_cell_then_resubmit(slurm, tmp_path):
    config = write_config(tmp_path, FOUR)
    results = tmp_path / "results"
    sweep = results / "four"
    # the cell of batch 128 raises at its 2nd step (the documented fault switch, exported to the job)
    job, out = submit(slurm, config, results, "--max-parallel", "2", env={"HARNESS_FAULT": "error@2:bs128"})
    assert "4 task(s)" in out and f"{sweep / 'slurm'}" in out
    wait_for_job(slurm, job)
    assert statuses(sweep) == {64: "done", 128: "failed", 256: "done", 512: "done"}
    failed = next(read_json(p) for p in sweep.glob("bs128-*/result.json"))
    assert "injected fault" in failed["error"] and (sweep / failed["cell_id"] / "traceback.txt").exists()
    done_before = {d.name: snapshot(d) for d in sweep.glob("bs*") if d.name.split("-")[0] != "bs128"}
    for d in done_before:
        record = read_json(sweep / d / "result.json")
        assert record["environment"]["slurm_job_id"] == job
        assert (sweep / "slurm" / f"{job}_{record['environment']['slurm_array_task_id']}.out").exists()

    # half-finished: only the failed cell is submitted again, and the others stay untouched
    job2, out = submit(slurm, config, results)
    assert "1 task(s)" in out and "3 of 4 already done" in out
    wait_for_job(slurm, job2)
    assert set(statuses(sweep).values()) == {"done"}
    assert {d: snapshot(sweep / d) for d in done_before} == done_before

    _, out = submit(slurm, config, results)
    assert out.startswith("nothing to submit: all 4 cells of sweep four are done")
    status = harness("status", str(sweep))
    assert status.returncode == 0 and status.stdout.count(" done ") == 4 and f"{job}_" in status.stdout
    report = harness("report", str(sweep), "-o", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr


LONG = {
    "name": "preempt",
    # a batch-size ramp: epoch 2 switches from 16 to 64 at step 1,500, so the preempted run resumes across it
    "train": {"batch_size": 16, "epochs": 3, "images_per_epoch": 16000, "untimed_steps": 5,
              "batch_schedule": [[0, 16], [1500, 64]]},
    "optim": {"lr_scaling": "sqrt", "lr_reference_batch": 16},
    "data": {"train_eval_size": 1000},
    "checks": {"budget": None},  # every scheduled check: a resumed cell's evals.csv equals an uninterrupted one's
}


@pytest.mark.slow
def test_preempted_task_checkpoints_requeues_and_resumes_identically(slurm, tmp_path):
    config = write_config(tmp_path, LONG)
    results = tmp_path / "results"
    job, _ = submit(slurm, config, results)
    sweep = results / "preempt"
    deadline = time.monotonic() + 180
    while not list(sweep.glob("*/epochs.csv")):  # mid-cell: the first epoch is written, two to go
        assert time.monotonic() < deadline, slurm.run("squeue").stdout
        time.sleep(0.2)
    slurm.run("scancel", "--signal=USR1", "--batch", f"{job}_0")
    # Slurm holds a requeued job back for about two minutes before it starts again (slurmd refuses
    # to relaunch a job id it has just killed), so this test waits that long
    wait_for_job(slurm, job)
    (cell_dir,) = [p.parent for p in sweep.glob("*/result.json")]
    record = read_json(cell_dir / "result.json")
    assert record["status"] == "done", record
    assert record["summary"]["preemptions"] == 1 and record["environment"]["slurm_restart_count"] == "1"
    assert record["summary"]["optimizer_steps"] == 1000 + 625 + 250  # 16 until step 1,500, then 64
    assert not list(cell_dir.glob("checkpoint-*"))
    log = (sweep / "slurm" / f"{job}_0.out").read_text()
    assert "checkpoint saved" in log and "requeueing" in log and "resumed" in log

    # the same cell, uninterrupted and without Slurm
    reference = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "ref"), "--no-report")
    assert reference.returncode == 0, reference.stderr
    assert trained_numbers(cell_dir) == trained_numbers(tmp_path / "ref" / "preempt" / cell_dir.name)


def test_usr1_without_slurm_checkpoints_and_a_rerun_resumes(tmp_path):
    """The same mechanism under a plain `harness run`: USR1 -> checkpoint, exit 3; rerun resumes."""
    config = write_config(tmp_path, LONG)
    env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR)}
    cmd = [str(HARNESS), "run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "epoch 1/3" in line:
            proc.send_signal(signal.SIGUSR1)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 3 and "checkpoint saved" in rest
    (cell_dir,) = [p.parent for p in (tmp_path / "r").rglob("result.json")]
    assert read_json(cell_dir / "result.json")["status"] == "running"
    assert (cell_dir / "checkpoint-rank0.pt").exists()
    assert harness("status", str(tmp_path / "r")).stdout.split("\n")[1].split()[1:4] == ["running", "1", "yes"]
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "resumed" in again.stdout
    reference = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "ref"), "--no-report")
    assert reference.returncode == 0
    assert trained_numbers(cell_dir) == trained_numbers(tmp_path / "ref" / "preempt" / cell_dir.name)


@pytest.mark.slow
def test_multinode_template_runs_one_cell_as_two_machines(slurm, tmp_path):
    """slurm/multinode.sbatch for real: two tasks on the one local node act as two machines (the
    template counts tasks, one per node on a real allocation), and train what two processes do."""
    from test_distributed import ACCELERATE_2, ONE_CELL, assert_same_training, launch

    config = write_config(tmp_path, ONE_CELL)
    reference = launch(ACCELERATE_2, config, tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr
    (ref_cell,) = (tmp_path / "ref" / "dist").glob("*/result.json")
    results = tmp_path / "results"
    env = {**slurm.env, "HARNESS_DATA_DIR": str(DATA_DIR), "HARNESS_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--array=0",
                          f"--output={tmp_path}/multinode_%a.out", str(REPO / "slurm" / "multinode.sbatch"),
                          str(config),
                          "--results-dir", str(results)], env=env, capture_output=True, text=True, check=True, cwd=REPO)
    job = out.stdout.strip().split(";")[0]
    wait_for_job(slurm, job)
    log = (tmp_path / "multinode_0.out").read_text()
    (cell,) = (results / "dist").glob("*/result.json")
    record = read_json(cell)
    assert "--num_machines 2 --machine_rank 0" in log and "--num_machines 2 --machine_rank 1" in log, log[-3000:]
    assert record["environment"]["slurm_job_id"] == job
    assert_same_training(record, read_json(ref_cell))


def test_a_workload_from_a_file_outside_the_package_runs_as_an_array_job(slurm, tmp_path):
    """examples/seq_conv.py copied elsewhere: submit resolves it against the config and records it in
    plan.json; every array task loads that file."""
    import shutil

    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("seq_conv.py", "seq_conv.yaml"):
        shutil.copy(REPO / "examples" / name, folder / name)
    results = tmp_path / "results"
    job, out = submit(slurm, folder / "seq_conv.yaml", results, "--set", "sweep.train.batch_size=[64,256]")
    assert "2 task(s)" in out
    wait_for_job(slurm, job)
    sweep = results / "seq_conv"
    assert statuses(sweep) == {64: "done", 256: "done"}
    located = read_json(sweep / "plan.json")["workloads"][0]["model"]["located"]
    assert located == f"{folder / 'seq_conv.py'}:build"
    assert all(read_json(p)["workload"]["model"]["located"] == located for p in sweep.glob("*/result.json"))
