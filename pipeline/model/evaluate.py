"""PSNR/SSIM of the input and of our output against ground truth, as deraining papers report.

The convention (ECNet, PReNet): images quantised to uint8, converted to the Y channel
of YCbCr as MATLAB's rgb2ycbcr does for uint8 images (Y = 16 + 65.481 R + 128.553 G +
24.966 B with R, G, B in [0, 1], rounded), PSNR with peak 255, SSIM with an 11x11
Gaussian window (sigma 1.5) keeping only the window-covered pixels, mean over images.
RGB PSNR is reported beside it.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import InputError, OutputError
from ..images import make_folder, pair_files, read_rgb, write_rgb
from .flicker import WarpReference
from .inference import Derainer
from .losses import ssim


SSIM_WINDOW = 11  # pixels a side (losses.ssim)


def y_channel(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> float64 (H, W) Y in [16, 235], rounded like MATLAB's uint8 path."""
    x = rgb.astype(np.float64) / 255
    return np.round(16 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim_y(a: np.ndarray, b: np.ndarray) -> float:
    ta = torch.from_numpy(np.ascontiguousarray(a, np.float64))[None, None]
    tb = torch.from_numpy(np.ascontiguousarray(b, np.float64))[None, None]
    return float(ssim(ta, tb, data_range=255.0, valid=True)[0])


@dataclass(frozen=True)
class PairScore:
    name: str
    input_psnr: float
    input_ssim: float
    psnr: float
    ssim: float
    input_rgb_psnr: float
    rgb_psnr: float
    y_offset: float  # mean Y(ours) - Y(clean): a global brightness error PSNR punishes and SSIM barely sees


def score_pair(name: str, rainy: np.ndarray, derained: np.ndarray, clean: np.ndarray) -> PairScore:
    yc, yr, yd = y_channel(clean), y_channel(rainy), y_channel(derained)
    return PairScore(name, psnr(yr, yc), ssim_y(yr, yc), psnr(yd, yc), ssim_y(yd, yc),
                     psnr(rainy, clean), psnr(derained, clean), float(np.mean(yd - yc)))


def evaluate(rain_dir: str | Path, clean_dir: str | Path, derainer: Derainer,
             csv_path: str | Path | None = None, save_dir: str | Path | None = None,
             progress: bool = False, video: bool | None = None) -> dict:
    """Derain every rainy image, score it and its input; returns the means (and writes a CSV per image).

    `video`: the images are consecutive frames (in name order): a temporal profile sees each
    frame's neighbours, and the result also holds the warping error (flicker.py) of the output,
    of the rainy input and of the clean frames. None: so when the names number consecutive
    frames (00001, 00002, ...) of one size."""
    pairs = pair_files(rain_dir, clean_dir)
    if video:  # frame 2 before frame 10, however the names are padded
        pairs.sort(key=lambda pair: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", pair[0].stem)])
    scores, outputs = [], []
    for out, flag in ((save_dir, "--save"), (csv_path, "--csv")):
        if out:
            _outside_inputs(Path(out), flag, (Path(rain_dir), Path(clean_dir)))
    if save_dir:
        make_folder(Path(save_dir), "--save")
    rainy_all, clean_all = zip(*(_read_pair(r, c) for r, c in pairs))
    table = _open_csv(Path(csv_path)) if csv_path else None  # before the work: a bad path would lose it all
    if video is None:
        video = looks_like_video([r for r, _ in pairs], rainy_all)
    if video:
        derained_all = (f for result in derainer.sequence(list(rainy_all)) for f in result.frames)
    else:
        derained_all = (derainer(rainy[None]).frames[0] for rainy in rainy_all)
    for (rain_path, _), rainy, clean, derained in _maybe_progress(list(zip(pairs, rainy_all, clean_all)), progress,
                                                                  derained_all):
        if save_dir:
            write_rgb(Path(save_dir) / f"{rain_path.stem}.png", derained)
        scores.append(score_pair(rain_path.name, rainy, derained, clean))
        if table is not None:
            table[1].writerow(asdict(scores[-1]))
            table[0].flush()  # row by row: an interrupted evaluation keeps what it scored
        if video:
            outputs.append(derained)
    if table is not None:
        table[0].close()
    means = {k: float(np.mean([getattr(s, k) for s in scores])) for k in asdict(scores[0]) if k != "name"}
    out = {"n": len(scores), "profile": derainer.profile, "video": video, "align": derainer.align,
           "deflicker": bool(video and derainer.deflicker),
           **{k: round(v, 4) for k, v in means.items()}}
    if video:
        ref = WarpReference(list(clean_all))
        out.update(warp_error=round(ref.error(outputs), 6), input_warp_error=round(ref.error(list(rainy_all)), 6),
                   clean_warp_error=round(ref.error(list(clean_all)), 6))
    return out


def _outside_inputs(out: Path, flag: str, inputs: tuple[Path, Path]) -> None:
    """An output in a set's folder wrote over its images (--save into the rainy folder replaced
    them with the derained ones) or, next time, was read as one."""
    target = out.resolve()
    for folder in inputs:
        if target == folder.resolve() or folder.resolve() in target.parents:
            raise OutputError(f"{out}: is in the input folder {folder}; give {flag} a path outside it")


def _open_csv(path: Path):
    """The CSV file and its writer, the header written."""
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; --csv takes a file name")
    try:
        fh = open(path, "w", newline="")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the CSV there ({exc.strerror})") from None
    writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(PairScore)])
    writer.writeheader()
    return fh, writer


def looks_like_video(paths: list[Path], images) -> bool:
    """Three or more images of one size whose names end in consecutive numbers, and that look like
    one scene: 16x16 thumbnails of neighbours differ by less than 25 levels (median over pairs;
    NTU's videos 1-18, rain12's unrelated photos, also numbered and of one size, 37)."""
    numbers = [re.search(r"(\d+)$", p.stem) for p in paths]
    if len(paths) < 3 or not all(numbers) or len({im.shape for im in images}) != 1:
        return False
    seq = [int(m.group(1)) for m in numbers]
    if seq != list(range(seq[0], seq[0] + len(seq))):
        return False
    thumbs = [cv2.resize(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)
              for im in images]
    return float(np.median([np.abs(a - b).mean() for a, b in zip(thumbs[:-1], thumbs[1:])])) < 25


def _read_pair(rain_path: Path, clean_path: Path) -> tuple[np.ndarray, np.ndarray]:
    rainy, clean = read_rgb(rain_path), read_rgb(clean_path)
    if rainy.shape != clean.shape:
        raise InputError(f"{rain_path} is {rainy.shape[1]}x{rainy.shape[0]} but {clean_path} is "
                         f"{clean.shape[1]}x{clean.shape[0]}: sizes must match")
    if min(rainy.shape[:2]) < SSIM_WINDOW:  # the score's window does not fit: a torch traceback
        raise InputError(f"{rain_path} is {rainy.shape[1]}x{rainy.shape[0]}: smaller than SSIM's "
                         f"{SSIM_WINDOW}x{SSIM_WINDOW} window, it cannot be scored")
    return rainy, clean


def _maybe_progress(items, on: bool, derained):
    """(item..., derained frame) tuples, with a progress bar when asked."""
    rows = ((*item, frame) for item, frame in zip(items, derained))
    if not on:
        return rows
    from tqdm import tqdm

    return tqdm(rows, total=len(items), desc="eval", dynamic_ncols=True)
