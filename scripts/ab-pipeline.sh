#!/usr/bin/env bash
# Before/after speed of the file pipeline: `derain run` on one generated 200-frame 640x360 clip,
# alternating between REV (checked out in a temporary worktree) and this tree, RUNS times each.
# Prints each run's frames/s, wall time and driver CPU (the table in docs/BENCHMARKS.md). Compare wall times:
# before 2026-11-27 the reported frames/s left out the encoder's final flush, now it is counted.
#   bash scripts/ab-pipeline.sh b3ecb90 [RUNS=4] [BACKEND=local|ray] [PROFILE=fast]
set -euo pipefail
REV=$1 RUNS=${2:-4} BACKEND=${3:-local} PROFILE=${4:-fast}
PY=${PY:-.venv/bin/python}
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # absolute, the venv's link kept
here=$PWD tmp=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$tmp/before" 2>/dev/null; rm -rf "$tmp"' EXIT
git worktree add -q --detach "$tmp/before" "$REV"
"$PY" -c "from pathlib import Path; from pipeline.bench.speed import synthetic_frames, write_clip; \
write_clip(Path('$tmp/clip.mp4'), synthetic_frames(200, 640, 360))"
for _ in $(seq "$RUNS"); do
  for side in after before; do
    tree=$here; [ "$side" = before ] && tree=$tmp/before
    (cd "$tree" && /usr/bin/time -f "$side: wall %e s (process start to exit), driver user CPU %U s" env PYTHONPATH="$tree" "$PY" -m pipeline.cli run \
      "$tmp/clip.mp4" -o "$tmp/out.mp4" --profile "$PROFILE" --backend "$BACKEND" --overwrite 2>&1 \
      | sed "s|^$tmp/out.mp4|$side|")
  done
done
