"""The Slurm adapter: submit the cells that are not done as ONE array job. Thin over the core:
the plan says which cells there are, the results folder says which are done, and sbatch runs
slurm/sweep.sbatch (or multinode.sbatch) with the array index = the cell's plan index.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.cluster.slurm_task import DEFAULT_PORT, launch_argv
from harness.errors import HarnessError
from harness.paths import REPO_ROOT

SWEEP_TEMPLATE = REPO_ROOT / "slurm" / "sweep.sbatch"
MULTINODE_TEMPLATE = REPO_ROOT / "slurm" / "multinode.sbatch"


class SubmissionError(HarnessError):
    """sbatch is missing, refused the job, or answered something that is not a job id."""


@dataclass(frozen=True)
class SlurmOptions:
    max_parallel: int | None = None
    partition: str | None = None
    gpus_per_task: int = 1
    nodes: int = 1
    time: str | None = None
    account: str | None = None

    @property
    def template(self) -> Path:
        return MULTINODE_TEMPLATE if self.nodes > 1 else SWEEP_TEMPLATE


def array_spec(indices: list[int], max_parallel: int | None) -> str:
    """[0,1,2,5,7,8] -> '0-2,5,7-8', with '%K' to run at most K at once."""
    runs: list[str] = []
    start = prev = None
    for i in sorted(indices) + [None]:
        if start is not None and (i is None or i != prev + 1):
            runs.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if i is not None and start is None:
            start = i
        prev = i
    return ",".join(runs) + (f"%{max_parallel}" if max_parallel else "")


def sbatch_argv(options: SlurmOptions, indices: list[int], sweep_name: str, log_dir: Path, config: Path,
                run_args: list[str]) -> list[str]:
    """The exact sbatch command: a pure function of its inputs (tested against expected text)."""
    argv = ["sbatch", "--parsable", f"--array={array_spec(indices, options.max_parallel)}",
            f"--job-name=harness-{sweep_name}", f"--output={log_dir}/%A_%a.out"]
    if options.partition:
        argv.append(f"--partition={options.partition}")
    if options.account:
        argv.append(f"--account={options.account}")
    if options.time:
        argv.append(f"--time={options.time}")
    if options.nodes > 1:
        argv.append(f"--nodes={options.nodes}")
    if options.gpus_per_task > 1 or options.nodes > 1:
        argv.append(f"--gpus-per-task={options.gpus_per_task}")
    return [*argv, str(options.template), str(config), *run_args]


def parse_job_id(stdout: str) -> str:
    """`sbatch --parsable` prints `JOBID` or `JOBID;CLUSTER`."""
    match = re.fullmatch(r"(\d+)(;\S+)?", stdout.strip())
    if not match:
        raise SubmissionError(f"sbatch answered {stdout.strip()[:200]!r}, not a job id; check the Slurm setup")
    return match.group(1)


def dry_run_text(argv: list[str], options: SlurmOptions, run_args: list[str], config: Path) -> str:
    each = launch_argv(sys.executable, options.gpus_per_task, options.nodes,
                       ["--config", str(config), *run_args, "--array-index", "$SLURM_ARRAY_TASK_ID", "--quiet"],
                       node_rank="$SLURM_PROCID", head="<first host of the allocation>",
                       port=f"<{DEFAULT_PORT} + job id mod 1000>")
    return "\n".join([
        "sbatch command:", "  " + shlex.join(argv), "",
        "each array task runs:", "  " + shell_line(each), "",
        f"script ({options.template}):", options.template.read_text(),
    ])


SLURM_VARIABLES = ("$SLURM_ARRAY_TASK_ID", "$SLURM_NODEID", "$SLURM_PROCID")


def shell_line(argv: list[str]) -> str:
    """The command as a shell would need it pasted: every word quoted, except the Slurm variables
    that the task's shell must expand (a `$(...)` in a --set value stays literal)."""
    return " ".join(word if word in SLURM_VARIABLES else shlex.quote(word) for word in argv)


def submit(argv: list[str]) -> str:
    """Runs sbatch; returns the job id. The job gets this Python, so it finds this installation."""
    if shutil.which(argv[0]) is None:
        raise SubmissionError("Slurm is not installed here: no `sbatch` on PATH; install Slurm or train with "
                              "`harness run` / `accelerate launch harness/run.py`")
    env = {**os.environ, "HARNESS_PYTHON": sys.executable}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no message"])[0]
        raise SubmissionError(f"sbatch refused the job: {first}")
    return parse_job_id(proc.stdout)
