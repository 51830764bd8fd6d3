"""`accelerate launch harness/run.py [--config X] [--set k=v ...]`, or the same under torchrun.

Equivalent to `harness run ...` (with --predict: `harness predict ...`); with no arguments it
trains configs/default.yaml.
"""

import sys
from pathlib import Path

# Run as a file, Python puts harness/ itself first on sys.path; the package lives one level up.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from harness.cli import main  # noqa: E402
from harness.parser import launcher_help  # noqa: E402

if __name__ == "__main__":
    # `run.py --predict ...` is `harness predict ...`; anything else is `harness run ...`
    args = sys.argv[1:]
    command = "predict" if "--predict" in args else "run"
    if {"-h", "--help"} & set(args):
        print(launcher_help(command))
        sys.exit(0)
    sys.exit(main([command, *[a for a in args if a != "--predict"]]))
