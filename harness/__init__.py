"""Batch-size sweet-spot harness: config -> plan -> train -> results -> analysis -> report."""

__version__ = "0.1.0"

from pathlib import Path

# the checkout (configs/, slurm/ templates); the package lives one level below it
REPO_ROOT = Path(__file__).resolve().parent.parent


def __getattr__(name: str):
    """`harness.sweep` and `harness.predict` (harness/api.py), loaded on first use: importing the
    package stays light for the commands that never train."""
    if name in ("sweep", "predict"):
        from harness import api

        return getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
