"""One run of a cell's settings, owned by one object: `CellRun.run` is the loop, read top to bottom.

A grid cell runs its whole course: every epoch end evaluated, written and checkpointed, a
preempted run resumed from its checkpoint. predict's short runs and its timing pass are the same
loop on another `Course`: they write nothing and end by their own stop rule. So the warm-up, the
timed windows, the checks' budget and the stop request exist here once.

No pandas, no seaborn here: the trainer only produces the files that the report reads.
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from harness import checks
from harness.config import CheckSettings
from harness.plan import Cell
from harness.quality import unit_of
from harness.record import faults, locks, results
from harness.training import checkpoint, data, diagnostics, measure, streamed, workloads
from harness.training.checkpoint import LoopState, Window
from harness.training.data import IndexStream, Splits, rank_slice
from harness.training.engine import build_engine
from harness.training.evaluation import evaluate, validate
from harness.training.preemption import StopRequest
from harness.training.progress import Progress
from harness.training.steps import run_steps
from harness.training.summary import epoch_row, summarize
from harness.training.telemetry import NvmlMonitor, compute_precision, count_flops


@dataclass
class RunContext:
    """What every run of one process shares."""

    accelerator: Accelerator
    splits: Splits
    progress: Progress
    stop: StopRequest
    checks: CheckSettings
    environment: dict[str, Any]
    capacity: dict[str, Any] | None = None  # capacity.json, for train.micro_batch_size auto

    def micro_batch(self, cell: Cell, failed_micro: int | None = None) -> int:
        """The cell's micro-batch per process (training/capacity_job.micro_batch_for)."""
        from harness.training.capacity_job import micro_batch_for

        local = cell.settings.local_batch(self.accelerator.num_processes)
        return micro_batch_for(cell.settings.train.micro_batch_size, local, self.capacity, failed_micro)


