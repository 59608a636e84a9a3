"""Where frames wait: the stage times a run wrote with DERAIN_TRACE=FOLDER (pipeline/trace.py).

    DERAIN_TRACE=/tmp/tr derain run in.mp4 -o out.mp4 && python3 scripts/trace-report.py /tmp/tr

For each stage, how fast frames went through it (frames/s over the middle 80 % of the run,
so start-up and the last flush do not count) and when its first frame passed (seconds after
the run's first event: a first batch's warm-up shows there), and between stages how long a frame took
(median and 90th percentile, ms). The stage a frame waits longest before, at the rate of the
run, is where the pipeline is held up. One JSON line too, for scripts.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from usage import answer_help

answer_help(__doc__, need=1)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.trace import STAGES  # noqa: E402


def main(folder: str) -> dict:
    times: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for path in sorted(Path(folder).glob("trace-*.jsonl")):
        for line in path.read_text().splitlines():
            stage, source, seq, t = json.loads(line)
            times[(source, seq)][stage] = t
    if not times:
        raise SystemExit(f"{folder}: no trace-*.jsonl (was DERAIN_TRACE set for the run?)")
    stages = [s for s in STAGES if any(s in v for v in times.values())]
    rates = {}
    for s in stages:
        ts = np.sort([v[s] for v in times.values() if s in v])
        lo, hi = ts[len(ts) // 10], ts[len(ts) * 9 // 10]
        rates[s] = round((len(ts) * 8 // 10) / (hi - lo), 1) if hi > lo else None
    gaps = {}
    for a, b in zip(stages, stages[1:]):
        d = np.array([v[b] - v[a] for v in times.values() if a in v and b in v]) * 1000
        if len(d):
            gaps[f"{a}->{b}"] = {"median_ms": round(float(np.median(d)), 2), "p90_ms": round(float(np.percentile(d, 90)), 2)}
    t0 = min(t for v in times.values() for t in v.values())
    first = {s: round(min(v[s] for v in times.values() if s in v) - t0, 3) for s in stages}  # start-up shows here
    for s in stages:
        print(f"{s:>10}: {rates[s]} frames/s, first at {first[s]} s")
    for k, g in gaps.items():
        print(f"{k:>22}: median {g['median_ms']} ms, p90 {g['p90_ms']} ms")
    result = {"frames": len(times), "rates": rates, "first_s": first, "gaps": gaps}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1])
