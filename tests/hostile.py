"""Helpers shared by the hostile-input tests: a golden cell folder, a one-line error, a
command run without the privilege to read past permissions, the JSON values hypothesis draws."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from conftest import REPO, SMALL, harness, read_json
from hypothesis import strategies as st
from records import epoch_rows, write_cell

GOLDEN = REPO / "tests" / "golden"


ONE = {**SMALL, "train": {**SMALL["train"], "epochs": 1, "images_per_epoch": 2560},
       "sweep": {"train.batch_size": [256], "train.seed": [0]}}


def one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("harness: error: "), proc.stderr
    return proc.stderr


def golden_folder(root: Path) -> Path:
    """A sweep folder holding the golden cell (a record in the real schema) and its tables."""
    record = read_json(GOLDEN / "result.json")
    cell = root / "golden" / record["cell_id"]
    cell.mkdir(parents=True)
    for name in ("result.json", "epochs.csv", "evals.csv"):
        shutil.copy(GOLDEN / name, cell)
    write_cell(root / "golden", {"train": {"batch_size": 64, "seed": 0, "images_per_epoch": 640, "epochs": 1}},
               epoch_rows(64, 10, 1e-4, [0.9], [0.9]))  # a second, healthy cell
    return cell


# no subnormals: an earlier test in the same process sets torch.set_flush_denormal(True), and
# hypothesis refuses to draw floats it cannot represent
FLOATS = st.floats(allow_nan=False, allow_subnormal=False)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | FLOATS | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3), max_leaves=5)


def report(folder: Path, out: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return harness("report", str(folder), "-o", str(out), timeout=timeout)
