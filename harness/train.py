"""Train one cell under Accelerate and write its results. Read `train_loop` top to bottom.

No pandas, no seaborn here: the trainer only produces the files that the report reads.
"""

from __future__ import annotations

import gc
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from harness import checkpoint, diagnostics, faults, measure, results
from harness.config import CellSettings
from harness.data import Splits
from harness.errors import HarnessError
from harness.engine import build_engine
from harness.model import count_correct
from harness.plan import Cell
from harness.preemption import StopRequest
from harness.progress import Progress
from harness.telemetry import NvmlMonitor, compute_precision, flops_per_image, mfu, peak_flops


@dataclass
class RunContext:
    """What every cell of one process's run shares."""

    accelerator: Accelerator
    splits: Splits
    sweep_name: str
    sweep_dir: Path
    environment: dict[str, Any]
    progress: Progress
    report_rules: dict[str, Any]  # the config's report section, so the report can apply it
    stop: StopRequest
    on_epoch: Callable[[], None] = lambda: None  # e.g. renew the cell's lock


class IndexStream:
    """The global sample order, identical on every rank: each rank slices the same indices.

    shuffle: consecutive batches walk a permutation and continue into a fresh one at its end
    (TF's next_batch); with_replacement: every index is drawn uniformly and independently.
    """

    def __init__(self, size: int, sampling: str, seed: int):
        self.size, self.sampling = size, sampling
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.int64)
        self.cursor = 0

    def state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm, "cursor": self.cursor}

    def restore(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.perm, self.cursor = state["perm"], state["cursor"]

    def next(self, count: int) -> torch.Tensor:
        if self.sampling == "with_replacement":
            return torch.randint(self.size, (count,), generator=self.generator)
        parts = []
        while count > 0:
            if self.cursor == len(self.perm):
                self.perm, self.cursor = torch.randperm(self.size, generator=self.generator), 0
            take = min(count, len(self.perm) - self.cursor)
            parts.append(self.perm[self.cursor : self.cursor + take])
            self.cursor += take
            count -= take
        return torch.cat(parts)


def train_loop(cell: Cell, ctx: RunContext, cell_dir: Path) -> tuple[str, dict[str, Any]]:
    """Returns (status, summary); writes epochs.csv after every epoch. Resumes from a checkpoint."""
    acc, s = ctx.accelerator, cell.settings
    device, rank, world = acc.device, acc.process_index, acc.num_processes
    global_batch, steps_per_epoch = s.train.batch_size, s.steps_per_epoch
    local = slice(rank * (global_batch // world), (rank + 1) * (global_batch // world))

    engine = build_engine(s, acc, ctx.splits)
    engine.step = faults.wrap(engine.step, cell.id)
    stream = IndexStream(len(ctx.splits.train_y), s.train.sampling, s.train.seed)
    state = _resume(cell_dir, rank, world, engine, stream, ctx) or checkpoint.LoopState(warmup_left=s.train.warmup_steps)
    measure.reset_memory_peaks(device)
    monitor = NvmlMonitor(device)
    monitor.start()
    ctx.progress.start_cell(cell.id, s.train.epochs * steps_per_epoch)
    ctx.progress.advance(state.steps_done + state.step)
    try:
        while state.epoch <= s.train.epochs:
            if state.order is None:  # a fresh epoch: its global order, drawn once
                state.order = stream.next(steps_per_epoch * global_batch).view(steps_per_epoch, global_batch)
                state.step, state.epoch_seconds, state.epoch_joules = 0, 0.0, None
                state.losses = torch.zeros(steps_per_epoch)
            # The epoch's order goes to the device once; no host round-trip inside the steps.
            # Each step's loss lands in a device buffer: one copy, like a running sum, but it
            # keeps which step first went non-finite.
            order = state.order[:, local].to(device)
            losses = state.losses.to(device)

            # Warm-up: outside the clock; its losses are read per step (a sync we can afford here).
            with measure.SyncedTimer(device) as warm:
                while (state.warmup_left and state.step < steps_per_epoch
                       and not ctx.stop.should_stop(acc, state.steps_done + state.step)):
                    loss = engine.step(order[state.step])
                    losses[state.step] = loss
                    state.first_losses.append(acc.reduce(loss.clone(), "mean").item())
                    state.step, state.warmup_left = state.step + 1, state.warmup_left - 1
                    ctx.progress.advance_step()
            state.warmup_seconds += warm.seconds

            # Timed window: synced only at its two edges; no .item() inside.
            first_timed, step = state.step, state.step
            with measure.SyncedTimer(device, monitor) as timed:
                while step < steps_per_epoch and not ctx.stop.should_stop(acc, state.steps_done + step):
                    losses[step] = engine.step(order[step])
                    step += 1
                    ctx.progress.advance_step()
            state.step = step
            state.epoch_seconds += timed.seconds
            state.epoch_joules = _add(state.epoch_joules, timed.joules, first_timed == step)

            if state.step < steps_per_epoch:  # asked to stop: keep everything, leave
                state.losses, state.stream = losses.cpu(), stream.state()
                state.step_norms = engine.norms.state() if engine.norms is not None else None
                state.preemptions += 1
                checkpoint.save(cell_dir, rank, world, state, engine.eval_model, engine.optimizer)
                return "preempted", {"preemptions": state.preemptions, "checkpoint_step": state.steps_done + state.step}

            # Evaluation: its own clock, never part of time per image.
            with measure.SyncedTimer(device) as evaluation:
                correct = evaluate(engine.eval_model, ctx.splits, s.data.train_eval_size, acc)
            bad = _first_nonfinite(acc, losses)
            if bad is None and not diagnostics.weights_finite(engine.eval_model):
                bad = steps_per_epoch  # the epoch's last update broke the weights: its loss was still finite
            if bad is not None:  # diverged: keep the finite epochs, say where it broke
                state.diverged_at_step = state.steps_done + min(bad + 1, steps_per_epoch)
                state.last_finite_loss = float(losses[bad - 1]) if bad else None
                break
            state.steps_done += steps_per_epoch
            with measure.SyncedTimer(device) as diagnosis:  # outside the clock, like evaluation
                found = diagnose(engine, ctx.splits)
            row = epoch_row(state, s, acc, correct, evaluation.seconds, losses.sum(), len(ctx.splits.val_y),
                            len(ctx.splits.test_y)) | found | {"diagnostics_seconds": diagnosis.seconds}
            state.rows.append(row)
            state.epoch, state.order = state.epoch + 1, None
            if acc.is_main_process:
                results.write_epochs(cell_dir, state.rows)
            if state.epoch <= s.train.epochs:  # a kill from here on resumes at this epoch's end
                state.stream, state.step_norms = stream.state(), None
                checkpoint.save(cell_dir, rank, world, state, engine.eval_model, engine.optimizer)
            ctx.on_epoch()
            acc.log({f"{cell.id}/{k}": v for k, v in row.items() if v is not None and k != "epoch"}, step=row["epoch"])
            ctx.progress.epoch_line(cell.id, row, s.train.epochs)
    finally:
        monitor.stop()
    checkpoint.path_for(cell_dir, rank).unlink(missing_ok=True)  # finished: nothing to resume
    gpu = over_ranks(acc, {k: (v, GPU_REDUCE[k]) for k, v in monitor.summary().items()})
    summary = summarize(state.rows, s, state.first_losses, state.warmup_seconds, world, gpu, ctx.environment) \
        if state.rows else {"epochs_completed": 0}
    summary |= {"preemptions": state.preemptions}
    if state.diverged_at_step is not None:
        summary |= {"diverged_at_step": state.diverged_at_step, "last_finite_loss": state.last_finite_loss}
        return "diverged", summary
    return "done", summary


def diagnose(engine, splits: Splits) -> dict[str, Any]:
    """The epoch's diagnostics; identical on every rank (same weights, same probe), no reduction."""
    found = diagnostics.epoch_diagnostics(engine.eval_model, engine.optimizer, splits.train_x, splits.train_y)
    return found | (engine.norms.read_and_reset() if engine.norms is not None else {})


def _first_nonfinite(acc: Accelerator, losses: torch.Tensor) -> int | None:
    """The first step of the epoch whose loss was not finite on any rank, or None."""
    bad = (~torch.isfinite(losses)).to(torch.float64)
    bad = acc.reduce(bad, "sum") if acc.num_processes > 1 else bad
    nonzero = torch.nonzero(bad).flatten()
    return int(nonzero[0]) if len(nonzero) else None


def _add(total: float | None, joules: float | None, empty_window: bool) -> float | None:
    """Energy adds up across the runs of a resumed epoch; unknown anywhere is unknown."""
    if empty_window:
        return total
    if joules is None:
        return None
    return joules if total is None else total + joules


def _resume(cell_dir: Path, rank: int, world: int, engine, stream: IndexStream, ctx: RunContext):
    saved = checkpoint.load(cell_dir, rank, world)
    if saved is None:
        return None
    engine.eval_model.load_state_dict(saved["model"])
    engine.optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    state = saved["state"]
    stream.restore(state.stream)
    if state.step_norms is not None and engine.norms is not None:
        engine.norms.restore(state.step_norms)
    ctx.progress.message(f"resumed {cell_dir.name} from its checkpoint at epoch {state.epoch}, step {state.step}")
    return state


def epoch_row(state, s: CellSettings, acc: Accelerator, correct: list[int], eval_seconds: float,
              loss_sum: torch.Tensor, n_val: int, n_test: int) -> dict[str, Any]:
    """One epochs.csv row; `loss_sum` is this rank's summed step losses."""
    steps_per_epoch, batch, world = s.steps_per_epoch, s.train.batch_size, acc.num_processes
    timed_steps = steps_per_epoch - _warm_steps_in(state, s)
    across = over_ranks(acc, {"train_seconds": (state.epoch_seconds, "max"), "eval_seconds": (eval_seconds, "max"),
                              "energy_j": (state.epoch_joules, "sum"),
                              **{k: (v, "max") for k, v in measure.memory_peaks(acc.device).items()}})
    return {
        "epoch": state.epoch,
        "train_loss": acc.reduce(loss_sum, "sum").item() / (steps_per_epoch * world),
        "train_accuracy": correct[0] / s.data.train_eval_size,
        "val_accuracy": correct[1] / n_val,
        "test_accuracy": correct[2] / n_test,
        "images_seen": state.steps_done * batch,
        "optimizer_steps": state.steps_done,
        "timed_steps": timed_steps,
        **across,
        "train_seconds": across["train_seconds"] if timed_steps else None,
        "time_per_image_s": across["train_seconds"] / (timed_steps * batch) if timed_steps else None,
        "energy_j": across["energy_j"] if timed_steps else None,
    }


def _warm_steps_in(state, s: CellSettings) -> int:
    """How many of this epoch's steps were warm-up: the cell's first warmup_steps steps."""
    before = min(s.train.warmup_steps, (state.epoch - 1) * s.steps_per_epoch)
    return min(s.train.warmup_steps - before, s.steps_per_epoch)


def evaluate(model: torch.nn.Module, splits: Splits, train_eval_size: int, acc: Accelerator) -> list[int]:
    """Correct counts on (train prefix, validation, test); each rank scores its slice, then one sum."""
    model.eval()
    sets = [(splits.train_x[:train_eval_size], splits.train_y[:train_eval_size]),
            (splits.val_x, splits.val_y), (splits.test_x, splits.test_y)]
    rank, world = acc.process_index, acc.num_processes
    correct = torch.stack([count_correct(model, x.tensor_split(world)[rank], y.tensor_split(world)[rank]) for x, y in sets])
    model.train()
    return acc.reduce(correct, "sum").tolist()


# several GPUs: the worst memory, the total power draw, the average utilisation and clock
GPU_REDUCE = {"nvml_peak_memory_used_bytes": "max", "power_mean_w": "sum", "gpu_util_mean_pct": "mean",
              "sm_clock_mean_mhz": "mean", "nvml_samples": "sum"}
REDUCE = {"max": lambda t: t.max(dim=0).values, "sum": lambda t: t.sum(dim=0), "mean": lambda t: t.mean(dim=0)}


def over_ranks(acc: Accelerator, values: dict[str, tuple[float | None, str]]) -> dict[str, float | int | None]:
    """One gather for several per-rank numbers, each reduced by its op: the slowest rank's time
    is the honest wall time of a data-parallel step, energy adds up, memory takes the worst.
    Unknown on any rank stays unknown (None), never 0."""
    raw = torch.tensor([math.nan if v is None else float(v) for v, _ in values.values()], dtype=torch.float64,
                       device=acc.device)
    table = acc.gather(raw).view(acc.num_processes, len(values))
    out = {}
    for i, (key, (value, op)) in enumerate(values.items()):
        column = table[:, i]
        reduced = REDUCE[op](column).item()
        out[key] = None if math.isnan(reduced) else (int(reduced) if isinstance(value, int) else reduced)
    return out


def summarize(rows: list[dict], s: CellSettings, first_losses: list[float], warmup_seconds: float, world: int,
              gpu: dict[str, Any], env: dict[str, Any]) -> dict:
    """Per-cell numbers; accuracy is the test accuracy at the best-validation epoch (first best)."""
    best = max(rows, key=lambda r: r["val_accuracy"])  # max keeps the earliest of equals
    timed = [r for r in rows if r["timed_steps"]]
    train_seconds = sum(r["train_seconds"] for r in timed)
    timed_images = sum(r["timed_steps"] for r in timed) * s.train.batch_size
    energies = [r["energy_j"] for r in timed]
    energy = sum(energies) if energies and None not in energies else None
    time_per_image = train_seconds / timed_images if timed_images else None
    precision = compute_precision(s.train.mixed_precision)
    peak = peak_flops(env.get("device_name"), precision) if env.get("device_type") == "cuda" else None
    last = rows[-1]
    return {
        "epochs_completed": len(rows),
        "steps_per_epoch": s.steps_per_epoch,
        "local_batch_size": s.train.batch_size // world,
        "learning_rate": s.optim.lr_for(s.train.batch_size),
        "optimizer_steps": last["optimizer_steps"],
        "images_seen": last["images_seen"],
        "best_epoch": best["epoch"],
        "best_val_accuracy": best["val_accuracy"],
        "test_accuracy_at_best_val": best["test_accuracy"],
        "final_val_accuracy": last["val_accuracy"],
        "final_test_accuracy": last["test_accuracy"],
        "final_train_loss": last["train_loss"] if math.isfinite(last["train_loss"]) else None,
        "warmup_steps": min(s.train.warmup_steps, s.train.epochs * s.steps_per_epoch),
        "warmup_seconds": warmup_seconds,
        "first_step_losses": first_losses,
        "train_seconds": train_seconds if timed else None,
        "timed_images": timed_images,
        "time_per_image_s": time_per_image,
        "images_per_second": timed_images / train_seconds if timed_images and train_seconds > 0 else None,
        "eval_seconds": sum(r["eval_seconds"] for r in rows),
        "peak_allocated_bytes": last["peak_allocated_bytes"],
        "peak_reserved_bytes": last["peak_reserved_bytes"],
        "peak_rss_bytes": last["peak_rss_bytes"],
        "energy_j": energy,
        "joules_per_image": energy / timed_images if energy is not None and timed_images else None,
        **gpu,
        "flops_per_image": flops_per_image(),
        "compute_precision": precision,
        "peak_flops": peak,
        "mfu": mfu(time_per_image, peak, world),
        "final_noise_scale": last.get("noise_scale"),
    }


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a CPU allocation failure surfacing as a RuntimeError."""
    text = str(exc)
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text))


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_cell(cell: Cell, ctx: RunContext) -> str:
    """Train a cell and record it: status running first, then done / diverged / failed; a cell
    asked to stop stays running, with its checkpoint, and returns "preempted"."""
    cell_dir = ctx.sweep_dir / cell.id
    main = ctx.accelerator.is_main_process
    record = {
        "schema_version": results.SCHEMA_VERSION,
        "sweep": ctx.sweep_name,
        "cell_id": cell.id,
        "cell_index": cell.index,
        "swept": cell.swept,
        "settings": cell.settings.model_dump(mode="json"),
        "environment": ctx.environment,
        "report": ctx.report_rules,
        "started_utc": measure.utc_now(),
        "status": "running",
    }
    if main:
        cell_dir.mkdir(parents=True, exist_ok=True)
        results.write_result(cell_dir, record)
    try:
        status, summary = train_loop(cell, ctx, cell_dir)
    except HarnessError:
        raise  # the results folder itself failed (disk full...): stop the sweep with one line
    except Exception as exc:  # the cell fails; the record says why; the sweep goes on
        status, summary = ("oom" if is_out_of_memory(exc) else "failed"), None
        record["error"] = f"{type(exc).__name__}: {exc}"
        if main:
            results.write_atomic(cell_dir / "traceback.txt", traceback.format_exc())
        exc.__traceback__ = None  # drop the frames that hold the model and optimizer
        release_memory(ctx.accelerator.device)
    if status == "preempted":  # still running as far as the sweep goes: its checkpoint waits
        record.update(preempted_utc=measure.utc_now(), **summary)
    else:
        record.update(status=status, summary=summary, finished_utc=measure.utc_now())
        record.setdefault("error", None)
    if main:
        results.write_result(cell_dir, record)
    return status
