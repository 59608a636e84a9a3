"""Aligning a temporal window: each neighbour warped onto its target along optical flow.

The temporal network's window minimum is rain-free only where the frames line up, and it was
trained on windows a few pixels apart; a panning camera or a low frame rate moves the scene
further than that, and then the neighbours mislead it (docs/MODEL.md, "Other rainy video").
Warping each neighbour onto the target first makes every window look like a tripod's. The flow
is DIS (Kroeger et al., ECCV 2016), computed on the CPU from the rainy frames' luma: streaks
differ between frames but are thin, and DIS's patch search at coarse scales sees through them.
The warp runs on the model's device (grid_sample), after the window is built.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..colour import i420_size

PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
           "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


def luma(frames: np.ndarray) -> list[np.ndarray]:
    """Each frame's (H, W) uint8 luma: the Y plane of yuv420p frames, else from RGB."""
    if frames.ndim == 3:  # yuv420p planes: Y is the first H rows
        h = i420_size(frames)[0]
        return [f[:h] for f in frames]
    return [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]


FLOW_PIXELS = 640 * 360  # larger frames get their flow at a reduced size: 1080p costs a 360p's DIS
# DIS refuses a frame under ~10 pixels a side and crashes the process (SIGSEGV) on short wide
# ones (160x30, 320x20, 48x8, in OpenCV 4.14); from 32 a side every size tried works (up to 8000x32)
MIN_FLOW_SIDE = 32


def flow(a: np.ndarray, b: np.ndarray, dis) -> np.ndarray:
    """(H, W, 2) float32 flow from luma a to luma b: a(x) matches b(x + flow(x)). Frames over
    FLOW_PIXELS are shrunk by a whole factor first (DIS's time grows with the pixels; so a 1080p
    frame costs the deflicker about 3x a 360p one, not 9x: scripts/deflicker-speed.py) and the flow
    brought back up: camera motion is smooth, streaks are not."""
    h, w = a.shape
    if min(h, w) < MIN_FLOW_SIDE:  # DIS fails or crashes on such frames; no motion is the safe guess
        return np.zeros((h, w, 2), np.float32)
    f = int(np.ceil(np.sqrt(h * w / FLOW_PIXELS)))
    if f == 1:
        return dis.calc(a, b, None)
    size = (max(w // f, MIN_FLOW_SIDE), max(h // f, MIN_FLOW_SIDE))
    small = dis.calc(cv2.resize(a, size, interpolation=cv2.INTER_AREA),
                     cv2.resize(b, size, interpolation=cv2.INTER_AREA), None)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32([w / size[0], h / size[1]])


def window_flows(frames: np.ndarray, core: slice, offsets: tuple[int, ...], preset: str) -> np.ndarray:
    """(M, K, H, W, 2) float32 flows from each core frame to each of its K neighbours (as
    inference.windows picks them: clamped to the array), zero where the neighbour is the frame."""
    gray = luma(frames)
    n, (h, w) = len(gray), gray[0].shape
    idx = range(n)[core]
    out = np.zeros((len(idx), len(offsets), h, w, 2), np.float32)
    dis = cv2.DISOpticalFlow_create(PRESETS[preset])
    for m, i in enumerate(idx):
        for k, o in enumerate(offsets):
            j = min(max(i + o, 0), n - 1)
            if j != i:
                out[m, k] = flow(gray[i], gray[j], dis)
    return out


@functools.lru_cache(maxsize=4)
def _pixel_grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ys, xs) of every pixel, made once per frame size (a stream keeps its size)."""
    return tuple(torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                                torch.arange(w, device=device, dtype=torch.float32), indexing="ij"))


def align_windows(win: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """Windows (M, 3 + 3K, H, W), target first, with each neighbour k resampled at x + flows[:, k](x):
    the neighbour as the target's camera saw it (edges replicated where it looks outside)."""
    m, _, h, w = win.shape
    k = flows.shape[1]
    ys, xs = _pixel_grid(h, w, win.device)
    fx, fy = flows[..., 0].float(), flows[..., 1].float()
    grid = torch.stack([(xs + fx) * (2 / max(w - 1, 1)) - 1, (ys + fy) * (2 / max(h - 1, 1)) - 1], -1)
    neighbours = win[:, 3:].unflatten(1, (k, 3)).flatten(0, 1)
    warped = F.grid_sample(neighbours.float(), grid.flatten(0, 1), mode="bilinear", padding_mode="border",
                           align_corners=True)
    return torch.cat([win[:, :3], warped.to(win.dtype).unflatten(0, (m, k)).flatten(1, 2)], 1)
