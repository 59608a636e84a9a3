"""Frames as yuv420p planes (I420), converted to and from RGB on the model's device.

A 1080p frame's two rgb24 conversions (decode side and encode side) cost ~7 ms of CPU in
swscale, under the GIL, and the RGB frame is twice the bytes of its yuv420p planes. Where no
one but the model and a video encoder sees the frames, they can stay yuv420p from decoder to
encoder: the model converts them on its device (a few element-wise kernels on a GPU), and
the codec side only copies planes. That is the `decode.yuv` setting.

Layout: one frame is a (H * 3 / 2, W) uint8 array, as PyAV's `to_ndarray(format="yuv420p")`
gives it: the Y plane, then U and V (H/2 x W/2 each) flattened after it. Even sizes only.
The matrix is the input's (BT.601, BT.709 or BT.2020 coefficients, limited range), the one
swscale uses for the RGB path, and the same on the way back, so colours round-trip.
"""
from __future__ import annotations

import numpy as np

I420 = "yuv420p"
MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593),
            "fcc": (0.30, 0.11), "smpte240m": (0.212, 0.087)}  # (Kr, Kb)
# FFmpeg's AVColorSpace values: 1 BT709, 4 FCC, 5 BT470BG, 6 SMPTE170M, 7 SMPTE240M, 9/10 BT2020;
# 2 (unspecified) and the rest are converted as BT.601, as swscale does.
_BY_COLORSPACE = {1: "bt709", 4: "fcc", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}


def matrix_of(colorspace: int | None) -> str:
    """The conversion matrix for an FFmpeg colorspace value (what swscale would use)."""
    return _BY_COLORSPACE.get(int(colorspace or 2), "bt601")


def is_i420(images: np.ndarray, batched: bool = True) -> bool:
    """Whether `images` ((B,) H*3/2, W) are I420 frames rather than ((B,) H, W, 3) RGB ones."""
    return images.ndim == (3 if batched else 2)


def i420_size(images: np.ndarray) -> tuple[int, int]:
    """(height, width) of the frames in an I420 array (one frame or a batch)."""
    return images.shape[-2] * 2 // 3, images.shape[-1]


def planes_shape(shape: tuple) -> bool:
    """Whether one image's shape is the yuv420p planes of an even-sized frame: (H * 3 / 2, W)."""
    return len(shape) == 2 and shape[0] % 3 == 0 and fits_i420(shape[1], shape[0] * 2 // 3)


def fits_i420(width: int, height: int) -> bool:
    return width % 2 == 0 and height % 2 == 0 and width > 0 and height > 0


def rgb_from_i420(x, matrix: str, dtype):
    """(B, H*3/2, W) uint8 I420 on any torch device -> (B, 3, H, W) RGB in [0, 1] of `dtype`
    (chroma repeated over its 2x2 pixels, as swscale's converter does; computed in fp32)."""
    import torch

    b, rows, w = x.shape
    h = rows * 2 // 3
    flat = x.reshape(b, -1)
    y = flat[:, :h * w].reshape(b, 1, h, w).float()
    uv = flat[:, h * w:].reshape(b, 2, h // 2, w // 2).float()
    uv = uv.repeat_interleave(2, 2).repeat_interleave(2, 3)
    kr, kb = MATRICES[matrix]
    kg = 1 - kr - kb
    y = (y - 16) / 219
    u, v = (uv[:, :1] - 128) / 224, (uv[:, 1:] - 128) / 224
    r = y + 2 * (1 - kr) * v
    bl = y + 2 * (1 - kb) * u
    g = y - (2 * kr * (1 - kr) / kg) * v - (2 * kb * (1 - kb) / kg) * u
    return torch.cat([r, g, bl], 1).clamp_(0, 1).to(dtype, memory_format=torch.channels_last)


def i420_from_rgb(rgb, matrix: str):
    """(B, 3, H, W) RGB in [0, 1] -> (B, H*3/2, W) uint8 I420 (chroma averaged over 2x2 pixels)."""
    import torch

    b, _, h, w = rgb.shape
    rgb = rgb.float()
    kr, kb = MATRICES[matrix]
    kg = 1 - kr - kb
    y = kr * rgb[:, 0] + kg * rgb[:, 1] + kb * rgb[:, 2]
    u = (rgb[:, 2] - y) / (2 * (1 - kb))
    v = (rgb[:, 0] - y) / (2 * (1 - kr))
    uv = torch.stack([u, v], 1).unflatten(2, (h // 2, 2)).unflatten(4, (w // 2, 2)).mean((3, 5))
    y8 = (y * 219 + 16).round_().clamp_(0, 255).to(torch.uint8).reshape(b, -1)
    uv8 = (uv * 224 + 128).round_().clamp_(0, 255).to(torch.uint8).reshape(b, -1)
    return torch.cat([y8, uv8], 1).reshape(b, h * 3 // 2, w)
