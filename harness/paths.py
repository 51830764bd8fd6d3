"""Where the harness lies: the checkout, with configs/ and the slurm/ templates beside the package."""

import os
from pathlib import Path

from harness.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
# what `harness run` and `accelerate launch harness/run.py` train when no --config is given
DEFAULT_CONFIG = "configs/default.yaml"


def checked(path: str | Path, field: str) -> Path:
    """A path given from Python (harness.sweep's results_dir, data_dir, a config): one the
    operating system can take, else ConfigError naming the field (a NUL byte raised ValueError
    from deep inside the first file operation)."""
    text = os.fspath(path)
    if not isinstance(text, str) or "\0" in text or not text:
        raise ConfigError(f"{field}: {text!r} is not a usable path (empty, bytes or a NUL character); give a folder "
                          f"path as text")
    return Path(text)
