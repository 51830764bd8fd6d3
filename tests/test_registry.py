"""record/metrics.py is the one list of recorded numbers: what the trainer writes is exactly what it
registers, so a misspelled key cannot vanish from the report (it fails here instead)."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from harness.config import CellSettings, CheckSettings, DataSettings, TrainSettings
from harness.plan import Cell
from harness.record.metrics import CELL_KEYS, CHECK_COLUMNS, EPOCH_COLUMNS, at
from harness.record.results import write_epochs
from harness.training.cell_run import CellRun, Course, RunContext
from harness.training.checkpoint import LoopState
from harness.training.data import to_device
from harness.training.images import find_mnist, load_mnist
from harness.training.preemption import StopRequest
from harness.training.progress import Progress
from harness.training.summary import epoch_row

ONLY_WHEN_DIVERGED = {"diverged_at_step", "last_finite_loss"}
WRITTEN = {m.key for m in at("cell") if not m.legacy}  # the rest is read in records of earlier versions


def mismatch(found, registered) -> dict[str, list[str]]:
    """What a failure should say: keys written but not registered, and registered but not written."""
    return {"not registered": sorted(set(found) - set(registered)), "not written": sorted(set(registered) - set(found))}


NONE = {"not registered": [], "not written": []}


@pytest.fixture(scope="module")
def tiny(data_dir):
    """A real engine on real MNIST, before any step: what the epoch row and summary read."""
    accelerator = Accelerator(cpu=True)
    splits = to_device(load_mnist(find_mnist(data_dir)), 5000, accelerator.device)
    return accelerator, splits


def settings(step_diagnostics: bool = False) -> CellSettings:
    return CellSettings(train=TrainSettings(batch_size=64, epochs=1, images_per_epoch=640, untimed_steps=2,
                                            step_diagnostics=step_diagnostics),
                        data=DataSettings(train_eval_size=1000))


def cell_run(tiny, cell_dir, step_diagnostics: bool = False) -> CellRun:
    """A grid cell's run on real MNIST, before any step: what the epoch row and summary read."""
    accelerator, splits = tiny
    ctx = RunContext(accelerator=accelerator, splits=splits, progress=Progress(True, True), stop=StopRequest(),
                     checks=CheckSettings(), environment={"device_type": "cpu", "device_name": "Test CPU"})
    cell = Cell(index=0, id="bs64", settings=settings(step_diagnostics), swept={})
    return CellRun(cell, ctx, Course.of_cell(cell, ctx.checks, len(splits.train_y)), cell_dir)


@pytest.mark.parametrize("step_diagnostics", [False, True])
def test_an_epoch_row_has_exactly_the_registered_columns(tiny, tmp_path, step_diagnostics):
    run = cell_run(tiny, tmp_path, step_diagnostics)
    state = LoopState(epoch=1, steps_done=run.settings.steps_per_epoch, epoch_seconds=0.5)
    row = epoch_row(state, run.settings, run.accelerator, [900, 4500, 9000], 0.1, 0.2, torch.tensor(3.0),
                    run.ctx.splits, run.plan) | run.diagnose()
    assert mismatch(row, EPOCH_COLUMNS) == NONE


def test_a_summary_has_exactly_the_registered_keys(tiny, tmp_path):
    run = cell_run(tiny, tmp_path)
    row = epoch_row(LoopState(epoch=1, steps_done=10, epoch_seconds=0.5), run.settings, run.accelerator,
                    [900, 4500, 9000], 0.1, 0.2, torch.tensor(3.0), run.ctx.splits, run.plan) | run.diagnose()
    run.state = LoopState(rows=[row], evals=[dict.fromkeys(CHECK_COLUMNS, 0.0)], first_losses=[2.3, 2.2])
    status, summary = run.summary(flops=1000)
    assert status == "done" and mismatch(summary, WRITTEN - ONLY_WHEN_DIVERGED) == NONE
    run.state.diverged_at_step, run.state.last_finite_loss = 7, 2.0
    status, summary = run.summary(flops=1000)
    assert status == "diverged" and mismatch(summary, WRITTEN) == NONE


@pytest.mark.slow
def test_a_trained_cell_records_exactly_the_registered_keys(small_sweep):
    """The same, from the files a real `harness run` wrote."""
    import csv
    import json

    for path in small_sweep.rglob("result.json"):
        assert mismatch(json.loads(path.read_text())["summary"], WRITTEN - ONLY_WHEN_DIVERGED) == NONE
        for name, columns in (("epochs.csv", EPOCH_COLUMNS), ("evals.csv", CHECK_COLUMNS)):
            with open(path.parent / name) as fh:
                assert tuple(next(csv.reader(fh))) == columns


def test_a_row_with_an_unregistered_key_is_refused_loudly(tmp_path):
    row = dict.fromkeys(EPOCH_COLUMNS) | {"peak_loss_spik": 1.0}
    with pytest.raises(ValueError, match="peak_loss_spik"):
        write_epochs(tmp_path, [row])
    assert not (tmp_path / "epochs.csv").exists()


def test_the_results_format_page_lists_every_registered_number():
    """docs/results-format.md's tables are generated from the registry; rerun
    `python -m harness.record.reference` when this fails."""
    from harness.record import reference

    text = reference.PAGE.read_text()
    assert reference.page_with_tables(text) == text
    assert all(f"| `{key}` |" in text for key in (*CELL_KEYS, *EPOCH_COLUMNS, *CHECK_COLUMNS))
