#!/usr/bin/env bash
# The one script to run on a GPU machine (H100/H200, torch 2.11+cu130, nvcc, compute-sanitizer; no network)
# from the repository root:
#
#     bash bench/gpu_check.sh            # logs to $OUT (default /tmp/rccl_gpu_check)
#
# 1. builds rccl._C against this machine's torch (TORCH_CUDA_ARCH_LIST=9.0, MAX_JOBS=16)
# 2. pytest -m cuda: tests/test_op_cuda.py and the core tests' CUDA cases
# 3. compute-sanitizer memcheck and racecheck of bench/cuda_sanitize_case.py (every kernel path, small)
# 4. bench/cuda_speed.py: eager and CUDA-graph rows, the autograd floor, peak memory at N = 16384, the
#    issue's targets as PASS/FAIL; bench/miner_speed.py too when it exists (CUDA device)
# and prints a short table last. Each step has its own time limit; the whole stays well under 8 minutes.
# Exit status 0 only when the build, the tests and the sanitizer all pass (the speed targets are reported,
# not enforced).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/rccl_gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
export RCCL_FORCE_CUDA=1
SANITIZER="$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)"

declare -a NAMES STATUS SECONDS_TAKEN
step() {  # step NAME LIMIT_S LOGFILE COMMAND...
  local name="$1" limit="$2" log="$3"
  shift 3
  local start=$SECONDS
  echo "== $name (limit ${limit}s, log $log)"
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  local rc=$?
  NAMES+=("$name")
  SECONDS_TAKEN+=("$((SECONDS - start))")
  if [ $rc -eq 0 ]; then STATUS+=("ok"); elif [ $rc -eq 124 ]; then STATUS+=("TIMEOUT"); else STATUS+=("FAIL($rc)"); fi
  tail -n 3 "$log"
  return $rc
}

{
  date -u
  nvidia-smi -L || true
  "$PY" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name())"
  nvcc --version | tail -1
  echo "sanitizer: ${SANITIZER:-none}"
  git rev-parse --short HEAD 2>/dev/null; git status --short 2>/dev/null | head -20
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

ok=1
# torch.utils.cpp_extension takes CUDA_HOME from nvcc's folder; setup.py finds the toolkit itself
if ! step build 300 "$OUT/build.log" "$PY" -m pip install --no-build-isolation --no-deps -v -e .; then
  echo "pip install -e failed; trying an in-place build" | tee -a "$OUT/build.log"
  step build-inplace 300 "$OUT/build_inplace.log" "$PY" setup.py build_ext --inplace || ok=0
fi
backends="$("$PY" -c 'import rccl; print(rccl.backends())' 2>&1 | tail -1)"
echo "rccl.backends(): $backends"
case "$backends" in *"'cuda': True"*) ;; *) ok=0; echo "no CUDA kernels in this build: stopping";; esac

if [ $ok -eq 1 ]; then
  # collection errors of modules that need packages absent here (PyAV, dlib, ...) must not stop the CUDA tests
  step tests 240 "$OUT/tests.log" "$PY" -m pytest -q -ra -m cuda --continue-on-collection-errors \
    -p no:cacheprovider tests || ok=0
  if [ -n "$SANITIZER" ]; then
    step memcheck 150 "$OUT/sanitizer.log" "$SANITIZER" --tool memcheck --error-exitcode 9 \
      "$PY" bench/cuda_sanitize_case.py || ok=0
    step racecheck 150 "$OUT/racecheck.log" "$SANITIZER" --tool racecheck --racecheck-report all --error-exitcode 9 \
      "$PY" bench/cuda_sanitize_case.py || ok=0
  else
    echo "compute-sanitizer not found: sanitizer steps skipped"; ok=0
  fi
  step speed 200 "$OUT/cuda_speed.log" "$PY" bench/cuda_speed.py --out "$OUT/cuda_speed.json"
  if [ -f bench/miner_speed.py ]; then
    step miner_speed 120 "$OUT/miner_speed.log" "$PY" bench/miner_speed.py --device cuda
  fi
fi

echo
echo "== summary ($(date -u +%H:%M:%S) UTC, $SECONDS s in all; logs in $OUT)"
printf '%-14s %-10s %6s\n' step status seconds
for i in "${!NAMES[@]}"; do printf '%-14s %-10s %6s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECONDS_TAKEN[$i]}"; done
echo "backends: $backends"
grep -E "passed|failed|error" "$OUT/tests.log" 2>/dev/null | tail -1
grep -E "worst relative error|FAILED|ERROR SUMMARY" "$OUT/sanitizer.log" "$OUT/racecheck.log" 2>/dev/null | sed "s|$OUT/||"
grep -E "^(PASS|FAIL) " "$OUT/cuda_speed.log" 2>/dev/null
if [ $ok -eq 1 ]; then echo "VERDICT: build, CUDA tests and sanitizer PASS"; else echo "VERDICT: FAIL (see the logs above)"; fi
[ $ok -eq 1 ]
