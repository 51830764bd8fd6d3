"""The engine against the reference loop, execution modes, telemetry, MFU, and `harness bench`."""

from __future__ import annotations

import json
import os
import types

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from conftest import harness, read_json, write_config

from harness.training import data, images, workloads
from harness.training.bench import COLUMNS, WARMUP_STEPS, engine_loop, reference_loop, settings_for, torchvision_root
from harness.training.checkpoint import Window
from harness.training.data import IndexStream
from harness.training.engine import build_engine
from harness.training.measure import SyncedTimer
from harness.training.steps import Span
from harness.training.telemetry import NvmlMonitor, count_flops, mfu, peak_flops

STEPS = 20
# fp32 on CPU: the engine's fused Adam and the reference's per-parameter Adam round differently
# in the last bits; 20 steps keep the losses within this (observed: below 1e-6)
LOSS_TOLERANCE = 1e-5
# these assert what a machine without CUDA must do; on a lent GPU the same runs take the GPU path
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the behaviour without CUDA")


@pytest.fixture(scope="module")
def both_loops(data_dir):
    """What bench runs: the same images in the same order, freshly initialised, every loss read."""
    from torchvision.datasets import MNIST
    from torchvision.transforms import ToTensor

    torch.set_flush_denormal(True)
    accelerator = Accelerator(cpu=True)
    folder = images.find_mnist(data_dir)
    splits = data.to_device(images.load_mnist(folder), 5000, accelerator.device)
    dataset = MNIST(str(torchvision_root(folder)), train=True, download=False, transform=ToTensor())
    return accelerator, splits, dataset


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 16, 256])
def test_engine_and_reference_take_the_same_steps(both_loops, batch):
    accelerator, splits, dataset = both_loops
    order = IndexStream(len(splits.train_y), "shuffle", seed=0).next(STEPS * batch)
    ref = reference_loop(accelerator, dataset, (order + 5000).tolist(), settings_for(batch, "eager"), record=True)
    eng, floor = engine_loop(accelerator, splits, order, settings_for(batch, "eager"), record=True)
    assert floor is None  # no replay floor off CUDA
    assert ref.steps == eng.steps == STEPS and ref.images == eng.images == STEPS * batch
    assert ref.timed_images == eng.timed_images == (STEPS - WARMUP_STEPS) * batch
    assert len(ref.losses) == len(eng.losses) == STEPS
    assert eng.losses == pytest.approx(ref.losses, abs=LOSS_TOLERANCE)
    assert ref.losses[0] != pytest.approx(ref.losses[-1], abs=100 * LOSS_TOLERANCE)  # it did train


SMALL_CELL = {"name": "modes", "train": {"batch_size": 64, "epochs": 1, "images_per_epoch": 6400, "untimed_steps": 3},
              "data": {"train_eval_size": 1000}}


@pytest.mark.slow
def test_compile_mode_trains_a_cell_on_cpu(tmp_path):
    config = write_config(tmp_path, SMALL_CELL)
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report",
                   "--set", "sweep.train.mode=[eager,compile]")
    assert proc.returncode == 0, proc.stderr
    results = {read_json(p)["settings"]["train"]["mode"]: read_json(p) for p in (tmp_path / "r").rglob("result.json")}
    assert set(results) == {"eager", "compile"}
    assert all(r["status"] == "done" for r in results.values())
    assert {p.parent.name.split("-")[2] for p in (tmp_path / "r").rglob("result.json")} == {"eager", "compile"}
    eager, compiled = results["eager"]["summary"], results["compile"]["summary"]
    assert compiled["test_accuracy_at_best_val"] > 0.85
    assert compiled["first_step_losses"] == pytest.approx(eager["first_step_losses"], abs=1e-4)
    assert compiled["images_seen"] == eager["images_seen"] == 6400


