"""Batch-size sweet-spot harness: config -> plan -> train -> results -> analysis -> report."""

__version__ = "0.1.0"

from pathlib import Path

# the checkout (configs/, slurm/ templates); the package lives one level below it
REPO_ROOT = Path(__file__).resolve().parent.parent
