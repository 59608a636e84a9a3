"""Does PyAV hold the GIL while converting 1080p frames? (A lead for the codec child's layout.)

Times 40 rgb24 <-> yuv420p conversion pairs alone, then beside a pure-Python thread that
never waits. If the conversions released the GIL they would keep their speed on a second
core; if they hold it, they queue behind the other thread's 5 ms switch interval.
    .venv/bin/python scripts/pyav-gil.py
"""
import threading
import time

from usage import answer_help

answer_help(__doc__)

import av  # noqa: E402
import numpy as np  # noqa: E402

W, H, N = 1920, 1080, 40


def conversions(image: np.ndarray, yuv) -> float:
    start = time.perf_counter()
    for _ in range(N):
        yuv.to_ndarray(format="rgb24")  # what a decoder's frame costs
        av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")  # an encoder's
    return time.perf_counter() - start


def main() -> None:
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    yuv = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    alone = conversions(image, yuv)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    beside = conversions(image, yuv)
    stop.set()
    spinner.join()
    print(f"{N} conversion pairs at {W}x{H}: {alone:.2f} s alone, {beside:.2f} s beside a busy Python thread "
          f"({beside / alone:.1f}x)")


if __name__ == "__main__":
    main()
