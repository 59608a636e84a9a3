#!/usr/bin/env bash
# Train the full and the fast profile at once on one GPU, in commands of at most
# MAX_SECONDS each (a leased machine's 10-minute limit); run it again to go on.
#   DATA=path/to/clean_corpus OUT=dir MAX_SECONDS=540 bash scripts/gpu-train.sh
# Each run resumes from runs/<profile>-gpu/last.pt when present and leaves the
# weights so far, the CSV logs and the console output in OUT.
set -uo pipefail
DATA=${DATA:-../shared/data/clean_corpus}
OUT=${OUT:-runs/gpu-out}
MAX_SECONDS=${MAX_SECONDS:-540}
PY=${PY:-python3}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
pids=()
for profile in full fast; do
  config=configs/train-gpu.yaml
  [ "$profile" = fast ] && config=configs/train-fast-gpu.yaml
  resume=()
  [ -f "runs/$profile-gpu/last.pt" ] && resume=(--resume)
  PYTHONUNBUFFERED=1 "$PY" -m pipeline.cli train --config "$config" "${resume[@]}" --progress \
    --max-seconds "$MAX_SECONDS" --set "data.clean_dirs=[$DATA]" >"$OUT/train-$profile.txt" 2>&1 &
  pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
for profile in full fast; do
  cp "runs/$profile-gpu/$profile.pt" "runs/$profile-gpu/log.csv" "$OUT/" 2>/dev/null &&
    mv "$OUT/log.csv" "$OUT/log-$profile.csv"
  tail -c 1500 "$OUT/train-$profile.txt" | tr '\r' '\n' | tail -n 4
done
exit $rc
