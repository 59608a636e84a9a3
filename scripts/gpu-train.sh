#!/usr/bin/env bash
# Train every profile at once on one leased GPU (full, fast, temporal, temporal-fast), in
# commands of at most MAX_SECONDS each (a leased machine's 10-minute limit); run it again to
# go on (each run resumes from runs/<profile>-gpu/last.pt when present).
#   DATA=path/to/clean_corpus OUT=dir MAX_SECONDS=540 bash scripts/gpu-train.sh [PROFILE ...]
# It leaves in OUT each profile's final and best (validation-set) weights, its autoencoder,
# the CSV logs and the console output. WHEELS=dir installs pyyaml/tqdm from wheels first
# where the machine lacks them.
set -uo pipefail
DATA=${DATA:-../shared/data/clean_corpus}
OUT=${OUT:-runs/gpu-out}
MAX_SECONDS=${MAX_SECONDS:-540}
PY=${PY:-python3}
profiles=("$@")
[ ${#profiles[@]} -gt 0 ] || profiles=(full fast temporal temporal-fast)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
if [ -n "${WHEELS:-}" ] && ! "$PY" -c "import yaml, tqdm" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
pids=()
for profile in "${profiles[@]}"; do
  config=configs/train-$profile-gpu.yaml
  [ "$profile" = full ] && config=configs/train-gpu.yaml
  resume=()
  [ -f "runs/$profile-gpu/last.pt" ] && resume=(--resume)
  PYTHONUNBUFFERED=1 "$PY" -m pipeline.cli train --config "$config" "${resume[@]}" --progress \
    --max-seconds "$MAX_SECONDS" --set "data.clean_dirs=[$DATA]" >"$OUT/train-$profile.txt" 2>&1 &
  pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
for profile in "${profiles[@]}"; do
  run=runs/$profile-gpu
  for f in "$profile.pt" "$profile-best.pt"; do cp "$run/$f" "$OUT/" 2>/dev/null; done
  cp "$run/autoencoder.pt" "$OUT/autoencoder-$profile.pt" 2>/dev/null
  cp "$run/log.csv" "$OUT/log-$profile.csv" 2>/dev/null
  cp "$run/val.csv" "$OUT/val-$profile.csv" 2>/dev/null
  echo "== $profile: best validation $(sort -t, -k3 -g "$run/val.csv" 2>/dev/null | tail -n 1)"
  tail -c 1500 "$OUT/train-$profile.txt" | tr '\r' '\n' | tail -n 3
done
exit $rc
