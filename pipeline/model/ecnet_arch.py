"""The thesis network: ECNet-style encoder-decoder with CAB and MSPAM.

Blocks appear in build order and carry the thesis's names. The network predicts
the rain layer R; the derained image is B = O - R. See docs/MODEL.md for how the
parameter count compares with the thesis's 2.883M.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .arch_util import conv3x3, register_arch, with_padding

LEVELS = 4
MULTIPLE = 2 ** (LEVELS - 1)  # three 2x2 poolings: H and W must divide by 8


class RLCN(nn.Module):
    """Rectified local contrast normalisation of the rainy input (thesis Eq. for L).

    L(i,j,c) = clip(max(0, (O - mu) / (sigma + eps)), 0, 1) over a `window` x `window`
    neighbourhood per colour channel. Streaks are brighter than their surroundings,
    so the map highlights them regardless of the background's brightness.

    Args:
        window: side of the square window (9 in the thesis).
        eps: keeps flat regions from dividing by zero.
    """

    def __init__(self, window: int = 9, eps: float = 1e-2):
        super().__init__()
        self.window, self.eps = window, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.window // 2
        padded = F.pad(x, (r, r, r, r), mode="replicate")
        mu = F.avg_pool2d(padded, self.window, stride=1)
        var = F.avg_pool2d(padded * padded, self.window, stride=1) - mu * mu
        sigma = var.clamp_min(0).sqrt()
        return ((x - mu) / (sigma + self.eps)).clamp(0, 1)


class ResidualBlock(nn.Module):
    """conv3x3-norm-ReLU-conv3x3-norm plus a shortcut (1x1 conv when channels change).

    Used at every encoder level, in the decoder's merge step, and in the rain autoencoder.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, bias=False)
        self.norm1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout, bias=False)
        self.norm2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)), inplace=True)
        y = self.norm2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


class ChannelAttentionBlock(nn.Module):
    """CAB: global average pool -> 1x1 (C -> C/r) -> ReLU -> 1x1 -> sigmoid, scaling each channel.

    Follows each encoder residual block so the encoder weighs the channels that carry rain.

    Args:
        channels: C.
        reduction: r, the squeeze ratio (16, floored at 4 channels).
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean((2, 3), keepdim=True)
        w = torch.sigmoid(self.excite(F.relu(self.squeeze(w), inplace=True)))
        return x * w


class MSPAM(nn.Module):
    """Multi-scale pixel attention module, used in place of each plain skip connection.

        F_m = W_E * F_E + W_D * F_D
        F   = [F_m, DConv_3(F_m), DConv_5(F_m), DConv_7(F_m)]
        M   = sigmoid(W_1x1 * ReLU(F))            (B, 1, H, W)
        skip = M * F_E

    Args:
        channels: C of both the encoder feature F_E and the decoder feature F_D.
        dilations: dilation of each 3x3 branch (3, 5, 7 in the thesis).
    """

    def __init__(self, channels: int, dilations: tuple[int, ...] = (3, 5, 7)):
        super().__init__()
        self.w_e = conv3x3(channels, channels)
        self.w_d = conv3x3(channels, channels, bias=False)
        self.dconvs = nn.ModuleList(conv3x3(channels, channels, dilation=d) for d in dilations)
        self.to_map = nn.Conv2d(channels * (1 + len(dilations)), 1, 1)

    def forward(self, f_e: torch.Tensor, f_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f_m = self.w_e(f_e) + self.w_d(f_d)
        f = torch.cat([f_m, *(conv(f_m) for conv in self.dconvs)], dim=1)
        m = torch.sigmoid(self.to_map(F.relu(f)))
        return m * f_e, m


class UpLevel(nn.Module):
    """Decoder step: upsample x2 (nearest) then conv3x3 halving the channels."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv3x3(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest")), inplace=True)


def _widths(width: int) -> list[int]:
    return [width * 2**i for i in range(LEVELS)]


class RainDecoder(nn.Module):
    """The decoder both networks share, so the autoencoder's weights initialise the deraining one.

    Level k (3, 2, 1): `up{k+1}_{k}` upsamples, `merge{k}` is a residual block on the sum of
    the upsampled feature and the (attended) skip, `to_rain` a final 1x1 conv to 3 channels.
    """

    def __init__(self, width: int):
        super().__init__()
        w = _widths(width)
        for k in range(LEVELS - 1, 0, -1):
            setattr(self, f"up{k + 1}_{k}", UpLevel(w[k], w[k - 1]))
            setattr(self, f"merge{k}", ResidualBlock(w[k - 1], w[k - 1]))
        self.to_rain = nn.Conv2d(w[0], 3, 1)


