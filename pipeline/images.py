"""Image files: read and write uint8 RGB, list a folder, pair rainy with clean images.

One place for image I/O, shared by the sources (image folders), the sinks, the plugins,
evaluation and training. A file that is not an image raises InputError naming it.
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError, OutputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# Rain100/Rain12 name pairs rain-001.png / norain-001.png; strip those prefixes to match.
_PAIR_PREFIX = re.compile(r"^(no)?rain[-_]?", re.IGNORECASE)


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as uint8 RGB (H, W, 3); raise InputError naming the file if it is not one."""
    data = np.fromfile(str(path), np.uint8) if Path(path).is_file() else None
    if data is None:
        raise InputError(f"{path}: file not found")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise InputError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def make_folder(folder: Path, flag: str) -> None:
    """An output folder made, or one line saying why not (a file there, no permission)."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: is a file; give {flag} a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot make the folder ({exc.strerror})") from None


def write_rgb(path: str | Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(Path(path).suffix or ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"{path}: cannot encode this image type")
    Path(path).write_bytes(buf.tobytes())


def pair_key(path: Path) -> str:
    return _PAIR_PREFIX.sub("", path.stem)


def pair_files(rain_dir: str | Path, clean_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair `rain-001.png` with `norain-001.png` (or equal names); every file must find its mate."""
    rain = {pair_key(p): p for p in list_images(rain_dir)}
    clean = {pair_key(p): p for p in list_images(clean_dir)}
    if not rain:
        raise InputError(f"{rain_dir}: no images found")
    lonely = sorted(set(rain) ^ set(clean))
    if lonely:
        names = [str((rain.get(k) or clean.get(k)).name) for k in lonely[:5]]
        raise InputError(f"{rain_dir} / {clean_dir}: {len(lonely)} unmatched file(s), e.g. {', '.join(names)}")
    return [(rain[k], clean[k]) for k in sorted(rain)]
