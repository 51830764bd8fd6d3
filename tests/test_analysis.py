"""Time to target at step resolution, the learning rate per batch size, the intervals' draws, and reports
that separate variants: on schedules, synthetic samples and hand-made folders with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import harness
from hypothesis import given, settings
from hypothesis import strategies as st
from records import check_rows, write_cell, write_plan
from test_report import as_number, parse

from harness import checks
from harness.analysis import per_batch, stats
from harness.analysis.collect import collect
from harness.analysis.crossing import crossing
from harness.report import page as report

# --- the schedule ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(steps_per_epoch=st.integers(1, 20_000), epochs=st.integers(1, 30), per_decade=st.integers(5, 60),
       first=st.integers(1, 50))
def test_every_gap_is_within_the_relative_resolution(steps_per_epoch, epochs, per_decade, first):
    total = steps_per_epoch * epochs
    points = checks.schedule(total, steps_per_epoch, per_decade, first)
    bound = checks.relative_resolution(per_decade)
    assert points == sorted(set(points)) and 1 <= points[0] and points[-1] == total
    assert set(range(steps_per_epoch, total + 1, steps_per_epoch)) <= set(points)  # every epoch end
    for before, after in zip(points, points[1:]):
        if before >= first:
            # never more than r - 1 of where the gap starts, unless one step is the least it can be
            assert after - before <= max(1, before * bound + 1e-9), (before, after)
        assert after - before <= steps_per_epoch


def test_resolution_of_25_per_decade_and_the_cap():
    assert checks.relative_resolution(25) == pytest.approx(0.0965, abs=1e-4)
    points = checks.schedule(100_000, 50_000, 25, 10, max_interval=1000)
    assert max(b - a for a, b in zip(points, points[1:])) == 1000
    assert len(checks.schedule(27_500, 6_875, 25, 10)) < 100  # the default sweep's bs8 cell: a handful per decade


# --- hand-made folders -------------------------------------------------------------------------

TARGET = 0.97


def crossing_at(steps: int):
    """A validation curve that reaches the target exactly at `steps`, rising by 0.01 per decade."""
    return lambda step: round(TARGET + 0.01 * math.log10(step / steps), 6)


def make(sweep: Path, batch: int, lr: float, seed: int, steps_to_target: int, accuracy: float,
         seconds_per_step: float = 1e-3, noise: float = 0.0, epochs: int = 3, steps_per_epoch: int | None = None,
         **settings_extra) -> str:
    """A done cell whose validation checks cross the target at `steps_to_target` and whose test
    accuracy (at its best validation epoch, the last) is `accuracy`."""
    spe = steps_per_epoch or 2 * steps_to_target // epochs + 1  # seeds of one cell: pass the same
    curve = crossing_at(steps_to_target)
    speed = np.random.default_rng(seed).normal(seconds_per_step, noise * seconds_per_step, 1000).clip(1e-6)
    rows = [{"epoch": e, "train_loss": 0.1, "train_accuracy": accuracy, "val_accuracy": curve(e * spe),
             "test_accuracy": accuracy, "images_seen": e * spe * batch, "optimizer_steps": e * spe,
             "timed_steps": spe, "train_seconds": spe * seconds_per_step, "time_per_image_s": seconds_per_step / batch,
             "eval_seconds": 0.1} for e in range(1, epochs + 1)]
    cell_settings = {"optim": {"lr": lr}, "train": {"batch_size": batch, "seed": seed, "epochs": epochs,
                                                    "images_per_epoch": spe * batch, "warmup_steps": 0}}
    for key, value in settings_extra.items():
        group, name = key.split("__")
        cell_settings.setdefault(group, {})[name] = value
    swept = ["train.batch_size", "optim.lr", "train.seed", *(k.replace("__", ".") for k in settings_extra)]
    return write_cell(sweep, cell_settings, rows, checks=check_rows(batch, spe, epochs, curve, lambda i: speed[i]),
                      swept=swept)


def build(sweep: Path, config: dict | None = None) -> tuple[str, object]:
    write_plan(sweep, {"report": {"target_accuracy": TARGET, "tolerance": 0.005}, **(config or {})})
    out = sweep.parent / f"{sweep.name}.html"
    proc = harness("report", str(sweep), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    return html, parse(html)


def per_batch_rows(parsed) -> list[dict]:
    return parsed.tables[0]


def test_steps_to_target_come_from_the_checks_with_their_resolution(tmp_path):
    sweep = tmp_path / "res"
    make(sweep, 64, 1e-3, 0, 5_000, 0.978)
    found = collect([sweep])
    cells = per_batch.add_time_to_target(found.cells, found.checks, found.epochs, TARGET)
    row = cells.iloc[0]
    points = found.checks["step"].tolist()
    first = next(s for s in points if s >= 5_000)
    # the curve `make` wrote is straight in log steps: the fitted crossing is where it was made to cross
    assert row["steps_to_target"] == pytest.approx(5_000, rel=1e-3) and row["target_read_at"] == "check"
    assert row["steps_to_target_first_check"] == first and row["steps_after_target"] == first
    assert row["steps_before_target"] == points[points.index(first) - 1] < row["steps_to_target"]
    assert row["target_resolution_steps"] / row["steps_to_target"] <= 0.1  # 25 checks per decade
    assert row["time_to_target_s"] == pytest.approx(row["steps_to_target"] * 64 * row["time_per_image_s"])
    without = per_batch.add_time_to_target(found.cells, pd.DataFrame(), found.epochs, TARGET).iloc[0]
    assert without["target_read_at"] == "epoch"  # a folder from before the checks: epoch resolution
    assert without["target_resolution_steps"] == found.epochs["optimizer_steps"].iloc[0]


def test_each_batch_size_is_compared_at_its_own_best_rate(tmp_path):
    """Known answer: batch 64 wins at 2e-3 (4e-3 is faster but 0.017 less accurate); batch 256's best
    rate is the highest tried (edge); at batch 16 two rates tie and the smaller is used."""
    sweep = tmp_path / "tuned"
    for seed in (0, 1):
        for lr, steps, acc in ((1e-3, 2000, 0.978), (2e-3, 1000, 0.977), (4e-3, 800, 0.960)):
            make(sweep, 64, lr, seed, steps, acc)
        for lr, steps, acc in ((1e-3, 900, 0.975), (2e-3, 500, 0.976), (4e-3, 300, 0.976)):
            make(sweep, 256, lr, seed, steps, acc, seconds_per_step=3e-3)
        for lr in (1e-3, 2e-3):
            make(sweep, 16, lr, seed, 4000, 0.977, seconds_per_step=0.5e-3)
    html, parsed = build(sweep)
    picked = {as_number(r["batch_size"]): as_number(r["learning_rate"]) for r in per_batch_rows(parsed)}
    assert picked == {16: 1e-3, 64: 2e-3, 256: 4e-3}
    assert "Extend the learning-rate grid upwards for batch 256" in html
    assert "At batch 16 the rates 0.002 tie with 0.001" in html
    assert "Every learning rate tried" in html and "was not tuned per batch size" not in html
    # batch 64 at 2e-3: 1,000 steps x 1 ms = 1 s; batch 256 at 4e-3: 300 x 3 ms = 0.9 s; batch 16: 4 s
    assert 'data-batch-size="256"' in html


def test_one_rate_per_batch_size_says_so(tmp_path):
    sweep = tmp_path / "fixed"
    for batch, steps in ((32, 3000), (128, 900), (512, 400)):
        make(sweep, batch, 1e-3, 0, steps, 0.975, seconds_per_step=batch * 1e-5)
    html, parsed = build(sweep, {"optim": {"lr": 1e-3}})
    assert "The learning rate was not tuned per batch size (one rate each, optim.lr=0.001 for every batch size)" in html
    assert ("One seed per batch size: the intervals cover timing noise and the standard error of each fitted "
            "crossing only") in html
    rows = per_batch_rows(parsed)
    for r in rows:  # the interval brackets the time, which is steps x time per step
        assert as_number(r["time_to_target_low_s"]) <= as_number(r["time_to_target_s"]) * 1.0001
    # 32: 3000 x 0.32 ms = 0.96 s, 128: 900 x 1.28 ms = 1.15 s, 512: 400 x 5.12 ms = 2.05 s
    assert 'data-batch-size="32"' in html and "smallest batch size of the grid (32): the grid ended first" in html


def test_a_variant_with_one_batch_size_gets_no_flat_point(tmp_path):
    sweep = tmp_path / "single"
    make(sweep, 64, 1e-3, 0, 1000, 0.978)
    html, _ = build(sweep)
    assert "Sweet spot: batch size 64" in html and "Simpler rule" not in html and "grid ended first" not in html


# --- the draws on synthetic samples (their coverage: tests/test_stats.py) ------------------------

def sample(steps: float, rate: float, accuracy: float, noise: float = 0.03, seed: int = 0) -> stats.CellSample:
    rng = np.random.default_rng(seed)
    rates = rng.normal(rate, noise * rate, 40).clip(1e-9)
    return stats.CellSample(accuracy=accuracy, reached=True, time=steps * float(rates.mean()), steps_low=steps * 0.92,
                            steps_high=steps, rates=rates, weights=np.full(40, 10.0))


def test_a_clear_winner_is_the_fastest_in_almost_every_draw():
    by_batch = {b: [sample(s, r, 0.978 - 0.0005 * i, seed=i) for i in range(3)]
                for b, s, r in ((16, 4000, 1e-3), (64, 1000, 1.2e-3), (256, 600, 4e-3))}
    draws = stats.draw(by_batch, tolerance=0.005)
    assert draws.share[64] > 0.95 and stats.tied_with(draws, 64, [16, 64, 256]) == []
    low, high = stats.interval(draws, 64)
    # read at a check (no line fitted): the crossing lies in the 8% before it, so the time just below
    point = np.mean([c.time for c in by_batch[64]])
    assert point * 0.92 < low < high <= point * 1.0001 and high / low < 1.1


def test_two_equal_batch_sizes_are_tied():
    by_batch = {b: [sample(1000, 1e-3, 0.978, seed=b + i) for i in range(3)] for b in (64, 128)}
    draws = stats.draw(by_batch, tolerance=0.005)
    assert 0.2 < draws.share[64] < 0.8 and 0.2 < draws.share[128] < 0.8
    winner = max(draws.share, key=draws.share.get)
    assert stats.tied_with(draws, winner, [64, 128]) == [128 if winner == 64 else 64]


def test_one_seed_intervals_cover_timing_noise_and_resolution_only():
    draws = stats.draw({64: [sample(1000, 1e-3, 0.978, noise=0.0)]}, tolerance=0.005)
    low, high = stats.interval(draws, 64)
    # no timing noise: the width is the check resolution (steps 920..1000) alone
    assert low == pytest.approx(0.92 * 1000 * 1e-3, rel=0.01) and high == pytest.approx(1.0, rel=0.01)
    assert np.all(draws.accuracies == 0.978)  # one seed: nothing to resample


def test_accuracy_within_seed_noise_is_kept_and_beyond_it_dropped():
    noisy = [sample(1000, 1e-3, a) for a in (0.960, 0.975, 0.990)]  # mean 0.975, wide spread
    steady = [sample(2000, 1e-3, a) for a in (0.9815, 0.982, 0.9825)]  # mean 0.982
    poor = [sample(500, 1e-3, a) for a in (0.950, 0.951, 0.952)]
    draws = stats.draw({64: noisy, 128: steady, 256: poor}, tolerance=0.005)
    assert stats.accuracy_noise_keeps(draws, 64, 0.005)  # 0.007 below, but within seed noise
    assert not stats.accuracy_noise_keeps(draws, 256, 0.005)  # 0.03 below, every resample


# --- every kind of sweep -----------------------------------------------------------------------

def test_figures_and_tables_separate_two_other_swept_settings(tmp_path):
    sweep = tmp_path / "two_more"
    for activation in ("relu", "softplus"):
        for sampling in ("shuffle", "with_replacement"):
            slower = (activation == "softplus") + 2 * (sampling == "with_replacement")
            for batch, steps in ((32, 3000), (256, 800)):
                make(sweep, batch, 1e-3, 0, steps + 100 * slower, 0.975, seconds_per_step=batch * 1e-5,
                     model__activation=activation, train__sampling=sampling)
    write_plan(sweep, {"report": {"target_accuracy": TARGET}})
    section = report._section(collect([sweep]), (sweep.name, sweep.name))
    variants = {f"model.activation={a}, train.sampling={s}" for a in ("relu", "softplus")
                for s in ("shuffle", "with_replacement")}
    assert {v.variant for v in section["verdicts"]} == variants
    assert len(section["per_batch"]["rows"]) == 8  # 4 variants x 2 batch sizes, none averaged
    for figure in section["figures"]:
        data = figure.data
        assert set(data["variant"]) == variants, figure.title
        if "epoch" not in data and "step" not in data:  # one point per variant and batch size
            assert not data.duplicated(["variant", "batch_size"]).any(), figure.title
    steps = next(f for f in section["figures"] if f.title.startswith("Steps to target")).data
    slow = steps[steps["variant"] == "model.activation=softplus, train.sampling=with_replacement"]
    # `make`'s curves are straight in log steps: the fitted crossing is where each was made to cross
    assert sorted(slow["steps_to_target"]) == pytest.approx([1100, 3300], rel=1e-3)


def test_an_ablation_opens_with_its_collapse_verdict(tmp_path):
    sweep = tmp_path / "ablation"
    for variant, batch, final in (("baseline", 1, 0.30), ("lr_1e-4", 1, 0.95), ("bs_100", 100, 0.95)):
        for seed in (0, 1):
            rows = [{"epoch": e, "train_loss": 0.1, "train_accuracy": a, "val_accuracy": a, "test_accuracy": a,
                     "images_seen": e * 100, "optimizer_steps": e * 100 // batch or e, "timed_steps": 100 // batch or 1,
                     "train_seconds": 1.0, "time_per_image_s": 0.01, "eval_seconds": 0.1}
                    for e, a in enumerate((0.90, 0.95, final), start=1)]
            write_cell(sweep, {"train": {"batch_size": batch, "seed": seed, "images_per_epoch": 100, "epochs": 3,
                                         "warmup_steps": 0}}, rows, variant=variant)
    html, _ = build(sweep, {"variants": {"baseline": {}, "lr_1e-4": {"optim.lr": 1e-4},
                                         "bs_100": {"train.batch_size": 100}}})
    first_screen = html[:html.index("<section>")]
    assert "Sweet spot" not in first_screen and "Simpler rule" not in first_screen
    assert "the question is the collapse" in first_screen and "The baseline collapsed in 2 of 2 seeds" in first_screen


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("override,message", [
    ("report.tolerance=-0.01", "report.tolerance: Input should be greater than or equal to 0"),
    ("sweep.optim.lr=[]", "'optim.lr' lists no values; give at least one, or remove it from the sweep"),
    ("checks.max_interval_steps=100000", "checks.max_interval_steps=100000 would check less often than once per epoch"),
])
def test_bad_tuning_input_is_one_line_and_exit_2(tmp_path, override, message):
    config = tmp_path / "c.yaml"
    config.write_text("name: c\nsweep:\n  train.batch_size: [64, 2048]\n")
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--set", override)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_target_no_cell_reaches_is_refused_before_writing(tmp_path):
    sweep = tmp_path / "low"
    make(sweep, 64, 1e-3, 0, 1000, 0.978)
    out = tmp_path / "r.html"
    proc = harness("report", str(sweep), "-o", str(out), "--target", "0.999")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--target 0.999: no cell reached it" in proc.stderr and not out.exists()


def test_the_crossing_does_not_move_with_the_check_schedule():
    """A rising curve with seed-like noise, read at a log schedule and at a dense one: the first
    check above the target reads the dense schedule early (it catches more upward spikes); the
    local fit (analysis/crossing.py) agrees between the two within 5%, and with the truth within 8%;
    its standard error, from the checks' scatter about the line, accounts for the two schedules'
    disagreement: 80-100% of the pairs lie within 1.645 combined standard errors (nominal 90%)."""
    import numpy as np

    from harness.analysis.crossing import crossing

    rng = np.random.default_rng(0)
    dense = np.arange(8, 4001, 8)
    log = np.unique(np.floor(10 ** np.arange(1, 3.61, 1 / 25))).astype(int)
    truth = lambda s: 0.99 - 0.5 * (s / 30) ** -0.8  # noqa: E731 - crosses 0.97 at step 1,677
    ratios_first, ratios_fit, dense_fit, within = [], [], [], []
    for _ in range(40):
        noise = {s: rng.normal(0, 0.004) for s in np.union1d(dense, log)}
        read = lambda steps, noise=noise: np.array([truth(s) + noise[s] for s in steps])  # noqa: E731
        first = [steps[np.argmax(read(steps) >= 0.97)] for steps in (log, dense)]
        fit = [crossing(steps, read(steps), 0.97) for steps in (log, dense)]
        ratios_first.append(first[0] / first[1])
        ratios_fit.append(fit[0].steps / fit[1].steps)
        dense_fit.append(fit[1].steps)
        within.append(abs(np.log(ratios_fit[-1])) <= 1.645 * np.hypot(fit[0].log_se, fit[1].log_se))
        assert fit[0].first_check == first[0] and fit[0].before < fit[0].steps <= fit[0].after
    assert np.exp(np.mean(np.log(ratios_first))) > 1.08  # the bias the estimator removes
    assert abs(np.exp(np.mean(np.log(ratios_fit))) - 1) < 0.05
    assert abs(np.median(dense_fit) / 1677 - 1) < 0.08  # a line through a curved stretch reads a little late
    assert 0.8 <= np.mean(within) < 1.0, np.mean(within)
    assert crossing(log, np.full(len(log), 0.5), 0.97) is None
    early = crossing(np.array([10, 20]), np.array([0.98, 0.99]), 0.97)  # two checks: the first one stands
    assert (early.steps, early.before, early.after, early.log_se) == (10.0, 0.0, 10.0, None)


def test_one_seed_draws_its_crossing_within_its_standard_error():
    """With one seed there is no seed spread to draw: the crossing's own standard error stands in
    for it (a 90% interval of about exp(+-1.645 se) around the time); with several seeds their
    spread already holds each one's fit noise, so it is not added again."""
    import numpy as np

    from harness.analysis import stats

    def cell(steps, log_se):
        return stats.CellSample(accuracy=0.98, reached=True, time=steps * 1e-3, steps_low=steps, steps_high=steps,
                                rates=np.array([1e-3]), weights=np.array([100.0]), log_se=log_se)

    one = stats.draw({64: [cell(1000, 0.1)]}, tolerance=0.01)
    low, high = stats.interval(one, 64)
    assert abs(low / 1.0 - np.exp(-1.645 * 0.1)) < 0.02 and abs(high / 1.0 - np.exp(1.645 * 0.1)) < 0.02
    two = stats.draw({64: [cell(1000, 0.1), cell(1000, 0.1)]}, tolerance=0.01)
    assert stats.interval(two, 64) == pytest.approx((1.0, 1.0))


