"""Train one cell under Accelerate and write its results. Read `train_loop` top to bottom.

No pandas, no seaborn here: the trainer only produces the files that the report reads.
"""

from __future__ import annotations

import copy
import gc
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from harness import checks
from harness.config import CellSettings, CheckSettings
from harness.errors import HarnessError
from harness.plan import Cell
from harness.record import faults, results
from harness.record.metrics import STEP_NORM_COLUMNS
from harness.training import checkpoint, diagnostics, measure, threads, workloads
from harness.training.checkpoint import LoopState
from harness.training.data import IndexStream, Splits, rank_slice
from harness.training.engine import Engine, build_engine
from harness.training.evaluation import evaluate, validate
from harness.training.preemption import StopRequest
from harness.training.progress import Progress
from harness.training.steps import run_steps
from harness.training.summary import summarize
from harness.training.telemetry import NvmlMonitor, compute_precision, count_flops


@dataclass
class RunContext:
    """What every cell of one process's run shares."""

    accelerator: Accelerator
    splits: Splits
    sweep_name: str
    sweep_dir: Path
    environment: dict[str, Any]
    progress: Progress
    stop: StopRequest
    checks: CheckSettings


def train_loop(cell: Cell, ctx: RunContext, cell_dir: Path) -> tuple[str, dict[str, Any]]:
    """Returns (status, summary); writes epochs.csv and evals.csv after every epoch. Resumes from a checkpoint."""
    accelerator, settings = ctx.accelerator, cell.settings.sized(len(ctx.splits.train_y))
    engine = build_engine(settings, accelerator, ctx.splits, workloads.resolve(cell))
    flops = count_flops(engine.eval_model, ctx.splits.train_x[:64], ctx.splits.train_y[:64], engine.workload.train_loss)
    engine.step = faults.wrap(engine.step, cell.id)
    stream = IndexStream(len(ctx.splits.train_y), settings.train.sampling, settings.train.seed)
    state = _resume(cell_dir, engine, stream, ctx) or LoopState(warmup_left=settings.train.warmup_steps)
    local = rank_slice(settings.train.batch_size, accelerator.process_index, accelerator.num_processes)
    schedule = checks.for_cell(settings, ctx.checks)
    measure.reset_memory_peaks(accelerator.device)
    monitor = NvmlMonitor(accelerator.device)
    monitor.start()
    ctx.progress.start_cell(cell.id, settings.total_steps)
    ctx.progress.advance(state.global_step)
    try:
        while state.epoch <= settings.train.epochs:
            if state.order is None:  # a fresh epoch: its global order, drawn once
                state.order = stream.next(settings.steps_per_epoch * settings.train.batch_size).view(
                    settings.steps_per_epoch, -1)
                state.step, state.epoch_seconds, state.epoch_joules = 0, 0.0, None
                state.losses = torch.zeros(settings.steps_per_epoch)
            # The epoch's order goes to the device once; no host round-trip inside the steps.
            # Each step's loss lands in a device buffer: one copy, like a running sum, but it
            # keeps which step first went non-finite.
            order = state.order[:, local].to(accelerator.device)
            losses = state.losses.to(accelerator.device)
            while state.step < settings.steps_per_epoch:  # one timed window per stretch between checks
                end = next(c for c in schedule if c > state.scheduled_step) - state.steps_done
                warm_up(engine, order, losses, state, ctx, end)
                timed_steps(engine, order, losses, state, ctx, monitor, end)
                if state.step < end:  # asked to stop: keep everything, leave
                    return preempt(cell_dir, state, engine, stream, losses)
                state.scheduled_step = state.global_step
                if _check_affordable(state, ctx.checks.budget, final=state.global_step == schedule[-1]):
                    check(engine, state, ctx)
                else:
                    state.checks_skipped += 1  # the window runs on to the next scheduled check
            if not end_epoch(cell.id, settings, ctx, cell_dir, state, engine, stream, losses):
                break  # diverged: the finite epochs are kept
    finally:
        monitor.stop()
    checkpoint.path_for(cell_dir, accelerator.process_index).unlink(missing_ok=True)  # finished: nothing to resume
    return closing_summary(state, settings, accelerator, monitor, ctx.environment, flops, engine)


def _check_affordable(state: LoopState, budget: float | None, final: bool) -> bool:
    """harness/checks.py's budget: checks cost at most `budget` of the training time."""
    spent = sum(e["check_seconds"] for e in state.evals)
    trained = (state.evals[-1]["train_seconds"] if state.evals else 0.0) + state.window_seconds \
        + state.window_warmup_seconds
    return checks.within_budget(spent, trained, state.evals[-1]["check_seconds"] if state.evals else None, budget,
                                final)


