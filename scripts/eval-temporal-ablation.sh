#!/usr/bin/env bash
# What the temporal profiles' alignment and deflicker each do, on NTU a1 (reported, not chosen on:
# the settings come from scripts/select-temporal.py): every profile with the window as trained
# (no alignment, no deflicker), aligned, and aligned and deflickered.
#   bash scripts/eval-temporal-ablation.sh [PROFILE ...]   -> docs/results/eval-temporal-ablation.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
D=../shared/data/ntu_synthetic_video
out=docs/results/eval-temporal-ablation.jsonl
profiles=("$@"); [ ${#profiles[@]} -gt 0 ] || profiles=(temporal temporal-fast)
.venv/bin/python scripts/results-keep.py "$out" "${profiles[@]}"  # the other profiles' lines stay
for p in "${profiles[@]}"; do
  for ad in none:off fast:off fast:on; do
    IFS=: read align deflicker <<< "$ad"
    line=$(.venv/bin/derain eval --rain $D/a1_Rain --clean $D/a1_GT --profile "$p" --align "$align" \
           --deflicker "$deflicker" --json --csv /dev/null | tail -n 1)
    echo "{\"set\": \"ntu-a1\", \"cmd\": \"derain eval --rain $D/a1_Rain --clean $D/a1_GT --profile $p --align $align --deflicker $deflicker --json\", \"result\": $line}" | tee -a "$out"
  done
done
