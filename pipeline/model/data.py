"""Where training images come from: clean photos and real pairs, cut into rained patches."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from ..images import IMAGE_SUFFIXES, pair_files, read_rgb
from .motion import MotionRanges, camera_clip, neighbour_offsets
from .synth import add_rain, frozen, random_style

class PatchSampler:
    """Random training patches: synthetic rain on clean photos, plus crops of real pairs.

    Images are loaded once; each call crops, flips and (for clean photos) rains a patch,
    so the pairs never repeat. Randomness comes from the generator passed in, so a batch
    is a pure function of its seed wherever it is made (see prefetch.py).
    """

    def __init__(self, photos: list[np.ndarray], pairs: list[tuple[np.ndarray, np.ndarray]], patch: int,
                 rain_mix: dict[str, float], paired_fraction: float = 0.0, jpeg: float = 0.0,
                 jpeg_quality: tuple[int, int] = (60, 95), frames: int = 1, twins: bool = False):
        self.patch, self.mix, self.frames, self.twins = patch, rain_mix, frames, twins
        self.jpeg, self.jpeg_quality = jpeg, jpeg_quality
        self.paired_fraction = paired_fraction
        # Images smaller than a patch cannot be cropped: left out, and counted for the trainer to say so.
        self.clean = [im for im in photos if min(im.shape[:2]) >= patch]
        self.pairs = [p for p in pairs if min(p[0].shape[:2]) >= patch]
        self.skipped = {"clean": len(photos) - len(self.clean), "paired": len(pairs) - len(self.pairs)}

    @classmethod
    def from_dirs(cls, clean_dirs: list[str], paired: list[tuple[str, str]], patch: int, rain_mix: dict[str, float],
                  paired_fraction: float, jpeg: float = 0.0, jpeg_quality: tuple[int, int] = (60, 95),
                  frames: int = 1, exclude: tuple[str, ...] = (), twins: bool = False) -> "PatchSampler":
        """Load the clean photos under `clean_dirs` (less the `exclude`d names) and the real pairs."""
        photos = [read_rgb(p) for d in clean_dirs for p in _walk_images(d) if p.name not in exclude]
        pairs = [_read_pair(r, c) for rd, cd in paired for r, c in pair_files(rd, cd)]
        sampler = cls(photos, pairs, patch, rain_mix, paired_fraction, jpeg, jpeg_quality, frames, twins)
        if not photos and not pairs:
            raise InputError(f"no training images found in {clean_dirs} or {paired}")
        # A set given and found, none of it usable, would leave the run training on the other one alone.
        if photos and not sampler.clean:
            raise InputError(_too_small(map(str, clean_dirs), "clean photo", photos, patch))
        if pairs and not sampler.pairs:
            raise InputError(_too_small((f"{r} / {c}" for r, c in paired), "pair", [r for r, _ in pairs], patch))
        return sampler

    def _crop(self, rng: np.random.Generator, *imgs: np.ndarray) -> list[np.ndarray]:
        h, w = imgs[0].shape[:2]
        y = int(rng.integers(0, h - self.patch + 1))
        x = int(rng.integers(0, w - self.patch + 1))
        flip = rng.random() < 0.5
        out = [im[y:y + self.patch, x:x + self.patch] for im in imgs]
        return [im[:, ::-1] if flip else im for im in out]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One (rainy, clean) pair, float32 (patch, patch, 3) in [0, 1]."""
        if self.pairs and (not self.clean or rng.random() < self.paired_fraction):
            rainy, clean = self._crop(rng, *self.pairs[rng.integers(len(self.pairs))])
            return rainy.astype(np.float32) / 255, clean.astype(np.float32) / 255
        (clean,) = self._crop(rng, self.clean[rng.integers(len(self.clean))])
        clean = clean.astype(np.float32) / 255
        rainy = add_rain(clean, rng, random_style(rng, self.mix))
        # Quantise like a real 8-bit rainy photo so the network never relies on sub-LSB detail.
        rainy = np.round(rainy * 255).astype(np.uint8)
        if self.jpeg and rng.random() < self.jpeg:
            rainy = _jpeg(rainy, int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)))
        return rainy.astype(np.float32) / 255, clean

    def sample_twins(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One clean crop rained twice, float32 (patch, patch, 3) each: the same style, JPEG
        quality and scene, other streaks, as two frames of a still camera in steady rain. A
        single-frame network's two answers differ only by what the rain made it do, which a
        video shows as flicker. Synthetic rain only (a real pair has one rainy image)."""
        (clean,) = self._crop(rng, self.clean[rng.integers(len(self.clean))])
        clean = clean.astype(np.float32) / 255
        style = frozen(random_style(rng, self.mix), rng)
        quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        use_jpeg = self.jpeg and rng.random() < self.jpeg
        draws = []
        for _ in range(2):
            r = np.round(add_rain(clean, rng, style) * 255).astype(np.uint8)
            draws.append((_jpeg(r, quality) if use_jpeg else r).astype(np.float32) / 255)
        return draws[0], draws[1], clean

    def sample_clip(self, rng: np.random.Generator, draws: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Rainy windows (draws, frames, patch, patch, 3), target first, and the clean target
        (patch, patch, 3), float32 in [0, 1]: one scene under camera motion, the clip's rain drawn
        anew in every frame. A second draw rains the same clean clip again (same style, same JPEG
        quality, other streaks): what the network makes of the two should not differ, and where
        it does, a video flickers."""
        photo = self.clean[rng.integers(len(self.clean))]
        if rng.random() < 0.5:
            photo = photo[:, ::-1]
        offsets = neighbour_offsets(rng, self.frames, _MOTION)
        clip = camera_clip(photo, rng, self.patch, offsets).astype(np.float32) / 255
        style = frozen(random_style(rng, self.mix), rng)
        quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        use_jpeg = self.jpeg and rng.random() < self.jpeg
        windows = []
        for _ in range(draws):
            rainy: dict[int, np.ndarray] = {}  # by time: a frame standing in twice is the same rainy image
            for t, frame in zip([0, *offsets], clip):
                if t not in rainy:
                    r = np.round(add_rain(frame, rng, style) * 255).astype(np.uint8)
                    rainy[t] = _jpeg(r, quality) if use_jpeg else r
            windows.append(np.stack([rainy[t] for t in [0, *offsets]]))
        return np.stack(windows).astype(np.float32) / 255, clip[0]

    def batch(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(rainy, clean), float32 (n, 3 * frames, patch, patch) and (n, 3, patch, patch); a window's
        target frame comes first. With `twins` 2n of each: the second n rain the first n's
        clips (or crops) again."""
        if self.frames > 1:
            draws = 2 if self.twins else 1
            clips = [self.sample_clip(rng, draws) for _ in range(n)]
            # (draw, n, ...): with twins, rows n..2n-1 are rows 0..n-1 rained again
            rainy = np.stack([c[0] for c in clips], 1).transpose(0, 1, 2, 5, 3, 4)
            rainy = rainy.reshape(draws * n, -1, self.patch, self.patch)
            clean = np.tile(np.stack([c[1] for c in clips]).transpose(0, 3, 1, 2), (draws, 1, 1, 1))
            return np.ascontiguousarray(rainy), np.ascontiguousarray(clean)
        if self.twins:
            twins = [self.sample_twins(rng) for _ in range(n)]
            rainy = np.stack([t[0] for t in twins] + [t[1] for t in twins]).transpose(0, 3, 1, 2)
            clean = np.tile(np.stack([t[2] for t in twins]).transpose(0, 3, 1, 2), (2, 1, 1, 1))
            return np.ascontiguousarray(rainy), np.ascontiguousarray(clean)
        pairs = [self.sample(rng) for _ in range(n)]
        rainy = np.stack([p[0] for p in pairs]).transpose(0, 3, 1, 2)
        clean = np.stack([p[1] for p in pairs]).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(rainy), np.ascontiguousarray(clean)


_MOTION = MotionRanges()


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through JPEG: video frames and web photos reach us compressed, streaks
    smeared by the codec's blocks and ringing (NTU's frames are JPEGs)."""
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])  # BGR for OpenCV
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]) if ok else rgb


def _read_pair(rain: Path, clean: Path) -> tuple[np.ndarray, np.ndarray]:
    """A real pair, checked now: crops of images of two sizes would not show the same scene
    (and a batch of them fails to stack, hours into a run)."""
    rainy, clean_img = read_rgb(rain), read_rgb(clean)
    if rainy.shape != clean_img.shape:
        raise InputError(f"{rain} is {_size(rainy)} but {clean} is {_size(clean_img)}:"
                         " a training pair's sizes must match")
    return rainy, clean_img


def _size(img: np.ndarray) -> str:
    return f"{img.shape[1]}x{img.shape[0]}"


def _too_small(where, what: str, images: list[np.ndarray], patch: int) -> str:
    largest = max(images, key=lambda im: min(im.shape[:2]))
    return (f"{', '.join(where)}: {len(images)} {what}(s) found, all smaller than data.patch {patch}x{patch}"
            f" (the largest is {_size(largest)})")


def _walk_images(folder: str) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: training folder not found")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