def test_two_seeds_take_students_t_with_one_degree_of_freedom():
    """Two seeds 20% apart: the interval of their mean log time is mean +- 6.31 s / sqrt(2) (t with 1
    degree of freedom), not +-1.645 (the normal), nor the 3 means a seed bootstrap can draw."""
    import numpy as np

    from harness.analysis import stats

    times = np.array([1.0, 1.2])
    cells = [stats.CellSample(accuracy=0.98, reached=True, time=float(t), steps_low=900.0, steps_high=1000.0,
                              log_se=0.05, rates=np.array([1e-3]), weights=np.array([1.0])) for t in times]
    low, high = stats.interval(stats.draw({64: cells}, tolerance=0.01, resamples=200_000), 64)
    centre, half = np.log(times).mean(), 6.314 * np.log(times).std(ddof=1) / np.sqrt(2)
    assert np.log([low, high]) == pytest.approx([centre - half, centre + half], abs=0.02)
    assert high / low > 3  # what two seeds 20% apart can say about their mean


def test_the_first_screen_says_how_many_seeds_would_rank_the_sweet_spot(tmp_path):
    """Seed spread measured, the seeds a one-sided 5% test needs for 90% power to tell the sweet
    spot from its nearest rival: 2 (1.645 + 1.282)^2 s^2 / d^2 on log times to target. Here the
    seeds' log times spread by s = log(1.1) at both batch sizes and their means differ by d =
    log(1.1): 2 x 8.561 = 17.1, so 18 seeds; the caveat carries the command."""
    from harness.analysis import stats

    assert stats.seeds_needed([1.0, 1.1, 1.21], [1.1, 1.21, 1.331]) == 18
    assert stats.seeds_needed([1.0], [2.0, 2.1]) is None and stats.seeds_needed([1.0, 1.0], [2.0, 2.0]) is None
    assert stats.seeds_needed([1.0, 1.1], [1.0, 1.1]) == stats.MAX_SEEDS + 1  # no gap: no number of seeds will do
    sweep = tmp_path / "power"
    for seed, factor in enumerate((1.0, 1.1, 1.21)):
        make(sweep, 64, 1e-3, seed, round(2000 * factor), 0.976, seconds_per_step=1e-3, steps_per_epoch=1700)
        make(sweep, 256, 1e-3, seed, round(2200 * factor), 0.976, seconds_per_step=1e-3, steps_per_epoch=1800)
    write_plan(sweep, {"report": {"target_accuracy": TARGET}})
    (verdict,) = report._section(collect([sweep]), (sweep.name, sweep.name))["verdicts"]
    assert verdict.batch_size == 64
    assert "Telling it from batch 256 at 90% power" in verdict.explanation and "takes 18 seeds" in verdict.explanation
    (more,) = [c for c in verdict.caveats if c.text.startswith("Run 18 seeds per batch size")]
    assert more.next_step.setting == f"sweep.train.seed=[{','.join(map(str, range(18)))}]"


