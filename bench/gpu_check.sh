#!/usr/bin/env bash
# The one script to run on a GPU machine (H100/H200, Python 3.12, torch 2.11+cu130, nvcc, compute-sanitizer,
# no network), from the repository root, in one device call (<= 9 minutes):
#
#     bash bench/gpu_check.sh                    # logs to $OUT (default /tmp/rccl_gpu_check)
#     bash bench/gpu_check.sh --dali-stage N     # also the DALI checks: bench/gpu_data_check.sh --stage N --run
#                                                # (after its stages 1 .. N-1 put the wheel parts in place)
#     bash bench/gpu_check.sh --dry-run          # no GPU: the Python parts import and parse, nothing is built
#
# Steps, each with its own time limit cut to what is left of GPU_CHECK_BUDGET_S (default 520 s):
# 1. build rccl._C against this machine's torch (TORCH_CUDA_ARCH_LIST=9.0, MAX_JOBS=16)
# 2. pytest -m cuda: tests/test_op_cuda.py and the core tests' CUDA cases
# 3. compute-sanitizer memcheck, racecheck, synccheck and initcheck of bench/cuda_sanitize_case.py, each on
#    both tile sizes and a NaN-centre case (before any timing: correctness first)
# 4. bench/cuda_speed.py: eager and CUDA-graph rows, the autograd floor, the eager and torch.compile'd
#    reference, peak memory at N = 16384, the issue's targets as PASS/FAIL (float32: CUDA cores); then
#    bfloat16 (the tensor-core path) and 64 x 64 tiles at small N
# 5. bench/miner_speed.py (CUDA device) when it exists; the DALI checks when --dali-stage is given
# and prints a short table last. Exit status 0 only when the build, the tests and every sanitizer pass (the
# speed targets are reported as PASS/FAIL lines, not enforced).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

DRY=0
DALI_STAGE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --dali-stage) DALI_STAGE="${2:?--dali-stage needs a number}"; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

OUT="${OUT:-/tmp/rccl_gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
export RCCL_FORCE_CUDA=1
# the bench and test modules run as `python -m bench.x` from the root; the in-place build is not installed
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SANITIZER="$(command -v compute-sanitizer)"
if [ -z "$SANITIZER" ]; then
  for candidate in /usr/local/cuda*/bin/compute-sanitizer; do [ -x "$candidate" ] && SANITIZER="$candidate" && break; done
fi

BUDGET_S="${GPU_CHECK_BUDGET_S:-520}"  # the whole script; each step is cut to what is left of it
declare -a NAMES STATUS SECONDS_TAKEN
step() {  # step NAME LIMIT_S LOGFILE COMMAND...
  local name="$1" limit="$2" log="$3"
  shift 3
  local start=$SECONDS left=$((BUDGET_S - SECONDS))
  if [ "$DRY" -eq 1 ]; then
    echo "== $name (dry run): $*"
    NAMES+=("$name"); STATUS+=("dry"); SECONDS_TAKEN+=(0)
    return 0
  fi
  if [ "$left" -lt 20 ]; then
    echo "== $name skipped: the ${BUDGET_S}s budget is spent"
    NAMES+=("$name"); STATUS+=("SKIPPED"); SECONDS_TAKEN+=(0)
    return 3
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  echo "== $name (limit ${limit}s, log $log)"
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  local rc=$?
  NAMES+=("$name")
  SECONDS_TAKEN+=("$((SECONDS - start))")
  if [ $rc -eq 0 ]; then STATUS+=("ok"); elif [ $rc -eq 124 ]; then STATUS+=("TIMEOUT"); else STATUS+=("FAIL($rc)"); fi
  tail -n 3 "$log"
  return $rc
}

if [ "$DRY" -eq 1 ]; then
  # what can be checked without a GPU: the Python entry points import and parse, the DALI script parses
  dry_ok=1
  "$PY" -m bench.cuda_speed --dry-run || dry_ok=0
  "$PY" -m bench.cuda_sanitize_case --dry-run || dry_ok=0
  bash -n bench/gpu_data_check.sh || dry_ok=0
  [ -f bench/miner_speed.py ] && { "$PY" bench/miner_speed.py --help >/dev/null || dry_ok=0; }
fi

{
  date -u
  nvidia-smi -L || true
  "$PY" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
  nvcc --version | tail -1
  echo "sanitizer: ${SANITIZER:-none}"
  git rev-parse --short HEAD 2>/dev/null; git status --short 2>/dev/null | head -20
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

ok=1
# torch >= 2.1x headers need C++20: if setup.py still passes -std=c++17 to g++ and this torch's headers
# refuse it (a 5-second probe), build in place from a C++20 copy of setup.py rather than lose the GPU run.
cxx17_ok=1
if [ "$DRY" -eq 0 ] && grep -q -- '-std=c++17' setup.py; then
  torch_include="$("$PY" -c 'import torch.utils.cpp_extension as c; print(c.include_paths()[0])')"
  echo '#include <ATen/core/Tensor.h>' | g++ -std=c++17 -fsyntax-only -x c++ - -I"$torch_include" \
    -I"$torch_include/torch/csrc/api/include" >"$OUT/cxx17_probe.tmp" 2>&1 || cxx17_ok=0
  rm -f "$OUT/cxx17_probe.tmp"
fi
if [ $cxx17_ok -eq 1 ]; then
  step build 240 "$OUT/build.log" "$PY" -m pip install --no-build-isolation --no-deps -v -e . || ok=0
else
  STD_FIX="setup.py passes -std=c++17, which this torch's headers refuse: needs -std=c++20"
  echo "WARNING: $STD_FIX; building in place from a C++20 copy" | tee "$OUT/build.log"
  sed 's/-std=c++17/-std=c++20/g' setup.py >.gpu_check_setup.py
  step build-c++20 240 "$OUT/build.log.cxx20" "$PY" .gpu_check_setup.py build_ext --inplace || ok=0
  cat "$OUT/build.log.cxx20" >>"$OUT/build.log"
  rm -f "$OUT/build.log.cxx20" .gpu_check_setup.py
fi
if [ "$DRY" -eq 0 ]; then
  backends="$("$PY" -c 'import rccl; print(rccl.backends())' 2>&1 | tail -1)"
  echo "rccl.backends(): $backends"
  case "$backends" in *"'cuda': True"*) ;; *) ok=0; echo "no CUDA kernels in this build: stopping";; esac
