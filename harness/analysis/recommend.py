"""The report's first screen, per variant: the sweet spot, the batch sizes tied with it, how sure
we are, and every caveat a careful reader needs (learning rate, seeds, edges of the grid).

Rule: among batch sizes whose mean test accuracy is within `tolerance` of the best (with several
seeds: in at least 5% of the draws, so seed noise alone drops none) and whose seeds
all reached the target, the one with the shortest time to target; ties between equal times go to
the smaller batch. harness/analysis/stats.py says how the draws are made and what counts as a tie.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from harness.analysis import conditions, stats
from harness.analysis.per_batch import ACCURACY, KEY, flat_point
from harness.config import ReportSettings
from harness.quality import DEFAULT as DEFAULT_QUALITY
from harness.quality import Quality


@dataclass(frozen=True)
class FollowUp:
    """What a caveat asks to run next: a --set value to copy as it is, or a learning-rate grid that
    answer.next_step builds from the config's rate and the rates it tried (around the rate, or one
    step beyond the highest or the lowest tried)."""

    setting: str | None = None  # e.g. "sweep.train.seed=[0,1,2]"
    retime: bool = False  # `harness retime` the sweep's folder: its seconds per step measured again
    lr_grid: Literal["around", "upwards", "downwards"] | None = None


@dataclass(frozen=True)
class Caveat:
    """A reason to trust the answer less, and how far it could move it: 3, the answer may lie
    elsewhere (the grid's edge, an untuned rate); 2, its ranking or precision (seeds, a rate at the
    edge of those tried, steps read at epoch ends). `next_step`: what to run to address it."""

    weight: int
    text: str
    next_step: FollowUp | None = None


@dataclass(frozen=True)
class Recommendation:
    variant: str
    batch_size: int | None
    explanation: str
    ties: list[int] = field(default_factory=list)
    flat: int | None = None
    tie_note: str = ""  # who is statistically tied with it, and by which test
    caveats: list[Caveat] = field(default_factory=list)  # heaviest first
    details: list[str] = field(default_factory=list)  # the rates picked and the like: worth reading, not a caveat
    secondary: list[str] = field(default_factory=list)  # the simpler rule (time per image alone), and when it matters

    @property
    def notes(self) -> list[str]:
        """Every sentence of the verdict after the explanation, in reading order."""
        return [n for n in (self.tie_note, *(c.text for c in self.caveats), *self.details, *self.secondary) if n]


def samples(cells: pd.DataFrame, windows: pd.DataFrame) -> dict[int, list[stats.CellSample]]:
    """What the draws are made from, per batch size, from the cells at their picked rate."""
    by_cell = dict(iter(windows.groupby(KEY))) if not windows.empty else {}
    out: dict[int, list[stats.CellSample]] = {}
    for row in cells.itertuples(index=False):
        w = by_cell.get((row.source, row.sweep, row.cell_id))
        steps = w["window_steps"].to_numpy(float) if w is not None else np.array([])
        rates = w["window_seconds"].to_numpy(float) / steps if w is not None else np.array([])
        reached = bool(row.reached_target)
        fitted = reached and row.steps_to_target_se > 0
        out.setdefault(int(row.batch_size), []).append(stats.CellSample(
            accuracy=float(getattr(row, ACCURACY)), reached=reached,
            time=float(row.time_to_target_s) if reached else np.nan,
            steps_low=float(row.steps_before_target) if reached else np.nan,
            steps_high=float(row.steps_after_target) if reached else np.nan,
            log_se=float(row.steps_to_target_se / row.steps_to_target) if fitted else 0.0,
            rates=rates, weights=steps))
    return out


def _fit_error(pick: pd.Series) -> str:
    """' ± N (fit)': the largest standard error of the seeds' fitted crossings, where one was fitted."""
    se = pick.get("steps_to_target_se")
    return f" ± {se:,.0f} (fit)" if se is not None and se > 0 else ""


def add_intervals(per_batch: pd.DataFrame, draws: stats.Draws | None) -> pd.DataFrame:
    """The 90% interval of time to target and the win share, per batch size."""
    per_batch = per_batch.copy()
    if per_batch.empty:
        return per_batch.assign(time_to_target_low_s=[], time_to_target_high_s=[], win_share=[])
    bounds = [stats.interval(draws, b) if draws else (None, None) for b in per_batch["batch_size"]]
    per_batch["time_to_target_low_s"] = [low for low, _ in bounds]
    per_batch["time_to_target_high_s"] = [high for _, high in bounds]
    per_batch["win_share"] = [draws.share.get(b) if draws else None for b in per_batch["batch_size"]]
    return per_batch


