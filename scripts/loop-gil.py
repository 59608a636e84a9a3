"""How long the frame loop's process holds the GIL per frame, from a py-spy profile.

usage: .venv/bin/python scripts/loop-gil.py PROFILE.txt FRAMES
The profile is py-spy's raw output for a `derain run`, sampling only the thread that holds the
GIL (py-spy is not a dependency: `pip install py-spy` in any environment):
    py-spy record --gil -r 400 -f raw -o PROFILE.txt -- .venv/bin/python -m pipeline.cli run CLIP -o OUT ...
Samples whose stack is in the pipeline's frame path (runner, workers, codec processes, sources,
sinks, batching) are the loop's; the rest is start-up (imports) and shutdown.
"""
from __future__ import annotations

import sys
from collections import Counter

from usage import answer_help

answer_help(__doc__, need=2)

LOOP = ("pipeline/runner.py", "pipeline/workers.py", "pipeline/codec_process.py", "pipeline/sources/",
        "pipeline/sinks/", "pipeline/batching.py", "pipeline/framequeue.py", "pipeline/model/inference.py")


def main(profile: str, frames: int, rate: float = 400.0) -> None:
    total, loop, where = 0, 0, Counter()
    for line in open(profile):
        stack, count = line.rstrip().rsplit(" ", 1)
        total += int(count)
        if "_find_and_load" in stack or "Runner.run" not in stack and not any(p in stack for p in LOOP):
            continue
        loop += int(count)
        inner = [f for f in stack.split(";") if any(p in f for p in LOOP)]
        where[inner[-1].split(" (")[0] if inner else "?"] += int(count)
    print(f"{total} samples at {rate:.0f}/s: {loop} in the frame loop, {loop / rate / frames * 1000:.2f} ms "
          f"of GIL a frame over {frames} frames")
    for name, n in where.most_common(8):
        print(f"  {n / rate / frames * 1000:6.3f} ms  {name}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
