"""Benchmark, not a test: the same cell launched every way, side by side in one run.

    python tests/benchmarks/entry_points.py [--batch 128] [--rounds 2] [--out FILE]

The default config's cell at one batch size (1 epoch, seed 0) through `harness run`,
`accelerate launch harness/run.py`, and `harness run --threads 1` (what `accelerate launch` gave
before the thread policy: it sets OMP_NUM_THREADS=1). Rounds alternate the launches so drift in
the machine hits each alike. Prints, per launch, the threads it recorded, the median time per
image, its ratio to `harness run`'s, and the checks' share of training time. Needs
$HARNESS_DATA_DIR (or the data downloadable).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAUNCHES = {
    "harness run": [str(BIN / "harness"), "run"],
    "accelerate launch harness/run.py": [str(BIN / "accelerate"), "launch", "--num_processes", "1",
                                         str(REPO / "harness" / "run.py")],
    "harness run --threads 1": [str(BIN / "harness"), "run", "--threads", "1"],
}


def run_once(command: list[str], batch: int, folder: Path) -> dict:
    sets = ["--set", f"train.batch_size={batch}", "--set", "train.seed=0", "--set", "train.epochs=1"]
    proc = subprocess.run([*command, "--config", str(REPO / "configs" / "default.yaml"), "--results-dir", str(folder),
                           "--quiet", "--no-report", *sets], capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    (path,) = folder.rglob("result.json")
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    seen: dict[str, list[dict]] = {name: [] for name in LAUNCHES}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            names = list(LAUNCHES)[round_ % len(LAUNCHES):] + list(LAUNCHES)[: round_ % len(LAUNCHES)]
            for name in names:
                seen[name].append(run_once(LAUNCHES[name], args.batch, Path(tmp) / f"{round_}-{names.index(name)}"))
    base = statistics.median(r["summary"]["time_per_image_s"] for r in seen["harness run"])
    rows = []
    for name, records in seen.items():
        per_image = statistics.median(r["summary"]["time_per_image_s"] for r in records)
        share = statistics.median(r["summary"]["check_seconds"] / r["summary"]["train_seconds"] for r in records)
        env = records[0]["environment"]
        rows.append({"launch": name, "device": env["device_name"], "cpu_threads": env["cpu_threads"],
                     "threads_source": env["threads_source"], "time_per_image_us": per_image * 1e6,
                     "harness_run_over_this": base / per_image, "check_share": share,
                     "checks": records[0]["summary"]["checks"],
                     "checks_skipped": records[0]["summary"]["checks_skipped"]})
    print(f"batch {args.batch}, 1 epoch of configs/default.yaml, median of {args.rounds} alternating rounds")
    print(f"{'launch':>34} {'threads':>7} {'us/image':>9} {'run/this':>8} {'checks/train':>12}")
    for r in rows:
        print(f"{r['launch']:>34} {r['cpu_threads']:>7} {r['time_per_image_us']:>9.2f} "
              f"{r['harness_run_over_this']:>8.2f} {r['check_share']:>12.1%}")
    if args.out:
        args.out.write_text(json.dumps({"batch": args.batch, "rounds": args.rounds, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
