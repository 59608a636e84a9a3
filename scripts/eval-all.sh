#!/usr/bin/env bash
# usage: scripts/eval-all.sh PROFILE   (full | fast) -> docs/results/eval-PROFILE.jsonl
cd "$(dirname "$0")/.."
p=$1; out=docs/results/eval-$p.jsonl; : > $out
D=../shared/data
for s in rain12:rain12/rain:rain12/norain Rain100L:rain100_samples/Rain100L/rain:rain100_samples/Rain100L/norain Rain100H:rain100_samples/Rain100H/rain:rain100_samples/Rain100H/norain ntu-a1:ntu_synthetic_video/a1_Rain:ntu_synthetic_video/a1_GT; do
  IFS=: read name rain clean <<< "$s"
  line=$(.venv/bin/derain eval --rain $D/$rain --clean $D/$clean --profile $p --json --csv docs/results/eval-$p-$name.csv | tail -1)
  echo "{\"set\": \"$name\", \"cmd\": \"derain eval --rain $D/$rain --clean $D/$clean --profile $p --json\", \"result\": $line}" >> $out
  echo "$name $line"
done
