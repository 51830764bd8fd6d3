"""Where the harness lies: the checkout, with configs/ and the slurm/ templates beside the package."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# what `harness run` and `accelerate launch harness/run.py` train when no --config is given
DEFAULT_CONFIG = "configs/default.yaml"