@cpu_only
def test_cuda_graphs_off_cuda_is_a_clear_error(tmp_path):
    config = write_config(tmp_path, SMALL_CELL)
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--set",
                   "train.mode=cuda_graphs",
                   "--set", "train.untimed_steps=5")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "train.mode=cuda_graphs needs a CUDA device" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_cuda_graphs_refuses_fp16(tmp_path):
    config = write_config(tmp_path, SMALL_CELL)
    proc = harness("plan", "--config", str(config), "--set", "train.mode=cuda_graphs", "--set",
                   "train.mixed_precision=fp16")
    assert proc.returncode == 2 and "cannot use fp16" in proc.stderr


@pytest.mark.slow
@cpu_only
def test_without_nvml_every_gpu_field_is_null(small_sweep):
    for path in small_sweep.rglob("result.json"):
        summary = read_json(path)["summary"]
        for key in ("energy_j", "joules_per_image", "nvml_peak_memory_used_bytes", "power_mean_w",
                    "gpu_util_mean_pct", "sm_clock_mean_mhz", "nvml_samples", "peak_allocated_bytes",
                    "peak_reserved_bytes", "peak_flops", "mfu"):
            assert summary[key] is None, key
        assert summary["flops_per_example"] == MLP_FLOPS and summary["compute_precision"] == "fp32"


# By hand, the MLP 784-500-500-500-10: a forward is 2 x (784*500 + 500*500 + 500*500 + 500*10) = 1,794,000
# FLOPs per image; a backward computes each layer's weight gradient (as many again) and its input
# gradient, except the first layer's, whose input (the image) needs none: 3 x forward - 2 x 784 x 500.
MLP_FLOPS = 3 * 2 * (784 * 500 + 2 * 500 * 500 + 500 * 10) - 2 * 784 * 500


def test_flops_are_counted_and_match_a_hand_count():

    from harness.config import ModelSettings
    from harness.training.models.conv import build_conv
    from harness.training.models.mlp import build_mlp

    assert MLP_FLOPS == 4_598_000
    mlp = build_mlp(ModelSettings())
    x, y = torch.rand(16, 784), torch.randint(10, (16,))
    assert count_flops(mlp, x, y, F.cross_entropy) == MLP_FLOPS
    assert all(p.grad is None for p in mlp.parameters()) and mlp.training  # left as it was
    # the conv net, by hand: conv1 1->16 5x5 over 28x28, conv2 16->32 5x5 over 14x14, 1568->128, 128->10;
    # backward: weight gradients for all four, input gradients for all but the first
    conv1, conv2 = 2 * 16 * 25 * 28 * 28, 2 * 32 * 16 * 25 * 14 * 14
    fc1, fc2 = 2 * 1568 * 128, 2 * 128 * 10
    assert count_flops(build_conv({"channels": 16, "hidden": 128}), x, y,
                       F.cross_entropy) == 3 * (conv1 + conv2 + fc1 + fc2) - conv1


