"""harness/analysis/stats.py: the grid's 90% intervals hold the truth 85-95% of the time at every
seed count, and its tie sets hold the truly fastest batch size at least 90% of the time, on
synthetic cells with a known truth read by the report's own crossing (tests/benchmarks/
grid_coverage.py: the intervals at the 400 trials of docs/measurement.md's table, whose sampling
error, 1.5 points, leaves the band's edges meaningful; the ties at 200) and on seed subsets of a
committed 9-seed grid. A seed bootstrap, the procedure these replaced, fails the same test."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks import grid_coverage

from harness.analysis import stats

TRIALS = 400
TIE_TRIALS = 200
FASHION_SEEDS = Path(__file__).parent.parent / "results" / "schedule-robustness" / "fashion_dense_seeds"


@pytest.mark.parametrize("bent", [True, False], ids=["bent curve", "straight curve"])
@pytest.mark.parametrize("seeds", grid_coverage.SEED_COUNTS)
def test_the_intervals_and_tie_sets_cover_at_every_seed_count(seeds, bent):
    held, _ = grid_coverage.interval_coverage(TRIALS, seeds, bent)
    assert 0.85 <= held <= 0.95, held
    tied, size = grid_coverage.tie_coverage(TIE_TRIALS, seeds, bent)
    assert tied >= 0.90 and size < len(grid_coverage.TIE_BATCHES), (tied, size)  # a tie set that names something


def test_a_seed_bootstrap_undercovers_with_few_seeds(monkeypatch):
    """The grid's intervals before: the seeds drawn with replacement. Two seeds give three means to
    draw from, and the interval holds the truth about half the time."""
    monkeypatch.setattr(stats, "_mean_draws", grid_coverage.bootstrap_mean_draws)
    held, _ = grid_coverage.interval_coverage(TIE_TRIALS, 2, bent=False)
    assert held < 0.7, held


def test_seed_subsets_of_a_committed_grid_cover_the_mean_of_all_its_seeds():
    """Fashion-MNIST, 9 seeds per batch size at 8..1024: each interval from 2 (then 3) of the seeds
    drawn at random against the mean time to target of all 9. Drawn without replacement from 9, a
    subset's mean lies nearer the 9 seeds' mean than a fresh sample's would, so a little over 90%."""
    lines = grid_coverage.subset_coverage(FASHION_SEEDS, (2, 3), 50, 0.86)
    for line in lines:
        share = float(line.split("|")[4].strip().rstrip("%")) / 100
        assert 0.85 <= share <= 0.98, line
