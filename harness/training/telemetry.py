"""GPU telemetry through NVML (the pynvml module of nvidia-ml-py), and model FLOP utilisation.

A background thread samples memory used, power, utilisation and SM clock every
SAMPLE_INTERVAL_S; energy is the difference of NVML's total-energy counter over the timed
windows. Without NVML (CPU, no driver, no library) every field is None and nothing fails.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable
from typing import Any

import torch

from harness.training import batches
from harness.training.batches import Tree

SAMPLE_INTERVAL_S = 0.05

# Dense (no sparsity) peak FLOP/s from the vendors' datasheets, by device-name fragment and
# precision; the first fragment found in the device name wins, so specific names come first.
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12}),
    ("H100 PCIe", {"fp32": 51e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12}),
    ("H100 NVL", {"fp32": 60e12, "tf32": 417.5e12, "bf16": 835e12, "fp16": 835e12}),
    ("H100", {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12}),  # SXM
    ("A100", {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12}),
    ("L40S", {"fp32": 91.6e12, "tf32": 183e12, "bf16": 362e12, "fp16": 362e12}),
    ("L4", {"fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12, "fp16": 121e12}),
    ("A10", {"fp32": 31.2e12, "tf32": 62.5e12, "bf16": 125e12, "fp16": 125e12}),
    ("V100", {"fp32": 15.7e12, "fp16": 125e12}),
]


def _sdpa_on_cpu() -> dict:
    """FLOP formulas for scaled_dot_product_attention's CPU kernel, which FlopCounterMode counts
    only on GPU: torch's own (the full score and value products, 2 forward and 5 backward, causal
    masks not subtracted), so a CPU count and a GPU count of one model agree."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    aten = torch.ops.aten
    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}


def count_flops(model: torch.nn.Module, x: Tree, y: Tree, loss: Callable) -> int | None:
    """FLOPs to train on one example: torch's FlopCounterMode over one forward and backward of
    `len(x)` examples (every matrix product: mm, addmm, bmm, baddbmm, attention, and convolutions;
    the optimizer and elementwise ops are not counted). The model is left as it was: eval mode for
    the count (no running statistics move), its gradients cleared. Unknown (None) where the count
    fails."""
    from torch.utils.flop_counter import FlopCounterMode

    training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, custom_mapping=_sdpa_on_cpu()) as counter:
            loss(batches.call(model, x), y).backward()
        return int(counter.get_total_flops()) // batches.count(x)
    except Exception:  # noqa: BLE001 - a model FlopCounterMode cannot count: FLOPs unknown, the cell trains
        return None
    finally:
        model.train(training)
        for parameter in model.parameters():
            parameter.grad = None


def compute_precision(mixed_precision: str) -> str:
    if mixed_precision in ("bf16", "fp16"):
        return mixed_precision
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


def peak_flops(device_name: str | None, precision: str) -> float | None:
    for fragment, peaks in PEAK_FLOPS:
        if device_name and fragment in device_name:
            return peaks.get(precision)
    return None


def mfu(flops_per_example: int | None, time_per_example_s: float | None, peak: float | None,
        num_processes: int) -> float | None:
    """Achieved FLOP/s over the peak of all the devices that shared the work."""
    if not flops_per_example or not time_per_example_s or not peak:
        return None
    return flops_per_example / time_per_example_s / (peak * num_processes)


def load_nvml():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # noqa: BLE001 - no library, no driver, no GPU: telemetry is unknown
        return None


class NvmlMonitor:
    """Samples one GPU in a background thread; `window(True/False)` marks timed training windows."""

    def __init__(self, device: torch.device, nvml: Any = None):
        self.nvml = nvml if nvml is not None else (load_nvml() if device.type == "cuda" else None)
        self.handle = self._handle(device) if self.nvml else None
        self.samples: list[tuple[bool, int, float, float, float]] = []
        self._in_window = False
        self.window_util_pct: float | None = None  # the last closed window's mean GPU utilisation
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self.handle is not None

    def _handle(self, device: torch.device):
        try:
            uuid = str(torch.cuda.get_device_properties(device).uuid)
            return self.nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        except Exception:  # noqa: BLE001 - NVML raises its own error classes per call; any: try the index
            try:  # CUDA_VISIBLE_DEVICES may renumber; the index is the fallback
                return self.nvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            except Exception:  # noqa: BLE001 - no handle: telemetry unknown
                return None

    def start(self) -> None:
        if self.available:
            self._thread = threading.Thread(target=self._sample_loop, name="nvml-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample_loop(self) -> None:
        n = self.nvml
        while not self._stop.is_set():
            try:
                self.samples.append((
                    self._in_window,
                    n.nvmlDeviceGetMemoryInfo(self.handle).used,
                    n.nvmlDeviceGetPowerUsage(self.handle) / 1000.0,  # mW -> W
                    float(n.nvmlDeviceGetUtilizationRates(self.handle).gpu),
                    float(n.nvmlDeviceGetClockInfo(self.handle, n.NVML_CLOCK_SM)),
                ))
            except Exception:  # noqa: BLE001 - a failed read is a missing sample, not a zero
                pass
            self._stop.wait(SAMPLE_INTERVAL_S)

    def mark_window(self, opening: bool) -> float | None:
        """Call right after a device sync at each edge of a timed window; returns the energy
        counter (mJ since the driver loaded), or None where the GPU does not report it. On
        closing, `window_util_pct` is the mean NVML utilisation of the window's samples."""
        self._in_window = opening
        if opening:
            self._window_start = len(self.samples)
        else:
            inside = [s[3] for s in self.samples[getattr(self, "_window_start", 0):] if s[0]]
            self.window_util_pct = statistics.fmean(inside) if inside else None
        if not self.available:
            return None
        try:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception:  # noqa: BLE001 - no energy counter on this GPU: unknown
            return None

    def summary(self) -> dict[str, float | None]:
        timed = [s for s in self.samples if s[0]]
        mean = lambda i: statistics.fmean(s[i] for s in timed) if timed else None  # noqa: E731
        return {
            "nvml_peak_memory_used_bytes": max((s[1] for s in self.samples), default=None),
            "power_mean_w": mean(2),
            "gpu_util_mean_pct": mean(3),
            "sm_clock_mean_mhz": mean(4),
            "nvml_samples": len(self.samples) if self.available else None,
        }