def recommend(variant: str, per_batch: pd.DataFrame, cells: pd.DataFrame, windows: pd.DataFrame,
              rules: ReportSettings, lr_rule: str, planned: list[int] = (),
              quality: Quality = DEFAULT_QUALITY, unit: str = "image") -> tuple[Recommendation, pd.DataFrame]:
    """One variant's verdict, and its per-batch table with intervals and win shares added.
    `planned`: the batch sizes of the sweep's plan (plan.json), so an edge of what has run so far
    is not mistaken for an edge of the grid. The metric's values (the target too) come oriented,
    higher is better (analysis/answer.py); the words show them in the metric's units."""
    target, tolerance, flat_threshold = rules.target_accuracy, rules.tolerance, rules.flat_threshold
    def shown(value: float, digits: int = 4) -> str:
        return quality.show(quality.oriented(value), digits)  # negating twice gives it back

    name, within = quality.name, f"{tolerance:.3f}" if quality.bounded else f"{tolerance:.3g}"
    ease = "lower" if quality.higher_is_better else "raise"
    if per_batch.empty:
        return Recommendation(variant=variant, batch_size=None,
                              explanation="No cell finished, so there is no sweet spot."), per_batch
    draws = stats.draw(samples(cells, windows), tolerance)
    per_batch = add_intervals(per_batch, draws)
    flat = flat_point(per_batch, flat_threshold) if len(per_batch) > 1 else None
    disturbed = _disturbed_caveat(cells)
    caveats = [*_conditions_caveat(cells), *_seed_caveat(per_batch), *_epoch_caveat(cells),
               *_rate_caveats(per_batch, lr_rule)]
    details = _rate_details(per_batch)
    best = per_batch[ACCURACY].max()
    eligible = per_batch[per_batch["batch_size"].isin(draws.eligible) & per_batch["time_to_target_s"].notna()]
    if eligible.empty:
        return Recommendation(variant=variant, batch_size=None, explanation=(
            f"No batch size within {within} of the best test {name} ({shown(best)}) reached the target "
            f"validation {name} {shown(target, 3)} in every seed; train longer or {ease} the target."),
            flat=flat, caveats=_ranked([*disturbed, *caveats]), details=details,
            secondary=_flat_notes(per_batch, flat, flat_threshold, planned, None, unit)), per_batch
    pick = eligible.sort_values(["time_to_target_s", "batch_size"]).iloc[0]
    winner = int(pick["batch_size"])
    ties = stats.tied_with(draws, winner, [int(b) for b in eligible["batch_size"]])
    explanation = (
        f"It reaches {shown(target, 3)} validation {name} in {pick['time_to_target_s']:.3g} s of training "
        f"(90% interval {pick['time_to_target_low_s']:.3g}-{pick['time_to_target_high_s']:.3g} s; "
        f"{int(pick['steps_to_target']):,} steps{_fit_error(pick)}, resolution "
        f"{int(pick['target_resolution_steps']):,} steps), "
        f"the fastest of the {len(eligible)} batch size(s) whose test {name} is within {within} of the best "
        f"({shown(best)}); it is the fastest in {draws.share[winner]:.0%} of {stats.RESAMPLES:,} draws.")
    caveats = [*_edge_caveats(per_batch, winner, planned), *caveats]
    power, more_seeds = _seeds_for_power(cells, eligible, winner)
    explanation += f" {power}" if power else ""
    caveats += [more_seeds] if more_seeds else []
    return Recommendation(variant=variant, batch_size=winner, explanation=explanation, ties=ties, flat=flat,
                          tie_note=_tie_sentence(winner, ties, draws),
                          caveats=_ranked([*disturbed, *caveats]), details=details,
                          secondary=_flat_notes(per_batch, flat, flat_threshold, planned, winner, unit)), per_batch


def _ranked(caveats: list[Caveat]) -> list[Caveat]:
    """Heaviest first; among equals, the order they were found in."""
    return sorted(caveats, key=lambda c: -c.weight)


def _tie_sentence(winner: int, ties: list[int], draws: stats.Draws) -> str:
    test = (f"Student's t over seeds, with each crossing's error and timing: in at least "
            f"{stats.TIE_SHARE:.0%} of draws it reaches the target no later than batch {winner}")
    if not ties:
        return f"No other batch size is statistically tied with it ({test})."
    named = ", ".join(f"{b} (wins {draws.share[b]:.0%})" for b in ties)
    return f"Statistically tied with it: batch size {named} ({test})."


