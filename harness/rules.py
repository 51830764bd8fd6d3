"""The settings of a sweep that decide how it is read and checked, not what a cell trains: the
report's rules, when validation is checked, and harness predict's budget. None is hashed into a
cell id; SweepConfig (harness/config.py) holds one of each."""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from harness.numbers import Count, Real


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ReportSettings(_Frozen):
    # the target on the workload's metric (accuracy by default); `report.target` says the same
    # any finite number in the metric's units; in (0, 1] for an accuracy (SweepConfig checks it)
    target_accuracy: Real = Field(0.97, validation_alias=AliasChoices("target_accuracy", "target"),
                                  description="validation score to reach")
    tolerance: Real = Field(0.005, ge=0, description="a score within this of the best counts")
    flat_threshold: Real = Field(0.05, gt=0, lt=1, description="'time per image stops improving'")
    collapse_drop: Real = Field(0.05, gt=0, lt=1, description="peak-to-final test accuracy drop flagged")


class CheckSettings(_Frozen):
    """When validation accuracy is checked within training (harness/checks.py). Checks measure, they
    never change what is trained, so they are not part of a cell's settings (nor of its id)."""

    # log-spaced in optimizer steps: 25 per decade bounds each gap by 9.6% of where it lies
    per_decade: Count = Field(25, ge=1, le=1000)
    first_step: Count = Field(10, ge=1, description="the first check; before it, steps to target are [0, first_step]")
    # also at least this often; default one epoch (every epoch end is a check in any case)
    max_interval_steps: Count | None = Field(None, ge=1)
    # also every this many training images (rounded to whole steps): a dense schedule on top of the
    # log one, e.g. to compare what each reads on the same runs
    every_images: Count | None = Field(None, ge=1)
    # the share of training time the checks may cost; a scheduled check that would exceed it is
    # skipped (the first and last always run); null: every scheduled check
    budget: Real | None = Field(0.25, gt=0, le=10)


class PredictSettings(_Frozen):
    """`harness predict`'s own budget. A short run trains until its crossing is settled, at most
    `short_run_cap` times its grid cell's train.epochs (train.epochs bounds the grid's cells)."""

    short_run_cap: Real = Field(3.0, ge=1, le=100)
