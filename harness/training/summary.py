"""A cell's summary (result.json "summary"): computed from its epochs.csv rows once it ends.

Every key is a `cell` entry of harness/record/metrics.py; a number that cannot be known is None.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from accelerate import Accelerator

from harness.batch_plan import BatchPlan
from harness.config import CellSettings
from harness.record.metrics import energy_resolved
from harness.timing import conditions as timing_conditions
from harness.timing import cpu_share, load_average
from harness.training import measure
from harness.training.checkpoint import LoopState
from harness.training.data import Splits
from harness.training.telemetry import mfu, peak_flops
from harness.training.threads import cores_owned


def summarize(rows: list[dict[str, Any]], settings: CellSettings, first_losses: list[float], warmup_seconds: float,
              world: int, gpu: dict[str, Any], env: dict[str, Any], precision: str, flops: int | None,
              evals: list[dict[str, Any]] = (), energy_window: list[float] | None = None) -> dict[str, Any]:
    """Per-cell numbers; the cell's quality is the test score at the best-validation epoch (first
    best, in the metric's direction: workload.metric_mode)."""
    oriented = settings.workload.quality.oriented
    best = max(rows, key=lambda r: oriented(r["val_accuracy"]))  # max keeps the earliest of equals
    last = rows[-1]
    timing = _timing(rows, settings.batch_plan, settings.train.untimed_steps)
    peak = peak_flops(env.get("device_name"), precision) if env.get("device_type") == "cuda" else None
    return {
        "epochs_completed": len(rows),
        "steps_per_epoch": settings.batch_plan.steps_in(0),
        "local_batch_size": settings.train.batch_size // world,
        "learning_rate": settings.optim.lr_for(settings.train.batch_size),
        "optimizer_steps": last["optimizer_steps"],
        "images_seen": last["images_seen"],
        "best_epoch": best["epoch"],
        "best_val_accuracy": best["val_accuracy"],
        "test_accuracy_at_best_val": best["test_accuracy"],
        "train_loss_at_best_val": _finite(best["train_loss"]),
        "final_val_accuracy": last["val_accuracy"],
        "final_test_accuracy": last["test_accuracy"],
        "final_train_loss": _finite(last["train_loss"]),
        "warmup_steps": min(settings.train.untimed_steps, settings.total_steps),
        "warmup_seconds": warmup_seconds,
        "first_step_losses": first_losses,
        **timing,
        "input_wait_share": _input_wait_share(rows),
        "tokens_per_second": _tokens_per_second(timing["images_per_second"], settings.workload.tokens_per_example),
        "eval_seconds": sum(r["eval_seconds"] for r in rows),
        "checks": len(evals),
        "check_seconds": sum(r["check_seconds"] for r in evals),
        "peak_allocated_bytes": last["peak_allocated_bytes"],
        "peak_reserved_bytes": last["peak_reserved_bytes"],
        "peak_rss_bytes": last["peak_rss_bytes"],
        **_energy(energy_window, timing),
        **gpu,
        "flops_per_example": flops,
        "compute_precision": precision,
        "peak_flops": peak,
        "mfu": mfu(flops, timing["time_per_image_s"], peak, world),
        "final_noise_scale": last.get("noise_scale"),
        **timing_conditions(rows, evals, cores_owned(), env.get("device_type", "cpu"), world),
    }


def _tokens_per_second(examples_per_second: float | None, tokens: int | None) -> float | None:
    return examples_per_second * tokens if examples_per_second is not None and tokens else None


def _timing(rows: list[dict[str, Any]], plan: BatchPlan, untimed: int) -> dict[str, Any]:
    """Time per image over every timed step of the cell (warm-up excluded): the steps after the
    first `untimed`, each with its own batch where a schedule switches."""
    timed = [r for r in rows if r["timed_steps"]]
    seconds = sum(r["train_seconds"] for r in timed)
    done = rows[-1]["optimizer_steps"] if rows else 0
    images = plan.examples_in(min(untimed, done), done) if timed else 0
    return {
        "train_seconds": seconds if timed else None,
        "timed_images": images,
        "time_per_image_s": seconds / images if images else None,
        "images_per_second": images / seconds if images and seconds > 0 else None,
    }


def _input_wait_share(rows: list[dict[str, Any]]) -> float | None:
    """The timed steps' wait for the loader over their wall time; None on the device path."""
    timed = [r for r in rows if r["timed_steps"] and r.get("input_wait_seconds") is not None]
    seconds = sum(r["train_seconds"] for r in timed)
    return sum(r["input_wait_seconds"] for r in timed) / seconds if seconds > 0 else None


def _energy(window: list[float] | None, timing: dict[str, Any]) -> dict[str, float | None]:
    """Joules per image over the cell's longest contiguous timed window (no check inside it). NVML's
    counter moves in steps of ~16 J on an H200: summed over many short windows it read up to 2.7x
    mean power x time, so a window under ENERGY_MIN_TIMED_S leaves the energy unknown. energy_j is
    that rate over all the cell's timed images."""
    seconds, joules, images = window or (None, None, 0)
    if not images or not energy_resolved(joules, seconds):
        return {"energy_j": None, "joules_per_image": None, "energy_window_s": seconds}
    per_image = joules / images
    return {"energy_j": per_image * timing["timed_images"], "joules_per_image": per_image, "energy_window_s": seconds}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def epoch_row(state: LoopState, settings, accelerator: Accelerator, correct: list[int], eval_seconds: float,
              diagnostics_seconds: float, loss_sum: torch.Tensor, splits: Splits, plan: BatchPlan) -> dict[str, Any]:
    """One epochs.csv row (record/metrics.py, level epoch) once `state.steps_done` counts the epoch;
    `loss_sum` is this rank's summed step losses. The epoch's seconds and joules come from its
    spans, already combined over ranks; its examples from the batch plan (train.batch_schedule)."""
    steps_per_epoch = plan.steps_in(state.epoch - 1)
    start, end = state.steps_done - steps_per_epoch, state.steps_done
    timed_steps = end - max(start, min(settings.train.untimed_steps, end))
    timed_images = plan.examples_in(end - timed_steps, end)
    across = measure.over_ranks(accelerator, {"train_loss": loss_sum.item() / steps_per_epoch,
                                              "eval_seconds": eval_seconds, **measure.memory_peaks(accelerator.device),
                                              "diagnostics_seconds": diagnostics_seconds})
    return {
        "epoch": state.epoch,
        "train_loss": across["train_loss"],
        "train_accuracy": correct[0] / min(settings.data.train_eval_size, splits.n_train),
        "val_accuracy": correct[1] / splits.n_val,
        "test_accuracy": correct[2] / splits.n_test,
        "images_seen": plan.examples_before(end),
        "optimizer_steps": state.steps_done,
        "timed_steps": timed_steps,
        **across,
        "train_seconds": state.epoch_seconds if timed_steps else None,
        "time_per_image_s": state.epoch_seconds / timed_images if timed_steps else None,
        "energy_j": state.epoch_joules if timed_steps else None,
        "cpu_share": cpu_share(state.epoch_cpu_seconds, state.epoch_seconds, torch.get_num_threads())
        if timed_steps else None,
        "load_at_end": load_average(),
        "input_wait_seconds": state.epoch_input_wait if timed_steps else None,
    }