def _disturbed_caveat(cells: pd.DataFrame) -> list[Caveat]:
    """Cells whose timing competed with other work (harness/timing.py): their times may be off,
    and the sweet spot with them; the follow-up trains them again, their records kept."""
    if "timing_disturbed" not in cells:
        return []
    hit = cells[(cells["status"] == "done") & (cells["timing_disturbed"] == True)]  # noqa: E712 (None stays out)
    hit = hit.sort_values(["batch_size", "seed", "cell_id"])
    if hit.empty:
        return []
    named = "; ".join(f"batch {int(r.batch_size)} seed {r.seed}: {r.timing_disturbed_reason}"
                      for r in hit.head(3).itertuples())
    more = f"; and {len(hit) - 3} more" if len(hit) > 3 else ""
    again = "re-timed" if hit["retimed"].any() else "timed"
    return [Caveat(3, f"The machine was busy while {len(hit)} of {len(cells)} cells were {again} ({named}{more}): "
                      "their times, and so the sweet spot, may be off; re-time them with the machine to itself (the "
                      "command below: no training), or train them again: harness run ... --retrain "
                      f"{','.join(hit['cell_id'])}.", FollowUp(retime=True))]


def _conditions_caveat(cells: pd.DataFrame) -> list[Caveat]:
    """Cells timed under different threads, devices, processes, torch or engines (conditions.py)."""
    text = conditions.caveat_text(conditions.differing(cells), "The cells compared here")
    return [Caveat(3, text)] if text else []


def _seeds_for_power(cells: pd.DataFrame, eligible: pd.DataFrame, winner: int) -> tuple[str | None, Caveat | None]:
    """How many seeds would separate the sweet spot from its nearest rival (the next-fastest batch
    size of those eligible) at 90% power, from the seed spread measured here (stats.seeds_needed):
    a sentence for the explanation, and a caveat with the command when more seeds are needed."""
    rivals = eligible[eligible["batch_size"] != winner].sort_values(["time_to_target_s", "batch_size"])
    if rivals.empty:
        return None, None
    rival = int(rivals.iloc[0]["batch_size"])
    times = {b: cells[(cells["batch_size"] == b) & cells["time_to_target_s"].notna()]["time_to_target_s"].tolist()
             for b in (winner, rival)}
    needed = stats.seeds_needed(times[winner], times[rival])
    if needed is None:
        return None, None
    have = min(len(times[winner]), len(times[rival]))
    count = f"more than {stats.MAX_SEEDS}" if needed > stats.MAX_SEEDS else f"{needed}"
    text = (f"Telling it from batch {rival} at 90% power (one-sided 5% test on the seed-to-seed spread measured "
            f"here) takes {count} seeds per batch size; this run has {have}.")
    if needed <= have:
        return text, None
    if needed > stats.MAX_SEEDS:
        return text, Caveat(2, f"Batch {winner} and {rival} are too close to rank by seeds alone: either is a fair "
                               f"choice.")
    return text, Caveat(2, f"Run {needed} seeds per batch size to rank it against batch {rival} (this run has {have}).",
                        FollowUp(setting=f"sweep.train.seed=[{','.join(map(str, range(needed)))}]"))


def _seed_caveat(per_batch: pd.DataFrame) -> list[Caveat]:
    if per_batch["n"].max() > 1:
        return []
    return [Caveat(2, "One seed per batch size: the intervals cover timing noise and the standard error of each "
                      "fitted crossing only, not seed-to-seed variation, which one seed cannot measure; sweep "
                      "train.seed to rank neighbours.",
                   FollowUp(setting="sweep.train.seed=[0,1,2]"))]


def _epoch_caveat(cells: pd.DataFrame) -> list[Caveat]:
    if not (cells["target_read_at"] == "epoch").any():
        return []
    return [Caveat(2, "Steps to target were read at epoch ends (these results have no validation checks, "
                      "evals.csv): each is known only to within an epoch, the ± resolution column; a run of this "
                      "harness checks within epochs.")]


