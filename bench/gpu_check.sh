#!/usr/bin/env bash
# The GPU check that fits one 15-minute device window (machine start and transfers included) on an H200 with
# Python 3.12, torch 2.11+cu130, timm, torchvision, pytest, nvcc and compute-sanitizer, and WITHOUT PyAV,
# dlib, DALI, facenet-pytorch, pytorch-metric-learning or a network. From the repository root:
#
#     bash bench/gpu_check.sh              # results in $OUT (default /tmp/rccl_gpu_check), <= 8 files
#     bash bench/gpu_check.sh --dry-run    # here, no GPU: every step's dry form, the budget, the file count
#
# At most GPU_CHECK_BUDGET_S (475 s, under 8 minutes) of script time: each step runs under its own time
# limit (the STEPS table below; the limits add up to no more than the budget), cut to what is left of the
# budget, and is skipped when less than 10 s is left. Correctness first, speed after, the riskiest last:
#   build        rccl._C in place for sm_90 only (TORCH_CUDA_ARCH_LIST=9.0, all cores)
#   check        rccl-check (python -m rccl.check): every backend x dtype x shape against the reference,
#                both tile sizes, forward, backward, bank update; its --speed at N = 256
#   tests        pytest -m cuda (the modules that need an absent package skip at collection)
#   memcheck     compute-sanitizer memcheck, caching allocator off (PYTORCH_NO_CUDA_MEMORY_CACHING=1), on
#                the rccl kernels only, the small cases of bench/cuda_sanitize_case.py, both tile sizes
#   racecheck    the same under racecheck
#   speed-bf16   bench/cuda_speed.py in bfloat16 (the tensor-core path training uses under autocast)
#   speed-fp32   the same in float32 (CUDA cores)
#   step-eager   bench/train_step.py --setting paper: one stage-1 step (legacy_xception, 299^2, 128
#                anchors, bf16, channels_last) in parts, against the model alone, and the loader
#   step-compiled  the same with the embedder torch.compile'd
# Results are written as they come: one JSON line per result in $OUT/results.jsonl (the environment,
# every rccl-check row, every speed row, every training-step row, then one line per step with its status),
# each step's output in its log, and the summary table last ($OUT/summary.txt, also printed).
# Exit status 0 only when the build, rccl-check, the CUDA tests and the sanitizers that ran pass.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (expected --dry-run or nothing)" >&2; exit 2 ;;
  esac
done

BUDGET_S="${GPU_CHECK_BUDGET_S:-475}"
MAX_BUDGET_S=480   # 8 minutes: the window's 15 minus a 1-2 minute start, the transfers and room for a rerun
MAX_FILES=8        # what comes back from $OUT
DRY_LIMIT_S=600    # each dry step's limit (a busy 2-core CI machine took 285 s to build the paper model once)
# name:limit_s:log (the logs are the only files besides results.jsonl and summary.txt)
STEPS=(
  "build:110:build.log"
  "check:40:check.log"
  "tests:75:tests.log"
  "memcheck:45:sanitize.log"
  "racecheck:45:sanitize.log"
  "speed-bf16:40:speed.log"
  "speed-fp32:25:speed.log"
  "step-eager:40:train_step.log"
  "step-compiled:50:train_step.log"
)

if [ "$DRY" -eq 1 ]; then
  OUT="${OUT:-$(mktemp -d /tmp/rccl_gpu_check_dry.XXXXXX)}"
  # a venv shaped like the H200's: the optional packages it lacks are hidden (tests/hide_packages)
  export PYTHONPATH="$PWD/tests/hide_packages:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  OUT="${OUT:-/tmp/rccl_gpu_check}"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the in-place build, bench/ and tests/ as modules
fi
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
PY="${PYTHON:-python3}"
CORES="$(nproc 2>/dev/null || echo 4)"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-$CORES}"
export RCCL_FORCE_CUDA=1

# ---- the budget arithmetic: the limits must fit the budget, the budget 8 minutes ----
total_limit=0
declare -A LIMIT LOG
ORDER=()
for entry in "${STEPS[@]}"; do
  IFS=: read -r name limit log <<<"$entry"
  LIMIT[$name]=$limit; LOG[$name]=$log; ORDER+=("$name")
  total_limit=$((total_limit + limit))
done
logs_used="$(printf '%s\n' "${LOG[@]}" | sort -u | wc -l)"
files=$((logs_used + 2))   # + results.jsonl + summary.txt
echo "steps: ${ORDER[*]}"
echo "budget: limits add up to ${total_limit} s <= budget ${BUDGET_S} s <= ${MAX_BUDGET_S} s; files under \$OUT: ${files} <= ${MAX_FILES}"
budget_ok=1
if [ "$total_limit" -gt "$BUDGET_S" ] || [ "$BUDGET_S" -gt "$MAX_BUDGET_S" ] || [ "$files" -gt "$MAX_FILES" ]; then
  echo "BUDGET ERROR: the step limits (${total_limit} s), the budget (${BUDGET_S} s) or the files (${files}) do not fit"
  budget_ok=0
fi

