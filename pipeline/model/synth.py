"""Rain synthesiser: unlimited (rainy, clean) pairs from clean photos.

Streaks are made the way Rain100L/H and Rain12 were (Photoshop-style): sparse
random drops, blurred to a thickness, smeared by a line kernel of some length and
angle (the motion blur of a falling drop), scaled to a brightness and added to
the background. Heavy rain (Rain100H) stacks several streak layers of different
angles and adds the veiling haze of rain accumulation:
    O = alpha * (B + sum_i S_i) + (1 - alpha) * A      (Yang et al., JORDER)
Video rain (NTURain's, rendered by a particle system) is depth-layered instead: near-vertical,
long thin streaks at a few depths, each depth with its own length and brightness and the
drops of one depth several-fold apart in brightness.
Everything works on float32 images in [0, 1], (H, W, 3).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class RainStyle:
    """Ranges each streak layer draws from (uniformly)."""

    density: tuple[float, float] = (0.002, 0.02)  # fraction of pixels seeding a drop
    angle_deg: tuple[float, float] = (-25.0, 25.0)  # from vertical
    length: tuple[int, int] = (10, 40)  # streak length in pixels
    thickness: tuple[float, float] = (0.0, 1.2)  # Gaussian sigma widening the drop
    brightness: tuple[float, float] = (0.3, 0.9)  # peak added intensity
    layers: tuple[int, int] = (1, 1)  # streak layers (several angles in heavy rain)
    haze: tuple[float, float] = (0.0, 0.0)  # 1 - alpha, the veiling haze strength
    layer_spread: float = 20.0  # degrees a later layer's angle may differ from the first
    drop_amplitude: tuple[float, float] = (0.5, 1.0)  # spread of single drops within a layer
    depth: bool = False  # each layer at a random depth: its ranges move together (streak_layer)
    haze_light: tuple[float, float] = (0.7, 1.0)  # the veil's brightness A


# Faint rain reaches down to a brightness of 0.08: Rain12's streaks peak at 0.14-0.2
# (99th percentile of O - B), below what the first ranges (from 0.2) ever made.
LIGHT = RainStyle(density=(0.0005, 0.004), length=(10, 30), brightness=(0.08, 0.55), thickness=(0.0, 0.8))
MEDIUM = RainStyle(density=(0.002, 0.008), length=(8, 25), brightness=(0.1, 0.6), thickness=(0.2, 1.0))
HEAVY = RainStyle(
    density=(0.004, 0.012), length=(15, 40), brightness=(0.3, 0.75), thickness=(0.5, 1.5),
    layers=(2, 3), haze=(0.05, 0.3), angle_deg=(-35.0, 35.0),
)
# NTU a1's streaks: 1-3 px wide, up to ~55 px long, vertical, peaks of 20-170 levels
# (0.08-0.65) within one frame, 16 % of the pixels brightened by more than 3 levels; the
# brightest (near) ones 3 px wide and few.
VIDEO = RainStyle(
    density=(0.0002, 0.0015), angle_deg=(-6.0, 6.0), length=(15, 60), thickness=(0.0, 1.1),
    brightness=(0.1, 0.65), layers=(2, 4), layer_spread=2.0, drop_amplitude=(0.3, 1.0), depth=True,
)
# Rain100H, measured (docs/MODEL.md, scripts/rain-stats.py): no veil (O = B + R with a slope of
# 1.00 and an offset of 0.01-0.07 off the streaks), but streaks so dense that 56-84 % of the
# pixels gain more than 0.1 (median gain 0.12-0.29), sharp (2-3 px), long, one or two
# directions within 30 degrees of vertical. HEAVY reached that brightness through haze instead.
DENSE = RainStyle(
    density=(0.002, 0.006), angle_deg=(-30.0, 30.0), length=(25, 70), thickness=(0.0, 1.0),
    brightness=(0.25, 0.5), layers=(1, 3), layer_spread=15.0, haze=(0.0, 0.08), drop_amplitude=(0.6, 1.0),
)
# Rain12 009..012 and the Rain100L samples, measured (scripts/light-rain-bias.py): the same
# amount of rain as LIGHT (4-5 Y levels on average) in fainter, wider streaks (high-pass spread
# 9 levels against LIGHT's 13), no veil (median 0.1-0.25). The full weights left ~2 levels of it.
FAINT = RainStyle(density=(0.0008, 0.005), length=(15, 45), brightness=(0.06, 0.35), thickness=(0.3, 1.2))
# What the full weights still leave on rain12 (the output minus the clean image, at 2x): many thin
# (1 px), short, dense streaks of widely spread brightness, the faint ones kept. The shipped full
# weights leave +0.5 to +2.8 Y levels of such rain, more the further it leans from vertical
# (scripts/light-rain-bias.py). Rain12 009..012's layer: mean 5.3 levels, high-pass spread 9.2,
# streaks 4.8 px long and 1.0 wide, 34 % of the pixels brightened by over 3 levels.
DRIZZLE = RainStyle(density=(0.004, 0.02), length=(6, 30), thickness=(0.0, 0.8), brightness=(0.08, 0.3),
                    drop_amplitude=(0.15, 1.0), angle_deg=(-35.0, 35.0))
STYLES = {"light": LIGHT, "faint": FAINT, "drizzle": DRIZZLE, "medium": MEDIUM, "heavy": HEAVY, "dense": DENSE, "video": VIDEO}


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def _at(lo_hi: tuple[float, float], z: float) -> float:
    return lo_hi[0] + z * (lo_hi[1] - lo_hi[0])


def streak_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised line of `length` pixels tilted `angle_deg` from vertical."""
    size = length if length % 2 else length + 1
    k = np.zeros((size, size), np.float32)
    c = size // 2
    cv2.line(k, (c, 0), (c, size - 1), 1.0, 1)
    rot = cv2.getRotationMatrix2D((c, c), angle_deg, 1.0)
    k = cv2.warpAffine(k, rot, (size, size), flags=cv2.INTER_LINEAR)
    return k / max(k.sum(), 1e-6)


