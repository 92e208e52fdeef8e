#!/usr/bin/env bash
# Run HERE (a machine with PyPI access), from the repository root, before bench/gpu_data_check.sh runs on
# the GPU machine, which has no network and no DALI:
#
#     bash bench/dali_wheel_split.sh
#
# It downloads the Python 3.12 wheels of NVIDIA DALI (nvidia-dali-cuda130 2.4.0, ~199 MB), the
# dependencies that machine lacks, and PyAV (the reference decoder of the NVDEC test), packs them into one
# tar (wheels are already compressed) and splits it into parts of at most PART_MB MiB, one per git-ignored
# folder .dali_part1/, .dali_part2/, ... (the .gitignore has /.dali*/), because one device call carries at
# most 64 MiB with the working tree. It prints the device calls to make, one part each, back to back.
set -euo pipefail
cd "$(dirname "$0")/.."
PART_MB="${PART_MB:-60}"
WHEELS=.dali_wheels
DALI_VERSION="${DALI_VERSION:-2.4.0}"
AV_VERSION="${AV_VERSION:-18.1.0}"
# Already on the GPU machine (torch 2.11 cu130 + timm + opencv): numpy packaging pyyaml six typing_extensions wheel.
PRESENT='^(numpy|packaging|pyyaml|PyYAML|six|typing_extensions|wheel)-'

mkdir -p "$WHEELS"
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" \
  "nvidia-dali-cuda130==$DALI_VERSION" "av==$AV_VERSION"

list=$(cd "$WHEELS" && ls *.whl | grep -Ev "$PRESENT" | sort)
echo "wheels to carry:"
(cd "$WHEELS" && du -ch $list | sed 's/^/  /')

rm -rf .dali_part*/ .dali_bundle.tar
tar -cf .dali_bundle.tar -C "$WHEELS" $list
sha=$(sha256sum .dali_bundle.tar | cut -d' ' -f1)
split -b "${PART_MB}M" -d -a 1 .dali_bundle.tar .dali_bundle.part.
n=0
for f in .dali_bundle.part.*; do
  n=$((n + 1))
  mkdir -p ".dali_part$n"
  mv "$f" ".dali_part$n/part"
done
for i in $(seq 1 "$n"); do
  printf '%s\n' "$i/$n $sha" > ".dali_part$i/index"
done
rm -f .dali_bundle.tar
git check-ignore -q .dali_part1/part || { echo "ERROR: .dali_part1/ is not git-ignored; add /.dali*/ to .gitignore"; exit 1; }
echo
echo "$n parts of at most ${PART_MB} MiB (tar sha256 $sha):"
du -h .dali_part*/part
echo
echo "On the GPU machine: one device call per part, issued back to back (the machine goes back when idle):"
for i in $(seq 1 $((n - 1))); do
  echo "  run(command='bash bench/gpu_data_check.sh --stage $i', carry=['.dali_part$i'], timeout_s=120)"
done
echo "  run(command='bash bench/gpu_data_check.sh --stage $n --run', carry=['.dali_part$n'], timeout_s=540)"
