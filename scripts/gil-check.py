"""Which CUDA calls of the frame path let other Python threads run while they wait (one JSON line).

A counter thread counts while the main thread waits on the GPU in each way; a call that holds
the GIL while it waits leaves the counter near zero. Run on a GPU machine:
    python3 scripts/gil-check.py
"""
from __future__ import annotations

import json
import threading
import time

from usage import answer_help

answer_help(__doc__)

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    dev = torch.device("cuda")
    a = torch.randn(4096, 4096, device=dev, dtype=torch.float16)
    count, stop = [0], threading.Event()

    def counter():
        while not stop.is_set():
            count[0] += 1

    def busy_gpu(ms: float = 300):  # queue about `ms` of matmuls
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(4):
            a @ a
        end.record()
        end.synchronize()
        per = start.elapsed_time(end) / 4
        for _ in range(max(1, int(ms / per))):
            a @ a

    threading.Thread(target=counter, daemon=True).start()
    time.sleep(0.2)
    out = {}

    def measure(name, fn):
        busy_gpu()
        c0, t0 = count[0], time.perf_counter()
        fn()
        out[name] = round((count[0] - c0) / (time.perf_counter() - t0) / 1e6, 2)  # millions of counts a second

    c0, t0 = count[0], time.perf_counter()
    time.sleep(0.3)
    out["alone_sleep"] = round((count[0] - c0) / (time.perf_counter() - t0) / 1e6, 2)

    def sync_event():
        e = torch.cuda.Event()
        e.record()
        e.synchronize()

    def poll_event():
        e = torch.cuda.Event()
        e.record()
        while not e.query():
            time.sleep(0.0002)

    def to_cpu():
        (a[:8] @ a[:, :8]).cpu()

    def stream_sync():
        torch.cuda.current_stream().synchronize()

    measure("event_synchronize", sync_event)
    measure("event_query_poll", poll_event)
    measure("tensor_cpu", to_cpu)
    measure("stream_synchronize", stream_sync)
    frame = np.zeros((1, 1620, 1920), np.uint8)

    def pin():
        for _ in range(50):
            torch.from_numpy(frame).pin_memory()

    t = time.perf_counter()
    c0 = count[0]
    pin()
    out["pin_memory_x50_ms"] = round((time.perf_counter() - t) * 1000, 1)
    out["pin_memory_counter"] = round((count[0] - c0) / (time.perf_counter() - t) / 1e6, 2)
    stop.set()
    print(json.dumps({"check": "gil", "counts_per_s_millions": out}), flush=True)


if __name__ == "__main__":
    main()
