"""Benchmark, not a test: build the report over 1,000 cells and print how long it took.

    python tests/benchmarks/report_1000.py [--cells 1000]

The cells are written in the real schema (result.json + 5-epoch epochs.csv) by the same helper
the report tests use; the clock covers `harness report`'s whole build (collect, analysis,
figures, HTML, CSV), in this process, after a first warm-up build of 10 cells.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for the helper

from test_report_page import make_cell

from harness.report.page import build_report

BATCHES = [2**k for k in range(15)]


def write_cells(folder: Path, count: int) -> None:
    for i in range(count):
        batch, seed = BATCHES[i % len(BATCHES)], i // len(BATCHES)
        acc = [0.90 + 0.015 * e - 0.002 * (i % 7) for e in range(5)]
        make_cell(folder, "big", batch, seed, 1e-4 / (1 + batch ** 0.5), acc, acc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1000)
    count = parser.parse_args().cells
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_cells(root / "warm" / "big", 10)
        build_report([root / "warm" / "big"], root / "warm.html")
        write_cells(root / "big", count)
        start = time.perf_counter()
        build_report([root / "big"], root / "report.html")
        seconds = time.perf_counter() - start
        size = (root / "report.html").stat().st_size
    print(f"report over {count} cells: {seconds:.2f} s ({size / 1e6:.1f} MB of HTML)")


if __name__ == "__main__":
    main()
