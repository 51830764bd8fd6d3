"""The device script (tests/gpu/run_on_device.sh) dry-run here: a lent GPU's minutes are few, so
every step must already run, with its options, before it gets there. DRY_RUN=1 runs each step
with tiny sizes on this CPU (no cuda_graphs loop, the GPU tests skip themselves) and packs its
files under $OUT as on the device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import REPO

STEPS = ["env", "host_overhead", "bench_lean", "mfu", "gpu_tests", "engine_tests", "full_short", "bench_compile"]


@pytest.mark.slow
def test_every_step_of_the_device_script_runs(tmp_path, data_dir):
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"),
           "HARNESS_DATA_DIR": str(data_dir), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "tests/gpu/run_on_device.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    ended = (tmp_path / "work" / "steps.txt").read_text().splitlines()
    assert [line.split()[1] for line in ended] == STEPS and all(" rc=0 " in line for line in ended), ended
    with tarfile.open(tmp_path / "out" / "gpu.tar.gz") as packed:
        names = set(packed.getnames())
        assert {f"./{s}.log" for s in STEPS} <= names
        bench = json.load(packed.extractfile("./bench_lean/bench.json"))
        big = json.load(packed.extractfile("./mfu/bench.json"))
        host = packed.extractfile("./host_overhead.log").read().decode()
    assert {r["loop"] for r in bench["rows"]} == {"reference", "eager", "eager_accelerate"}
    assert "reference" not in {r["loop"] for r in big["rows"]} and big["skip_reference_above"] == 1
    assert " lean " in host and " accelerate " in host and "issued/done" in host
    assert any(n.startswith("./results/full_gpu_short/") and n.endswith("result.json") for n in names)
