"""The workload's quality: the metric that a target, a cell's best epoch and the sweet spot are read
on, with its name and its direction (Ray Tune's and W&B's `mode`: max or min).

Accuracy (higher is better, in [0, 1]) unless the workload says otherwise with
`workload.metric_name` and `workload.metric_mode`; `workload.metric: loss` is the built-in metric
"loss" (the per-example loss, lower is better: a target on validation loss). The records keep the
metric's values as measured, in the columns named `*_accuracy` for every metric (their names are the
results format's); a reader compares them through `oriented` (higher is always better there) and
shows them back through `show`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

LOSS = "loss"  # workload.metric: loss


@dataclass(frozen=True)
class Quality:
    name: str = "accuracy"
    mode: Literal["max", "min"] = "max"
    bounded: bool = True  # a score in [0, 1], higher is better: a metric given no name and no mode

    @classmethod
    def of_workload(cls, workload: Any) -> Quality:
        """From WorkloadSettings, or their dump in a record's settings (a dict; absent keys: accuracy)."""
        get = workload.get if isinstance(workload, dict) else lambda key: getattr(workload, key, None)
        metric, name, mode = get("metric"), get("metric_name"), get("metric_mode")
        if metric == LOSS:
            return cls(name or "loss", mode or "min", bounded=False)
        bounded = not (name or mode)
        if metric and not name:  # the callable's name
            name = str(metric).rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        return cls(name or "accuracy", mode or "max", bounded)

    @property
    def higher_is_better(self) -> bool:
        return self.mode == "max"

    def oriented(self, value: float) -> float:
        """The value on a scale where higher is better (negated for a min metric)."""
        return value if self.higher_is_better else -value

    def reached(self, value: float, target: float) -> bool:
        return self.oriented(value) >= self.oriented(target)

    def show(self, value: float, digits: int = 4) -> str:
        return f"{value:.{digits}f}" if self.bounded else f"{value:.{digits}g}"

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    @property
    def reaching(self) -> str:
        """How a target is met: 'at or above' it, or 'at or below'."""
        return "at or above" if self.higher_is_better else "at or below"


DEFAULT = Quality()  # accuracy: the metric unless the workload names one


def unit_of(workload: Any) -> str:
    """What one example is called, in the report's and the progress line's words: the workload's
    `unit`, else "image" for a built-in (the images) and "example" for a workload of one's own."""
    get = workload.get if isinstance(workload, dict) else lambda key: getattr(workload, key, None)
    return get("unit") or ("example" if get("model") else "image")
