"""Synthetic video from still photos: a few frames of one scene under camera and object motion.

The temporal profile learns that rain changes from frame to frame while the scene only moves,
so its training clips need both: a camera that pans, zooms, rotates a little and shakes, and
now and then an object (a patch of the same photo) moving on its own. Rain is added to each
frame afterwards, anew (data.py). The target frame is an exact crop of the photo (no
resampling), so the clean target stays as sharp as the still training set.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Where the neighbours of the target frame sit in time. Files use a centred window, live
# cameras a causal one (past frames only); one network serves both, so it trains on both.
CENTRED = (-1, 1)
CAUSAL = (-2, -1)


@dataclass(frozen=True)
class MotionRanges:
    pan: float = 4.0  # px per frame, each axis, uniform in [-pan, pan]
    zoom: float = 0.015  # scale change per frame, uniform in [-zoom, zoom]
    rotate: float = 0.5  # degrees per frame
    shake: float = 1.2  # px, the largest per-frame jitter sigma
    static: float = 0.15  # fraction of clips from a tripod (no camera motion at all)
    moving_patch: float = 0.4  # fraction of clips with an object moving on its own
    causal: float = 0.35  # fraction of clips with a causal window (else centred)
    edge: float = 0.1  # fraction of clips at a file's start or end: a neighbour repeats the target


def neighbour_offsets(rng: np.random.Generator, frames: int, ranges: MotionRanges) -> list[int]:
    """Time offsets of the frames-1 neighbours, centred or causal (the target is at offset 0)."""
    k = frames - 1
    causal = rng.random() < ranges.causal
    if causal:
        offsets = list(range(-k, 0))
    else:
        offsets = [o for o in range(-(k // 2) - k % 2, k // 2 + 1) if o != 0][:k]
    if rng.random() < ranges.edge:
        # Near a file's start (or end) the nearest existing frame stands in, as inference's
        # windows() clamps: the target p frames from the edge sees nothing beyond it.
        # One draw, as before this form (the validation clips keep their random stream): causal,
        # how far from the start; centred, which side is missing.
        draw = int(rng.integers(k))
        if causal:
            offsets = [max(o, -draw) for o in offsets]
        else:
            offsets = [min(o, 0) if draw else max(o, 0) for o in offsets]
    return offsets


def _affine(center: np.ndarray, patch: int, shift: np.ndarray, scale: float, angle: float) -> np.ndarray:
    """The 2x3 map from patch coordinates to photo coordinates (for WARP_INVERSE_MAP)."""
    a = np.deg2rad(angle)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    half = (patch - 1) / 2
    offset = center + shift - rot @ np.array([half, half])
    return np.hstack([rot, offset[:, None]]).astype(np.float64)


def camera_clip(photo: np.ndarray, rng: np.random.Generator, patch: int, offsets: list[int],
                ranges: MotionRanges = MotionRanges()) -> np.ndarray:
    """Clean frames (1 + len(offsets), patch, patch, 3) of `photo`'s dtype, target first.

    Frame t is the photo seen by a camera moved by t times a constant pan, zoom and rotation
    plus its own shake; the target (t = 0) is an exact crop."""
    h, w = photo.shape[:2]
    y = int(rng.integers(0, h - patch + 1))
    x = int(rng.integers(0, w - patch + 1))
    target = photo[y:y + patch, x:x + patch]
    static = rng.random() < ranges.static
    pan = np.zeros(2) if static else rng.uniform(-ranges.pan, ranges.pan, 2)
    zoom = 0.0 if static else rng.uniform(-ranges.zoom, ranges.zoom)
    rotate = 0.0 if static else rng.uniform(-ranges.rotate, ranges.rotate)
    shake = 0.0 if static else rng.uniform(0, ranges.shake)
    center = np.array([x, y], np.float64) + (patch - 1) / 2
    seen = {0: target}  # a time that repeats (a clamped edge) is the same frame
    for t in offsets:
        if t not in seen:
            shift = pan * t + rng.normal(0, shake, 2)
            m = _affine(center, patch, shift, (1 + zoom) ** t, rotate * t)
            seen[t] = cv2.warpAffine(photo, m, (patch, patch), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_REFLECT101)
    frames = [target] + [seen[t] for t in offsets]
    clip = np.stack(frames)
    if rng.random() < ranges.moving_patch:
        _move_object(clip, photo, rng, [0, *offsets])
    return clip


def _move_object(clip: np.ndarray, photo: np.ndarray, rng: np.random.Generator, times: list[int]) -> None:
    """Paste a patch of the photo into every frame, moving with its own velocity (in place)."""
    n, p = clip.shape[0], clip.shape[1]
    size = int(rng.integers(p // 6, p // 2 + 1))
    h, w = photo.shape[:2]
    sy, sx = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    obj = photo[sy:sy + size, sx:sx + size]
    pos = rng.uniform(0, p - size, 2)
    vel = rng.uniform(-6, 6, 2)
    for i in range(n):
        oy, ox = np.clip(np.round(pos + vel * times[i]), 0, p - size).astype(int)
        clip[i, oy:oy + size, ox:ox + size] = obj
