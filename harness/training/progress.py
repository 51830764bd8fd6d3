"""Progress for long sweeps: tqdm bars over cells and steps, and one log line per epoch.

Only the main process shows anything. Bars are off with --quiet or when stderr is not a
terminal (Slurm logs, CI); the per-epoch lines always print on the main process.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    def __init__(self, main_process: bool, quiet: bool):
        self.main = main_process
        self.bars = main_process and not quiet and sys.stderr.isatty()
        self.sweep: tqdm | None = None  # every cell's steps: its ETA weighs batch 8 and 2048 by their work
        self.steps: tqdm | None = None
        self._pending = 0
        self._stride = 1
        self._cell_left = 0  # this cell's steps not yet counted in the sweep bar

    def start_sweep(self, steps_per_cell: list[int]) -> None:
        if self.bars:
            count = len(steps_per_cell)
            self.sweep = tqdm(total=sum(steps_per_cell), desc=f"{count} cell{'s' * (count != 1)}", unit="step",
                              position=0,
                              dynamic_ncols=True)

    def start_cell(self, cell_id: str, total_steps: int) -> None:
        if self.steps is not None:
            self.steps.close()
        self._cell_left = total_steps
        if self.bars:
            self.steps = tqdm(total=total_steps, desc=cell_id, unit="step", position=1, leave=False, dynamic_ncols=True)
            # at most ~200 bar updates per cell keep the step loop free of printing work
            self._stride, self._pending = max(1, total_steps // 200), 0

    def advance_step(self) -> None:
        if self.steps is not None:
            self._pending += 1
            if self._pending >= self._stride:
                self.advance(self._pending)
                self._pending = 0

    def advance(self, steps: int) -> None:
        if self.steps is not None and steps:
            self.steps.update(steps)
            self._cell_left -= steps
            if self.sweep is not None:
                self.sweep.update(steps)

    def cell_finished(self) -> None:
        """A cell that stopped early (diverged, failed) still counts as all its steps."""
        if self.sweep is not None and self._cell_left > 0:
            self.sweep.update(self._cell_left)
        self._cell_left = 0

    def message(self, text: str) -> None:
        if self.main:
            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()  # logs under Slurm or a pipe show each epoch as it ends

    def warning(self, text: str) -> None:
        """One line on stderr, from every process that meets the problem (each has its own files)."""
        tqdm.write(f"warning: {text}", file=sys.stderr)

    def epoch_line(self, cell_id: str, row: dict, epochs: int, unit: str = "image") -> None:
        tpi = row["time_per_image_s"]
        per = "img" if unit == "image" else unit
        speed = f"{tpi * 1e6:.2f} us/{per}" if tpi is not None else "warm-up only"
        self.message(
            f"{cell_id} epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f} "
            f"train {row['train_accuracy']:.4f} val {row['val_accuracy']:.4f} "
            f"test {row['test_accuracy']:.4f} | {speed} | eval {row['eval_seconds']:.2f} s"
        )

    def close(self) -> None:
        for bar in (self.steps, self.sweep):
            if bar is not None:
                bar.close()