def streak_layer(h: int, w: int, rng: np.random.Generator, style: RainStyle, angle: float,
                 depth: float | None = None) -> np.ndarray:
    """One layer of streaks, (H, W) float32 in [0, 1].

    `depth` in [0, 1] (far to near) ties the layer's draws together as in a real scene: near
    drops are sparser, longer, thicker and brighter. None draws each range on its own."""
    if depth is None:
        length = int(rng.integers(style.length[0], style.length[1] + 1))
        density = _u(rng, style.density)
    else:
        length = int(round(_at(style.length, depth)))
        density = _at(style.density[::-1], depth)
    pad = length
    drops = (rng.random((h + 2 * pad, w + 2 * pad), dtype=np.float32) < density)
    drops = drops.astype(np.float32) * rng.uniform(*style.drop_amplitude, drops.shape).astype(np.float32)
    sigma = _u(rng, style.thickness) if depth is None else _at(style.thickness, depth)
    if sigma > 0.3:
        drops = cv2.GaussianBlur(drops, (0, 0), sigma) * (1 + sigma)
    streaks = cv2.filter2D(drops, -1, streak_kernel(length, angle))
    # A smeared drop is dim; rescale so the brightest streaks reach the chosen brightness.
    peak = np.percentile(streaks[streaks > 0], 99) if (streaks > 0).any() else 1.0
    brightness = _u(rng, style.brightness) if depth is None else _at(style.brightness, depth) * rng.uniform(0.8, 1.2)
    streaks = np.clip(streaks / max(peak, 1e-6), 0, 1) * brightness
    return streaks[pad:pad + h, pad:pad + w]


def add_rain(clean: np.ndarray, rng: np.random.Generator, style: RainStyle) -> np.ndarray:
    """Return the rainy version of `clean` ((H, W, 3) float32 in [0, 1])."""
    h, w = clean.shape[:2]
    base_angle = _u(rng, style.angle_deg)
    n_layers = int(rng.integers(style.layers[0], style.layers[1] + 1))
    rain = np.zeros((h, w), np.float32)
    for i in range(n_layers):
        angle = base_angle if i == 0 else base_angle + rng.uniform(-style.layer_spread, style.layer_spread)
        rain += streak_layer(h, w, rng, style, angle, float(rng.random()) if style.depth else None)
    # Streaks are nearly white with a faint tint; give each channel a slightly different gain.
    tint = rng.uniform(0.9, 1.0, 3).astype(np.float32)
    rainy = clean + rain[..., None] * tint
    haze = _u(rng, style.haze)
    if haze > 0:
        light = _u(rng, style.haze_light)
        rainy = (1 - haze) * rainy + haze * light
    return np.clip(rainy, 0, 1)


def frozen(style: RainStyle, rng: np.random.Generator) -> RainStyle:
    """One draw of a style's scalar ranges, kept fixed: the rain of one video clip, whose angle,
    density, length and brightness hold from frame to frame while the drops move."""
    def pick(lo_hi):
        v = _u(rng, lo_hi)
        return (v, v)

    n = int(rng.integers(style.layers[0], style.layers[1] + 1))
    return RainStyle(density=pick(style.density), angle_deg=pick(style.angle_deg),
                     length=(int(round(_u(rng, style.length))),) * 2, thickness=pick(style.thickness),
                     brightness=pick(style.brightness), layers=(n, n), haze=pick(style.haze),
                     haze_light=pick(style.haze_light),
                     layer_spread=style.layer_spread, drop_amplitude=style.drop_amplitude, depth=style.depth)


def random_style(rng: np.random.Generator, mix: dict[str, float]) -> RainStyle:
    names = list(mix)
    p = np.array([mix[n] for n in names], np.float64)
    return STYLES[names[rng.choice(len(names), p=p / p.sum())]]
