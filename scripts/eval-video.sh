#!/usr/bin/env bash
# The temporal profiles against the single-frame ones on rainy video with ground truth other
# than NTU a1's own rain: a1's clean frames under the synthesiser's light, dense and video rain
# (scripts/synthetic-video.py makes them). PSNR/SSIM and warping error per profile.
#   STEP=1 bash scripts/eval-video.sh [PROFILE ...]   -> docs/results/eval-video-step1.jsonl
# STEP=1: 42 consecutive frames; STEP=4: every 4th frame (4x the motion between frames).
# DEFLICKER=on|off: model.deflicker set so, not by profile (-> eval-video-stepN-deflicker-on.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
STEP=${STEP:-1}
V=runs/synthetic-video/step$STEP
[ -d $V/dense ] || .venv/bin/python scripts/synthetic-video.py "$STEP"
profiles=("$@"); [ ${#profiles[@]} -gt 0 ] || profiles=(full temporal fast temporal-fast)
DEFLICKER=${DEFLICKER:-auto}
suffix=""; [ "$DEFLICKER" = auto ] || suffix="-deflicker-$DEFLICKER"
out=docs/results/eval-video-step$STEP$suffix.jsonl
.venv/bin/python scripts/results-keep.py "$out" "${profiles[@]}"  # the other profiles' lines stay
for style in light dense video; do
  for p in "${profiles[@]}"; do
    line=$(.venv/bin/derain eval --rain $V/$style/rain --clean $V/$style/clean \
           --profile "$p" --video on --deflicker "$DEFLICKER" --json --csv /dev/null | tail -n 1)
    echo "{\"set\": \"a1-clean+$style, step $STEP\", \"profile\": \"$p\", \"result\": $line}" | tee -a "$out"
  done
done