def test_the_shape_known_bound_is_the_spread_of_the_best_shift_estimator():
    """tests/benchmarks/schedule_robustness.py bounds every estimator by the one that knows the
    curve's shape: on a line in log steps with known noise, its number is the spread that estimator
    (the mean residual over the window, over the slope) actually shows between two schedules."""
    from benchmarks.schedule_robustness import shape_known_sd

    rng = np.random.default_rng(0)
    intercept, slope, sigma, crossing_steps = 0.80, 0.02, 0.006, 1000.0
    dense = np.arange(16, 4001, 16).astype(float)
    log = np.unique(np.round(10 ** np.arange(1, 3.61, 0.04)))
    steps = np.union1d(dense, log)

    def draw() -> pd.Series:
        return pd.Series(intercept + slope * np.log(steps) + rng.normal(0, sigma, len(steps)), index=steps)

    def shift(curve: pd.Series, schedule: np.ndarray) -> float:
        near = schedule[np.abs(np.log(schedule / crossing_steps)) <= math.log(2)]
        return float((curve[near] - intercept - slope * np.log(near)).mean() / slope)

    def bound(curve: pd.Series, window: float) -> float:
        frame = lambda schedule: pd.DataFrame({"step": schedule, "val_accuracy": curve[schedule].to_numpy()})  # noqa: E731
        return shape_known_sd(frame(dense), frame(log), crossing_steps, window)

    curves = [draw() for _ in range(2000)]
    spread = float(np.std([shift(c, log) - shift(c, dense) for c in curves]))
    # one run's bound carries the noise of its own noise estimate: compare the median over runs
    assert np.median([bound(c, 2.0) for c in curves[:40]]) == pytest.approx(spread, rel=0.1)
    assert bound(curves[0], 1e9) < bound(curves[0], 2.0)  # every check of the run: sharper


