#!/usr/bin/env bash
# The ONE script for a lent GPU machine (see DEVELOPERS.md / the device tool): installs nothing
# from the net, runs the GPU tests and the full benchmark, writes everything under $OUT.
# Carry: data/mnist (a copy of ../shared/data/mnist) and .whl (pydantic and pytest wheels for
# Python 3.12, which that machine lacks). Usage from the repo root there:
#   bash tests/gpu/run_on_device.sh
set -uo pipefail
OUT="${OUT:-/tmp/gpu-out}"
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HARNESS_DATA_DIR="$PWD/data/mnist" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.csv"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee "$OUT/versions.txt"
# `harness` is not installed there: the module entry point is the same command
mkdir -p "$OUT/bin" && printf '#!/usr/bin/env bash\nexec python3 -m harness.cli "$@"\n' > "$OUT/bin/harness"
chmod +x "$OUT/bin/harness" && export PATH="$OUT/bin:$PATH"
python3 -m pytest -q -p no:cacheprovider tests/gpu tests/test_engine.py tests/test_diagnostics.py 2>&1 | tee "$OUT/gpu-tests.log"
python3 tests/benchmarks/diagnostics_overhead.py --out "$OUT/diagnostics-overhead-gpu.json" 2>&1 | tee "$OUT/diagnostics-overhead.log"
python3 -m harness.cli bench --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log"
python3 -m harness.cli run --config configs/default.yaml --results-dir "$OUT/results" --quiet 2>&1 | tee "$OUT/default.log"
