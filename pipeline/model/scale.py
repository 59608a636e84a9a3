"""Run the network at a reduced resolution and subtract the upsampled rain layer at full size.

The fast CPU profile uses this: the rain layer is smooth along a streak, so it can be
predicted on a half-size image (a quarter of the work) while the background keeps
its full-resolution detail, because only R is upsampled, never the picture.
Training uses the same function, so the network learns exactly what inference runs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ecnet_arch import DerainOutput


def predict(net: nn.Module, rainy: torch.Tensor, scale: float = 1.0) -> DerainOutput:
    """DerainOutput whose `rain` has rainy's full size; embedding and maps are at the net's scale."""
    if scale == 1.0:
        return net(rainy)
    h, w = rainy.shape[-2:]
    # Antialiased resizing has no bf16/fp16 kernel on CPUs: resize in fp32 (a no-op cast there).
    small = F.interpolate(rainy.float(), scale_factor=scale, mode="bilinear", align_corners=False,
                          antialias=True).to(rainy.dtype)
    out = net(small)
    rain = F.interpolate(out.rain, size=(h, w), mode="bilinear", align_corners=False)
    return out._replace(rain=rain)
