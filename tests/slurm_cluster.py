"""A real one-node Slurm cluster on localhost for the tests: munged, slurmctld, slurmd.

No systemd here: the daemons run in the foreground as children of the test process, their state
lives in a temporary folder, and they are stopped by the pids started here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CONF = """\
ClusterName=harness-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MinJobAge=3600
SchedulerParameters=batch_sched_delay=0
NodeName=localhost CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)
    cleanup: list[Path] = field(default_factory=list)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for folder in self.cleanup:
            shutil.rmtree(folder, ignore_errors=True)


def missing_tools() -> list[str]:
    return [t for t in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol") if not _which(t)]


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin")


def start(root: Path) -> Cluster:
    (root / "state").mkdir(parents=True)
    (root / "spool").mkdir()
    # munged runs as the munge user, which cannot enter pytest's private (0700) temp folders
    munge_dir = Path(tempfile.mkdtemp(prefix="harness-munge-"))
    munge_dir.chmod(0o755)
    shutil.chown(munge_dir, "munge", "munge")
    conf = root / "slurm.conf"
    conf.write_text(CONF.format(root=root, ctld_port=free_port(), d_port=free_port(), cpus=os.cpu_count() or 2))
    socket_path = munge_dir / "munge.socket"
    env = {**os.environ, "SLURM_CONF": str(conf), "MUNGE_SOCKET": str(socket_path)}
    cluster = Cluster(root=root, env=env, cleanup=[munge_dir])
    munge = [_which("munged"), "--foreground", "--force", f"--socket={socket_path}",
             f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
             f"--seed-file={munge_dir / 'munged.seed'}"]
    munge_log = open(root / "munged.out", "w")
    cluster.processes.append(subprocess.Popen(["runuser", "-u", "munge", "--", *munge], env=env,
                                              stdout=munge_log, stderr=munge_log))
    _wait(lambda: socket_path.exists(), "munged socket")
    # the daemons find munge's socket through their auth plugin's option, not MUNGE_SOCKET
    conf.write_text(conf.read_text() + f"AuthInfo=socket={socket_path}\n")
    for daemon in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", "localhost"]):
        log = open(root / f"{daemon[0]}.out", "w")
        cluster.processes.append(subprocess.Popen([_which(daemon[0]), *daemon[1:]], env=env, stdout=log, stderr=log))
    try:
        _wait(lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout, "node idle", 60)
    except TimeoutError as exc:
        cluster.stop()
        logs = "\n".join((root / n).read_text()[-2000:] for n in ("slurmctld.log", "slurmd.log") if (root / n).exists())
        raise RuntimeError(f"the local Slurm cluster did not come up:\n{logs}") from exc
    return cluster


def _wait(ready, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.3)
    raise TimeoutError(f"timed out waiting for {what}")
