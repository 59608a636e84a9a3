#!/usr/bin/env bash
# usage: scripts/eval-all.sh PROFILE   (full | fast | temporal | temporal-fast) -> docs/results/eval-PROFILE.jsonl
#   WEIGHTS=file TAG=name scripts/eval-all.sh full   scores a weights file (a fine-tune's) -> eval-TAG.jsonl
# Every test set, reported only (choices are made on the validation set, pipeline/model/valset.py):
# rain12 as all 12 pairs and as 009..012 (001..008 are crops of BSDS500 images that weights
# trained before 2026-11-26 saw), the Rain100L/H samples, and NTU a1 as a video (warping error too).
set -euo pipefail
cd "$(dirname "$0")/.."
p=$1; tag=${TAG:-$p}; out=docs/results/eval-$tag.jsonl; : > "$out"
weights=(); [ -n "${WEIGHTS:-}" ] && weights=(--weights "$WEIGHTS")
D=../shared/data
sub=$(mktemp -d); trap 'rm -rf "$sub"' EXIT
mkdir -p "$sub/rain" "$sub/norain"
for i in 009 010 011 012; do cp $D/rain12/rain/rain-$i.png "$sub/rain/"; cp $D/rain12/norain/norain-$i.png "$sub/norain/"; done
for s in rain12:$D/rain12/rain:$D/rain12/norain rain12-009-012:$sub/rain:$sub/norain \
         Rain100L:$D/rain100_samples/Rain100L/rain:$D/rain100_samples/Rain100L/norain \
         Rain100H:$D/rain100_samples/Rain100H/rain:$D/rain100_samples/Rain100H/norain \
         ntu-a1:$D/ntu_synthetic_video/a1_Rain:$D/ntu_synthetic_video/a1_GT; do
  IFS=: read name rain clean <<< "$s"
  line=$(.venv/bin/derain eval --rain "$rain" --clean "$clean" --profile "$p" "${weights[@]}" --json \
    --csv docs/results/eval-$tag-$name.csv | tail -1)
  shown=${rain/#$sub/rain12-009-012}
  echo "{\"set\": \"$name\", \"cmd\": \"derain eval --rain ${shown} --clean ${clean/#$sub/rain12-009-012} --profile $p ${weights[*]} --json\", \"result\": $line}" >> "$out"
  echo "$name $line"
done
