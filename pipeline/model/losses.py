"""The thesis's losses, and the one SSIM both training and evaluation use.

    L = 0.02 * L_embed + 0.1 * L_att + 1.0 * L_image
    L_embed = || Z_ideal - Z ||_1
    L_att   = sum over MSPAM maps of || M - M_gt ||_2^2   (mean per map)
    L_image = -SSIM(B_hat, B_gt)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

RAIN_MASK_THRESHOLD = 1e-3  # ECNet: a pixel is rain where max_c (O - B) exceeds this


def gaussian_1d(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> torch.Tensor:
    """The 1-D factor of the separable 11x11 Gaussian window (outer(g, g) is the 2-D window)."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, valid: bool = True) -> torch.Tensor:
    """Mean SSIM per image, (B, C, H, W) -> (B,), 11x11 Gaussian window, sigma 1.5.

    `valid=True` drops the borders the window does not cover, as MATLAB's ssim_index
    (and so ECNet's and PReNet's figures) does; training uses the same.
    """
    c = x.shape[1]
    g = gaussian_1d(dtype=x.dtype, device=x.device)
    col, row = g.view(1, 1, 11, 1).expand(c, 1, 11, 1), g.view(1, 1, 1, 11).expand(c, 1, 1, 11)
    pad = 0 if valid else 5

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable: 22 taps per pixel instead of 121
        t = F.conv2d(t, col, padding=(pad, 0), groups=c)
        return F.conv2d(t, row, padding=(0, pad), groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).flatten(1).mean(1)


def rain_mask(rainy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Ground-truth rain mask M_gt, (B, 1, H, W) in {0, 1}."""
    return ((rainy - clean).amax(1, keepdim=True) > RAIN_MASK_THRESHOLD).float()


def attention_loss(maps: tuple[torch.Tensor, ...], mask: torch.Tensor) -> torch.Tensor:
    """Sum over MSPAM maps of the mean squared error to M_gt at the map's scale."""
    total = mask.new_zeros(())
    for m in maps:
        target = F.adaptive_max_pool2d(mask, m.shape[-2:]) if m.shape[-2:] != mask.shape[-2:] else mask
        total = total + F.mse_loss(m.float(), target)
    return total


def embedding_loss(z: torch.Tensor, z_ideal: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(z.float(), z_ideal.float())
