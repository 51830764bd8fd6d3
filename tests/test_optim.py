"""Optimizers and learning-rate schedules (harness/optim.py, training/engine.py): the schedule's
arithmetic against hand-computed rates, torch's optimizers as configured, the refusals, and a
real cell whose evals.csv carries the scheduled rate and whose resume after a stop request at a
step mid-schedule trains exactly what the uninterrupted cell trains."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from conftest import harness, read_json, trained_numbers, write_config

from harness.config import CellSettings
from harness.optim import OptimSettings
from harness.plan import cell_id
from harness.training.engine import build_optimizer


def test_a_warm_up_then_a_cosine_to_the_final_fraction_by_hand():
    schedule = OptimSettings(schedule="cosine", lr_warmup_steps=4, lr_final_fraction=0.1).schedule_for(104)
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(4) == 1.0 and schedule(54) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway down
    assert schedule(29) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 0.25)) / 2)
    assert schedule(104) == pytest.approx(0.1) and schedule(500) == pytest.approx(0.1)  # past the budget: final


def test_a_linear_decay_and_a_warm_up_given_as_a_fraction():
    schedule = OptimSettings(schedule="linear", lr_warmup_fraction=0.1).schedule_for(100)
    assert schedule.warmup == 10 and schedule(9) == 1.0 and schedule(10) == 1.0
    assert schedule(55) == pytest.approx(0.5) and schedule(100) == 0.0
    assert OptimSettings(lr_warmup_steps=3).schedule_for(50)(20) == 1.0  # warm-up, then constant


def test_torch_gets_the_optimizer_the_config_names():
    params = [torch.nn.Parameter(torch.zeros(3))]
    adamw = build_optimizer(CellSettings(optim={"name": "adamw", "weight_decay": 0.1}), params)
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["weight_decay"] == 0.1
    sgd = build_optimizer(CellSettings(optim={"name": "sgd", "momentum": 0.9, "nesterov": True, "lr": 0.1}), params)
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.9


def test_a_schedule_is_part_of_the_cell_id_and_the_defaults_keep_the_old_ids():
    plain = cell_id(CellSettings(), [])
    assert cell_id(CellSettings(optim={"schedule": "constant", "lr_warmup_steps": 0}), []) == plain
    ids = {cell_id(CellSettings(optim=o), []) for o in ({"schedule": "cosine"}, {"schedule": "linear"},
                                                         {"lr_warmup_steps": 10}, {"name": "adamw"})}
    assert len(ids) == 4 and plain not in ids


@pytest.mark.parametrize("sets, named", [
    (["optim.nesterov=true"], "optim.nesterov needs optim.name=sgd and optim.momentum > 0"),
    (["optim.lr_warmup_steps=10", "optim.lr_warmup_fraction=0.1"], "not both"),
    (["optim.lr_final_fraction=0.1"], "optim.lr_final_fraction needs optim.schedule=cosine or linear"),
    (["optim.schedule=cosine", "train.mode=cuda_graphs"], "holds the learning rate fixed in the captured step"),
    (["optim.name=lion"], "optim.name"),
])
def test_a_bad_optimizer_setting_is_one_line(sets, named):
    proc = harness("plan", *[a for s in sets for a in ("--set", s)])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and named in proc.stderr, proc.stderr


SCHEDULED = {"name": "sched", "optim": {"name": "adamw", "weight_decay": 0.01, "schedule": "cosine",
                                        "lr_warmup_steps": 6, "lr_final_fraction": 0.1, "lr": 2e-3},
             "train": {"batch_size": 32, "epochs": 2, "images_per_epoch": 640},
             "data": {"train_eval_size": 500}, "checks": {"budget": None}}


@pytest.mark.slow
def test_a_scheduled_cell_records_its_rates_and_resumes_exactly(tmp_path):
    """AdamW with a warm-up and a cosine over the cell's 40 steps: each check's rate is the hand
    formula's; stopped by a stop request after step 13 and run again, the cell trains exactly the
    uninterrupted one (losses, accuracies and rates of every epoch and check)."""
    config = write_config(tmp_path, SCHEDULED)
    whole = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "whole"), "--no-report")
    assert whole.returncode == 0, whole.stderr
    (cell,) = [p.parent for p in (tmp_path / "whole" / "sched").glob("*/result.json")]
    with open(cell / "evals.csv") as fh:
        rates = {int(r["step"]): float(r["lr_at_check"]) for r in csv.DictReader(fh)}
    for step, rate in rates.items():
        by_hand = (step + 1) / 6 if step < 6 else 0.1 + 0.9 * (1 + math.cos(math.pi * min(1, (step - 6) / 34))) / 2
        assert rate == pytest.approx(2e-3 * by_hand, rel=1e-9), step
    assert len(set(rates.values())) > 5 and read_json(cell / "result.json")["settings"]["optim"]["schedule"] == "cosine"
    stopped = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "cut"), "--no-report",
                      env={"HARNESS_FAULT": "usr1@13"})
    assert stopped.returncode == 3, stopped.stderr
    resumed = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "cut"), "--no-report")
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr
    assert trained_numbers(tmp_path / "cut" / "sched" / cell.name) == trained_numbers(cell)