def test_a_crossing_with_a_huge_standard_error_gives_a_finite_interval():
    """One seed whose crossing was read from a few scattered checks (log_se 400): the draws stay
    finite (at most 10x the time either way) instead of overflowing to infinity."""
    from harness.analysis import stats

    cell = stats.CellSample(accuracy=0.98, reached=True, time=1.0, steps_low=90.0, steps_high=100.0, log_se=400.0,
                            rates=np.array([0.01]), weights=np.array([1.0]))
    times = stats.draw({64: [cell]}, tolerance=0.01).times[:, 0]
    assert np.isfinite(times).all() and times.min() >= 0.1 - 1e-9 and times.max() <= 10.0 + 1e-9
    assert times.max() > 5 * times.min()  # still wide: the error is kept, only bounded


def test_a_curve_flattening_at_the_target_gives_a_crossing_inside_its_checks():
    """A noisy curve that levels off at the target (drawn by tests/benchmarks/grid_coverage.py):
    the line refitted around the first check above 0.9 barely rises and reaches 0.9 far beyond the
    checks; the crossing stays inside the window it was fitted to (exp of it overflowed: the report
    stopped with OverflowError)."""
    steps = np.array([10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 25, 28, 30, 33, 36, 40, 44, 48, 52, 58, 63, 69, 76, 83,
                      91, 100, 110, 120, 132, 145, 158, 174, 191, 209, 229, 251, 275, 302, 331, 363, 398, 437, 479,
                      525, 575, 631, 692, 759, 832, 912, 1000, 1096, 1202, 1318, 1445, 1585, 1738], float)
    accuracy = np.array([
        0.8116, 0.80971, 0.81302, 0.81845, 0.81175, 0.82057, 0.82544, 0.82619, 0.82675, 0.8299, 0.82462, 0.8373,
        0.84078, 0.84102, 0.83814, 0.86117, 0.84291, 0.84994, 0.85463, 0.85477, 0.86018, 0.86283, 0.8583, 0.89284,
        0.87602, 0.84958, 0.86197, 0.87038, 0.87211, 0.8893, 0.88975, 0.88762, 0.87902, 0.87828, 0.88484, 0.88332,
        0.8902, 0.90558, 0.89708, 0.89958, 0.90017, 0.88007, 0.89358, 0.89289, 0.89546, 0.89857, 0.88875, 0.90146,
        0.90392, 0.89577, 0.89807, 0.89676, 0.90729, 0.89157, 0.89737, 0.90299, 0.91552])
    found = crossing(steps, accuracy, 0.9)
    assert found is not None and found.first_check == 302 and 302 / 2 <= found.steps <= steps[-1]
    assert found.before < found.steps <= found.after
