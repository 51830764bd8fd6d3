"""record/metrics.py is the one list of recorded numbers: what the trainer writes is exactly what it
registers, so a misspelled key cannot vanish from the report (it fails here instead)."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from harness.config import CellSettings, DataSettings, TrainSettings
from harness.record.metrics import CELL_KEYS, CHECK_COLUMNS, EPOCH_COLUMNS, at
from harness.record.results import write_epochs
from harness.training import workloads
from harness.training.checkpoint import LoopState
from harness.training.data import to_device
from harness.training.engine import build_engine
from harness.training.images import find_mnist, load_mnist
from harness.training.telemetry import NvmlMonitor
from harness.training.train import closing_summary, diagnose, epoch_row

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
    return CellSettings(train=TrainSettings(batch_size=64, epochs=1, images_per_epoch=640, warmup_steps=2,
                                            step_diagnostics=step_diagnostics),
                        data=DataSettings(train_eval_size=1000))


@pytest.mark.parametrize("step_diagnostics", [False, True])
def test_an_epoch_row_has_exactly_the_registered_columns(tiny, step_diagnostics):
    accelerator, splits = tiny
    cell = settings(step_diagnostics)
    engine = build_engine(cell, accelerator, splits, workloads.builtin(cell))
    state = LoopState(epoch=1, steps_done=cell.steps_per_epoch, epoch_seconds=0.5)
    row = epoch_row(state, cell, accelerator, [900, 4500, 9000], 0.1, 0.2, torch.tensor(3.0), splits) \
        | diagnose(engine, splits)
    assert mismatch(row, EPOCH_COLUMNS) == NONE


def test_a_summary_has_exactly_the_registered_keys(tiny):
    accelerator, splits = tiny
    cell = settings()
    engine = build_engine(cell, accelerator, splits, workloads.builtin(cell))
    row = epoch_row(LoopState(epoch=1, steps_done=10, epoch_seconds=0.5), cell, accelerator, [900, 4500, 9000], 0.1,
                    0.2, torch.tensor(3.0), splits) | diagnose(engine, splits)
    evals = [dict.fromkeys(CHECK_COLUMNS, 0.0)]
    state = LoopState(rows=[row], evals=evals, first_losses=[2.3, 2.2])
    env = {"device_type": "cpu", "device_name": "Test CPU"}
    status, summary = closing_summary(state, cell, accelerator, NvmlMonitor(accelerator.device), env, 1000, engine)
    assert status == "done" and mismatch(summary, WRITTEN - ONLY_WHEN_DIVERGED) == NONE
    state.diverged_at_step, state.last_finite_loss = 7, 2.0
    status, summary = closing_summary(state, cell, accelerator, NvmlMonitor(accelerator.device), env, 1000, engine)
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