json_line() { echo "$1" >>"$RESULTS"; }   # one writer at a time: the steps run one after another

declare -A STATUS TAKEN
step() {  # step NAME COMMAND...   (limit and log from STEPS)
  local name="$1"; shift
  local limit="${LIMIT[$name]}" log="$OUT/${LOG[$name]}" start=$SECONDS
  local left=$((BUDGET_S - SECONDS))
  # a dry run's steps are not what the budget is about: each gets DRY_LIMIT_S on a machine however busy
  [ "$DRY" -eq 1 ] && limit=$DRY_LIMIT_S && left=$DRY_LIMIT_S
  if [ "$left" -lt 10 ]; then
    STATUS[$name]="SKIPPED"; TAKEN[$name]=0
    echo "== $name skipped: the ${BUDGET_S} s budget is spent"
    json_line "{\"step\": \"$name\", \"status\": \"SKIPPED\", \"seconds\": 0, \"limit_s\": $limit}"
    return 3
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  echo "== $name (limit ${limit} s, log ${LOG[$name]}) $(date -u +%H:%M:%S)"
  echo "==== $name: $*" >>"$log"
  timeout --kill-after=5 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  TAKEN[$name]=$((SECONDS - start))
  if [ $rc -eq 0 ]; then STATUS[$name]="ok"; elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then STATUS[$name]="TIMEOUT"
  else STATUS[$name]="FAIL($rc)"; fi
  tail -n 3 "$log"
  json_line "{\"step\": \"$name\", \"status\": \"${STATUS[$name]}\", \"seconds\": ${TAKEN[$name]}, \"limit_s\": ${LIMIT[$name]}, \"dry_run\": $([ "$DRY" -eq 1 ] && echo true || echo false)}"
  return $rc
}

# ---- the environment: the first result line ----
"$PY" - "$DRY" >>"$RESULTS" 2>/dev/null <<'EOF' || echo '{"step": "env", "error": "python could not describe the environment"}' >>"$RESULTS"
import json, platform, shutil, subprocess, sys
import torch
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[-1]
    except Exception as error:
        return f"unavailable ({type(error).__name__})"
print(json.dumps({"step": "env", "dry_run": sys.argv[1] == "1", "python": platform.python_version(),
                  "torch": torch.__version__, "cuda": torch.version.cuda,
                  "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                  "nvcc": run("nvcc", "--version") if shutil.which("nvcc") else None,
                  "compute_sanitizer": shutil.which("compute-sanitizer"),
                  "commit": run("git", "rev-parse", "--short", "HEAD")}))
EOF
tail -n 1 "$RESULTS"

SANITIZER="$(command -v compute-sanitizer || true)"
if [ -z "$SANITIZER" ]; then
  for candidate in /usr/local/cuda*/bin/compute-sanitizer; do [ -x "$candidate" ] && SANITIZER="$candidate" && break; done
fi
# the rccl kernels only (namespace rccl_cuda), not torch's: the filter option's name differs across versions
SAN_FILTER=()
if [ -n "$SANITIZER" ]; then
  help="$("$SANITIZER" --help 2>&1)"
  if grep -q -- "--kernel-name " <<<"$help"; then SAN_FILTER=(--kernel-name kns=rccl_cuda)
  elif grep -q -- "--filter " <<<"$help"; then SAN_FILTER=(--filter kns=rccl_cuda); fi
fi

sanitizer_failed() {  # a device the sanitizer cannot attach to (gVisor) is no finding about the kernels
  if tail -n 40 "$OUT/sanitize.log" | grep -q "Device not supported"; then
    STATUS[$1]="UNSUPPORTED"
    json_line "{\"step\": \"$1\", \"status\": \"UNSUPPORTED\", \"note\": \"compute-sanitizer: Device not supported\"}"
  else
    ok=0
  fi
}

if [ "$DRY" -eq 1 ]; then
  # every step's dry form: the same step list, limits, logs and result lines, on the CPU torch
  step build "$PY" -c "import ast, torch.utils.cpp_extension; ast.parse(open('setup.py').read()); print('setup.py parses')"
  step check "$PY" -m rccl.check --backend cpu --dtype float32 --speed --sizes 64 --jsonl "$RESULTS"
  step tests "$PY" -m pytest --collect-only -q -m cuda -p no:cacheprovider tests
  step memcheck "$PY" -m bench.cuda_sanitize_case --small --dry-run
  step racecheck "$PY" -m bench.cuda_sanitize_case --small --tiles both --dry-run
  step speed-bf16 "$PY" -m bench.cuda_speed --dtype bfloat16 --dry-run --jsonl "$RESULTS"
  step speed-fp32 "$PY" -m bench.cuda_speed --dtype float32 --dry-run --jsonl "$RESULTS"
  step step-eager "$PY" -m bench.train_step --setting paper --dry-run --jsonl "$RESULTS"
  step step-compiled "$PY" -m bench.train_step --help
