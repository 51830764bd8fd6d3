"""Hand-made results folders with known answers, written through the harness's own writers.

The epoch rows are chosen by the test; everything else goes through the code the trainer uses:
results.start_record / finish_record / write_result / write_epochs, summary.summarize for the
summary, plan.plan_document for plan.json. So a test folder is in the real schema by construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import plan
from harness.checks import schedule
from harness.config import CellSettings, SweepConfig
from harness.record import results
from harness.record.metrics import CHECK_COLUMNS, EPOCH_COLUMNS
from harness.training.summary import summarize

STARTED, FINISHED = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def write_cell(sweep_dir: Path, settings: dict[str, Any], rows: list[dict[str, Any]], status: str = "done",
               error: str | None = None, environment: dict[str, Any] | None = None,
               variant: str | None = None, sweep: str | None = None, checks: list[dict[str, Any]] | None = None,
               swept: list[str] = ("train.batch_size", "train.seed")) -> str:
    """One cell: `rows` are epochs.csv rows (missing columns empty), `checks` evals.csv rows;
    `swept` names the settings the sweep varied. Returns the cell id."""
    cell_settings = CellSettings.model_validate(settings)
    swept = {key: plan.get_setting(cell_settings, key) for key in swept}
    cell_id = plan.cell_id(cell_settings, list(swept), variant)
    env = {"device_type": "cpu", "device_name": "Test CPU", "num_processes": 1, "command": "run.py --config x.yaml",
           **(environment or {})}
    full = [dict.fromkeys(EPOCH_COLUMNS) | row for row in rows]
    folder = sweep_dir / cell_id
    folder.mkdir(parents=True)
    if full:
        results.write_epochs(folder, full)
    if checks:
        results.write_evals(folder, [dict.fromkeys(CHECK_COLUMNS) | row for row in checks])
    record = results.start_record(sweep or sweep_dir.name, cell_id, 0,
                                  swept | ({"variant": variant} if variant else {}),
                                  cell_settings.model_dump(mode="json"), env, STARTED)
    finished = full and status in ("done", "diverged")  # what the trainer summarises
    summary = summarize(full, cell_settings, [], 0.0, env["num_processes"], {}, env, "fp32", None, checks or []) \
        if finished else None
    results.write_result(folder, results.finish_record(record, status, summary, FINISHED, error))
    return cell_id


def write_plan(sweep_dir: Path, config: dict[str, Any], list_cells: bool = False) -> list[plan.Cell]:
    """plan.json for a hand-made sweep: its config (report rules, variants) and, if asked, the
    cells that config expands to; returns those cells."""
    sweep_config = SweepConfig.model_validate({"name": sweep_dir.name, **config})
    cells = plan.expand(sweep_config) if list_cells else []
    results.write_plan(sweep_dir, plan.plan_document(sweep_config, cells, "harness run"))
    return cells


def epoch_rows(batch: int, steps: int, time_per_image: float, val: list[float], test: list[float],
               train: list[float] | None = None, **per_epoch: list[float]) -> list[dict[str, Any]]:
    """Epochs of `steps` optimizer steps each, every step timed, at the given accuracies."""
    train = train or test
    return [{"epoch": e + 1, "train_loss": 0.1, "train_accuracy": tr, "val_accuracy": v, "test_accuracy": t,
             "images_seen": (e + 1) * steps * batch, "optimizer_steps": (e + 1) * steps, "timed_steps": steps,
             "train_seconds": time_per_image * steps * batch, "time_per_image_s": time_per_image, "eval_seconds": 0.1,
             "peak_rss_bytes": 2**30} | {k: v[e] for k, v in per_epoch.items()}
            for e, (v, t, tr) in enumerate(zip(val, test, train))]


def check_rows(batch: int, steps_per_epoch: int, epochs: int, accuracy_at, seconds_per_step) -> list[dict[str, Any]]:
    """evals.csv rows on the real schedule (25 per decade from step 10, every epoch end):
    `accuracy_at(step)` gives the validation accuracy, `seconds_per_step(i)` the i-th window's speed."""
    rows, before, seconds = [], 0, 0.0
    for i, step in enumerate(schedule(epochs * steps_per_epoch, steps_per_epoch, 25, 10)):
        window = (step - before) * seconds_per_step(i)
        seconds += window
        rows.append({"step": step, "epoch": (step - 1) // steps_per_epoch + 1, "images_seen": step * batch,
                     "train_seconds": seconds, "window_steps": step - before, "window_seconds": window,
                     "window_warmup_steps": 0, "window_warmup_seconds": 0.0, "val_accuracy": accuracy_at(step),
                     "val_loss": 0.1, "check_seconds": 0.01})
        before = step
    return rows
