"""The streaming input path (data.input: loader, harness/training/streamed.py) on real parts: MNIST
through a DataLoader against the device path at 1 and 2 gloo processes, a user's map-style Dataset
that sleeps per item (input-bound in the report), and a resume mid-epoch with worker processes."""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest
from conftest import BIN, DATA_DIR, REPO, harness, read_json, trained_numbers, write_config
from hostile import one_line_error

SLOW_DATASET = textwrap.dedent('''
    import time
    import torch
    from torch import nn
    from torch.utils.data import Dataset


    class Slow(Dataset):
        """Separable points; each item costs `sleep` seconds, as a decode from disk would."""

        def __init__(self, n, seed, sleep):
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randn(n, 8, generator=g)
            self.y = (self.x[:, 0] > 0).long()
            self.sleep = sleep

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            time.sleep(self.sleep)
            return self.x[i], self.y[i]


    def load(options):
        return {"train": Slow(1200, 0, options["sleep"]), "test": Slow(200, 1, 0.0)}


    def build(options):
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
''')


def mnist_config(tmp_path, name: str, **data) -> str:
    """50 steps of batch 64, all of them first_step_losses (untimed: read one by one)."""
    return str(write_config(tmp_path, {"name": name, "data": data, "train": {
        "epochs": 1, "images_per_epoch": 3200, "untimed_steps": 50, "diagnostics": "off"},
        "sweep": {"train.batch_size": [64]}}, f"{name}.yaml"))


def run_on(processes: int, config: str, results) -> dict:
    env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR), "OMP_NUM_THREADS": "1"}
    launcher = [str(BIN / "accelerate"), "launch", "--num_processes", str(processes)]
    launcher += ["--multi_gpu"] if processes > 1 else []
    proc = subprocess.run([*launcher, str(REPO / "harness" / "run.py"), "--config", config, "--results-dir",
                           str(results), "--quiet", "--no-report"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (found,) = results.glob("*/*/result.json")
    return read_json(found)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_mnist_through_the_loader_trains_the_device_path_s_50_steps(tmp_path, processes):
    device = run_on(processes, mnist_config(tmp_path, "device"), tmp_path / "d")
    loader = run_on(processes, mnist_config(tmp_path, "loader", input="loader", workers=1), tmp_path / "l")
    assert (device["summary"]["input_mode"], loader["summary"]["input_mode"]) == ("device", "loader")
    assert device["cell_id"] != loader["cell_id"] and loader["environment"]["num_processes"] == processes
    got, want = loader["summary"]["first_step_losses"], device["summary"]["first_step_losses"]
    assert len(got) == 50 and got == pytest.approx(want, abs=1e-6)
    assert want[0] - want[-1] > 0.5  # it trained
    if processes == 1:  # side by side, the report says they were not measured alike
        both = harness("report", str(tmp_path / "d" / "device"), str(tmp_path / "l" / "loader"), "-o",
                       str(tmp_path / "both.html"))
        assert both.returncode == 0 and "input device and loader" in both.stderr, both.stderr[-2000:]
    print(f"{processes} process(es): max |loss difference| over 50 steps "
          f"{max(abs(a - b) for a, b in zip(got, want)):.2e}")


def slow_workload(tmp_path, sleep: float, **extra) -> str:
    (tmp_path / "slow.py").write_text(SLOW_DATASET)
    data = {"val_size": 200, "train_eval_size": 200, "input": "loader"} | extra.pop("data", {})
    # checks.budget null: every check runs, however the machine's speed varies (a resume compares evals.csv)
    return str(write_config(tmp_path, {"name": "slow", "checks": {"budget": None}, "workload": {
        "model": "slow.py:build", "data": "slow.py:load", "options": {"sleep": sleep}}, "data": data,
        "train": {"epochs": 2, "untimed_steps": 2, "diagnostics": "off"} | extra,
        "sweep": {"train.batch_size": [20, 100]}}))


@pytest.mark.slow
def test_a_dataset_that_sleeps_per_item_is_input_bound_in_the_report(tmp_path):
    config = slow_workload(tmp_path, 0.002)
    done = harness("run", "--config", config, "--results-dir", str(tmp_path / "r"), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [read_json(p) for p in (tmp_path / "r" / "slow").glob("*/result.json")]
    assert len(records) == 2
    for record in records:
        summary = record["summary"]
        assert summary["input_mode"] == "loader" and summary["input_wait_share"] > 0.5, summary["input_wait_share"]
        assert summary["time_per_image_s"] > 0.0015  # the sleep per item is inside the timed steps
    page = (tmp_path / "r" / "slow" / "report.html").read_text()
    assert "Input-bound at batch &lt;= 100" in page or "Input-bound at batch <= 100" in page
    fast = harness("run", "--config", slow_workload(tmp_path, 0.0, data={"workers": 0}), "--results-dir",
                   str(tmp_path / "f"), timeout=900)
    assert fast.returncode == 0, fast.stderr[-3000:]
    fast_times = [read_json(p)["summary"]["time_per_image_s"] for p in (tmp_path / "f" / "slow").glob("*/result.json")]
    assert max(fast_times) < min(r["summary"]["time_per_image_s"] for r in records) / 5


@pytest.mark.slow
def test_a_loader_cell_resumes_mid_epoch_at_the_same_sample(tmp_path):
    config = slow_workload(tmp_path, 0.0, data={"workers": 2})
    whole = harness("run", "--config", config, "--results-dir", str(tmp_path / "whole"), "--no-report")
    assert whole.returncode == 0, whole.stderr[-3000:]
    stopped = harness("run", "--config", config, "--results-dir", str(tmp_path / "cut"), "--no-report",
                      env={"HARNESS_FAULT": "usr1@40"})
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    resumed = harness("run", "--config", config, "--results-dir", str(tmp_path / "cut"), "--no-report")
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr[-3000:]
    for cell in (p.parent for p in (tmp_path / "whole" / "slow").glob("*/result.json")):
        assert trained_numbers(tmp_path / "cut" / "slow" / cell.name) == trained_numbers(cell)


def test_datasets_on_the_device_path_are_refused_before_training(tmp_path):
    config = slow_workload(tmp_path, 0.0, data={"input": "device"})
    line = one_line_error(harness("run", "--config", config, "--results-dir", str(tmp_path / "r"), timeout=300))
    assert "returned Datasets" in line and "data.input: loader" in line
    assert not list((tmp_path / "r").glob("*/*/result.json"))
    workers = write_config(tmp_path, {"name": "w", "data": {"workers": 2}}, "w.yaml")
    line = one_line_error(harness("run", "--config", str(workers), "--results-dir", str(tmp_path / "r"), timeout=300))
    assert "data.workers=2" in line and "data.input: loader" in line
