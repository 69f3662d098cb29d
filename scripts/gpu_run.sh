#!/usr/bin/env bash
# The prepared run for a CUDA machine (issue 24): gpu_check, the CUDA-relevant tests, and the
# training and synthesis benchmarks on the GPU, every log and JSON under one folder ($OUT),
# in about 8 minutes. Each step has its own time limit, so one hung step cannot eat the rest.
#
#   bash scripts/gpu_run.sh --prepare   # here, once: copy the shared fixtures it needs into .gpu_shared/
#   OUT=gpu_out bash scripts/gpu_run.sh  # there (any CUDA machine), from the repository root
#
# With the device tool: command "bash scripts/gpu_run.sh", carry [".gpu_shared"], timeout_s 560.
# The project runs from src/ (PYTHONPATH=src), so nothing is installed on the GPU machine; it
# needs torch, numpy, pillow, tqdm, safetensors, scipy and pytest there (FastAPI is not needed).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  src="${SPADEGAN_SHARED:-../shared}"
  rm -rf .gpu_shared
  mkdir -p .gpu_shared/fixtures/official_parity .gpu_shared/data
  cp -r "$src/fixtures/official_parity/ade_small" .gpu_shared/fixtures/official_parity/
  cp -r "$src/data/ade20k_sample" .gpu_shared/data/
  grep -qx '/.gpu_shared/' .git/info/exclude 2>/dev/null || echo '/.gpu_shared/' >> .git/info/exclude
  du -sh .gpu_shared
  exit 0
fi

OUT="${OUT:-gpu_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SPADEGAN_SHARED="${SPADEGAN_SHARED:-$PWD/.gpu_shared}"
status=0

step() {  # step NAME SECONDS COMMAND...: run it, log to $OUT/NAME.log, remember a failure
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/steps.txt"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $((SECONDS - t0))s" | tee -a "$OUT/steps.txt"
  tail -n 25 "$OUT/$name.log"
  [ "$rc" -eq 0 ] || status=1
}

{ nvidia-smi; python3 -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 1. the checks a CPU cannot run: parity on the device, AMP training + exact resume, engine, paint backend, launcher
step gpu_check 180 python3 scripts/gpu_check.py
# 2. the tests whose CUDA paths run for real here (CUDA queries are replaced on the CPU)
step tests 100 python3 -m pytest -q -x -p no:cacheprovider tests/test_device.py tests/test_gpu_check.py
# 3. training: dense vs sparse SPADE, fp32 vs --amp, on the GPU (decides --spade_impl auto on CUDA)
step bench_train 120 python3 benchmarks/bench_train.py --device cuda --configs ade20k,builtin128 --rounds 3
# 4. synthesis: the training network vs the engine, fp32 / bf16 / fp16, on the GPU
step bench_synthesis 100 python3 benchmarks/bench_synthesis.py --device cuda --configs ade20k --batches 1 8 --json --no_rss
for name in bench_train bench_synthesis; do
  grep -E '^\{' "$OUT/$name.log" | tail -n 1 > "$OUT/$name.json"
done
echo "gpu_run status $status" | tee -a "$OUT/steps.txt"
exit $status
