"""The validation set: synthetic rain of every style on clean photos that training never sees.

Checkpoints, stages and settings are chosen on this set alone; rain12, the Rain100 samples
and NTU a1 are only reported. It is drawn once from a fixed seed, so every run and every
session scores against the same pairs (or, for a temporal network, the same clips).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import InputError
from ..images import IMAGE_SUFFIXES, read_rgb
from .data import PatchSampler, _jpeg
from .scale import predict
from .synth import STYLES

# 20 photos of the corpus, spread over its three sources, never trained on.
HELD_OUT = (
    "kodim03.png", "kodim08.png", "kodim13.png", "kodim19.png", "kodim23.png",
    "4.tif", "11.tif", "17.tif",
    "107014.jpg", "128035.jpg", "15011.jpg", "17067.jpg", "196062.jpg", "223060.jpg", "247012.jpg",
    "285022.jpg", "334025.jpg", "388018.jpg", "65084.jpg", "94095.jpg",
)
SEED = 20261126
EVERY_STYLE = {name: 1.0 for name in STYLES}
# The clips' styles in turn, as when the temporal settings and weights were chosen on them
# (docs/results/select-temporal*.txt); drizzle came later and is in the batches only.
VIDEO_STYLES = ("light", "faint", "medium", "heavy", "dense", "video")


def held_out_photos(clean_dirs: list[str]) -> list[Path]:
    return sorted(p for d in clean_dirs for p in Path(d).rglob("*")
                  if p.name in HELD_OUT and p.suffix.lower() in IMAGE_SUFFIXES)


def validation_batches(clean_dirs: list[str], frames: int = 1, patch: int = 128, count: int = 160,
                       batch: int = 16, jpeg: float = 0.3, draw: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` fixed (rainy, clean) pairs in batches, every style equally often: the same arrays for
    the same arguments, whatever machine makes them. `draw` 0 is the set the trainer scores its
    checkpoints on; another draw has other crops and rain of the same photos, to confirm that a
    checkpoint picked as the best of many on draw 0 is better, not luckier."""
    photos = [read_rgb(p) for p in held_out_photos(clean_dirs)]
    if not photos:
        raise InputError(f"{', '.join(map(str, clean_dirs))}: none of the validation photos "
                         f"({', '.join(HELD_OUT[:3])}, ...) is there; set val_every: 0 to train without")
    sampler = PatchSampler(photos, [], patch, EVERY_STYLE, jpeg=jpeg, frames=frames)
    seeds = ([SEED, frames, i] if draw == 0 else [SEED, frames, i, draw] for i in range(count // batch))
    return [sampler.batch(batch, np.random.default_rng(seed)) for seed in seeds]


def validation_videos(clean_dirs: list[str], frames: int = 10, patch: int = 160,
                      jpeg: float = 1 / 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """One fixed (rainy, clean) clip per validation photo, uint8 (frames, patch, patch, 3) each: a
    camera moving as in training (motion.py), the scene swaying and each frame noisy as filmed
    video is (`_as_filmed`), the rain of one style (in turn) drawn anew in every frame, a third
    through JPEG. For what only a video shows: flicker, and settings that carry
    frames along the motion (alignment, deflicker)."""
    from .motion import camera_clip
    from .synth import add_rain, frozen

    photos = [read_rgb(p) for p in held_out_photos(clean_dirs)]
    if not photos:
        raise InputError(f"{', '.join(map(str, clean_dirs))}: none of the validation photos is there")
    clips, styles = [], [STYLES[name] for name in VIDEO_STYLES]
    for i, photo in enumerate(photos):
        rng = np.random.default_rng([SEED, frames, patch, i])
        clean = _as_filmed(camera_clip(photo, rng, patch, list(range(1, frames))), rng)
        style, quality = frozen(styles[i % len(styles)], rng), int(rng.integers(60, 96))
        use_jpeg = rng.random() < jpeg
        rainy = np.stack([np.round(add_rain(f.astype(np.float32) / 255, rng, style) * 255).astype(np.uint8)
                          for f in clean])
        clips.append((np.stack([_jpeg(r, quality) for r in rainy]) if use_jpeg else rainy, clean))
    return clips


def _as_filmed(clip: np.ndarray, rng: np.random.Generator, sway: float = 1.5, noise: float = 1.5) -> np.ndarray:
    """A photo under camera motion is more rigid and cleaner than filmed video, where flow fails
    and frames differ by more than motion: so the scene sways (a smooth displacement field of up
    to `sway` px, changing from frame to frame, as leaves and parallax do), and every frame has
    its own sensor noise (`noise` levels) and compression (JPEG at one quality of 60-95 per
    clip), which the clean frames keep, as NTU's JPEG frames do."""
    h, w = clip.shape[1:3]
    fields = [cv2.GaussianBlur(rng.normal(0, 1, (h, w, 2)).astype(np.float32), (0, 0), 12) for _ in range(2)]
    fields = [f * (sway / max(float(np.abs(f).max()), 1e-6)) for f in fields]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    quality, out = int(rng.integers(60, 96)), []
    for t, frame in enumerate(clip):
        d = (fields[0] * np.cos(0.7 * t) + fields[1] * np.sin(0.7 * t)).astype(np.float32)
        swayed = cv2.remap(frame, gx + d[..., 0], gy + d[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        noisy = np.clip(swayed + rng.normal(0, noise, swayed.shape), 0, 255).round().astype(np.uint8)
        out.append(_jpeg(noisy, quality))
    return np.stack(out)


@torch.no_grad()
def validation_psnr(net: torch.nn.Module, batches: list[tuple[np.ndarray, np.ndarray]], device: torch.device,
                    scale: float = 1.0, upsample: str = "bilinear") -> float:
    """Mean Y-PSNR (dB) of the derained targets, quantised to 8 bits as a saved frame would be."""
    was_training = net.training
    net.eval()
    scores = []
    for rainy, clean in batches:
        x = torch.from_numpy(rainy).to(device)
        y = torch.from_numpy(clean).to(device)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            rain = predict(net, x, scale, upsample).rain.float()
        out = ((x[:, :3] - rain).clamp(0, 1) * 255).round()
        scores.append(_y_psnr(out, (y * 255).round()))
    net.train(was_training)
    return float(torch.cat(scores).mean())


def _y_psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, on 0-255 RGB: Y with evaluate.py's weights, unrounded (a selection score, not a
    reported figure)."""
    w = torch.tensor([65.481, 128.553, 24.966], device=a.device).view(1, 3, 1, 1) / 255
    mse = ((a - b) * w).sum(1).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(255**2 / mse.clamp_min(1e-10))


def derain_videos(derainer, clips) -> list[np.ndarray]:
    """Each validation video derained as the pipeline derains a stream (`Derainer.sequence`)."""
    return [np.stack([f for r in derainer.sequence(list(rainy)) for f in r.frames]) for rainy, _ in clips]


def clip_psnrs(clips, outputs) -> np.ndarray:
    """Each validation video's mean Y-PSNR (as `derain eval` scores a frame)."""
    from .evaluate import psnr, y_channel

    return np.array([np.mean([psnr(y_channel(o), y_channel(c)) for o, c in zip(out, clean)])
                     for (_, clean), out in zip(clips, outputs)])


def video_scores(refs, clips, outputs) -> tuple[np.ndarray, float]:
    """Each validation video's Y-PSNR (`clip_psnrs`: its mean, or `by_style`) and the mean warping
    error (`refs`: a flicker.WarpReference of each clip's clean frames)."""
    return clip_psnrs(clips, outputs), float(np.mean([ref.error(list(out)) for ref, out in zip(refs, outputs)]))


def by_style(per_clip: np.ndarray) -> np.ndarray:
    """Mean per rain style (validation video i has VIDEO_STYLES[i mod 6], `validation_videos`)."""
    return np.array([per_clip[i::len(VIDEO_STYLES)].mean() for i in range(len(VIDEO_STYLES))])