def _stopper(state: LoopState, ctx: RunContext):
    """A stop request is looked at before each step, by the cell's global step (ranks agree on it)."""
    return lambda step: ctx.stop.should_stop(ctx.accelerator, state.steps_done + step)


def warm_up(engine: Engine, order: torch.Tensor, losses: torch.Tensor, state: LoopState, ctx: RunContext,
            end: int) -> None:
    """The cell's first warmup_steps steps: outside the clock of time per image; their losses are
    read per step (a sync we can afford here), so first_step_losses compare across process counts."""
    accelerator = ctx.accelerator

    def keep_first(step: int, loss: torch.Tensor) -> None:
        losses[step] = loss
        state.first_losses.append(accelerator.reduce(loss.clone(), "mean").item())
        ctx.progress.advance_step()

    span = run_steps(engine, order.__getitem__, state.step, min(end, state.step + state.warmup_left),
                     stop=_stopper(state, ctx), on_loss=keep_first)
    if span.steps:  # an empty warm-up (the usual case) adds nothing
        state.step, state.warmup_left = state.step + span.steps, state.warmup_left - span.steps
        state.warmup_seconds += span.seconds
        state.window_warmup_steps += span.steps
        state.window_warmup_seconds += span.seconds


def timed_steps(engine: Engine, order: torch.Tensor, losses: torch.Tensor, state: LoopState, ctx: RunContext,
                monitor: NvmlMonitor, end: int) -> None:
    """Steps up to `end` in one timed window (training/steps.py: synced only at its two edges)."""

    def keep(step: int, loss: torch.Tensor) -> None:
        losses[step] = loss
        ctx.progress.advance_step()

    span = run_steps(engine, order.__getitem__, state.step, end, monitor=monitor, stop=_stopper(state, ctx),
                     on_loss=keep)
    state.step += span.steps
    state.epoch_seconds += span.seconds
    state.epoch_joules = _add(state.epoch_joules, span.joules, span.steps == 0)
    state.window_steps += span.steps
    state.window_seconds += span.seconds
    if span.joules is not None and span.seconds > (state.energy_window or [0.0])[0]:
        state.energy_window = [span.seconds, span.joules, span.steps * len(state.order[0])]


def check(engine: Engine, state: LoopState, ctx: RunContext) -> None:
    """Validation accuracy and loss at a scheduled step, on its own clock (outside every timed
    window); the row also closes the window of timed steps since the previous check."""
    accelerator, step = ctx.accelerator, state.global_step
    with measure.SyncedTimer(accelerator.device) as clock:
        correct, loss = validate(engine.eval_model, ctx.splits, accelerator, engine.workload)
    check_seconds = measure.over_ranks(accelerator, {"check_seconds": clock.seconds})["check_seconds"]
    before = state.evals[-1]["train_seconds"] if state.evals else 0.0
    n = len(ctx.splits.val_y)
    state.evals.append({"step": step, "epoch": state.epoch, "images_seen": step * len(state.order[0]),
                        "train_seconds": before + state.window_seconds + state.window_warmup_seconds,
                        "window_steps": state.window_steps, "window_seconds": state.window_seconds,
                        "window_warmup_steps": state.window_warmup_steps,
                        "window_warmup_seconds": state.window_warmup_seconds, "val_accuracy": correct / n,
                        "val_loss": loss / n, "check_seconds": check_seconds})
    state.checked_step = step
    state.window_steps, state.window_seconds, state.window_warmup_steps, state.window_warmup_seconds = 0, 0.0, 0, 0.0


def preempt(cell_dir: Path, state: LoopState, engine: Engine, stream: IndexStream,
            losses: torch.Tensor) -> tuple[str, dict[str, Any]]:
    """Asked to stop mid-epoch (USR1/TERM): checkpoint everything needed to resume at this step."""
    accelerator = engine.accelerator
    state.losses, state.stream = losses.cpu(), stream.state()
    state.step_norms = engine.norms.state() if engine.norms is not None else None
    state.preemptions += 1
    checkpoint.save(cell_dir, accelerator.process_index, accelerator.num_processes, state, engine.eval_model,
                    engine.optimizer)
    return "preempted", {"preemptions": state.preemptions, "checkpoint_step": state.global_step}