@dataclass(frozen=True)
class Course:
    """Where a run's windows end and when it is over: a grid cell's (`Course.of_cell`) or a probe's."""

    ends: tuple[int, ...]  # global steps where a window closes (a check where `validates`), sorted
    warmup_steps: int  # the run's first steps, outside the clock
    cap_steps: int | None  # the run's last step at the latest; None: its stop rule alone ends it
    validates: bool = True  # a window's end is a validation check, within checks.budget
    records: bool = True  # epoch ends are evaluated, written and checkpointed; the run resumes (a grid cell)
    every: int | None = None  # past the last of `ends`, a window ends every this many steps
    done: Callable[[CellRun], bool] | None = None  # the stop rule, asked at every window's end

    @classmethod
    def of_cell(cls, cell: Cell, cfg: CheckSettings, train_examples: int) -> Course:
        """A grid cell: its epochs, checked at checks.for_cell's schedule."""
        settings = cell.settings.sized(train_examples)
        return cls(tuple(checks.for_cell(settings, cfg)), settings.train.untimed_steps, settings.total_steps)

    def next_end(self, step: int) -> int:
        """The first window end after global step `step`."""
        i = bisect.bisect_right(self.ends, step)
        if i < len(self.ends):
            return self.ends[i]
        if self.every is not None:
            last = self.ends[-1] if self.ends else 0
            return last + ((step - last) // self.every + 1) * self.every
        return self.cap_steps


class CellRun:
    """A cell's settings trained on one course: the engine, the sample stream, the loop state and
    the clocks, with the loop's phases as methods (warm_up, timed_window, check, end_epoch,
    checkpoint, summary)."""

    def __init__(self, cell: Cell, ctx: RunContext, course: Course, cell_dir: Path | None = None,
                 micro_batch: int | None = None):
        self.cell, self.ctx, self.course, self.cell_dir = cell, ctx, course, cell_dir
        self.settings = cell.settings.sized(ctx.splits.n_train)
        self.plan = self.settings.batch_plan  # each step's batch and each epoch's steps (train.batch_schedule)
        self.accelerator, train = ctx.accelerator, self.settings.train
        self.engine = build_engine(self.settings, self.accelerator, ctx.splits, workloads.resolve(cell),
                                   micro_batch=micro_batch or ctx.micro_batch(cell))
        self.engine.step = faults.wrap(self.engine.step, cell.id)
        self.stream = IndexStream(ctx.splits.n_train, train.sampling, train.seed)
        self.local = rank_slice(train.batch_size, self.accelerator.process_index, self.accelerator.num_processes)
        self.monitor = NvmlMonitor(self.accelerator.device) if course.records else None
        resumed = self._resume() if course.records else None
        self.state = resumed or LoopState(warmup_left=course.warmup_steps)
        # the stretches between the course's ends, in order (a probe's timing); a skipped check ends
        # a stretch but not the window evals.csv records, which runs on to the next check
        self.windows: list[Window] = []
        self._stretch_start = copy.copy(self.state.window)
        self.batch_at: Callable[[int], Any] | None = None  # step -> this rank's batch, for the epoch begun
        self.losses: torch.Tensor | None = None  # each step's loss this epoch, on the device
        self.stopped_by_rule = False
        self.diverged = False

    def run(self) -> tuple[str, dict[str, Any]]:
        """Train to the end of the course: ("done" | "diverged", summary), or ("preempted", ...)
        when asked to stop (a grid cell's checkpoint is written first)."""
        flops = self._flops() if self.course.records else None
        measure.reset_memory_peaks(self.accelerator.device)
        self.ctx.progress.start_cell(self.cell.id, self.course.cap_steps or 0)
        self.ctx.progress.advance(self.state.global_step)
        if self.monitor is not None:
            self.monitor.start()
        try:
            while not self.finished:
                if self.batch_at is None:
                    self.start_epoch()
                course_end = self.course.next_end(self.state.global_step)
                end = min(course_end - self.state.steps_done, self.epoch_steps)  # within this epoch
                self.engine.seek(self.state.global_step)  # the augmentation draws by the cell's step
                self.warm_up(end)
                self.timed_window(end)
                if self.state.step < end:  # asked to stop: keep everything, leave
                    return self.preempt()
                if self.state.global_step == course_end:  # else the epoch ended first: the window runs on
                    self.window_closed()
                if self.state.step == self.epoch_steps:
                    self.end_epoch()
        finally:
            if self.monitor is not None:
                self.monitor.stop()
        if self.cell_dir is not None:  # finished: nothing to resume
            checkpoint.path_for(self.cell_dir, self.accelerator.process_index).unlink(missing_ok=True)
        return self.summary(flops)

    @property
    def finished(self) -> bool:
        at_cap = self.course.cap_steps is not None and self.state.global_step >= self.course.cap_steps
        return at_cap or self.stopped_by_rule or self.diverged

    @property
    def epoch_steps(self) -> int:
        """Steps in the epoch under way (they differ across a batch switch)."""
        return self.plan.steps_in(self.state.epoch - 1) if self.plan.scheduled else self.settings.steps_per_epoch

    def start_epoch(self) -> None:
        """The epoch's global order, drawn once (a checkpoint may have brought it), goes to the
        device once (no host round-trip inside the steps), or to the loader (training/streamed.py),
        from the step the epoch is at. Each step's loss lands in a device
        buffer: one copy, like a running sum, but it keeps which step first went non-finite."""
        state, steps = self.state, self.epoch_steps
        sizes = self.plan.epoch_batches(state.epoch - 1) if self.plan.scheduled else None
        if state.order is None:
            drawn = self.stream.next(sum(sizes) if sizes else steps * self.settings.train.batch_size)
            state.order = drawn if sizes else drawn.view(steps, -1)
            state.step, state.epoch_seconds, state.epoch_joules, state.epoch_cpu_seconds = 0, 0.0, None, 0.0
            state.losses, state.epoch_input_wait = torch.zeros(steps), None
        rows = state.order[:, self.local] if sizes is None else \
            data.scheduled_rows(state.order, sizes, self.accelerator.process_index, self.accelerator.num_processes)
        self.batch_at = streamed.feed(self.ctx.splits, rows, state.step, self.settings, self.accelerator, state.epoch)
        self.losses = state.losses.to(self.accelerator.device)

    def _stopper(self) -> Callable[[int], bool]:
        """A stop request is looked at before each step, by the global step (ranks agree on it)."""
        return lambda step: self.ctx.stop.should_stop(self.accelerator, self.state.steps_done + step)

    def warm_up(self, end: int) -> None:
        """The run's first untimed_steps steps: outside the clock of time per image; their losses are
        read per step (a sync we can afford here), so first_step_losses compare across process counts."""
        state = self.state

        def keep_first(step: int, loss: torch.Tensor) -> None:
            self.losses[step] = loss
            state.first_losses.append(self.accelerator.reduce(loss.clone(), "mean").item())
            self.ctx.progress.advance_step()

        span = run_steps(self.engine, self.batch_at, state.step, min(end, state.step + state.warmup_left),
                         stop=self._stopper(), on_loss=keep_first)
        if span.steps:  # an empty warm-up (the usual case) adds nothing
            state.step, state.warmup_left = state.step + span.steps, state.warmup_left - span.steps
            state.warmup_seconds += span.seconds
            state.window.warmup_steps += span.steps
            state.window.warmup_seconds += span.seconds

    def timed_window(self, end: int) -> None:
        """Steps up to `end` in one timed window (training/steps.py: synced only at its two edges)."""
        state = self.state

        def keep(step: int, loss: torch.Tensor) -> None:
            self.losses[step] = loss
            self.ctx.progress.advance_step()

        span = run_steps(self.engine, self.batch_at, state.step, end, monitor=self.monitor,
                         stop=self._stopper(), on_loss=keep)
        start = state.global_step
        state.step += span.steps
        state.epoch_seconds += span.seconds
        state.epoch_joules = measure.add_energy(state.epoch_joules, span.joules, span.steps == 0)
        state.epoch_cpu_seconds += span.cpu_seconds or 0.0
        if span.input_wait_seconds is not None:
            state.epoch_input_wait = (state.epoch_input_wait or 0.0) + span.input_wait_seconds
        state.window.add(span)
        if span.joules is not None and span.seconds > (state.energy_window or [0.0])[0]:
            state.energy_window = [span.seconds, span.joules, self.plan.examples_in(start, state.global_step)]

    def window_closed(self) -> None:
        """One of the course's ends: a check where the course validates and the checks' budget
        allows it (a skipped check lets the window run on to the next end); then the stop rule."""
        window, start = self.state.window, self._stretch_start
        self.windows.append(Window(steps=window.steps - start.steps, seconds=window.seconds - start.seconds,
                                   warmup_steps=window.warmup_steps - start.warmup_steps,
                                   warmup_seconds=window.warmup_seconds - start.warmup_seconds,
                                   cpu_seconds=window.cpu_seconds - start.cpu_seconds,
                                   load_start=start.load_end, load_end=window.load_end))
        if not self.course.validates:
            self.state.window = Window()
        elif self.check_affordable():
            self.check()
        else:
            self.state.checks_skipped += 1
        self._stretch_start = copy.copy(self.state.window)
        self.stopped_by_rule = self.course.done is not None and self.course.done(self)

    def check_affordable(self) -> bool:
        """harness/checks.py's budget: checks cost at most checks.budget of the training time."""
        state = self.state
        spent = sum(e["check_seconds"] for e in state.evals)
        last = state.evals[-1]["check_seconds"] if state.evals else None
        return checks.within_budget(spent, state.trained_seconds, last, self.ctx.checks.budget,
                                    final=state.global_step == self.course.cap_steps)

    def check(self) -> None:
        """Validation accuracy and loss at a window's end, on its own clock (outside every timed
        window); the row also closes the window of steps since the previous check."""
        state = self.state
        with measure.SyncedTimer(self.accelerator.device) as clock:
            correct, loss = validate(self.engine.eval_model, self.ctx.splits, self.accelerator, self.engine.workload)
        check_seconds = measure.over_ranks(self.accelerator, {"check_seconds": clock.seconds})["check_seconds"]
        n = self.ctx.splits.n_val
        step = state.global_step
        state.evals.append({"step": step, "epoch": state.epoch, "images_seen": self.plan.examples_before(step),
                            "train_seconds": state.trained_seconds, **state.window.columns(torch.get_num_threads()),
                            "val_accuracy": correct / n, "val_loss": loss / n,
                            "lr_at_check": self.engine.learning_rate(), "check_seconds": check_seconds})
        self.state.window = Window()

    def end_epoch(self) -> None:
        """Diverged or not; a grid cell's epoch is then evaluated, diagnosed, written and checkpointed."""
        state = self.state
        bad = diagnostics.first_nonfinite(self.accelerator, self.losses)
        steps = self.epoch_steps
        if bad is None and not diagnostics.weights_finite(self.engine.eval_model):
            bad = steps  # the epoch's last update broke the weights: its loss was still finite
        if bad is not None:  # diverged: say where it broke; the finite epochs are kept
            state.diverged_at_step = state.steps_done + min(bad + 1, steps)
            state.last_finite_loss = float(self.losses[bad - 1]) if bad else None
            self.diverged = True
            return
        state.steps_done, state.step = state.steps_done + steps, 0
        if self.course.records:
            self.ensure_held()
            self.record_epoch()
        state.epoch, state.order, self.batch_at = state.epoch + 1, None, None
        if self.course.records and not self.finished:  # a kill from here on resumes at this epoch's end
            self.checkpoint()

    def record_epoch(self) -> None:
        """The epoch's row (evaluation and diagnostics on their own clocks, never part of time per
        image), written with the checks so far."""
        accelerator, splits, state = self.accelerator, self.ctx.splits, self.state
        with measure.SyncedTimer(accelerator.device) as evaluation:
            correct = evaluate(self.engine.eval_model, splits, self.settings.data.train_eval_size, accelerator,
                               self.engine.workload)
        with measure.SyncedTimer(accelerator.device) as diagnosis:
            found = self.diagnose()
        row = epoch_row(state, self.settings, accelerator, correct, evaluation.seconds, diagnosis.seconds,
                        self.losses.sum(), splits, self.plan) | found
        state.rows.append(row)
        if accelerator.is_main_process:
            results.write_epochs(self.cell_dir, state.rows)
            results.write_evals(self.cell_dir, state.evals)
        accelerator.log({f"{self.cell.id}/{k}": v for k, v in row.items() if v is not None and k != "epoch"},
                        step=row["epoch"])
        self.ctx.progress.epoch_line(self.cell.id, row, self.settings.train.epochs, unit_of(self.settings.workload))

    def diagnose(self) -> dict[str, Any]:
        """The epoch's diagnostics; at `full`, B_simple only within train.diagnostics_budget."""
        level = self.settings.train.diagnostics
        if level == "full" and not self.b_simple_affordable():
            level, self.state.b_simple_skipped = "light", self.state.b_simple_skipped + 1
        return diagnostics.diagnose(self.engine, self.ctx.splits, level)

    def b_simple_affordable(self) -> bool:
        """checks.within_budget's rule for B_simple: the first and the last epoch always; any other
        only if it and the last one keep the epoch diagnostics within train.diagnostics_budget of
        the training time so far."""
        rows, state = self.state.rows, self.state
        measured = [row["diagnostics_seconds"] for row in rows if row["noise_scale"] is not None]
        return checks.within_budget(sum(row["diagnostics_seconds"] for row in rows), state.trained_seconds,
                                    measured[-1] if measured else None, self.settings.train.diagnostics_budget,
                                    final=state.epoch == self.settings.train.epochs)

    def ensure_held(self) -> None:
        """Before the cell's folder is written: it is still this run's (record/locks.py), as the
        main process finds it; every rank stops together where it is not."""
        lost = [locks.lost(self.cell_dir) if self.accelerator.is_main_process else None]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(lost, from_process=0)
        if lost[0]:
            raise locks.LockLost(f"{self.cell.id}: its lock was taken over at step {self.state.global_step:,} (this "
                                 f"process did not renew it for {locks.LEASE_S:.0f} s: paused or stalled); stopped "
                                 "without writing: the run that took it over records the cell")

    def checkpoint(self) -> None:
        """Everything needed to resume at this step (training/checkpoint.py), one file per rank."""
        state, engine = self.state, self.engine
        state.stream = self.stream.state()
        if state.order is not None:  # mid-epoch: this epoch's losses so far
            state.losses = self.losses.cpu()
        state.step_norms = engine.norms.state() if engine.norms is not None and state.order is not None else None
        checkpoint.save(self.cell_dir, self.accelerator.process_index, self.accelerator.num_processes, state,
                        engine.eval_model, engine.optimizer, engine.scheduler)

    def preempt(self) -> tuple[str, dict[str, Any]]:
        """Asked to stop mid-epoch (USR1/TERM): a grid cell checkpoints to resume at this step."""
        self.state.preemptions += 1
        if self.course.records:
            self.ensure_held()
            self.checkpoint()
        return "preempted", {"preemptions": self.state.preemptions, "checkpoint_step": self.state.global_step}

    def summary(self, flops: int | None) -> tuple[str, dict[str, Any]]:
        """The run's status and, for a grid cell, its result.json summary."""
        state = self.state
        status = "diverged" if state.diverged_at_step is not None else "done"
        if not self.course.records:
            return status, {}
        gpu = measure.over_ranks(self.accelerator, self.monitor.summary())
        summary = summarize(state.rows, self.settings, state.first_losses, state.warmup_seconds,
                            self.accelerator.num_processes, gpu, self.ctx.environment,
                            compute_precision(self.settings.train.mixed_precision), flops, state.evals,
                            state.energy_window) if state.rows else {"epochs_completed": 0}
        summary |= {"preemptions": state.preemptions, "checks_skipped": state.checks_skipped,
                    "b_simple_skipped": state.b_simple_skipped} | self.ctx.splits.record()
        summary |= self.engine.mode_record() | self.engine.optimizer_record()
        if status == "diverged":
            summary |= {"diverged_at_step": state.diverged_at_step, "last_finite_loss": state.last_finite_loss}
        return status, summary

    def _restore(self, model: dict, optimizer: dict, rng: torch.Tensor, stream: dict, scheduler: dict | None) -> None:
        engine = self.engine
        engine.eval_model.load_state_dict(model)
        engine.optimizer.load_state_dict(optimizer)
        torch.set_rng_state(rng)
        self.stream.restore(stream)
        if engine.scheduler is not None:
            engine.scheduler.load_state_dict(scheduler)

    def _flops(self) -> int | None:
        x, y = self.ctx.splits.train_prefix(64)
        return count_flops(self.engine.eval_model, x, y, self.engine.workload.train_loss)

    def _resume(self) -> LoopState | None:
        """The checkpoint's state with the model, optimizer, schedule, RNG and stream restored; None
        (all of them as they were) where there is none or it does not fit this cell."""
        accelerator, engine, warn = self.accelerator, self.engine, self.ctx.progress.warning
        saved = checkpoint.load(self.cell_dir, accelerator.process_index, accelerator.num_processes, warn)
        if saved is None:
            return None
        fresh = (copy.deepcopy(engine.eval_model.state_dict()), copy.deepcopy(engine.optimizer.state_dict()),
                 torch.get_rng_state(), self.stream.state(), engine.scheduler and engine.scheduler.state_dict())
        try:  # plain data of the wrong shape (other keys, sizes, types) must not leave the cell half-restored
            state = saved["state"]
            self._restore(saved["model"], saved["optimizer"], saved["torch_rng"], state.stream, saved.get("scheduler"))
            if state.step_norms is not None and engine.norms is not None:
                engine.norms.restore(state.step_norms)
        except Exception as exc:  # noqa: BLE001 - any misfit: start over, the file kept aside
            self._restore(*fresh)
            checkpoint.refuse(self.cell_dir, accelerator.process_index, f"it does not fit this cell's model: {exc}",
                              warn)
            return None
        step = state.step if state.order is not None else 0  # an epoch end: the next epoch's step 0
        self.ctx.progress.message(f"resumed {self.cell_dir.name} from its checkpoint after optimizer step "
                                  f"{state.steps_done + step:,} (epoch {state.epoch}, step {step})")
        return state
