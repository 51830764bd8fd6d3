"""Batch-size sweet-spot harness: config -> plan -> train -> results -> analysis -> report.

From Python: `harness.sweep(...)`, `harness.predict(...)`, `harness.capacity(...)` and `harness.branch(...)`
(harness/api.py), on a
`harness.SweepSpec` or its keyword arguments; from the shell: the
`harness` command (harness/cli.py) or `accelerate launch harness/run.py`.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`harness.sweep`, `harness.predict`, `harness.capacity`, `harness.branch` and `harness.SweepSpec`, loaded
    on first use: importing the package stays light for the commands that never train."""
    if name in ("sweep", "predict", "capacity", "branch"):
        from harness import api

        return getattr(api, name)
    if name == "SweepSpec":
        from harness.spec import SweepSpec

        return SweepSpec
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