else
  ok=1
  step build "$PY" setup.py build_ext --inplace || ok=0
  backends="$("$PY" -c 'import rccl; print(rccl.backends())' 2>&1 | tail -1)"
  echo "rccl.backends(): $backends" | tee -a "$OUT/build.log"
  case "$backends" in *"'cuda': True"*) ;; *) ok=0; echo "no CUDA kernels in this build: the GPU steps cannot run";; esac
  if [ $ok -eq 1 ]; then
    step check "$PY" -m rccl.check --speed --sizes 256 --jsonl "$RESULTS" || ok=0
    xdist=()
    "$PY" -c "import xdist" 2>/dev/null && xdist=(-n 4)
    step tests "$PY" -m pytest -q -ra -m cuda -p no:cacheprovider "${xdist[@]}" tests || ok=0
    if [ -n "$SANITIZER" ]; then
      step memcheck env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck "${SAN_FILTER[@]}" \
        --error-exitcode 9 "$PY" -m bench.cuda_sanitize_case --small --tiles both || sanitizer_failed memcheck
      step racecheck "$SANITIZER" --tool racecheck --racecheck-report all "${SAN_FILTER[@]}" \
        --error-exitcode 9 "$PY" -m bench.cuda_sanitize_case --small --tiles both || sanitizer_failed racecheck
    else
      echo "compute-sanitizer not found: memcheck and racecheck not run"
    fi
    step speed-bf16 "$PY" -m bench.cuda_speed --dtype bfloat16 --no-reference --repeats 5 --inner 20 \
      --out /tmp/rccl_cuda_speed_bf16.json --jsonl "$RESULTS"
    step speed-fp32 "$PY" -m bench.cuda_speed --dtype float32 --repeats 5 --inner 20 \
      --out /tmp/rccl_cuda_speed_fp32.json --jsonl "$RESULTS"
    step step-eager "$PY" -m bench.train_step --setting paper --workers $((CORES - 1)) --jsonl "$RESULTS"
    step step-compiled "$PY" -m bench.train_step --setting paper --compile --no-data --jsonl "$RESULTS"
  fi
fi

# ---- the summary: last ----
{
  echo "== summary ($(date -u +%H:%M:%S) UTC, ${SECONDS} s of script time; results in $OUT)"
  printf '%-14s %-10s %7s %7s  %s\n' step status seconds limit result
  for name in "${ORDER[@]}"; do
    log="$OUT/${LOG[$name]}"
    case "$name" in
      build) result="$(grep -h "rccl.backends()\|rccl setup:" "$log" 2>/dev/null | tail -1)" ;;
      check) result="$(grep -h "^rccl-check: \(all rows\|[0-9]\)" "$log" 2>/dev/null | tail -1)" ;;
      tests) result="$(grep -hE "(passed|failed|error|collected)" "$log" 2>/dev/null | tail -1)" ;;
      memcheck) result="$(grep -hE "ERROR SUMMARY|Device not supported|FAILED|values match" "$log" 2>/dev/null | head -2 | tr '\n' ' ')" ;;
      racecheck) result="$(grep -hE "RACECHECK SUMMARY|Device not supported|FAILED" "$log" 2>/dev/null | tail -2 | tr '\n' ' ')" ;;
      speed-*) result="$(grep -hE "^(PASS|FAIL) " "$log" 2>/dev/null | grep -c PASS) PASS / $(grep -hE "^(PASS|FAIL) " "$log" 2>/dev/null | grep -c FAIL) FAIL (all speed steps)" ;;
      step-*) result="$(grep -h "^row=step \|^row=model alone" "$log" 2>/dev/null | tr '\n' ' ' | cut -c1-160)" ;;
    esac
    printf '%-14s %-10s %7s %7s  %s\n' "$name" "${STATUS[$name]:-not run}" "${TAKEN[$name]:-0}" "${LIMIT[$name]}" "${result:-}"
  done
  grep -hE "^(PASS|FAIL) " "$OUT/speed.log" 2>/dev/null
  grep -h "^row=" "$OUT/train_step.log" 2>/dev/null
} >"$OUT/summary.txt"
echo
cat "$OUT/summary.txt"
n_files="$(find "$OUT" -type f | wc -l)"
echo "files under \$OUT: $n_files (at most $MAX_FILES come back)"

if [ "$DRY" -eq 1 ]; then
  dry_ok=$budget_ok
  for name in "${ORDER[@]}"; do [ "${STATUS[$name]:-}" = ok ] || dry_ok=0; done
  [ "$n_files" -le "$MAX_FILES" ] || dry_ok=0
  if [ $dry_ok -eq 1 ]; then echo "VERDICT: dry run ok (nothing was built or run on a GPU)"; else echo "VERDICT: dry run FAILED"; fi
  [ $dry_ok -eq 1 ]
  exit
fi
for name in memcheck racecheck; do
  [ "${STATUS[$name]:-}" = UNSUPPORTED ] && echo "note: compute-sanitizer does not support this device (gVisor?): $name checked nothing"
done
if [ "${ok:-0}" -eq 1 ] && [ "$budget_ok" -eq 1 ]; then echo "VERDICT: build, rccl-check, CUDA tests and sanitizers PASS"
else echo "VERDICT: FAIL (see the summary and the logs)"; fi
[ "${ok:-0}" -eq 1 ]
