"""Batch-size ramps (train.batch_schedule) in the report: a line on the time-to-target figure beside
the fixed batch sizes, a sentence on the first screen only where a ramp was measured and beat the
best fixed batch outside both intervals, and its comparison in words below (analysis/schedules.py)."""

from __future__ import annotations


def draw(ax, ramps: list[dict]) -> None:
    """Each ramp's time to target as a dashed line across the batch axis, its 95% interval a band."""
    for i, ramp in enumerate(r for r in ramps if r["time_s"] is not None):
        colour = f"C{(i + 5) % 10}"
        ax.axhline(ramp["time_s"], color=colour, linestyle="--", linewidth=1.5,
                   label=f"ramp {ramp['schedule']} ({'re-timed' if ramp.get('retimed') else 'its clock'})")
        if ramp["time_low_s"] is not None:
            ax.axhspan(ramp["time_low_s"], ramp["time_high_s"], color=colour, alpha=0.12)


def caption(ramps: list[dict]) -> str:
    if not ramps:
        return ""
    return f" Dashed: a batch-size ramp (train.batch_schedule), {_how(ramps[0])}; band: its 95% interval over seeds."


def _how(ramp: dict) -> str:
    """How the ramp's and the fixed batches' times to target were read (analysis/schedules.py)."""
    if ramp.get("retimed"):
        return ("its steps to target at each batch times that batch's seconds per step, re-timed side by side by "
                "harness retime (so are the fixed batches' in this comparison)")
    return "its training clock at the crossing, warm-up out (so are the fixed batches' in this comparison)"


def _span(value: float | None, low: float | None, high: float | None, digits: str = ".3g") -> str:
    if value is None:
        return "not reached"
    interval = f" [{low:{digits}}-{high:{digits}}]" if low is not None else " (one seed: no interval)"
    return f"{value:{digits}}{interval}"


def words(ramp: dict, unit: str = "s") -> str:
    """One ramp against the best fixed batch, with intervals and seeds."""
    if ramp["best_batch"] is None:
        return (f"Ramp {ramp['schedule']}: {_span(ramp['time_s'], ramp['time_low_s'], ramp['time_high_s'])} {unit} to "
                f"the target ({ramp['reached']} of {ramp['seeds']} seeds); no fixed batch reached it in every seed.")
    saving = ramp["saving"]
    verdict = ("faster outside both intervals" if ramp["beats"] else
               "not faster outside the intervals" if saving is not None else "it missed the target in some seed")
    share = f"{abs(saving):.0%} {'less' if saving >= 0 else 'more'} time" if saving is not None else ""
    return (f"Ramp {ramp['schedule']}: {_span(ramp['time_s'], ramp['time_low_s'], ramp['time_high_s'])} {unit} and "
            f"{_span(ramp['steps'], ramp['steps_low'], ramp['steps_high'], ',.0f')} steps to the target "
            f"({ramp['reached']} of {ramp['seeds']} seeds) against the best fixed batch {ramp['best_batch']}: "
            f"{_span(ramp['best_time_s'], ramp['best_time_low_s'], ramp['best_time_high_s'])} {unit} and "
            f"{_span(ramp['best_steps'], ramp['best_steps_low'], ramp['best_steps_high'], ',.0f')} steps "
            f"({ramp['best_seeds']} seeds){': ' + share if share else ''}, {verdict}. Times: {_how(ramp)}; "
            f"95% t-intervals over seeds.")


def first_screen(ramps: list[dict]) -> str | None:
    """Said on the first screen only where a measured ramp beat the best fixed batch outside both intervals."""
    winners = [r for r in ramps if r["beats"]]
    return words(max(winners, key=lambda r: r["saving"])) if winners else None
