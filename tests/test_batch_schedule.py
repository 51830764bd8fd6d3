"""train.batch_schedule (harness/batch_plan.py) on real parts: the arithmetic of an epoch across a
switch, the refusals, a ramp cell on real MNIST whose rate moves by the scaling rule at the switch,
an exact resume from a stop before the switch, and one against two gloo processes."""

from __future__ import annotations

import pytest
from conftest import harness, read_json, trained_numbers, write_config
from hostile import one_line_error
from test_streamed import run_on

from harness.batch_plan import BatchPlan, in_steps, problem
from harness.config import ConfigError, load_config

RAMP = [[0, 32], [60, 128]]  # 60 steps of 32 (1,920 images), then batch 128


def test_an_epoch_across_a_switch_takes_both_batches_and_drops_only_its_rest():
    plan = BatchPlan(((0, 32), (60, 128)), 3200, 2)
    assert plan.epoch_batches(0) == [32] * 60 + [128] * 10  # 1,920 + 1,280 = 3,200
    assert plan.epoch_batches(1) == [128] * 25 and plan.total_steps == 95
    assert plan.examples_before(60) == 1920 and plan.examples_before(95) == 6400
    assert plan.examples_in(59, 61) == 32 + 128 and plan.batch_at(59) == 32 and plan.batch_at(60) == 128
    fixed = BatchPlan.fixed(64, 3200, 3)
    assert fixed.epoch_starts == (0, 50, 100, 150) and fixed.examples_before(7) == 448
    assert in_steps([[0, 32], [1000, 64]], "examples") == ((0, 32), (32, 64))  # 1,000 images: the 32nd step ends past
    assert "larger integer multiple" in problem([[0, 32], [10, 48]], "steps")
    assert "start at 0" in problem([[5, 32], [10, 64]], "steps")


@pytest.mark.parametrize("train, words", [
    ({"batch_schedule": [[0, 32], [10, 48]]}, "larger integer multiple"),
    ({"batch_schedule": [[0, 32], [10, 64]], "batch_size": 64}, "drop train.batch_size"),
    ({"batch_schedule": [[0, 32], [10, 64]], "micro_batch_size": 16}, "train.micro_batch_size"),
    ({"batch_schedule": [[0, 32], [10, 64]], "mode": "cuda_graphs", "untimed_steps": 5}, "eager or compile"),
    ({"batch_schedule_unit": "examples"}, "needs train.batch_schedule"),
])
def test_a_schedule_that_cannot_run_is_refused_in_one_line(tmp_path, train, words):
    config = write_config(tmp_path, {"name": "bad", "train": train})
    with pytest.raises(ConfigError, match=words):
        load_config(config)
    line = one_line_error(harness("plan", "--config", str(config)))
    assert words in line


def ramp_config(tmp_path, name: str = "ramp", **train) -> str:
    """Two epochs of 3,200 images, every check run (a resume compares evals.csv), sqrt scaling."""
    return str(write_config(tmp_path, {
        "name": name, "optim": {"lr_scaling": "sqrt", "lr_reference_batch": 32}, "checks": {"budget": None},
        "train": {"epochs": 2, "images_per_epoch": 3200, "untimed_steps": 2, "diagnostics": "off",
                  "batch_schedule": RAMP} | train}, f"{name}.yaml"))


def test_a_ramp_cell_moves_its_rate_at_the_switch_and_resumes_across_it_exactly(tmp_path):
    config = ramp_config(tmp_path)
    whole = harness("run", "--config", config, "--results-dir", str(tmp_path / "whole"), "--no-report")
    assert whole.returncode == 0, whole.stderr[-3000:]
    (cell,) = (p.parent for p in (tmp_path / "whole" / "ramp").glob("*/result.json"))
    record = read_json(cell / "result.json")
    assert record["summary"]["optimizer_steps"] == 95 and record["summary"]["images_seen"] == 6400
    assert "x2 from step 60 (batch 128)" in record["summary"]["schedule_ran"]
    checks = trained_numbers(cell)["evals.csv"]
    rates = {int(c["step"]): float(c["lr_at_check"]) for c in checks}
    assert rates == pytest.approx({s: 2e-3 if s >= 60 else 1e-3 for s in rates})  # the next step's rate
    assert min(rates) < 60 < max(rates) == 95
    images = {int(c["step"]): int(c["images_seen"]) for c in checks}
    assert all(images[s] == (32 * s if s <= 60 else 1920 + 128 * (s - 60)) for s in images)
    # harness retime times both of the ramp's batches (its settings, each batch fixed), no training
    retimed = harness("retime", str(tmp_path / "whole" / "ramp"), timeout=900)
    assert retimed.returncode == 0, retimed.stderr[-2000:]
    timings = read_json(tmp_path / "whole" / "ramp" / "retime.json")["timings"]
    assert [t["batch_size"] for t in timings] == [32, 128] and all(t["seconds_per_step"] > 0 for t in timings)
    assert {t["cell_id"] for t in timings} == {f"{cell.name}-at-32", f"{cell.name}-at-128"}
    stopped = harness("run", "--config", config, "--results-dir", str(tmp_path / "cut"), "--no-report",
                      env={"HARNESS_FAULT": "usr1@50"})  # ten steps before the switch
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    resumed = harness("run", "--config", config, "--results-dir", str(tmp_path / "cut"), "--no-report")
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr[-3000:]
    got, want = trained_numbers(tmp_path / "cut" / "ramp" / cell.name), trained_numbers(cell)
    assert got["epochs.csv"] == want["epochs.csv"]
    assert [r for r in got["evals.csv"] if r not in want["evals.csv"]] == []
    assert got == want


@pytest.mark.slow
def test_a_ramp_on_two_processes_trains_what_one_does(tmp_path):
    config = ramp_config(tmp_path, "ramp2", untimed_steps=80, epochs=1)  # 70 steps, every loss read
    one, two = run_on(1, config, tmp_path / "one"), run_on(2, config, tmp_path / "two")
    got, want = two["summary"]["first_step_losses"], one["summary"]["first_step_losses"]
    assert len(got) == 70 and got == pytest.approx(want, abs=1e-4)
    assert two["summary"]["local_batch_size"] == 16 and two["environment"]["num_processes"] == 2
