"""`harness branch` (harness/prediction/branching.py) and its numbers (harness/analysis/critical.py,
schedules.py): the fit recovers a known critical batch from curves that follow McCandlish's
relation, the proposal switches only for its threshold, a ramp is named on the first screen only
when it beats the best fixed batch outside both intervals, and on real MNIST the command branches,
proposes a schedule that validates, and --verify trains it beside the grid into the report."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from conftest import DATA_DIR, harness, read_json, write_config

from harness.analysis import critical, schedules
from harness.config import TrainSettings
from harness.record.results import finite_or_null
from harness.report import ramps


def curves(b_crit: float, batches=(16, 32, 64, 128, 256), e_min: float = 500.0) -> dict[int, list]:
    """Improvement after e examples at batch B: 1 - exp(-e / E(B)), E(B) = E_min (1 + B / B_crit)."""
    return {b: [(e, 1 - math.exp(-e / (e_min * (1 + b / b_crit)))) for e in range(256, 4097, 256)] for b in batches}


@pytest.mark.parametrize("b_crit", [20.0, 100.0, 400.0])
def test_the_fit_recovers_a_known_critical_batch(b_crit):
    fit = critical.fit_point(curves(b_crit))
    assert fit.b_crit == pytest.approx(b_crit, rel=0.15) and fit.low <= fit.b_crit <= fit.high
    assert fit.e_over_e_min[16] < fit.e_over_e_min[256]  # larger batches spend more examples
    assert fit.s_over_s_min[16] > fit.s_over_s_min[256]  # and fewer steps


def test_no_gain_with_the_batch_is_a_bound_and_seeds_give_an_interval():
    flat = {b: [(e, e / 4096) for e in range(256, 4097, 256)] for b in (16, 32, 64)}
    assert critical.fit_point(flat).bound == "above 256"  # 4x the largest branch: beyond it, a bound
    worse = {b: [(4096, -0.1)] for b in (16, 32, 64)}
    assert critical.fit_point(worse).b_crit is None and "need 3" in critical.fit_point(worse).bound
    over = critical.across_seeds([90.0, 110.0, 100.0, None])
    assert over["fitted"] == 3 and over["low"] < 100 < over["high"]


def test_the_proposal_switches_only_where_the_predicted_saving_clears_the_threshold():
    per_example = {32: 2e-5, 64: 1.9e-5, 128: 1.0e-5}
    # B_crit 32 at the first point: 64 would save ~0%, 128 costs more examples than its speed gives back
    assert critical.propose([(1000, 32.0)], 32, [32, 64, 128], per_example, 0.05) == [[0, 32]]
    # B_crit 2000 later: 128 saves ~48% of the time per unit of progress
    assert critical.propose([(1000, 32.0), (9000, 2000.0)], 32, [32, 64, 128], per_example, 0.05) == \
        [[0, 32], [9000, 128]]
    assert critical.propose([(9000, 2000.0)], 32, [32, 64, 128], per_example, 0.6) == [[0, 32]]


def ramp_frames(ramp_times: list[float], fixed_times: dict[int, list[float]]):
    """Cells and checks as the report reads them: each cell crosses at step 100, its clock linear."""
    cells, checks = [], []
    rows = [("ramp", 32, "32 -> 128 at step 50", t) for t in ramp_times]
    rows += [("fixed", b, None, t) for b, times in fixed_times.items() for t in times]
    for i, (kind, batch, schedule, seconds) in enumerate(rows):
        cid = f"{kind}-{batch}-{i}"
        cells.append({"source": "r", "sweep": "s", "cell_id": cid, "status": "done", "variant": "",
                      "batch_size": batch, "learning_rate": 1e-3, "batch_schedule": schedule,
                      "batch_switches": ((0, 32), (50, 128)) if schedule else None,
                      "steps_to_target": 100.0, "warmup_seconds": 0.0})
        checks += [{"source": "r", "sweep": "s", "cell_id": cid, "step": s, "train_seconds": seconds * s / 100}
                   for s in (50, 100, 200)]
    return pd.DataFrame(cells), pd.DataFrame(checks)


def test_a_ramp_reaches_the_first_screen_only_when_faster_outside_both_intervals():
    faster = schedules.compare(*ramp_frames([5.0, 5.1, 4.9], {32: [9.0, 9.2, 8.8], 128: [8.0, 8.2, 7.9]}))
    (row,) = faster
    assert row["best_batch"] == 128 and row["beats"] and row["saving"] == pytest.approx(1 - 5 / 8.03, abs=0.01)
    assert row["time_s"] == pytest.approx(5.0, rel=0.01) and row["time_high_s"] < row["best_time_low_s"]
    assert "against the best fixed batch 128" in ramps.first_screen(faster)
    close = schedules.compare(*ramp_frames([5.0, 9.0, 7.0], {128: [8.0, 6.0, 7.5]}))
    assert not close[0]["beats"] and ramps.first_screen(close) is None
    assert "not faster outside the intervals" in ramps.words(close[0])


def test_a_retime_of_every_batch_times_the_ramp_phase_by_phase_and_the_grid_alike():
    """With harness retime's seconds per step for every batch the cells train at, both sides are
    steps x re-timed seconds per step (a ramp's 50 steps at 32, then 50 at 128); the clocks are unread."""
    frames = ramp_frames([50.0, 60.0, 55.0], {32: [1.0, 1.0, 1.0], 128: [2.0, 2.0, 2.0]})
    retime = {"timings": [{"batch_size": 32, "seconds_per_step": 0.01}, {"batch_size": 128, "seconds_per_step": 0.03}]}
    (row,) = schedules.compare(*frames, retime)
    assert row["retimed"] and row["time_s"] == pytest.approx(50 * 0.01 + 50 * 0.03)
    assert row["best_batch"] == 32 and row["best_time_s"] == pytest.approx(100 * 0.01) and row["saving"] < 0
    assert "re-timed side by side by harness retime" in ramps.words(row)
    # a retime that missed the ramp's batch 128: the clocks, said as such
    (clocked,) = schedules.compare(*frames, {"timings": retime["timings"][:1]})
    assert not clocked["retimed"] and clocked["best_time_s"] == pytest.approx(1.0, rel=0.01)
    assert "training clock at the crossing" in ramps.words(clocked)


@pytest.mark.slow
def test_branch_on_mnist_proposes_a_schedule_and_verify_trains_it_beside_the_grid(tmp_path):
    config = write_config(tmp_path, {
        "name": "br", "train": {"epochs": 1, "images_per_epoch": 8192, "untimed_steps": 2, "diagnostics": "off"},
        "sweep": {"train.batch_size": [16, 32, 64, 128]}, "report": {"target_accuracy": 0.8}})
    done = harness("branch", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--points", "3",
                   "--branch-steps", "8", "--threshold", "-1", "--verify", "--quiet", timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = read_json(tmp_path / "r" / "br" / "branch.json")
    (run,) = doc["runs"].values()
    runs = run["points"]
    assert run["reached_target"] and runs[-1]["step"] <= run["horizon_step"]
    assert len(runs) == 3 and all(len(p["branches"]) == 5 for p in runs)
    assert all(p["b_simple"] > 0 and p["val_loss"] > 0 for p in runs)
    assert runs[0]["examples"] < runs[1]["examples"] < runs[2]["examples"]
    for point in runs:  # every branch of a point trains the same examples
        assert {b["steps"] * b["batch_size"] for b in point["branches"]} == {point["branch_examples"]}
    assert doc["cost"]["share_of_grid_examples"] > 0 and "B_crit" in done.stdout
    proposal = doc["proposal"]  # threshold -1: a switch at every point where a larger batch was timed
    assert len(proposal) > 1 and proposal[0] == [0, 32]
    TrainSettings(batch_schedule=proposal, batch_schedule_unit="examples")  # a schedule the harness runs
    records = [read_json(p) for p in (tmp_path / "r" / "br").glob("*/result.json")]
    (ramped,) = [r for r in records if r["settings"]["train"]["batch_schedule"]]
    assert len(records) == 5 and ramped["status"] == "done"
    assert ramped["settings"]["train"]["batch_schedule"] == proposal
    page = (tmp_path / "r" / "br" / "report.html").read_text()
    assert "Batch-size ramps against the fixed batch sizes" in page and "Dashed: a batch-size ramp" in page
    cost = read_json(tmp_path / "r" / "br" / "branch.json")["cost"]
    assert cost["grid_train_seconds"] > 0 and cost["grid_cells_done"] == 4
    assert cost["grid_wall_seconds"] >= cost["grid_train_seconds"] - 4  # stamped to the second, cell by cell
    assert cost["share_of_grid_wall"] == pytest.approx(cost["wall_seconds"] / cost["grid_wall_seconds"])


@pytest.mark.slow
def test_branch_from_python_writes_and_returns_branch_json(tmp_path):
    import harness

    config = write_config(tmp_path, {
        "name": "py", "train": {"epochs": 1, "images_per_epoch": 4096, "untimed_steps": 2, "diagnostics": "off"},
        "sweep": {"train.batch_size": [16, 32, 64]}, "report": {"target_accuracy": 0.8}})
    spec = harness.SweepSpec.from_config(str(config), results_dir=tmp_path / "r", data_dir=DATA_DIR)
    doc = harness.branch(spec, points=2, branch_steps=4)
    written = read_json(tmp_path / "r" / "py" / "branch.json")
    assert json.loads(json.dumps(finite_or_null(doc))) == written  # what it returns is what it wrote
    assert doc["plan"]["base_batch"] == 32 and len(doc["b_crit"]) == 2 and doc["proposal"][0] == [0, 32]
    assert not list((tmp_path / "r" / "py").glob("*/result.json"))  # branching writes no cell result
