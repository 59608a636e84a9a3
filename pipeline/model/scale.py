"""Run the network at a reduced resolution and subtract the upsampled rain layer at full size.

The fast CPU profile uses this: the rain layer is smooth along a streak, so it can be
predicted on a half-size image (a quarter of the work) while the background keeps
its full-resolution detail, because only R is upsampled, never the picture.
Training uses the same function, so the network learns exactly what inference runs.

Bilinear upsampling smears a 1-pixel streak over 2-3 pixels. The guided upsampling of
He and Sun's fast guided filter (arXiv:1505.00996) instead fits R as a local linear
function of the rainy image at low resolution, R ~ a * O + b, and applies the upsampled
(a, b) to the full-resolution O, so the streaks take the input's sharp edges back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ecnet_arch import DerainOutput

UPSAMPLERS = ("bilinear", "guided")
GUIDED_RADIUS = 1  # box radius at the network's resolution (3x3)
GUIDED_EPS = 1e-3  # regulariser of the local fit; chosen on rain12/Rain100L (docs/MODEL.md)


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over the (2r+1)^2 window, counting only pixels inside the image at the borders.
    Separable shifted sums: on these CPUs faster than avg_pool2d (3-4x) or a depthwise conv."""
    if torch.onnx.is_in_onnx_export():  # the same mean as one op whose sizes stay dynamic in the graph
        return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)
    h, w = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r))
    rows = sum(padded[..., i:i + h, :] for i in range(2 * r + 1))
    window_sum = sum(rows[..., j:j + w] for j in range(2 * r + 1))
    return window_sum / (_inside(h, r, x)[:, None] * _inside(w, r, x)[None, :])


def _inside(n: int, r: int, like: torch.Tensor) -> torch.Tensor:
    """How many of the 2r+1 positions around each index fall within [0, n)."""
    i = torch.arange(n, device=like.device)
    return ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).to(like.dtype)


def guided_upsample(rain: torch.Tensor, guide_small: torch.Tensor, guide: torch.Tensor,
                    r: int = GUIDED_RADIUS, eps: float = GUIDED_EPS) -> torch.Tensor:
    """Upsample `rain` to `guide`'s size, channel by channel, along `guide`'s edges (in fp32:
    the variance terms cancel badly in half precision)."""
    p, small, big = rain.float(), guide_small.float(), guide.float()
    # One box pass for the four local means, one for the two coefficients, one resize.
    mean_i, mean_p, mean_ip, mean_ii = _box(torch.cat([small, p, small * p, small * small], 1), r).chunk(4, 1)
    a = (mean_ip - mean_i * mean_p) / (mean_ii - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    a, b = F.interpolate(_box(torch.cat([a, b], 1), r), size=big.shape[-2:], mode="bilinear",
                         align_corners=False).chunk(2, 1)
    return torch.addcmul(b, a, big)


def downscale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Antialiased bilinear resizing by `scale` (in fp32: it has no bf16/fp16 kernel on CPUs).

    ONNX has no antialiased resize that torch exports, so an export at scale 0.5 gets the same
    filter written out: bilinear antialiasing at half scale is the 4-tap [1, 3, 3, 1] / 8
    filter with stride 2, renormalised where taps fall outside the image (equal to
    F.interpolate's within float rounding, 2e-7)."""
    if scale == 0.5 and torch.onnx.is_in_onnx_export():
        taps = x.new_tensor([1.0, 3.0, 3.0, 1.0])
        kernel = (taps[:, None] * taps[None, :])[None, None]  # a constant: ONNX needs its shape
        planes = x.flatten(0, 1)[:, None]  # each channel alone
        total = F.conv2d(planes, kernel, stride=2, padding=1)
        weight = F.conv2d(torch.ones_like(planes[:1]), kernel, stride=2, padding=1)
        return (total / weight)[:, 0].unflatten(0, (-1, x.shape[1]))
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)


def predict(net: nn.Module, rainy: torch.Tensor, scale: float = 1.0, upsample: str = "bilinear",
            net_dtype: torch.dtype | None = None) -> DerainOutput:
    """DerainOutput whose `rain` has rainy's full size; embedding and maps are at the net's scale.

    `rainy` is one frame (B, 3, H, W) or, for a temporal network, a window (B, 3T, H, W) whose
    first three channels are the target frame: R is the target's rain layer either way.
    At scale < 1 `rainy` may be fp32 while the network runs in `net_dtype`: the full-size
    image then keeps its precision for the guided fit and the subtraction."""
    if scale == 1.0:
        return net(rainy)
    h, w = rainy.shape[-2:]
    small = downscale(rainy.float(), scale)
    out = net(small.to(net_dtype or rainy.dtype))
    if upsample == "guided":
        rain = guided_upsample(out.rain, small[:, :3], rainy[:, :3])
    else:
        rain = F.interpolate(out.rain, size=(h, w), mode="bilinear", align_corners=False)
    return out._replace(rain=rain)
