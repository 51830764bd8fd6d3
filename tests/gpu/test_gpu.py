"""GPU checks: skipped without CUDA (CI has none); tests/gpu/run_on_device.sh runs them on a lent GPU."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from conftest import SMALL, harness, read_json, write_config

from harness.record.metrics import ENERGY_MIN_TIMED_S
from harness.training import data, images
from harness.training.bench import engine_loop, settings_for
from harness.training.data import IndexStream

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

STEPS = 20


def test_cuda_graphs_equals_eager_for_20_steps(data_dir):
    accelerator = Accelerator()
    splits = data.to_device(images.load_mnist(images.find_mnist(data_dir)), 5000, accelerator.device)
    order = IndexStream(len(splits.train_y), "shuffle", seed=0).next(STEPS * 64)
    eager, _ = engine_loop(accelerator, splits, order, settings_for(64, "eager"), record=True)
    graphed, floor = engine_loop(accelerator, splits, order, settings_for(64, "cuda_graphs"), record=True, floor=True)
    assert len(eager.losses) == len(graphed.losses) == STEPS
    # TF32 is off by default, so both run fp32 matmuls; kernels may still sum in another order
    assert graphed.losses == pytest.approx(eager.losses, abs=1e-4)
    assert floor is not None and 0 < floor.seconds <= graphed.seconds


def test_nvml_fields_are_plausible_and_memory_grows_with_batch(tmp_path):
    config = write_config(tmp_path, {**SMALL, "sweep": {"train.batch_size": [64, 8192]},
                                     "train": {**SMALL["train"], "images_per_epoch": 16384}})
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report")
    assert proc.returncode == 0, proc.stderr
    summaries = {}
    for path in (tmp_path / "r").rglob("result.json"):
        result = read_json(path)
        summaries[result["settings"]["train"]["batch_size"]] = result["summary"]
        assert result["environment"]["driver"] and result["environment"]["device_type"] == "cuda"
    for s in summaries.values():
        # too little timed training for NVML's ticking energy counter: unknown, never 0 (the H200 read 0 J)
        if s["train_seconds"] < ENERGY_MIN_TIMED_S:
            assert s["energy_j"] is None and s["joules_per_image"] is None
        else:
            assert s["energy_j"] > 0 and 0 < s["joules_per_image"] < 1
        assert s["nvml_peak_memory_used_bytes"] > 0 and s["nvml_samples"] > 0
        assert 0 < s["power_mean_w"] < 2000 and 0 <= s["gpu_util_mean_pct"] <= 100 and s["sm_clock_mean_mhz"] > 100
        assert s["peak_allocated_bytes"] > 0 and s["peak_reserved_bytes"] >= s["peak_allocated_bytes"]
        assert s["mfu"] is None or 0 < s["mfu"] < 1
    assert summaries[8192]["peak_allocated_bytes"] > summaries[64]["peak_allocated_bytes"]


def test_cuda_graphs_cell_runs_end_to_end(tmp_path):
    config = write_config(tmp_path, {**SMALL, "sweep": {"train.batch_size": [256]}})
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report",
                   "--set", "train.mode=cuda_graphs", "--set", "train.untimed_steps=5")
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "r").rglob("result.json")
    assert read_json(path)["summary"]["test_accuracy_at_best_val"] > 0.9


def test_a_cell_reads_its_energy_from_one_contiguous_window(tmp_path):
    """Batch 8 for one epoch (6,875 steps) with the first check near its end: one window of several
    seconds of host-bound eager steps, long enough for NVML's ticking counter (ENERGY_MIN_TIMED_S).
    Joules per image from that window must agree with mean power x its time within 30%."""
    config = write_config(tmp_path, {**SMALL, "sweep": {"train.batch_size": [8]},
                                     "train": {**SMALL["train"], "epochs": 1, "images_per_epoch": 55000,
                                               "mode": "eager"},
                                     "checks": {"first_step": 6800, "per_decade": 1}})
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report")
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "r").rglob("result.json")
    s = read_json(path)["summary"]
    assert s["energy_window_s"] >= ENERGY_MIN_TIMED_S, f"window only {s['energy_window_s']} s: steps got faster"
    assert s["joules_per_image"] > 0 and s["energy_j"] == pytest.approx(s["joules_per_image"] * s["timed_images"])
    from_power = s["power_mean_w"] * s["train_seconds"] / s["timed_images"]
    assert s["joules_per_image"] == pytest.approx(from_power, rel=0.3)
    assert s["engine_mode"] == "eager" and s["step_path"] == "lean"


def test_auto_mode_runs_cuda_graphs_on_a_gpu(tmp_path):
    config = write_config(tmp_path, {**SMALL, "sweep": {"train.batch_size": [256]}})
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report",
                   "--set", "train.untimed_steps=5")
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "r").rglob("result.json")
    record = read_json(path)
    assert record["settings"]["train"]["mode"] == "auto"
    assert record["summary"]["engine_mode"] == "cuda_graphs" and record["summary"]["engine_mode_reason"] is None


def test_the_loader_path_on_cuda_trains_the_device_path_s_steps(tmp_path):
    """Pinned host batches copied on a side stream (training/streamed.LoaderFeed) against the
    on-device gather: the same 50 losses, with 2 workers; and capacity on CUDA's real OOM."""
    losses = {}
    for name, data_settings in (("device", {}), ("loader", {"input": "loader", "workers": 2})):
        config = write_config(tmp_path, {"name": name, "data": data_settings, "train": {
            "epochs": 1, "images_per_epoch": 3200, "untimed_steps": 50, "mode": "eager", "diagnostics": "off"},
            "sweep": {"train.batch_size": [64]}}, f"{name}.yaml")
        proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report")
        assert proc.returncode == 0, proc.stderr[-2000:]
        (path,) = (tmp_path / "r" / name).glob("*/result.json")
        losses[name] = read_json(path)["summary"]["first_step_losses"]
    assert len(losses["loader"]) == 50 and losses["loader"] == pytest.approx(losses["device"], abs=1e-5)
    config = write_config(tmp_path, {"name": "cap", "train": {"micro_batch_size": "auto"},
                                     "sweep": {"train.batch_size": [1024]}}, "cap.yaml")
    proc = harness("capacity", "--config", str(config), "--results-dir", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = read_json(tmp_path / "c" / "cap" / "capacity.json")
    print("capacity on", doc["device"], ":", [(t["micro_batch_size"], t["fits"]) for t in doc["trials"]])
