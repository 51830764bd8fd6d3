"""Shared test helpers: the real MNIST folder, small configs, and running the real CLI."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("HARNESS_DATA_DIR", REPO.parent / "shared" / "data" / "mnist"))
BIN = Path(sys.executable).parent
# the installed console command; where the project is only on PYTHONPATH (a lent GPU), PATH's
HARNESS = BIN / "harness" if (BIN / "harness").exists() else Path(shutil.which("harness") or "harness")

# A sweep small enough for CI yet real: MNIST, two batch sizes, 2 epochs of 12,800 images.
SMALL = {
    "name": "small",
    "train": {"epochs": 2, "images_per_epoch": 12_800, "untimed_steps": 3},
    "data": {"val_size": 5000, "train_eval_size": 2000},
    "sweep": {"train.batch_size": [64, 256], "train.seed": [0]},
}


def write_config(folder: Path, config: dict, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def harness(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """The installed `harness` console command, as a user runs it."""
    full_env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR), **(env or {})}
    return subprocess.run([str(HARNESS), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


# what training computed, as opposed to how long it took: equal on a rerun, a resume, any machine
EPOCH_COMPARED = ("epoch", "train_loss", "train_accuracy", "val_accuracy", "test_accuracy", "images_seen",
                  "optimizer_steps", "timed_steps")
CHECK_COMPARED = ("step", "epoch", "images_seen", "window_steps", "window_warmup_steps", "val_accuracy", "val_loss",
                  "lr_at_check")


def trained_numbers(cell_dir: Path) -> dict[str, list[dict]]:
    """epochs.csv and evals.csv without their clocks."""
    out = {}
    for name, columns in (("epochs.csv", EPOCH_COMPARED), ("evals.csv", CHECK_COMPARED)):
        with open(cell_dir / name) as fh:
            out[name] = [{k: row[k] for k in columns} for row in csv.DictReader(fh)]
    return out


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under a folder with its bytes: to prove nothing was touched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert (DATA_DIR / "train-images-idx3-ubyte.gz").is_file(), f"MNIST not found in {DATA_DIR}; set HARNESS_DATA_DIR"
    return DATA_DIR


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory, data_dir) -> Path:
    """Trains the SMALL sweep once for the session; returns results/<sweep> (what the run printed
    is kept beside it, in run.out)."""
    root = tmp_path_factory.mktemp("small")
    config = write_config(root, SMALL)
    proc = harness("run", "--config", str(config), "--results-dir", str(root / "results"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    (root / "run.out").write_text(proc.stdout)
    return root / "results" / "small"


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A real one-node Slurm cluster for the session (CI installs slurm-wlm and munge)."""
    import slurm_cluster

    missing = slurm_cluster.missing_tools()
    if missing:
        pytest.fail(f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    cluster = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()
