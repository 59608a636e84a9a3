#!/usr/bin/env bash
# The temporal profiles against the single-frame ones on rainy video with ground truth other
# than NTU a1's own rain: a1's clean frames under the synthesiser's light, dense and video rain
# (scripts/synthetic-video.py makes them). PSNR/SSIM and warping error per profile.
#   bash scripts/eval-video.sh [PROFILE ...]     -> docs/results/eval-video.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d runs/synthetic-video/dense ] || .venv/bin/python scripts/synthetic-video.py
profiles=("$@"); [ ${#profiles[@]} -gt 0 ] || profiles=(full temporal fast temporal-fast)
out=docs/results/eval-video.jsonl; : > "$out"
for style in light dense video; do
  for p in "${profiles[@]}"; do
    line=$(.venv/bin/derain eval --rain runs/synthetic-video/$style/rain --clean runs/synthetic-video/$style/clean \
           --profile "$p" --video on --json --csv /dev/null | tail -n 1)
    echo "{\"set\": \"a1-clean+$style\", \"profile\": \"$p\", \"result\": $line}" | tee -a "$out"
  done
done
