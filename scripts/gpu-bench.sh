#!/usr/bin/env bash
# The GPU figures of docs/BENCHMARKS.md in one command of at most ~8 minutes, for a lent GPU
# machine (no PyAV, no Ray there: PyAV comes as its wheel, the pool is the local backend).
#   WHEELS=runs/wheels OUT=$OUT SIZE=1920x1080 bash scripts/gpu-bench.sh
# WHEELS holds the cp312 manylinux wheels of av, pyyaml and tqdm (`pip download --only-binary=:all:
# --python-version 3.12 --platform manylinux_2_17_x86_64 av pyyaml tqdm -d runs/wheels`).
# Writes one JSON line per measurement to $OUT/gpu-bench.jsonl and the console to $OUT/gpu-bench.txt.
# On a CPU machine it runs too, to check it: SIZE=160x96 FRAMES=12 DTYPE=fp32 PY=.venv/bin/python.
set -uo pipefail
OUT=${OUT:-runs/gpu-bench}
SIZE=${SIZE:-1920x1080}
FRAMES=${FRAMES:-300}
PY=${PY:-python3}
mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ] && ! "$PY" -c "import av, yaml, tqdm" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,encoder.stats.sessionCount --format=csv,noheader 2>/dev/null || true
jsonl=$OUT/gpu-bench.jsonl
: > "$jsonl"
run() {  # one bench command; its last line (the JSON object) goes to the .jsonl
  echo "== derain bench $*" | tee -a "$OUT/gpu-bench.txt"
  timeout 240 "$PY" -m pipeline.cli bench "$@" --json 2>>"$OUT/gpu-bench.txt" | tee -a "$OUT/gpu-bench.txt" \
    | tail -n 1 >> "$jsonl"
}
run --model-only --profile full --dtype "${DTYPE:-fp16}" --sizes "481x321,$SIZE"
run --streams 1 --profile identity --backend local --size "$SIZE" --frames "$FRAMES"
run --streams 4 --profile identity --backend local --size "$SIZE" --frames "$FRAMES"
run --streams 1 --profile full --backend local --size "$SIZE" --frames "$FRAMES"
run --streams 4 --profile full --backend local --size "$SIZE" --frames "$FRAMES"
echo "== $(wc -l < "$jsonl") results in $jsonl"
