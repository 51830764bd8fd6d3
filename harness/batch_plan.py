"""The batch size at every optimizer step: one number for a fixed-batch cell, or `train.batch_schedule`'s
switches, e.g. [[0, 32], [2000, 128], [6000, 512]] (from step 2000 on, batch 128). Pure arithmetic, no
torch: the trainer, the check schedule, the summary and the report all read steps and examples here.

An epoch is `images_per_epoch` examples: its steps take the batch their global step asks for, as long
as the next batch still fits in what is left of the epoch; the rest is dropped (as drop_last drops
it), so an epoch across a switch has steps of two sizes.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class BatchPlan:
    switches: tuple[tuple[int, int], ...]  # (first global step, batch), sorted, the first at step 0
    images_per_epoch: int
    epochs: int

    @classmethod
    def fixed(cls, batch: int, images_per_epoch: int, epochs: int) -> BatchPlan:
        return cls(((0, batch),), images_per_epoch, epochs)

    @property
    def scheduled(self) -> bool:
        return len(self.switches) > 1

    def batch_at(self, step: int) -> int:
        """The global batch of optimizer step `step` (0-based)."""
        starts = [s for s, _ in self.switches]
        return self.switches[bisect.bisect_right(starts, step) - 1][1]

    @cached_property
    def epoch_starts(self) -> tuple[int, ...]:
        """The global step each epoch begins at, and after the last one the step budget."""
        starts, step = [0], 0
        for _ in range(self.epochs):
            step += len(self._walk(step))
            starts.append(step)
        return tuple(starts)

    def epoch_batches(self, epoch: int) -> list[int]:
        """Each step's global batch in epoch `epoch` (0-based)."""
        return self._walk(self.epoch_starts[epoch])

    def steps_in(self, epoch: int) -> int:
        return self.epoch_starts[epoch + 1] - self.epoch_starts[epoch]

    @property
    def total_steps(self) -> int:
        return self.epoch_starts[-1]

    def examples_before(self, step: int) -> int:
        """Examples trained on by the steps before `step` (an epoch's dropped rest is no step)."""
        ends = [s for s, _ in self.switches[1:]] + [step]
        return sum(max(0, min(end, step) - start) * batch for (start, batch), end in zip(self.switches, ends))

    def examples_in(self, start: int, end: int) -> int:
        """Examples trained on by steps start..end-1."""
        return self.examples_before(end) - self.examples_before(start)

    def _walk(self, start: int) -> list[int]:
        """The batches of the epoch that begins at global step `start`: whole segments at a time."""
        out, used, step = [], 0, start
        bounds = [s for s, _ in self.switches[1:]]
        while True:
            batch = self.batch_at(step)
            if used + batch > self.images_per_epoch:
                return out
            nxt = bounds[bisect.bisect_right(bounds, step)] if bisect.bisect_right(bounds, step) < len(bounds) else None
            room = (self.images_per_epoch - used) // batch
            take = room if nxt is None else min(room, nxt - step)
            out += [batch] * take
            used, step = used + take * batch, step + take


def in_steps(schedule: list[tuple[int, int]], unit: str) -> tuple[tuple[int, int], ...]:
    """train.batch_schedule as (first step, batch) pairs: `examples` points become the first step
    boundary at or past them (the step under way finishes at its own batch)."""
    if unit == "steps":
        return tuple((int(at), int(batch)) for at, batch in schedule)
    out, step, seen = [], 0, 0
    for i, (at, batch) in enumerate(schedule):
        if i:
            previous = out[-1][1]
            gap = max(0, at - seen)
            step += -(-gap // previous)
            seen += -(-gap // previous) * previous
        out.append((step, int(batch)))
    return tuple(out)


def problem(schedule: list[tuple[int, int]], unit: str) -> str | None:
    """Why train.batch_schedule cannot run (one clause naming the fix), or None."""
    if len(schedule) < 2:
        return "list at least two [at, batch] pairs (one is train.batch_size)"
    points = [at for at, _ in schedule]
    if points[0] != 0:
        return f"the first pair must start at 0 (it starts at {points[0]}): [[0, first batch], ...]"
    if any(b <= a for a, b in zip(points, points[1:])):
        return f"the {unit} where the batch switches must increase: {points}"
    sizes = [batch for _, batch in schedule]
    for small, large in zip(sizes, sizes[1:]):
        if large <= small or large % small:
            return (f"each batch must be a larger integer multiple of the one before ({small} -> {large}); "
                    f"e.g. [[0, 32], [2000, 128]]")
    return None


def describe(switches: tuple[tuple[int, int], ...]) -> str:
    """`32 -> 128 at step 2,000 -> 512 at step 6,000`."""
    return str(switches[0][1]) + "".join(f" -> {b} at step {s:,}" for s, b in switches[1:])


def of(train, images_per_epoch: int) -> BatchPlan:
    """TrainSettings' plan: its schedule, or its one batch size."""
    if train.batch_schedule is None:
        return BatchPlan.fixed(train.batch_size, images_per_epoch, train.epochs)
    return BatchPlan(in_steps(train.batch_schedule, train.batch_schedule_unit), images_per_epoch, train.epochs)


def with_first_batch(raw: Any) -> Any:
    """train settings as given, their batch_size the schedule's first batch (one that differs: refused)."""
    schedule = raw.get("batch_schedule") if isinstance(raw, dict) else None
    if isinstance(schedule, list) and schedule and isinstance(schedule[0], (list, tuple)) and len(schedule[0]) == 2:
        first = schedule[0][1]
        if raw.get("batch_size", first) != first:
            raise ValueError(f"train.batch_size={raw['batch_size']} but train.batch_schedule starts at batch "
                             f"{first}; drop train.batch_size (the schedule's first batch is it)")
        raw = {**raw, "batch_size": first}
    return raw


def refusal(train) -> str | None:
    """Why TrainSettings' schedule cannot run, in one line naming the fix, or None."""
    if train.batch_schedule is None:
        return None if train.batch_schedule_unit == "steps" else \
            "train.batch_schedule_unit needs train.batch_schedule; set one or drop it"
    if found := problem(train.batch_schedule, train.batch_schedule_unit):
        return f"train.batch_schedule: {found}"
    if train.micro_batch_size is not None:
        return ("train.batch_schedule changes B/P at each switch; train.micro_batch_size cannot follow it yet: "
                "drop one of them")
    return None
