#!/usr/bin/env bash
# The GPU figures of docs/BENCHMARKS.md in one command of at most ~8 minutes, for a lent GPU
# machine (no PyAV, no Ray there: PyAV comes as its wheel, the pool is the local backend).
#   WHEELS=runs/wheels OUT=$OUT SIZE=1920x1080 bash scripts/gpu-bench.sh
# WHEELS holds the cp312 manylinux wheels of av, pyyaml and tqdm (`pip download --only-binary=:all:
# --python-version 3.12 --platform manylinux_2_17_x86_64 av pyyaml tqdm -d runs/wheels`).
# Writes one JSON line per measurement to $OUT/gpu-bench.jsonl, the console to $OUT/gpu-bench.txt
# and the GPU's utilisation every 0.5 s to $OUT/gpu-util.csv.
# On a CPU machine it runs too, to check it: SIZE=160x96 FRAMES=12 DTYPE=fp32 PY=.venv/bin/python.
# One stream runs ONE_FRAMES frames (1500 as issue 12 measured: a file's opening, `startup_s`, is
# paid once, and was 0.65 s of the 5.0 s one stream of 300 frames took, 13 %); four streams and the
# 2 + 4 thread A/B rows FRAMES each.
# ONLY=trace runs just the traced 1080p run at the end (about a minute: where one stream's frames wait);
# ONLY=one just the one-stream full row (model, codecs and end to end, auto threads: ~2 minutes).
set -uo pipefail
OUT=${OUT:-runs/gpu-bench}
SIZE=${SIZE:-1920x1080}
FRAMES=${FRAMES:-300}
ONE_FRAMES=${ONE_FRAMES:-1500}
PY=${PY:-python3}
CONFIG=${CONFIG:-configs/gpu-bench.yaml}
mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ] && ! "$PY" -c "import av, yaml, tqdm" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,encoder.stats.sessionCount --format=csv,noheader 2>/dev/null || true
nvidia-smi --query-gpu=timestamp,utilization.gpu --format=csv,noheader -lms 500 > "$OUT/gpu-util.csv" 2>/dev/null &
util=$!
jsonl=$OUT/gpu-bench.jsonl
: > "$jsonl"
run() {  # one bench command; its last line (the JSON object) goes to the .jsonl
  echo "== derain bench $*" | tee -a "$OUT/gpu-bench.txt"
  timeout 240 "$PY" -m pipeline.cli bench "$@" --json 2>>"$OUT/gpu-bench.txt" | tee -a "$OUT/gpu-bench.txt" \
    | tail -n 1 >> "$jsonl"
}
stream() {  # stream N PROFILE [FLAGS]
  local n=$FRAMES; [ "$1" = 1 ] && n=$ONE_FRAMES
  run --streams "$1" --profile "$2" --size "$SIZE" --frames "$n" --config "$CONFIG" "${@:3}"
}
fixed() {  # the codec threads of runs 1-6 (2 decode, 4 encode: sized for 4 streams on 16 cores), against auto
  sed -e 's/^decode: {/decode: {threads: 2, /' -e 's/^encode: {/encode: {threads: 4, /' "$CONFIG" > "$OUT/fixed.yaml"
  CONFIG=$OUT/fixed.yaml ONE_FRAMES=$FRAMES stream "$@"
}
if [ "${ONLY:-}" = one ]; then
  stream 1 full
  kill "$util" 2>/dev/null
  exit
elif [ "${ONLY:-}" != trace ]; then
if "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  timeout 120 "$PY" scripts/gpu-check.py 2>>"$OUT/gpu-bench.txt" | tee -a "$OUT/gpu-bench.txt" >> "$jsonl"
fi
run --model-only --profile full --dtype "${DTYPE:-fp16}" --sizes "481x321,$SIZE"
stream 1 identity
stream 4 identity
stream 1 full
stream 4 full
# A/B: one stream with the codec threads of runs 1-6 against auto (RGB frames were A/B'd in run 4)
fixed 1 identity
fixed 1 full
fi
# Where one stream's frames wait (pipeline/trace.py): a traced run of a 1080p clip, full profile
"$PY" -c "import sys; sys.path.insert(0, '.'); from pipeline.bench.speed import synthetic_frames, write_clip; \
w, h = map(int, '$SIZE'.split('x')); write_clip('$OUT/clip.mp4', synthetic_frames($FRAMES, w, h))"
DERAIN_TRACE=$OUT/trace timeout 120 "$PY" -m pipeline.cli run "$OUT/clip.mp4" -o "$OUT/traced.mp4" --overwrite \
  --config "$CONFIG" --profile full --json 2>>"$OUT/gpu-bench.txt" | tail -n 1 >> "$OUT/gpu-bench.txt"
"$PY" scripts/trace-report.py "$OUT/trace" | tee -a "$OUT/gpu-bench.txt" | tail -n 1 >> "$jsonl"
rm -f "$OUT/clip.mp4" "$OUT/traced.mp4"
kill "$util" 2>/dev/null
echo "== $(wc -l < "$jsonl") results in $jsonl"
