"""Temporal flicker: the warping error of Lai et al., "Learning Blind Video Temporal Consistency"
(ECCV 2018).

    E_warp = mean over t of  sum_i M_t(i) ||O_t(i) - W(O_{t+1})(i)||^2 / sum_i M_t(i)

O are the frames judged (RGB in [0, 1]); W(O_{t+1}) is frame t+1 warped back onto frame t
along the optical flow from t to t+1; M_t masks the pixels occluded between the two. The flow
and the occlusion mask come from the clean frames, so every video judged against the same
clean frames is warped the same way: a flicker-free derainer scores as low as the clean video.
Occlusion uses the forward-backward check of Sundaram et al. (ECCV 2010), as Lai et al. do;
their second mask, of motion boundaries, is left out, so figures compare versions of one video
here rather than against published tables.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow (H, W, 2) from uint8 RGB frame a to b: a(x) matches b(x + flow(x))."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(_gray(a), _gray(b), None)


@functools.lru_cache(maxsize=4)
def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y), float32, per frame size: built once, not once a frame."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.flags.writeable = gy.flags.writeable = False
    return gx, gy


def warp_back(image: np.ndarray, fw: np.ndarray) -> np.ndarray:
    """Frame t+1 sampled at x + flow_t->t+1(x): frame t+1 seen from frame t (bilinear, edges
    replicated). Also how the deflicker carries its last frame forward."""
    gx, gy = _pixel_grid(*fw.shape[:2])
    return cv2.remap(image, gx + fw[..., 0], gy + fw[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def visible(fw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Pixels of frame t seen in frame t+1 too: the backward flow, followed from where the forward
    one lands, comes back (|fw + bw'|^2 < 0.01 (|fw|^2 + |bw'|^2) + 0.5), and they land inside."""
    h, w = fw.shape[:2]
    bw_there = warp_back(bw, fw)
    gx, gy = np.meshgrid(np.arange(w), np.arange(h))
    lands = (gx + fw[..., 0] >= 0) & (gx + fw[..., 0] <= w - 1) & (gy + fw[..., 1] >= 0) & (gy + fw[..., 1] <= h - 1)
    err = ((fw + bw_there) ** 2).sum(-1)
    bound = 0.01 * ((fw ** 2).sum(-1) + (bw_there ** 2).sum(-1)) + 0.5
    return (err < bound) & lands


class WarpReference:
    """The flows and masks of a clean video, computed once, to judge any number of versions of it."""

    def __init__(self, clean: list[np.ndarray]):
        if len(clean) < 2:
            raise ValueError("warp_error needs at least 2 consecutive frames")
        self.flows, self.masks = [], []
        for a, b in zip(clean[:-1], clean[1:]):
            fw, bw = flow(a, b), flow(b, a)
            self.flows.append(fw)
            self.masks.append(visible(fw, bw))

    def error(self, frames: list[np.ndarray]) -> float:
        """E_warp of `frames` (uint8 RGB, as many as the clean video has)."""
        if len(frames) != len(self.flows) + 1:
            raise ValueError(f"{len(frames)} frames against a reference of {len(self.flows) + 1}")
        errs = []
        for t, (fw, mask) in enumerate(zip(self.flows, self.masks)):
            cur = frames[t].astype(np.float32) / 255
            nxt = warp_back(frames[t + 1].astype(np.float32) / 255, fw)
            sq = ((cur - nxt) ** 2).sum(-1)
            errs.append(float(sq[mask].sum() / max(mask.sum(), 1)))
        return float(np.mean(errs))
