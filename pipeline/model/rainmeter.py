"""A no-reference measure of the rain left in a frame, for real rain, which has no ground truth.

Rain streaks are thin, bright and oriented: narrower than a few pixels across, long along the
fall direction, brighter than what is behind them. So, on the luma Y (0-255):
  1. a white top-hat across the streaks (Y minus its opening by a 1 x 7 horizontal line) keeps
     the bright structures narrower than 7 px;
  2. that response is averaged along lines of 15 px at the fall angles (vertical +- 30 degrees),
     and the best angle kept: a streak keeps its strength, a bright dot or texture speck fades;
  3. the score is the mean, over the frame, of what exceeds 2 levels (sensor and codec noise).
Scene structure of the same shape (a lamp post, a thin bright edge) also scores, and a
derainer that smooths the scene's fine texture scores low for that too: on NTU a1 the
derained outputs fall below the clean frames.

On video there is a sharper cue: rain changes from frame to frame and the scene does not.
`rain_changing` is the thin bright structure (the top-hat of step 1) standing above the
per-pixel median of the same structure over the frame and its two neighbours on each side,
less the noise floor, averaged: texture that holds still cancels, rain does not. On NTU a1 it
ranks the profiles' outputs exactly as PSNR does (docs/MODEL.md). Compare versions of one
video (rainy against derained), not different videos: camera motion also counts.
"""
from __future__ import annotations

from collections import deque

import cv2
import numpy as np

ANGLES = (-30, -15, 0, 15, 30)  # degrees from vertical
NOISE_LEVELS = 2.0


def _line(length: int, angle: float) -> np.ndarray:
    k = np.zeros((length, length), np.float32)
    c = length // 2
    cv2.line(k, (c, 0), (c, length - 1), 1.0, 1)
    k = cv2.warpAffine(k, cv2.getRotationMatrix2D((c, c), angle, 1.0), (length, length))
    return k / k.sum()


_KERNELS = [_line(15, a) for a in ANGLES]
_ACROSS = cv2.getStructuringElement(cv2.MORPH_RECT, (7, 1))


def thin_bright(rgb: np.ndarray) -> np.ndarray:
    """Y above its opening by a 7-px horizontal line: what is bright and narrower than 7 px."""
    y = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[..., 0].astype(np.float32)
    return y - cv2.morphologyEx(y, cv2.MORPH_OPEN, _ACROSS)


def streak_map(rgb: np.ndarray) -> np.ndarray:
    """Per pixel, the oriented thin-bright response in Y levels (H, W) float32."""
    tophat = thin_bright(rgb)
    return np.max([cv2.filter2D(tophat, -1, k) for k in _KERNELS], axis=0)


def rain_left(rgb: np.ndarray) -> float:
    """The frame's score: mean of the streak response above the noise floor (Y levels)."""
    return float(np.maximum(streak_map(rgb) - NOISE_LEVELS, 0).mean())


def measure(frames) -> dict:
    """Scores of an iterable of uint8 RGB frames, consecutive in time: `rain_left` (mean and per
    frame) and, from 5 frames on, `rain_changing` (mean over the frames with two on each side)."""
    scores, changing, window = [], [], deque(maxlen=5)
    for frame in frames:
        scores.append(rain_left(frame))
        if window and window[-1].shape != frame.shape[:2]:
            window.clear()  # a folder of pictures of other sizes: no window across them
        window.append(thin_bright(frame))
        if len(window) == 5:
            centre = window[2]
            changing.append(float(np.maximum(centre - np.median(window, axis=0) - NOISE_LEVELS, 0).mean()))
    return {"frames": len(scores), "rain_left": round(float(np.mean(scores)), 4) if scores else None,
            "rain_changing": round(float(np.mean(changing)), 4) if changing else None,
            "per_frame": [round(s, 4) for s in scores]}
