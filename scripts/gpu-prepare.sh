#!/usr/bin/env bash
# What the prepared GPU commands carry, made here (a lent machine reaches no package registry, and
# runs/ is not kept with the repository, so a fresh checkout has none of it):
#   runs/wheels        av, pyyaml, tqdm for Python 3.12 (scripts/gpu-bench.sh; glibc 2.28 wheels, as torch's)
#   runs/wheels-train  pyyaml, tqdm (scripts/gpu-train.sh, scripts/gpu-finetune.sh)
#   runs/corpus        the clean corpus (DATA=runs/corpus; ../shared is not carried)
# Then, for example: carry ["runs/wheels"] and run `WHEELS=runs/wheels OUT=$OUT bash scripts/gpu-bench.sh`.
#   bash scripts/gpu-prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
# the PyAV the tests here ran with, not whatever is newest
AV=$("$(dirname "$PIP")/python" -c "import av; print(av.__version__)")
mkdir -p runs
fetch() {  # fetch DIR PACKAGE...: cp312 manylinux wheels, whatever this machine's Python is
  local dir=$1; shift
  "$PIP" download -q --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --no-deps -d "$dir" "$@"
}
fetch runs/wheels "av==$AV" pyyaml tqdm
fetch runs/wheels-train pyyaml tqdm
[ -d runs/corpus ] || cp -r ../shared/data/clean_corpus runs/corpus
du -sh runs/wheels runs/wheels-train runs/corpus
