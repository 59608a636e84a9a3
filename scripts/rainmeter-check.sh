#!/usr/bin/env bash
# Does `derain rainmeter` rank derained outputs as PSNR does? On NTU a1's first 42 frames
# (synthetic rain, ground truth known): every profile's output (derain eval --save), the rainy
# input and the clean frames, each with its Y-PSNR and its rain-left score.
#   bash scripts/rainmeter-check.sh     -> docs/results/rainmeter-a1.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
D=../shared/data/ntu_synthetic_video
W=runs/rainmeter-check
mkdir -p "$W/rain" "$W/clean"
for i in $(seq -f %05g 1 42); do cp "$D/a1_Rain/$i.jpg" "$W/rain/"; cp "$D/a1_GT/$i.jpg" "$W/clean/"; done
out=docs/results/rainmeter-a1.jsonl
# shellcheck disable=SC2086 # a list of profiles
.venv/bin/python scripts/results-keep.py "$out" rainy clean ${PROFILES:-full fast temporal temporal-fast}  # the others' lines stay
for p in rainy clean ${PROFILES:-full fast temporal temporal-fast}; do
  case $p in
    rainy) dir=$W/rain; ev=null ;;
    clean) dir=$W/clean; ev=null ;;
    *) dir=$W/out-$p
       ev=$(.venv/bin/derain eval --rain "$W/rain" --clean "$W/clean" --profile "$p" --save "$dir" --csv /dev/null --json | tail -n 1) ;;
  esac
  echo "{\"profile\": \"$p\", \"eval\": $ev, \"rainmeter\": $(.venv/bin/derain rainmeter "$dir" --json)}" | tee -a "$out"
done
