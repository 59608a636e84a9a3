"""The file pipeline with a stand-in model that waits like a GPU: does the host side keep up?

`Derainer.start` is replaced by one that copies the batch (as the pin copy does), queues it on a
"device" thread that sleeps GPU_MS per batch, and returns; the result waits for that thread, as a
CUDA event would. Codec processes and yuv420p frames on, batch 1, the codecs alone first. If the
stand-in run reaches the codecs' rate (or 1000/GPU_MS), the runner, the pool's two threads and
the codec processes overlap as they should, and a gap on a real GPU lies in the CUDA path.
    .venv/bin/python scripts/pipeline-standin.py GPU_MS [big]   (big: 1080p, 150 frames; else 640x360, 400)
"""
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

from usage import answer_help

answer_help(__doc__)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    from pipeline.bench.speed import synthetic_frames, write_clip
    from pipeline.config import load_settings
    from pipeline.files import derain_files
    from pipeline.settings import RunSettings
    from pipeline.workers import make_pool
    from pipeline.model.inference import DerainResult

    gpu_ms = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    class FakeGpu:
        def __init__(self):
            self.q = queue.Queue()
            threading.Thread(target=self.loop, daemon=True).start()
        def loop(self):
            while True:
                ev = self.q.get()
                time.sleep(gpu_ms / 1000)
                ev.set()
    gpu = FakeGpu()
    class P:
        def __init__(self, r, ev): self.r, self.ev = r, ev
        def result(self):
            self.ev.wait(); return self.r
    def start(self, frames, context=(0, 0), matrix="bt601"):
        x = frames.copy()  # pin copy
        out = np.empty_like(x)
        ev = threading.Event(); gpu.q.put(ev)
        out[...] = x  # stands for the D2H copy
        return P(DerainResult(out, np.zeros(len(x), np.float32)), ev)

    tmp = Path(tempfile.mkdtemp())
    w, h, n = (1920, 1080, 150) if len(sys.argv) > 2 else (640, 360, 400)
    clip = write_clip(tmp / "clip.mp4", synthetic_frames(n, w, h))
    for fake in (False, True):
        s = load_settings(RunSettings, None, {"workers.backend": "local", "workers.codec_processes": True, "decode.yuv": True,
                                              "model.profile": "identity", "workers.inflight": 4,
                                              "encode.preset": "ultrafast", "encode.threads": 1, "decode.threads": 1, "batching.max_batch": 1})
        pool = make_pool(s.model, s.workers)
        if fake:
            import types
            pool.worker.derainer.start = types.MethodType(start, pool.worker.derainer)
        t = time.monotonic()
        (st,) = derain_files([(clip, tmp / f"o{fake}.mp4")], s, pool=pool)
        pool.close()
        print(f"fake gpu {fake} ({gpu_ms} ms): {n / (time.monotonic() - t):.1f} fps total, {st.fps:.1f} steady", flush=True)

if __name__ == "__main__":
    main()
