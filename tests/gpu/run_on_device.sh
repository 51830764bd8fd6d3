#!/usr/bin/env bash
# The ONE script for a lent GPU machine (see the device tool): installs nothing from the net, runs
# the GPU tests, the bench, the default sweep with NVML, harness predict against it and a short
# full grid, and packs everything into $OUT/gpu.tar.gz (the device returns at most 8 files).
# Device time is short, so every step has a limit and the steps run most-needed first; a step that
# would not fit in what is left of GPU_BUDGET_S is skipped and says so. GPU_STEPS picks a subset on
# a rerun (e.g. GPU_STEPS="bench_compile full_short").
# Carry: data/mnist (a copy of ../shared/data/mnist) and .whl (pydantic and its three needs for
# Python 3.12, which that machine lacks). From the repo root there:
#   bash tests/gpu/run_on_device.sh
set -uo pipefail
OUT="${OUT:-/tmp/gpu-out}"
export WORK=/tmp/gpu-work
BUDGET="${GPU_BUDGET_S:-360}"
STEPS="${GPU_STEPS:-env profile gpu_tests engine_tests bench default predict bench_compile full_short}"
START=$(date +%s)
mkdir -p "$OUT" "$WORK"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HARNESS_DATA_DIR="$PWD/data/mnist" PYTHONUNBUFFERED=1
# `harness` is not installed there: the module entry point is the same command
mkdir -p /tmp/bin && printf '#!/usr/bin/env bash\nexec python3 -m harness.cli "$@"\n' > /tmp/bin/harness
chmod +x /tmp/bin/harness && export PATH="/tmp/bin:$PATH"

pack() { tar -czf "$OUT/gpu.tar.gz.part" -C "$WORK" . && mv "$OUT/gpu.tar.gz.part" "$OUT/gpu.tar.gz"; }

# step NAME LIMIT_S COMMAND...: run it with its limit cut to what is left, log to WORK/NAME.log
step() {
  local name=$1 limit=$2; shift 2
  [[ " $STEPS " == *" $name "* ]] || return 0
  local t0 left rc
  t0=$(date +%s); left=$(( BUDGET - (t0 - START) - 10 ))
  if (( left < 20 )); then echo "== $name: skipped, ${left}s of the budget left"; return 0; fi
  (( limit > left )) && limit=$left
  echo "== $name (limit ${limit}s) at $(( t0 - START ))s"
  timeout -k 5 "$limit" bash -c '"$@"' _ "$@" > "$WORK/$name.log" 2>&1; rc=$?
  echo "== $name rc=$rc in $(( $(date +%s) - t0 ))s"
  tail -n 25 "$WORK/$name.log"
  pack
}

environment() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv
  python3 -c "import torch, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'accelerate', accelerate.__version__)"
}
default_and_predict() {
  harness predict --config configs/default.yaml --results-dir "$WORK/results" --no-report \
    && harness report "$WORK/results/default" -o "$WORK/results/default/report.html"
}

export -f environment default_and_predict
step env 20 environment
step profile 30 python3 tests/gpu/profile_eager_step.py 16
# two pytest processes: the GPU tests' Accelerator must not be the one the CPU-pinned engine tests build
step gpu_tests 75 python3 -m pytest -q -rfE --tb=short --timeout 60 -p no:cacheprovider tests/gpu
step engine_tests 75 python3 -m pytest -q -rfE --tb=short --timeout 40 -p no:cacheprovider \
  tests/test_engine.py tests/test_diagnostics.py
step bench 100 harness bench --batch-sizes 1,16,256,4096,16384 --modes eager,cuda_graphs --out "$WORK/bench"
step default 60 harness run --config configs/default.yaml --results-dir "$WORK/results" --quiet
step predict 40 default_and_predict
step bench_compile 90 harness bench --batch-sizes 1,16,256,4096,16384 --modes compile --out "$WORK/bench_compile"
# the full grid cut to fit: batch 4..16384 (1 and 2 alone would take minutes), 3 rates, 1 seed, 2 epochs
step full_short 150 harness run --config configs/full.yaml --results-dir "$WORK/results" --quiet \
  --set name=full_gpu_short --set train.epochs=2 --set 'sweep.train.seed=[0]' \
  --set 'sweep.train.batch_size=[4,8,16,32,64,128,256,512,1024,2048,4096,8192,16384]'
echo "== all steps ended at $(( $(date +%s) - START ))s"
pack