else
  backends="(dry run)"
fi

if [ $ok -eq 1 ]; then
  # collection errors of modules that need packages absent here (PyAV, dlib, ...) must not stop the CUDA tests
  step tests 150 "$OUT/tests.log" "$PY" -m pytest -q -ra -m cuda --continue-on-collection-errors \
    -p no:cacheprovider tests || ok=0
  # every sanitizer tool on both tile sizes and the NaN-centre case, before any timing
  if [ -n "$SANITIZER" ] || [ "$DRY" -eq 1 ]; then
    for tool in memcheck racecheck synccheck initcheck; do
      extra=()
      [ "$tool" = racecheck ] && extra=(--racecheck-report all)
      step "$tool" 50 "$OUT/sanitizer_$tool.log" "${SANITIZER:-compute-sanitizer}" --tool "$tool" "${extra[@]}" \
        --error-exitcode 9 "$PY" -m bench.cuda_sanitize_case --tiles both || ok=0
    done
  else
    echo "compute-sanitizer not found: sanitizer steps skipped"; ok=0
  fi
  step speed 150 "$OUT/cuda_speed.log" "$PY" -m bench.cuda_speed --compile --out "$OUT/cuda_speed.json"
  # bfloat16 features (what the training step feeds under autocast): the tensor-core path, where the
  # N = 4096 and 16384 targets are met by design (docs/cuda.md); the float32 rows above stay on CUDA cores
  if step speed-bf16 75 "$OUT/cuda_speed_bf16.log" "$PY" -m bench.cuda_speed --dtype bfloat16 --no-reference \
    --repeats 5 --out "$OUT/cuda_speed_bf16.json"; then
    [ "$DRY" -eq 0 ] && sed -i 's/^\(PASS\|FAIL\) /\1 [bfloat16] /' "$OUT/cuda_speed_bf16.log"
  fi
  # 64 x 64 tiles at small N too (ops.cpp's default: 32 x 32 up to N = 1024): which size wins there
  if step speed-64x64 45 "$OUT/cuda_speed_64x64.log" "$PY" -m bench.cuda_speed --small-tile-max-n 0 \
    --sizes 256 1024 --no-reference --repeats 5 --out "$OUT/cuda_speed_64x64.json"; then
    [ "$DRY" -eq 0 ] && sed -i 's/^\(PASS\|FAIL\) /\1 [64x64 tiles] /' "$OUT/cuda_speed_64x64.log"
  fi
  if [ -f bench/miner_speed.py ]; then
    # the core benchmark, quick (its rows print as they finish, so a cut-off run still reports)
    step miner_speed 60 "$OUT/miner_speed.log" "$PY" bench/miner_speed.py --device cuda --quick \
      --out "$OUT/miner_speed_cuda.json"
  fi
fi
if [ -n "$DALI_STAGE" ]; then
  # decode parity with PyAV, loader views/s, end-to-end training views/s against the model alone
  step dali 200 "$OUT/dali.log" env OUT="$OUT/dali" bash bench/gpu_data_check.sh --stage "$DALI_STAGE" --run || ok=0
fi

echo
echo "== summary ($(date -u +%H:%M:%S) UTC, $SECONDS s in all; logs in $OUT)"
printf '%-14s %-10s %6s\n' step status seconds
for i in "${!NAMES[@]}"; do printf '%-14s %-10s %6s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECONDS_TAKEN[$i]}"; done
echo "backends: $backends"
[ -n "${STD_FIX:-}" ] && echo "WARNING: $STD_FIX (built from a patched copy; setup.py itself fails there)"
grep -hE "passed|failed|error" "$OUT/tests.log" 2>/dev/null | tail -1
for tool in memcheck racecheck synccheck initcheck; do
  grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|FAILED" "$OUT/sanitizer_$tool.log" 2>/dev/null | sed "s/^/$tool: /" | tail -2
done
grep -hE "^(PASS|FAIL) " "$OUT/cuda_speed.log" "$OUT/cuda_speed_bf16.log" "$OUT/cuda_speed_64x64.log" 2>/dev/null
grep -hE "^(PASS|FAIL)" "$OUT/dali.log" 2>/dev/null
if [ "$DRY" -eq 1 ]; then
  if [ "$dry_ok" -eq 1 ]; then echo "VERDICT: dry run ok (nothing was built or run on a GPU)"; else echo "VERDICT: dry run FAILED"; fi
  [ "$dry_ok" -eq 1 ]
  exit
fi
if [ $ok -eq 1 ]; then echo "VERDICT: build, CUDA tests and sanitizers PASS"; else echo "VERDICT: FAIL (see the logs above)"; fi
[ $ok -eq 1 ]