class CausalAttention(torch.nn.Module):
    """One causal self-attention layer through F.scaled_dot_product_attention, pooled to classes."""

    def __init__(self, width=32, heads=4, classes=5):
        super().__init__()
        self.heads, self.qkv = heads, torch.nn.Linear(width, 3 * width, bias=False)
        self.out = torch.nn.Linear(width, classes)

    def forward(self, x):
        n, t, e = x.shape
        q, k, v = (part.reshape(n, t, self.heads, e // self.heads).transpose(1, 2) for part in self.qkv(x).chunk(3, -1))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(n, t, e)
        return self.out(attended).mean(1)


def test_flops_count_attention_by_hand():
    """Attention's score and value products are counted on CPU as on GPU (torch's formula: 2
    products forward, 5 backward with the scores recomputed, causal mask not subtracted)."""
    t, e, c = 16, 32, 5
    qkv = 2 * t * e * 3 * e  # forward; backward its weight gradient only (the input needs none)
    attention = 2 * (2 * t * t * e)  # scores q k^T and their product with v, over all heads
    out = 2 * t * e * c  # forward; backward its weight and its input gradient
    x, y = torch.randn(8, t, e), torch.randint(c, (8,))
    assert count_flops(CausalAttention(e, 4, c), x, y, F.cross_entropy) == 2 * qkv + attention * 7 // 2 + 3 * out


def test_peak_flops_and_mfu():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989.4e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert peak_flops("NVIDIA H200", "fp32") == 67e12
    assert peak_flops("AMD EPYC", "fp32") is None and peak_flops(None, "bf16") is None
    assert mfu(MLP_FLOPS, MLP_FLOPS / 1e12, 1e12, 1) == pytest.approx(1.0)  # 1 image per us at 1e12 FLOP/s
    assert mfu(MLP_FLOPS, MLP_FLOPS / 1e12, 1e12, 2) == pytest.approx(0.5)
    assert mfu(MLP_FLOPS, None, 1e12, 1) is None and mfu(MLP_FLOPS, 1e-6, None, 1) is None
    assert mfu(None, 1e-6, 1e12, 1) is None


class FakeNvml(types.SimpleNamespace):
    """A stand-in for the NVIDIA driver, which cannot exist on this machine (no GPU): it answers
    the NVML calls the monitor makes with known numbers."""

    NVML_CLOCK_SM = 1

    def __init__(self):
        super().__init__(energy_mj=1_000_000.0, used=2 * 2**30, calls=0)

    def nvmlDeviceGetHandleByIndex(self, index):
        return "gpu0"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        self.energy_mj += 250_000.0  # each read is 250 J after the previous one
        return self.energy_mj

    def nvmlDeviceGetMemoryInfo(self, handle):
        self.used += 2**20
        return types.SimpleNamespace(used=self.used)

    def nvmlDeviceGetPowerUsage(self, handle):
        return 300_000  # mW

    def nvmlDeviceGetUtilizationRates(self, handle):
        return types.SimpleNamespace(gpu=90)

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return 1980


def test_monitor_aggregates_samples_and_energy_windows():
    fake = FakeNvml()
    monitor = NvmlMonitor(torch.device("cpu"), nvml=fake)
    assert monitor.available
    monitor.start()
    with SyncedTimer(torch.device("cpu"), monitor) as timed:
        while sum(1 for s in monitor.samples if s[0]) < 3:
            torch.ones(1000).sum()
    monitor.stop()
    assert timed.joules == pytest.approx(250.0)  # one counter read at each edge
    assert timed.gpu_util_pct == 90.0  # the window's own samples (evals.csv: window_gpu_util_pct)
    window = Window()
    window.add(Span(10, 2.0, None, loads=(1.0, 1.5), gpu_util_pct=90.0))
    window.add(Span(10, 1.0, None, loads=(1.5, 2.0), gpu_util_pct=30.0))
    assert window.columns(1)["window_gpu_util_pct"] == pytest.approx(70.0)  # weighted by seconds
    assert (window.columns(1)["window_load_start"], window.columns(1)["window_load_end"]) == (1.0, 2.0)
    summary = monitor.summary()
    assert summary["power_mean_w"] == 300.0 and summary["gpu_util_mean_pct"] == 90.0
    assert summary["sm_clock_mean_mhz"] == 1980.0
    assert summary["nvml_peak_memory_used_bytes"] == fake.used
    assert summary["nvml_samples"] == len(monitor.samples) >= 3


def test_energy_is_only_reported_when_the_counter_can_resolve_it():
    """The rule the H200 taught (harness/training/summary.py): NVML's counter ticks, so a short timed span reads
    0 J or a whole tick; such a total is recorded as unknown rather than as a wrong number."""
    from harness.analysis.collect import cell_row
    from harness.record.metrics import ENERGY_MIN_TIMED_S
    from harness.training.summary import _energy

    timing = {"timed_images": 6000}
    # one contiguous window of 2 s, 300 J over 600 images: 0.5 J/image, over the cell's 6,000 timed images 3,000 J
    window = [ENERGY_MIN_TIMED_S, 300.0, 600]
    assert _energy(window, timing) == {"energy_j": 3000.0, "joules_per_image": 0.5, "energy_window_s": 2.0}
    # the same joules over a shorter window: NVML's ticks are not resolved, unknown (never summed from short ones)
    short = [ENERGY_MIN_TIMED_S / 2, 300.0, 600]
    assert _energy(short, timing) == {"energy_j": None, "joules_per_image": None, "energy_window_s": 1.0}
    assert _energy([2.5, 0.0, 600], timing)["joules_per_image"] is None  # the counter never ticked
    assert _energy(None, timing) == {"energy_j": None, "joules_per_image": None, "energy_window_s": None}
    # a record written before the rule (the H200's batch 2048 cell) reads as unknown in every report
    older = {"source": "h200", "cell_id": "bs2048", "summary": {"energy_j": 64.4, "joules_per_image": 3.2e-4,
                                                               "train_seconds": 0.17}}
    assert cell_row(older)["joules_per_image"] is None and cell_row(older)["energy_j"] is None
    older["summary"]["train_seconds"] = 2.7
    assert cell_row(older)["joules_per_image"] == 3.2e-4


def test_monitor_without_nvml_is_all_null():
    monitor = NvmlMonitor(torch.device("cpu"))
    monitor.start()
    with SyncedTimer(torch.device("cpu"), monitor) as timed:
        pass
    monitor.stop()
    assert not monitor.available and timed.joules is None
    assert set(monitor.summary().values()) == {None}


@pytest.mark.slow
@cpu_only
def test_bench_quick_writes_every_column(tmp_path):
    proc = harness("bench", "--quick", "--batch-sizes", "4,64", "--skip-reference-above", "32", "--out", str(tmp_path),
                   timeout=900)
    assert proc.returncode == 0, proc.stderr
    document = json.loads((tmp_path / "bench.json").read_text())
    rows = document["rows"]
    # quick on a CPU leaves compile out; above --skip-reference-above no reference loop runs
    assert {(r["batch_size"], r["loop"]) for r in rows} == {
        (4, "reference"), (4, "eager"), (4, "eager_accelerate"), (64, "eager"), (64, "eager_accelerate")}
    assert document["environment"]["cpu_threads"] >= 1 and document["environment"]["threads_source"].startswith("auto")
    for row in rows:
        assert set(row) == set(COLUMNS)
        assert row["same_work"] is True and row["repeats"] == 2
        assert row["images"] == row["steps"] * row["batch_size"]
        assert row["timed_steps"] >= 20 and (row["timed_steps"] >= 200 or row["timed_steps"] * row["batch_size"]
                                              * row["time_per_image_median_s"] >= 0.3)
        assert row["time_per_image_min_s"] <= row["time_per_image_median_s"] <= row["time_per_image_max_s"]
        assert row["mfu"] is None and row["device"] == document["environment"]["device_name"]
        assert (row["reference_over_this"] is None) == (row["batch_size"] == 64)
        assert row["accelerate_step_over_this"] > 0
    assert (tmp_path / "bench.csv").read_text().splitlines()[0].split(",") == list(COLUMNS)
    assert "device: " in proc.stdout and "same work" in proc.stdout


@cpu_only
def test_bench_times_every_loop_at_the_threads_it_records(data_dir, tmp_path, monkeypatch):
    """`--threads N` holds for every timed loop, the reference included: building an engine must
    not put torch back to the default count (cores owned) between loops. N is one more than the
    cores, so it differs from the default on any machine."""
    from harness.training import bench

    requested, seen = (os.cpu_count() or 1) + 1, []

    def counting(loop):
        def timed(*args, **kwargs):
            seen.append((loop.__name__, torch.get_num_threads()))
            return loop(*args, **kwargs)
        return timed

    for name in ("reference_loop", "run_steps"):
        monkeypatch.setattr(bench, name, counting(getattr(bench, name)))
    rows = bench.run_bench(images.find_mnist(data_dir), [256], ["eager"], 2, tmp_path, threads=requested)
    assert {name for name, _ in seen} == {"reference_loop", "run_steps"}
    assert {threads for _, threads in seen} == {requested}
    assert json.loads((tmp_path / "bench.json").read_text())["environment"]["cpu_threads"] == requested
    assert {r["loop"] for r in rows} == {"reference", "eager"}


@pytest.mark.parametrize("batch", [1, 16])
def test_lean_step_computes_what_the_accelerate_step_does(both_loops, batch):
    """The lean step (torch's backward, fused Adam's kernel on the optimizer's own state) against
    the same step through Accelerate's wrappers: the same losses at every step, and the same state."""
    accelerator, splits, _ = both_loops
    order = IndexStream(len(splits.train_y), "shuffle", seed=0).next(STEPS * batch)
    settings = settings_for(batch, "eager")
    lean = build_engine(settings, accelerator, splits, workloads.builtin(settings))
    wrapped = build_engine(settings, accelerator, splits, workloads.builtin(settings), lean=False)
    assert (lean.path, wrapped.path) == ("lean", "accelerate")
    run_lean, _ = engine_loop(accelerator, splits, order, settings, record=True, engine=lean)
    run_wrapped, _ = engine_loop(accelerator, splits, order, settings, record=True, engine=wrapped)
    assert run_lean.losses == pytest.approx(run_wrapped.losses, abs=1e-7) and len(run_lean.losses) == STEPS
    for a, b in zip(lean.eval_model.parameters(), wrapped.eval_model.parameters()):
        assert torch.allclose(a, b, atol=1e-7)
    (state,) = {int(s["step"]) for s in lean.optimizer.state_dict()["state"].values()}
    assert state == STEPS  # Adam's step count advanced once per step on the lean path too


def test_cuda_graphs_needs_the_capture_outside_the_clock(tmp_path):
    config = write_config(tmp_path, SMALL_CELL)  # untimed_steps: 3
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--set",
                   "train.mode=cuda_graphs")
    assert proc.returncode == 2 and "train.untimed_steps >= 4" in proc.stderr



def test_auto_mode_is_cuda_graphs_only_where_it_applies():
    """resolve_mode's decisions. The CUDA launches are stand-ins (a namespace with a CUDA device):
    no GPU exists here; tests/gpu/test_gpu.py runs a real auto cell on one."""
    from types import SimpleNamespace

    from harness.config import CellSettings
    from harness.training.engine import resolve_mode

    def launch(device: str, processes: int = 1):
        return SimpleNamespace(device=torch.device(device), num_processes=processes)

    auto = CellSettings(train={"mode": "auto", "untimed_steps": 5})
    assert resolve_mode(auto, launch("cuda")) == ("cuda_graphs", None)
    mode, why = resolve_mode(auto, launch("cpu"))
    assert mode == "eager" and "needs a CUDA device" in why
    mode, why = resolve_mode(auto, launch("cuda", 2))
    assert mode == "eager" and "one process" in why
    for change, words in (({"mixed_precision": "fp16"}, "fp16"), ({"untimed_steps": 3}, "untimed_steps >= 4"),
                          ({"step_diagnostics": True}, "step_diagnostics")):
        settings = CellSettings(train={"mode": "auto", "untimed_steps": 5} | change)
        mode, why = resolve_mode(settings, launch("cuda"))
        assert mode == "eager" and words in why, change
    assert resolve_mode(CellSettings(train={"mode": "eager"}), launch("cuda")) == ("eager", None)


@cpu_only
def test_a_cell_records_the_engine_that_ran(tmp_path):
    config = write_config(tmp_path, SMALL_CELL)
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report")
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "r").rglob("result.json")
    record = read_json(path)
    summary = record["summary"]
    assert record["settings"]["train"]["mode"] == "auto"
    assert summary["engine_mode"] == "eager" and "needs a CUDA device" in summary["engine_mode_reason"]
    assert summary["step_path"] == "lean"
    # auto counts as eager in the cell id: results from before auto existed stay valid
    eager = harness("plan", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--set", "train.mode=eager")
    assert f"{path.parent.name}  " in eager.stdout and " done " in eager.stdout
