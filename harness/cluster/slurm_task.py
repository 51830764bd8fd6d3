"""Inside a Slurm allocation: launch one cell's training, pass on the warning signal, requeue.

slurm/sweep.sbatch execs `python -m harness.cluster.slurm_task ARGS` (ARGS as for `harness run`), so this
process is the batch shell that `--signal=B:USR1@120` reaches. It starts the training (plain
Python for one process, `accelerate launch` for several GPUs or nodes), forwards USR1/TERM to the
training processes, and when they exit after checkpointing, requeues the array task.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from harness.errors import EXIT_PREEMPTED
from harness.paths import REPO_ROOT

RUN_PY = REPO_ROOT / "harness" / "run.py"
DEFAULT_PORT = 29500


def accelerate_command(python: str) -> list[str]:
    script = Path(python).parent / "accelerate"
    return [str(script), "launch"] if script.exists() else [python, "-m", "accelerate.commands.launch"]


def launch_argv(python: str, gpus: int, nodes: int, run_args: list[str], node_rank: str = "0",
                head: str = "localhost", port: int | str = DEFAULT_PORT) -> list[str]:
    """The command one task (or one node of a multi-node task) runs: a pure function of its inputs."""
    run = [str(RUN_PY), *run_args]
    if gpus * nodes == 1:
        return [python, *run]
    argv = [*accelerate_command(python), "--multi_gpu", "--num_processes", str(gpus * nodes)]
    if nodes > 1:
        argv += ["--num_machines", str(nodes), "--machine_rank", node_rank,
                 "--main_process_ip", head, "--main_process_port", str(port)]
    return [*argv, *run]


def task_run_args(args: list[str], env: dict[str, str]) -> list[str]:
    """An array task trains the cell whose plan index is its array index."""
    if "SLURM_ARRAY_TASK_ID" in env and "--array-index" not in args:
        args = [*args, "--array-index", env["SLURM_ARRAY_TASK_ID"]]
    return [*args, "--quiet"] if "--quiet" not in args else args


def first_host(env: dict[str, str]) -> str:
    nodelist = env.get("SLURM_JOB_NODELIST", "localhost")
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
    return out.stdout.split()[0] if out.returncode == 0 and out.stdout.split() else nodelist


def requeue(env: dict[str, str]) -> None:
    job = env.get("SLURM_JOB_ID", "")
    if "SLURM_ARRAY_JOB_ID" in env:
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    print(f"harness: requeueing {job} after its checkpoint", flush=True)
    subprocess.run(["scontrol", "requeue", job], check=False)


def machines(env: dict[str, str]) -> tuple[int, str]:
    """(machines, this task's machine rank). A multi-node job runs one task per node (the template's
    --ntasks-per-node=1), so tasks are machines and SLURM_PROCID equals SLURM_NODEID; counting tasks
    rather than nodes also lets two tasks on one node act as two machines (how the tests run it
    on a one-node cluster), which changes nothing on a real allocation."""
    tasks = int(env.get("SLURM_NTASKS") or env.get("SLURM_NNODES") or 1)
    return tasks, env.get("SLURM_PROCID", env.get("SLURM_NODEID", "0"))


def port_for(env: dict[str, str]) -> int:
    """One rendezvous port per job, so two multi-node jobs sharing a node do not collide."""
    return DEFAULT_PORT + int(env.get("SLURM_JOB_ID") or 0) % 1000


def main(args: list[str]) -> int:
    env = dict(os.environ)
    gpus = int(env.get("SLURM_GPUS_PER_TASK") or 1)
    count, rank = machines(env)
    argv = launch_argv(sys.executable, gpus, count, task_run_args(args, env), node_rank=rank,
                       head=first_host(env) if count > 1 else "localhost", port=port_for(env))
    print("harness: " + shlex.join(argv), flush=True)
    child = subprocess.Popen(argv, start_new_session=True)
    warned = []

    def forward(signum, frame):
        warned.append(signum)
        _signal_trainers(child, signal.SIGUSR1)  # every trainer checkpoints on USR1

    signal.signal(signal.SIGUSR1, forward)
    signal.signal(signal.SIGTERM, forward)
    code = child.wait()
    if code == EXIT_PREEMPTED and signal.SIGUSR1 in warned and machines(env)[1] == "0":
        requeue(env)  # a TERM is Slurm's own preemption or a cancel: Slurm decides about requeueing
    return code


def _signal_trainers(child: subprocess.Popen, sig: int) -> None:
    """The training processes: the child itself, or the workers `accelerate launch` started
    (the launcher would die of USR1, taking its workers with it)."""
    import psutil

    try:
        workers = [p for p in psutil.Process(child.pid).children(recursive=True)
                   if str(RUN_PY) in " ".join(p.cmdline())]
    except psutil.Error:
        workers = []
    for pid in [w.pid for w in workers] or [child.pid]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
