"""Deflicker: one stream's derained frames, each blended with the last one carried along the flow.

What flickers after deraining is what the model leaves and alters, differently in each frame
(docs/MODEL.md). The scene only moves, so the frame before, warped onto this one along the
optical flow, is a second estimate of the same background whose leftovers are others: blending
the two averages them away, and blending the running result (a recurrent filter, as in Bonneel
et al., "Blind Video Temporal Consistency", SIGGRAPH Asia 2015) averages over several frames.
Where the two disagree (an occlusion, a flow error) the weight falls to zero, and where most of
the frame does (a scene cut) nothing is carried, so nothing ghosts. It looks at the past only:
a live camera gains no delay. It runs once per frame (pipeline/steady.py: a thread per lane,
beside the frame loop), so every step is one OpenCV call on uint8 data: 1080p costs a 360p's
flow plus a few full-size passes (docs/MODEL.md).
"""
from __future__ import annotations

import cv2
import numpy as np

from .align import PRESETS, flow
from .flicker import warp_back

# Chosen on the validation videos (scripts/select-temporal.py, docs/results/select-temporal.txt),
# among sigmas up to 30 (larger ones blend visibly across what the scene-cut check lets by).
STRENGTH = 0.5  # the carried frame's weight where both agree (1: an equal blend)
SIGMA = 30.0  # levels (0-255) of local disagreement at which the weight falls to 1/e of it
PRESET = "medium"  # DIS preset of the flow between derained frames (chosen over fast on the same videos)


class Deflicker:
    """Feed it one stream's derained frames in order (`frames(...)`); it returns them deflickered.
    A change of frame size starts it afresh."""

    def __init__(self, strength: float = STRENGTH, sigma: float = SIGMA, preset: str = PRESET):
        self.strength, self.sigma = strength, sigma
        self._dis = cv2.DISOpticalFlow_create(PRESETS[preset])
        # The carried frame's share of the blend, w / (1 + w), by disagreement in levels.
        w = strength * np.exp(-(np.arange(256, dtype=np.float32) / sigma) ** 2)
        self._share = (w / (1 + w)).astype(np.float32)
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (luma, deflickered frame)

    def frame(self, derained: np.ndarray) -> np.ndarray:
        """One (H, W, 3) uint8 RGB frame."""
        gray = cv2.cvtColor(derained, cv2.COLOR_RGB2GRAY)
        out = derained
        if self._last is not None and self._last[0].shape == gray.shape:
            carried = warp_back(self._last[1], flow(gray, self._last[0], self._dis))  # the last, seen from here
            # disagreement: the channels' mean |difference|, smoothed, in whole levels
            differ = cv2.GaussianBlur(cv2.transform(cv2.absdiff(carried, derained), np.full((1, 3), 1 / 3)),
                                      (5, 5), 0)
            if np.median(differ[::4, ::4]) <= self.sigma:  # else a scene cut: carry nothing over it
                share = self._share[differ]
                out = cv2.blendLinear(carried, derained, share, 1 - share)
        self._last = (gray, out)
        return out

    def frames(self, derained: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8, consecutive, after the ones fed before."""
        return np.stack([self.frame(f) for f in derained])
