"""Benchmark, not a test: one cell timed on a quiet machine and beside a competing process, in one run.

    python tests/benchmarks/contention.py [--batch 128] [--epochs 2] [--images 6400] [--repeats 2]
        [--ways default,PASSIVE,1 thread] [--out FILE]

Each run is a real `harness run` of the MNIST MLP (its own results folder); the competitor is a
second process of float32 matrix products with as many threads as this machine has cores (what a
second training or a test suite does to a small machine). Runs alternate quiet and loaded, for
three ways to run the threads: torch's default (OpenMP threads spin a while when they wait),
OMP_WAIT_POLICY=PASSIVE (they sleep at once) and one thread. Printed per run: time per image, the
cell's CPU share, load average, epoch spread and whether harness/timing.py flagged it; then each
way's loaded / quiet ratio. Run it alone: the quiet runs must be quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BURNER = """
import torch
torch.set_num_threads({threads})
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a)
"""
KEYS = ("time_per_image_s", "cpu_share", "load_average", "time_spread", "timing_disturbed", "timing_disturbed_reason")
WAYS = {"default": ({}, []), "PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, []), "1 thread": ({}, ["--threads", "1"])}
HARNESS = Path(sys.executable).parent / "harness"


def run_cell(root: Path, name: str, args, way: str) -> dict:
    """One `harness run` of one cell; its summary's timing keys."""
    config = root / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"name": name, "train": {"batch_size": args.batch, "epochs": args.epochs,
                                                              "images_per_epoch": args.images}, "sweep": {}}))
    extra_env, extra_args = WAYS[way]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | extra_env
    subprocess.run([str(HARNESS), "run", "--config", str(config), "--results-dir", str(root / "r"), "--no-report",
                    *extra_args], env=env, check=True, capture_output=True, timeout=3600)
    (record,) = [json.loads(p.read_text()) for p in (root / "r" / name).glob("*/result.json")]
    return {k: record["summary"].get(k) for k in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=6400)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, of {', '.join(WAYS)}")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ways = [w.strip() for w in args.ways.split(",")]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for way in ways:
                for loaded in (False, True):
                    burner = subprocess.Popen([sys.executable, "-c", BURNER.format(threads=os.cpu_count())]) \
                        if loaded else None
                    try:
                        time.sleep(15 if loaded else 0)  # let the 1-minute load average see it
                        name = f"r{repeat}-{way.replace(' ', '')}-{'loaded' if loaded else 'quiet'}"
                        found = run_cell(Path(tmp), name, args, way)
                    finally:
                        if burner is not None:
                            burner.kill()
                            burner.wait()
                    runs.append({"way": way, "loaded": loaded, **found})
                    print(json.dumps(runs[-1]), flush=True)
                    time.sleep(20 if loaded else 0)  # the load average decays before the next quiet run
    for way in ways:
        tpi = {loaded: statistics.median(r["time_per_image_s"] for r in runs if r["way"] == way
                                         and r["loaded"] == loaded) for loaded in (False, True)}
        print(f"{way}: quiet {tpi[False] * 1e6:.1f} us/img, loaded {tpi[True] * 1e6:.1f} us/img, "
              f"loaded / quiet {tpi[True] / tpi[False]:.2f}x")
    if args.out:
        args.out.write_text(json.dumps({"batch": args.batch, "epochs": args.epochs, "images": args.images,
                                        "cpus": os.cpu_count(), "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