def end_epoch(cell_id: str, settings: CellSettings, ctx: RunContext, cell_dir: Path, state: LoopState, engine: Engine,
              stream: IndexStream, losses: torch.Tensor) -> bool:
    """Evaluate, diagnose, write the epoch's row and checkpoint; False when the epoch diverged."""
    accelerator = ctx.accelerator
    with measure.SyncedTimer(accelerator.device) as evaluation:  # its own clock, never part of time per image
        correct = evaluate(engine.eval_model, ctx.splits, settings.data.train_eval_size, accelerator, engine.workload)
    bad = _first_nonfinite(accelerator, losses)
    if bad is None and not diagnostics.weights_finite(engine.eval_model):
        bad = settings.steps_per_epoch  # the epoch's last update broke the weights: its loss was still finite
    if bad is not None:  # diverged: say where it broke
        state.diverged_at_step = state.steps_done + min(bad + 1, settings.steps_per_epoch)
        state.last_finite_loss = float(losses[bad - 1]) if bad else None
        return False
    state.steps_done += settings.steps_per_epoch
    with measure.SyncedTimer(accelerator.device) as diagnosis:  # outside the clock, like evaluation
        found = diagnose(engine, ctx.splits)
    row = epoch_row(state, settings, accelerator, correct, evaluation.seconds, diagnosis.seconds, losses.sum(),
                    ctx.splits) | found
    state.rows.append(row)
    state.epoch, state.order = state.epoch + 1, None
    if accelerator.is_main_process:
        results.write_epochs(cell_dir, state.rows)
        results.write_evals(cell_dir, state.evals)
    if state.epoch <= settings.train.epochs:  # a kill from here on resumes at this epoch's end
        state.stream, state.step_norms = stream.state(), None
        checkpoint.save(cell_dir, accelerator.process_index, accelerator.num_processes, state, engine.eval_model,
                        engine.optimizer)
    accelerator.log({f"{cell_id}/{k}": v for k, v in row.items() if v is not None and k != "epoch"}, step=row["epoch"])
    ctx.progress.epoch_line(cell_id, row, settings.train.epochs)
    return True


def closing_summary(state: LoopState, settings: CellSettings, accelerator: Accelerator, monitor: NvmlMonitor,
                    env: dict[str, Any], flops: int | None, engine: Engine) -> tuple[str, dict]:
    """The cell's status and summary once its loop has ended."""
    gpu = measure.over_ranks(accelerator, monitor.summary())
    summary = summarize(state.rows, settings, state.first_losses, state.warmup_seconds, accelerator.num_processes,
                        gpu, env, compute_precision(settings.train.mixed_precision), flops,
                        state.evals, state.energy_window) if state.rows else {"epochs_completed": 0}
    summary |= {"preemptions": state.preemptions, "checks_skipped": state.checks_skipped} | engine.mode_record()
    if state.diverged_at_step is not None:
        summary |= {"diverged_at_step": state.diverged_at_step, "last_finite_loss": state.last_finite_loss}
        return "diverged", summary
    return "done", summary


def diagnose(engine: Engine, splits: Splits) -> dict[str, Any]:
    """The epoch's diagnostics; identical on every rank (same weights, same probe), no reduction."""
    found = diagnostics.epoch_diagnostics(engine.eval_model, engine.optimizer, splits.train_x, splits.train_y,
                                          engine.workload.summed_loss)
    return found | (engine.norms.read_and_reset() if engine.norms is not None else dict.fromkeys(STEP_NORM_COLUMNS))


def _first_nonfinite(accelerator: Accelerator, losses: torch.Tensor) -> int | None:
    """The first step of the epoch whose loss was not finite on any rank, or None."""
    bad = (~torch.isfinite(losses)).to(torch.float64)
    bad = accelerator.reduce(bad, "sum") if accelerator.num_processes > 1 else bad
    nonzero = torch.nonzero(bad).flatten()
    return int(nonzero[0]) if len(nonzero) else None


def _add(total: float | None, joules: float | None, empty_window: bool) -> float | None:
    """Energy adds up across the windows of an epoch (and the runs of a resumed one); unknown
    anywhere is unknown."""
    if empty_window:
        return total
    if joules is None:
        return None
    return joules if total is None else total + joules