class RainAutoencoder(nn.Module):
    """The rain autoencoder of rain embedding consistency: encodes a ground-truth rain layer.

    The same encoder/decoder as the deraining network, without skips or attention. Its
    encoder output on R_gt is Z_ideal, the embedding the deraining encoder must match.

    Args:
        width: channels at level 1 (32 in the thesis: 32/64/128/256).
    """

    def __init__(self, width: int = 32):
        super().__init__()
        w = _widths(width)
        self.enc = nn.ModuleList(ResidualBlock(cin, cout) for cin, cout in zip([3, *w[:-1]], w))
        self.decoder = RainDecoder(width)

    def encode(self, rain: torch.Tensor) -> torch.Tensor:
        x = rain
        for k, block in enumerate(self.enc):
            x = block(F.max_pool2d(x, 2) if k else x)
        return x

    @with_padding(MULTIPLE)
    def forward(self, rain: torch.Tensor) -> torch.Tensor:
        x = self.encode(rain)
        d = self.decoder
        for k in range(LEVELS - 1, 0, -1):
            x = getattr(d, f"merge{k}")(getattr(d, f"up{k + 1}_{k}")(x))
        return d.to_rain(x)


class DerainOutput(NamedTuple):
    rain: torch.Tensor  # (B, 3, H, W), the predicted rain layer R
    embedding: torch.Tensor  # (B, 8*width, H/8, W/8), the rain embedding Z
    attention: tuple[torch.Tensor, ...]  # MSPAM maps M, finest first: (B, 1, H/2^k, W/2^k)


@register_arch
class DerainNet(nn.Module):
    """The thesis's deraining network (ECNet without the LSTM, plus CAB and MSPAM).

    Input: the rainy image O in [0, 1], (B, 3, H, W), any H, W (reflect-padded to 8).
    Encoder level k: `enc{k}` residual block then `cab{k}`, 2x2 max-pool between levels;
    the deepest feature is the rain embedding Z. Decoder: `RainDecoder` with `mspam{k}`
    on every skip. Output: the rain layer R; B = O - R.

    Args:
        width: channels at level 1 (32 in the thesis; 16 for the fast profile).
        cab_reduction: the CAB squeeze ratio r.
        rlcn_window: side of the RLCN window (9).
        in_channels: channels `fuse` gives the encoder (6: O and its RLCN map).
    """

    frames = 1  # frames in the input window (temporal_arch.py's subclass sees several)

    def __init__(self, width: int = 32, cab_reduction: int = 16, rlcn_window: int = 9, in_channels: int = 6):
        super().__init__()
        w = _widths(width)
        self.width = width
        self.rlcn = RLCN(rlcn_window)
        for k, (cin, cout) in enumerate(zip([in_channels, *w[:-1]], w), start=1):
            setattr(self, f"enc{k}", ResidualBlock(cin, cout))
            setattr(self, f"cab{k}", ChannelAttentionBlock(cout, cab_reduction))
        for k in range(1, LEVELS):
            setattr(self, f"mspam{k}", MSPAM(w[k - 1]))
        self.decoder = RainDecoder(width)

    def fuse(self, rainy: torch.Tensor) -> torch.Tensor:
        """The encoder's input: the rainy image and its RLCN map."""
        return torch.cat([rainy, self.rlcn(rainy)], dim=1)

    @with_padding(MULTIPLE)
    def forward(self, rainy: torch.Tensor) -> DerainOutput:
        x = self.fuse(rainy)
        skips = []
        for k in range(1, LEVELS + 1):
            if k > 1:
                x = F.max_pool2d(x, 2)
            x = getattr(self, f"cab{k}")(getattr(self, f"enc{k}")(x))
            skips.append(x)
        embedding = x
        d = self.decoder
        maps = []
        for k in range(LEVELS - 1, 0, -1):
            f_d = getattr(d, f"up{k + 1}_{k}")(x)
            skip, m = getattr(self, f"mspam{k}")(skips[k - 1], f_d)
            maps.append(m)
            x = getattr(d, f"merge{k}")(f_d + skip)
        return DerainOutput(d.to_rain(x), embedding, tuple(reversed(maps)))
