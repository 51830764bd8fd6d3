#!/usr/bin/env bash
# The ONE script for a lent GPU machine (see the device tool): installs nothing from the net and
# measures what is still missing, most valuable first, each step with a limit; a step that would
# not fit in what is left of GPU_BUDGET_S is skipped and says so. Everything lands in
# $OUT/gpu.tar.gz (the device returns at most 8 files). GPU_STEPS picks a subset on a rerun
# (e.g. GPU_STEPS="full_short bench_compile").
#   1 host_overhead  is the eager step host-bound? issued vs done per step, lean vs Accelerate's
#                    wrappers, at batch 16 and 4096, with torch.cuda.set_sync_debug_mode("warn")
#   2 bench_lean     lean eager vs the Accelerate-wrapped step vs cuda_graphs vs the tutorial loop
#   3 mfu            MFU at 8192 and 16384, eager and cuda_graphs, >= 100 timed steps, no reference loop
#   4 gpu_tests      tests/gpu, including a cell whose energy window reaches 2 s
#   5 engine_tests   the engine and diagnostics tests that take the GPU path, by node id
#   6 full_short     configs/full.yaml cut to 1 seed, 1 rate, 2 epochs, in cuda_graphs, NVML on
#   7 bench_compile  torch.compile at 4096 and 16384
# Limits sum to 520 s, under the 600 s a device call may run. DRY_RUN=1 runs every step with tiny
# sizes on whatever machine this is (the test suite does, on a CPU). Carry: data/mnist (a copy of
# ../shared/data/mnist) and .whl (pydantic and its needs for Python 3.12, which that machine lacks).
# From the repo root there:   bash tests/gpu/run_on_device.sh
set -uo pipefail
OUT="${OUT:-/tmp/gpu-out}"
WORK="${WORK:-/tmp/gpu-work}"
BUDGET="${GPU_BUDGET_S:-540}"
STEPS="${GPU_STEPS:-env host_overhead bench_lean mfu gpu_tests engine_tests full_short bench_compile}"
DRY="${DRY_RUN:-}"
START=$(date +%s)
mkdir -p "$OUT" "$WORK/bin"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
[[ -d data/mnist ]] && export HARNESS_DATA_DIR="$PWD/data/mnist"
export PYTHONUNBUFFERED=1
# `harness` may not be installed there: the module entry point is the same command
printf '#!/usr/bin/env bash\nexec python3 -m harness.cli "$@"\n' > "$WORK/bin/harness"
chmod +x "$WORK/bin/harness" && export PATH="$WORK/bin:$PATH"

pack() { tar -czf "$OUT/gpu.tar.gz.part" -C "$WORK" --exclude=bin . && mv "$OUT/gpu.tar.gz.part" "$OUT/gpu.tar.gz"; }

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
  echo "== $name rc=$rc in $(( $(date +%s) - t0 ))s" | tee -a "$WORK/steps.txt"
  tail -n 25 "$WORK/$name.log"
  pack
}

environment() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv || echo "no nvidia-smi"
  python3 -c "import torch, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'accelerate', accelerate.__version__)"
}
export -f environment

if [[ -n "$DRY" ]]; then  # every step, tiny: proves the commands and their options, not the numbers
  HOST=(8 4 16); LEAN=(--batch-sizes 4 --repeats 1); MFU=(--batch-sizes 256 --repeats 1)
  LOOPS=eager,eager_accelerate; BIG_LOOPS=eager; COMPILE=(--batch-sizes 16 --repeats 1)
  ENGINE_TESTS=(tests/test_engine.py::test_cuda_graphs_needs_the_capture_outside_the_clock)
  FULL=(--set train.mode=eager --set train.epochs=1 --set train.images_per_epoch=512 --set train.untimed_steps=5
        --set 'sweep.train.batch_size=[16,64]')
else
  HOST=(200 16 4096); LEAN=(--batch-sizes 1,16,4096); MFU=(--batch-sizes 8192,16384)
  LOOPS=eager,eager_accelerate,cuda_graphs; BIG_LOOPS=eager,cuda_graphs; COMPILE=(--batch-sizes 4096,16384)
  ENGINE_TESTS=(tests/test_engine.py::test_lean_step_computes_what_the_accelerate_step_does
                tests/test_engine.py::test_compile_mode_trains_a_cell_on_cpu tests/test_diagnostics.py)
  FULL=(--set train.mode=cuda_graphs --set train.epochs=2
        --set 'sweep.train.batch_size=[8,16,32,64,128,256,512,1024,2048,4096,8192,16384]')
fi

step env 15 environment
step host_overhead 45 python3 tests/gpu/host_overhead.py "${HOST[@]}"
step bench_lean 60 harness bench "${LEAN[@]}" --modes "$LOOPS" --out "$WORK/bench_lean"
step mfu 70 harness bench "${MFU[@]}" --modes "$BIG_LOOPS" --skip-reference-above 1 --out "$WORK/mfu"
step gpu_tests 90 python3 -m pytest -q -rfE --tb=short -p no:cacheprovider tests/gpu
step engine_tests 60 python3 -m pytest -q -rfE --tb=short -p no:cacheprovider "${ENGINE_TESTS[@]}"
step full_short 120 harness run --config configs/full.yaml --results-dir "$WORK/results" --quiet \
  --set name=full_gpu_short --set 'sweep.train.seed=[0]' --set 'sweep.optim.lr=[1.0e-3]' "${FULL[@]}"
step bench_compile 60 harness bench "${COMPILE[@]}" --modes compile --skip-reference-above 1 --out "$WORK/bench_compile"
echo "== all steps ended at $(( $(date +%s) - START ))s"
pack
