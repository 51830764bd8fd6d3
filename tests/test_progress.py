"""Progress bars on a terminal only, per-epoch lines always, and Accelerate trackers fed per epoch."""

from __future__ import annotations

import csv
import fcntl
import os
import pty
import struct
import subprocess
import termios

import pytest
from conftest import DATA_DIR, HARNESS, harness, write_config

pytestmark = pytest.mark.slow

TINY = {
    "name": "tiny",
    "train": {"batch_size": 128, "epochs": 2, "images_per_epoch": 6400, "untimed_steps": 2},
    "data": {"train_eval_size": 1000},
}


def run_in_terminal(args: list[str]) -> str:
    """Run the real CLI with a pseudo-terminal as stdout/stderr, as a user at a shell would."""
    main_fd, child_fd = pty.openpty()
    # a terminal 120 columns wide: tqdm asks the terminal itself, and a new pty says 0
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR)}
    proc = subprocess.Popen([str(HARNESS), *args], stdout=child_fd, stderr=child_fd, env=env)
    os.close(child_fd)
    chunks = []
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=600) == 0
    os.close(main_fd)
    return b"".join(chunks).decode(errors="replace")


def test_bars_on_a_terminal_and_not_with_quiet(tmp_path):
    config = write_config(tmp_path, TINY)
    shown = run_in_terminal(["run", "--config", str(config), "--results-dir", str(tmp_path / "a"), "--no-report"])
    assert "1 cell:" in shown and ("step/s" in shown or "s/step" in shown)
    assert "epoch 2/2" in shown
    quiet = run_in_terminal(["run", "--config", str(config), "--results-dir", str(tmp_path / "b"), "--no-report",
                             "--quiet"])
    assert "cell:" not in quiet and "%|" not in quiet
    assert "epoch 1/2: loss" in quiet and "epoch 2/2: loss" in quiet


def test_no_bars_when_output_is_not_a_terminal(tmp_path):
    proc = harness("run", "--config", str(write_config(tmp_path, TINY)), "--results-dir", str(tmp_path / "r"),
                   "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert "%|" not in proc.stderr + proc.stdout
    assert [line.split(":")[0] for line in proc.stdout.splitlines() if " epoch " in line][-1].endswith("epoch 2/2")


def test_tensorboard_tracker_receives_the_epoch_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = write_config(tmp_path, {**TINY, "log_with": ["tensorboard"]})
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report")
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "r" / "tiny"
    (cell,) = [p for p in sweep.iterdir() if (p / "epochs.csv").exists()]
    with open(cell / "epochs.csv") as fh:
        rows = list(csv.DictReader(fh))
    accelerator = EventAccumulator(str(sweep / "tiny"))  # results/<sweep>/<tracker project = sweep name>
    accelerator.Reload()
    logged = accelerator.Scalars(f"{cell.name}/val_accuracy")
    assert [e.step for e in logged] == [1, 2]
    assert [e.value for e in logged] == pytest.approx([float(r["val_accuracy"]) for r in rows], abs=1e-6)


def test_the_sweep_bar_counts_steps_so_its_eta_weighs_cells_by_their_work(tmp_path):
    """Batch 64 has twice the steps of batch 128: the bar's total is every cell's steps (100 + 200)."""
    config = write_config(tmp_path, {**TINY, "sweep": {"train.batch_size": [128, 64]}})
    shown = run_in_terminal(["run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report"])
    assert "2 cells:" in shown and "/300 [" in shown
