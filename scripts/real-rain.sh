#!/usr/bin/env bash
# Real rain, which has no ground truth: derain NTU's two real rainy videos (ra1, rb2) and the
# demo clip with every profile, and measure the rain left (`derain rainmeter`); then, on NTU a1
# (synthetic, with ground truth), check that the measure ranks the outputs as PSNR does
# (scripts/rainmeter-check.sh).
#   bash scripts/real-rain.sh            -> docs/results/real-rain.jsonl, docs/results/rainmeter-a1.jsonl
# Outputs (PNG frames) stay in runs/real-rain/ for scripts/real-rain-crops.py.
set -euo pipefail
cd "$(dirname "$0")/.."
D=../shared/data
W=runs/real-rain
mkdir -p "$W" docs/results
profiles=${PROFILES:-full fast temporal temporal-fast}
# shellcheck disable=SC2086 # a list of profiles
.venv/bin/python scripts/results-keep.py docs/results/real-rain.jsonl rainy $profiles  # the others' lines stay
declare -A inputs=([ra1]=$D/ntu_realrain_video/ra1_Rain [rb2]=$D/ntu_realrain_video/rb2_Rain [demo]=pipeline/assets/rainy-sample.mp4)
for name in ra1 rb2 demo; do
  echo "{\"set\": \"$name\", \"profile\": \"rainy\", \"result\": $(.venv/bin/derain rainmeter "${inputs[$name]}" --json)}" >> docs/results/real-rain.jsonl
  for p in $profiles; do
    out=$W/$name-$p/
    .venv/bin/derain run "${inputs[$name]}" -o "$out" --profile "$p" --overwrite --json > /dev/null
    echo "{\"set\": \"$name\", \"profile\": \"$p\", \"result\": $(.venv/bin/derain rainmeter "$out" --json)}" >> docs/results/real-rain.jsonl
  done
done
bash scripts/rainmeter-check.sh
cat docs/results/real-rain.jsonl
