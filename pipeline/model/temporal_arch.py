"""The temporal network: the thesis network fed a window of consecutive frames.

Rain changes from frame to frame and the scene does not (it only moves), so neighbouring
frames tell streaks from scene texture where one frame cannot. The window is fused at the
input (early fusion, as in the video derainers that build on single-image networks): the
encoder's first residual block sees the target frame, its RLCN map, the neighbours, and
their per-pixel minimum over the window (additive rain only brightens, so the minimum of
aligned frames is rain-free). Everything after the first block is the thesis network:
CAB, MSPAM, the shared rain decoder, the rain embedding. It predicts the target's rain layer.
"""
from __future__ import annotations

import torch

from .arch_util import register_arch
from .ecnet_arch import DerainNet


@register_arch
class TemporalDerainNet(DerainNet):
    """DerainNet over a window of `frames` frames, (B, 3 * frames, H, W), the target frame first.

    The neighbours may come from either side of the target (files: centred) or from the past
    only (live cameras: causal), and a neighbour missing at a file's edge is the target again;
    training draws all three (motion.py), so one network serves them all.

    Args:
        width: channels at level 1 (32 as the thesis; 16 for temporal-fast).
        frames: window length T (the target and T - 1 neighbours).
    """

    def __init__(self, width: int = 32, frames: int = 3, cab_reduction: int = 16, rlcn_window: int = 9):
        # target 3 + its RLCN 3 + neighbours 3 (T - 1) + window minimum 3
        super().__init__(width, cab_reduction, rlcn_window, in_channels=3 * frames + 6)
        self.frames = frames

    def fuse(self, window: torch.Tensor) -> torch.Tensor:
        target = window[:, :3]
        frames = window.unflatten(1, (self.frames, 3))
        return torch.cat([target, self.rlcn(target), window[:, 3:], frames.amin(1)], dim=1)