def _resume(cell_dir: Path, engine: Engine, stream: IndexStream, ctx: RunContext) -> LoopState | None:
    accelerator = ctx.accelerator
    saved = checkpoint.load(cell_dir, accelerator.process_index, accelerator.num_processes, ctx.progress.warning)
    if saved is None:
        return None
    fresh = (copy.deepcopy(engine.eval_model.state_dict()), copy.deepcopy(engine.optimizer.state_dict()),
             torch.get_rng_state(), stream.state())
    try:  # plain data of the wrong shape (other keys, sizes, types) must not leave the cell half-restored
        engine.eval_model.load_state_dict(saved["model"])
        engine.optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        state.scheduled_step = max(state.scheduled_step, state.checked_step)  # a checkpoint from before thinning
        stream.restore(state.stream)
        if state.step_norms is not None and engine.norms is not None:
            engine.norms.restore(state.step_norms)
    except Exception as exc:  # noqa: BLE001 - any misfit: start over, the file kept aside
        engine.eval_model.load_state_dict(fresh[0])
        engine.optimizer.load_state_dict(fresh[1])
        torch.set_rng_state(fresh[2])
        stream.restore(fresh[3])
        checkpoint.refuse(cell_dir, accelerator.process_index, f"it does not fit this cell's model: {exc}",
                          ctx.progress.warning)
        return None
    at = state.steps_done + (state.step if state.order is not None else 0)  # an epoch end: the next epoch's step 0
    ctx.progress.message(f"resumed {cell_dir.name} from its checkpoint after optimizer step {at:,} (epoch {state.epoch}, "
                         f"step {state.step if state.order is not None else 0})")
    return state


def epoch_row(state: LoopState, settings: CellSettings, accelerator: Accelerator, correct: list[int],
              eval_seconds: float, diagnostics_seconds: float, loss_sum: torch.Tensor, splits: Splits) -> dict[str, Any]:
    """One epochs.csv row (record/metrics.py, level epoch); `loss_sum` is this rank's summed step
    losses. The epoch's seconds and joules come from its spans, already combined over ranks."""
    steps_per_epoch, batch = settings.steps_per_epoch, settings.train.batch_size
    timed_steps = steps_per_epoch - _warm_steps_in(state, settings)
    across = measure.over_ranks(accelerator, {"train_loss": loss_sum.item() / steps_per_epoch,
                                              "eval_seconds": eval_seconds, **measure.memory_peaks(accelerator.device),
                                              "diagnostics_seconds": diagnostics_seconds})
    return {
        "epoch": state.epoch,
        "train_loss": across["train_loss"],
        "train_accuracy": correct[0] / min(settings.data.train_eval_size, len(splits.train_y)),
        "val_accuracy": correct[1] / len(splits.val_y),
        "test_accuracy": correct[2] / len(splits.test_y),
        "images_seen": state.steps_done * batch,
        "optimizer_steps": state.steps_done,
        "timed_steps": timed_steps,
        **across,
        "train_seconds": state.epoch_seconds if timed_steps else None,
        "time_per_image_s": state.epoch_seconds / (timed_steps * batch) if timed_steps else None,
        "energy_j": state.epoch_joules if timed_steps else None,
    }


def _warm_steps_in(state: LoopState, settings: CellSettings) -> int:
    """How many of this epoch's steps were warm-up: the cell's first warmup_steps steps."""
    before = min(settings.train.warmup_steps, (state.epoch - 1) * settings.steps_per_epoch)
    return min(settings.train.warmup_steps - before, settings.steps_per_epoch)


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
    """Train a cell and record it: status running first, then done / diverged / failed / oom; a cell
    asked to stop stays running, with its checkpoint, and returns "preempted"."""
    cell_dir = ctx.sweep_dir / cell.id
    main = ctx.accelerator.is_main_process
    environment = ctx.environment | threads.apply(cell.settings.train.threads)  # train.threads may be swept
    record = results.start_record(ctx.sweep_name, cell.id, cell.index, cell.swept, cell.settings.model_dump(mode="json"),
                                  environment, results.utc_now(), cell.workload)
    if main:
        cell_dir.mkdir(parents=True, exist_ok=True)
        results.write_result(cell_dir, record)
    error = None
    try:
        status, summary = train_loop(cell, ctx, cell_dir)
    except HarnessError:
        raise  # the results folder itself failed (disk full...): stop the sweep with one line
    except Exception as exc:  # the cell fails; the record says why; the sweep goes on
        status, summary = ("oom" if is_out_of_memory(exc) else "failed"), None
        error = f"{type(exc).__name__}: {exc}"
        if main:
            results.write_atomic(cell_dir / "traceback.txt", traceback.format_exc())
        exc.__traceback__ = None  # drop the frames that hold the model and optimizer
        release_memory(ctx.accelerator.device)
    if status == "preempted":  # still running as far as the sweep goes: its checkpoint waits
        record.update(preempted_utc=results.utc_now(), **summary)
    else:
        record = results.finish_record(record, status, summary, results.utc_now(), error)
    if main:
        results.write_result(cell_dir, record)
    return status
