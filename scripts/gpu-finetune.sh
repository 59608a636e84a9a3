#!/usr/bin/env bash
# A second, short GPU slice: fine-tune the full and temporal profiles at once from the first
# run's weights and autoencoders (copied to runs/init/), each for train.seconds, and leave the
# validation-best weights and the logs in OUT (three files: what a lent machine returns).
#   DATA=runs/corpus OUT=dir WHEELS=runs/wheels bash scripts/gpu-finetune.sh
set -uo pipefail
DATA=${DATA:-../shared/data/clean_corpus}
OUT=${OUT:-runs/gpu-out}
PY=${PY:-python3}
mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ] && ! "$PY" -c "import yaml, tqdm" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
for c in finetune-gpu finetune-temporal-gpu; do
  PYTHONUNBUFFERED=1 "$PY" -m pipeline.cli train --config configs/$c.yaml --max-seconds 210 --progress \
    --set "data.clean_dirs=[$DATA]" > /tmp/$c.txt 2>&1 &
done
wait
cp runs/full-ft-gpu/full-best.pt runs/temporal-ft-gpu/temporal-best.pt "$OUT/"
for c in finetune-gpu finetune-temporal-gpu; do tail -c 2000 /tmp/$c.txt | tr '\r' '\n' | tail -n 4 > /tmp/$c.tail; done
tar czf "$OUT/logs.tgz" runs/full-ft-gpu/val.csv runs/temporal-ft-gpu/val.csv runs/full-ft-gpu/log.csv \
  runs/temporal-ft-gpu/log.csv /tmp/*.tail
cat runs/full-ft-gpu/val.csv runs/temporal-ft-gpu/val.csv /tmp/*.tail