def _rate_caveats(per_batch: pd.DataFrame, lr_rule: str) -> list[Caveat]:
    if per_batch["rates_tried"].max() <= 1:
        return [Caveat(3, f"The learning rate was not tuned per batch size (one rate each, {lr_rule}): at one "
                          f"rate, large batches can lose for a reason that has nothing to do with the hardware; "
                          f"sweep optim.lr to compare each at its best rate.", FollowUp(lr_grid="around"))]
    out = []
    for edge, way in (("highest", "upwards"), ("lowest", "downwards")):
        rows = [r for r in per_batch.itertuples() if r.lr_edge == edge]  # (missing is NaN in the frame)
        if rows:
            batches = ", ".join(str(int(r.batch_size)) for r in rows)
            rates = ", ".join(f"{r.learning_rate:.3g}" for r in rows)
            out.append(Caveat(2, f"Extend the learning-rate grid {way} for batch {batches}: the best rate there "
                                 f"({rates}) is the {edge} tried.", FollowUp(lr_grid=way)))
    return out


def _rate_details(per_batch: pd.DataFrame) -> list[str]:
    if per_batch["rates_tried"].max() <= 1:
        return []
    picked = ", ".join(f"{int(r.batch_size)}: {r.learning_rate:.3g}" for r in per_batch.itertuples())
    notes = [f"Learning rate tuned per batch size (the shortest time to target among rates within tolerance): "
             f"{picked}."]
    for r in per_batch.itertuples():
        if isinstance(r.lr_tied, list) and r.lr_tied:
            notes.append(f"At batch {int(r.batch_size)} the rates {', '.join(f'{x:.3g}' for x in r.lr_tied)} tie with "
                         f"{r.learning_rate:.3g} on time to target; the more accurate (then the smaller) is used.")
    return notes


def _edge_caveats(per_batch: pd.DataFrame, batch: int, planned: list[int] = (), rule: str = "sweet spot",
                  weight: int = 3) -> list[Caveat]:
    """A rule that lands on the edge of the grid does not know what lies beyond it."""
    sizes = sorted(per_batch["batch_size"].astype(int))
    if len(sizes) < 2 or batch not in (sizes[0], sizes[-1]):
        return []
    beyond = [b for b in planned if (b > batch if batch == sizes[-1] else b < batch)]
    if beyond:  # the plan goes further; those cells have not run yet
        return [Caveat(weight, f"The {rule} is the {'largest' if batch == sizes[-1] else 'smallest'} batch size "
                               f"measured ({batch}); the plan's {', '.join(map(str, sorted(beyond)))} have no result "
                               f"yet.")]
    wider = sorted(set(sizes) | ({2 * batch, 4 * batch} if batch == sizes[-1] else {max(1, batch // 2),
                                                                                    max(1, batch // 4)}))
    if batch == sizes[-1]:
        return [Caveat(weight, f"The {rule} is the largest batch size of the grid ({batch}): the grid ended first; "
                               f"extend it upwards (e.g. {2 * batch} and {4 * batch}) to see where it turns.",
                       FollowUp(setting=f"sweep.train.batch_size=[{','.join(map(str, wider))}]"))]
    return [Caveat(weight, f"The {rule} is the smallest batch size of the grid ({batch}): the grid ended first; "
                           f"extend it downwards (e.g. {max(1, batch // 2)} and {max(1, batch // 4)}) to see where "
                           f"it turns.", FollowUp(setting=f"sweep.train.batch_size=[{','.join(map(str, wider))}]"))]


def _flat_notes(per_batch: pd.DataFrame, flat: int | None, threshold: float, planned: list[int],
                winner: int | None, unit: str = "image") -> list[str]:
    """The simpler rule of the motivating case, and when it is the one to follow."""
    if flat is None:
        return []
    sentence = (f"Simpler rule: time per {unit} stops improving by more than {threshold:.0%} beyond batch size "
                f"{flat}. It is the answer when the number of epochs is fixed (a schedule, not a target).")
    edge = [c.text for c in _edge_caveats(per_batch, flat, planned, "flat point")]
    return [sentence, *edge, *_disagreement(winner, flat, unit)]


def _disagreement(winner: int | None, flat: int | None, unit: str = "image") -> list[str]:
    """Why the two rules name different batch sizes, in one sentence."""
    if winner is None or flat is None or winner == flat:
        return []
    if flat > winner:
        return [f"The rules disagree: batch {flat} still trains faster per {unit}, but batch {winner} reaches the "
                f"target sooner, because larger batches need more {unit}s (epochs) to get there."]
    return [f"The rules disagree: time per {unit} stops improving at batch {flat}, but batch {winner} reaches the "
            f"target sooner, because it needs fewer steps to get there at nearly the same speed per {unit}."]
