#!/usr/bin/env bash
# The GPU check of the DALI data path (issue 6), for a GPU machine with Python 3.12, torch 2.11 cu130, timm
# and opencv, no network and no DALI. DALI travels as wheels split by bench/dali_wheel_split.sh into
# git-ignored folders .dali_part1/ .. .dali_partN/, one per device call (64 MiB per call):
#
#     bash bench/gpu_data_check.sh --stage 1          # carry .dali_part1; copies the part to /tmp/dali_parts
#     ...                                             # (each call right after the last: an idle machine goes back)
#     bash bench/gpu_data_check.sh --stage N --run    # carry .dali_partN; joins, installs, tests, measures
#
# --run: joins the parts (sha256 checked), `pip install --no-index --no-deps --target /tmp/dali_site` of the
# wheels, then (each step with its own time limit, logs in $OUT):
#   1. pytest tests/test_dali.py (the CPU tests and the GPU ones: NVDEC vs PyAV, GPU loader on cuda)
#   2. bench/loader_speed.py with JPEG crops (nvJPEG) and with PNG crops (rccl-prep's default): torch loader,
#      DALI CPU, DALI GPU, the model alone (legacy_xception, batch 128, 299, bf16) and end to end
# and prints a short table last. Exit status 0 only when the install and the tests pass.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/rccl_gpu_data_check}"
PARTS=/tmp/dali_parts
SITE=/tmp/dali_site
PY="${PYTHON:-python3}"
mkdir -p "$OUT" "$PARTS"
export PYTHONUNBUFFERED=1

run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --stage)
      i="$2"; shift 2
      if [ ! -f ".dali_part$i/part" ]; then
        echo "ERROR: .dali_part$i/part is not here: name '.dali_part$i' in the call's carry (bench/dali_wheel_split.sh makes it)"
        exit 2
      fi
      cp ".dali_part$i/part" "$PARTS/part.$i" && cp ".dali_part$i/index" "$PARTS/index.$i"
      echo "staged part $(cut -d' ' -f1 "$PARTS/index.$i") ($(du -h "$PARTS/part.$i" | cut -f1)) in $PARTS"
      ;;
    --run) run=1; shift ;;
    *) echo "usage: $0 [--stage N]... [--run]"; exit 2 ;;
  esac
done
[ $run -eq 1 ] || exit 0

declare -a NAMES STATUS SECONDS_TAKEN
step() {  # step NAME LIMIT_S LOGFILE COMMAND...
  local name="$1" limit="$2" log="$3"
  shift 3
  local start=$SECONDS
  echo "== $name (limit ${limit}s, log $log)"
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  local rc=$?
  NAMES+=("$name"); SECONDS_TAKEN+=("$((SECONDS - start))")
  if [ $rc -eq 0 ]; then STATUS+=("ok"); elif [ $rc -eq 124 ]; then STATUS+=("TIMEOUT"); else STATUS+=("FAIL($rc)"); fi
  tail -n 4 "$log"
  return $rc
}

{
  date -u
  nvidia-smi -L || true
  "$PY" -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  git rev-parse --short HEAD 2>/dev/null
  nproc
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# Join and install (skipped when an earlier call on this warm machine installed it already)
[ -d "$SITE" ] && export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
ok=1
if ! "$PY" -c "import nvidia.dali, av" 2>/dev/null; then
  total=$(cut -d' ' -f1 "$PARTS"/index.* 2>/dev/null | head -1 | cut -d/ -f2)
  sha=$(cut -d' ' -f2 "$PARTS"/index.* 2>/dev/null | sort -u)
  have=$(ls "$PARTS"/part.* 2>/dev/null | wc -l)
  if [ -z "$total" ] || [ "$have" != "$total" ] || [ "$(echo "$sha" | wc -l)" != 1 ]; then
    echo "ERROR: $have part(s) staged in $PARTS, expected ${total:-?} from one split (sha256 seen: $sha)."
    echo "A fresh machine starts bare: stage every part again, one call each, back to back."
    exit 3
  fi
  rm -rf /tmp/dali_wheels && mkdir -p /tmp/dali_wheels
  for i in $(seq 1 "$total"); do cat "$PARTS/part.$i"; done > /tmp/dali_bundle.tar
  if [ "$(sha256sum /tmp/dali_bundle.tar | cut -d' ' -f1)" != "$sha" ]; then
    echo "ERROR: the joined parts do not match the split's sha256 ($sha): a part is stale or damaged"; exit 3
  fi
  tar -xf /tmp/dali_bundle.tar -C /tmp/dali_wheels && rm -f /tmp/dali_bundle.tar
  step install 240 "$OUT/install.log" "$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir \
    --target "$SITE" /tmp/dali_wheels/*.whl || ok=0
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import nvidia.dali, av; print('DALI', nvidia.dali.__version__, 'PyAV', av.__version__)" 2>&1 | tee -a "$OUT/env.txt" \
  || { echo "DALI or PyAV does not import: stopping"; ok=0; }

if [ $ok -eq 1 ]; then
  step tests 240 "$OUT/tests.log" "$PY" -m pytest tests/test_dali.py -q -rs -p no:cacheprovider || ok=0
  # Loader speeds. Model rows: legacy_xception, batch 128, 299^2, bf16, channels_last (the issue's setting).
  step speed-jpg 240 "$OUT/speed_jpg.log" "$PY" bench/loader_speed.py --format jpg --crops 1024 \
    --batches 12 --repeats 3 --workers 15 --dali-threads 8 --json "$OUT/loader_speed.jsonl"
  step speed-png 180 "$OUT/speed_png.log" "$PY" bench/loader_speed.py --format png --crops 1024 \
    --batches 8 --repeats 3 --workers 15 --dali-threads 15 --only torch,dali-gpu --no-model \
    --json "$OUT/loader_speed.jsonl"
fi

echo
echo "== summary ($(head -1 "$OUT/env.txt"))"
printf '%-12s %-10s %s\n' step status seconds
for i in "${!NAMES[@]}"; do printf '%-12s %-10s %s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECONDS_TAKEN[$i]}"; done
for f in "$OUT/speed_jpg.log" "$OUT/speed_png.log"; do
  [ -f "$f" ] && { echo "-- $(basename "$f")"; grep -E "views/s|end to end is" "$f"; }
done
grep -E "passed|failed" "$OUT/tests.log" 2>/dev/null | tail -1
[ $ok -eq 1 ] && exit 0 || exit 1
