#!/usr/bin/env bash
# A GPU slice of fine-tunes, side by side on the one GPU: each config in CONFIGS (default: the two
# prepared from the shipped weights, faint rain for full and consistency for temporal) trains for at most
# MAX_SECONDS, and its validation-best weights, val.csv and log.csv come back in OUT (what a
# lent machine returns). The validation set chooses; the test sets are scored afterwards, here.
#   DATA=runs/corpus OUT=dir WHEELS=runs/wheels-train bash scripts/gpu-finetune.sh   (scripts/gpu-prepare.sh makes runs/)
#   CONFIGS=finetune-faint-gpu MAX_SECONDS=420 DATA=runs/corpus WHEELS=runs/wheels-train OUT=dir bash scripts/gpu-finetune.sh
# EXTRA adds settings to every run (a CPU check: EXTRA="--set train.batch=2 --set val_every=2").
set -uo pipefail
DATA=${DATA:-../shared/data/clean_corpus}
OUT=${OUT:-runs/gpu-out}
PY=${PY:-python3}
CONFIGS=${CONFIGS:-finetune-faint-gpu finetune-temporal-consistency-gpu}
MAX_SECONDS=${MAX_SECONDS:-210}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
if [ -n "${WHEELS:-}" ] && ! "$PY" -c "import yaml, tqdm" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
for c in $CONFIGS; do
  # shellcheck disable=SC2086 # EXTRA is a list of arguments
  PYTHONUNBUFFERED=1 "$PY" -m pipeline.cli train --config "configs/$c.yaml" --max-seconds "$MAX_SECONDS" \
    --progress --set "data.clean_dirs=[$DATA]" ${EXTRA:-} > "$OUT/$c.txt" 2>&1 &
done
wait
for c in $CONFIGS; do
  run=$(sed -n 's/^out_dir: *//p' "configs/$c.yaml")
  profile=$(sed -n 's/^profile: *//p' "configs/$c.yaml")
  cp "$run/$profile-best.pt" "$OUT/$c-best.pt" || echo "== $c: no validation-best weights (see $OUT/$c.txt)"
  cp "$run/val.csv" "$OUT/$c-val.csv" 2>/dev/null
  gzip -c "$run/log.csv" > "$OUT/$c-log.csv.gz" 2>/dev/null
  tail -c 2000 "$OUT/$c.txt" | tr '\r' '\n' | tail -n 3
  echo "== $c: best validation $(sort -t, -k3 -g "$run/val.csv" 2>/dev/null | tail -n 1) (step, seconds, dB)"
done
