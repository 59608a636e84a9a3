"""Saves the frames whose upstream detections match a filter, as image files."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.frames import FrameBatch
from pipeline.images import write_rgb

from .base import Plugin, detections_at
from .results import Result


class Snapshot(Plugin):
    """Writes `<folder>/<source>-<seq>.<ext>` when a frame has at least `min_count` matches
    (`source`: the camera's name, or the input file's name).

    Args:
        folder: where the images go (created).
        labels: class names that count (empty: any).
        min_score: minimum detection score that counts.
        min_count: matching detections a frame needs.
        image: "output" (derained, with any overlay drawn before this plugin) or "rainy".
        ext: image format by suffix: "jpg" or "png".
    """

    def __init__(self, folder: str, labels: list[str] = (), min_score: float = 0.0, min_count: int = 1,
                 image: str = "output", ext: str = "jpg"):
        if image not in ("output", "rainy"):
            raise ValueError(f"image: must be 'output' or 'rainy' (got {image!r})")
        if min_count < 1:
            raise ValueError(f"min_count: must be an integer >= 1 (got {min_count})")
        self.folder, self.labels, self.min_score = Path(folder).expanduser(), set(labels), min_score
        self.min_count, self.image, self.ext = min_count, image, ext

    def setup(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def matches(self, detections) -> int:
        ok = detections.scores >= self.min_score
        if self.labels:
            ok &= np.array([label in self.labels for label in detections.labels], bool)
        return int(ok.sum())

    def process(self, batch: FrameBatch) -> list[Result | None]:
        images = batch.rainy if self.image == "rainy" and batch.rainy is not None else batch.images
        out: list[Result | None] = []
        for i in range(len(batch)):
            n = self.matches(detections_at(batch, i))
            if n < self.min_count:
                out.append(None)
                continue
            path = self.folder / f"{_file_name(batch.source_id)}-{batch.seq[i]:06d}.{self.ext}"
            write_rgb(path, images[i])
            out.append(Result(data={"snapshot": str(path), "matches": n}))
        return out


def _file_name(source_id: str) -> str:
    """A source as part of a file name: a file run's source is the input's path; its name here."""
    return re.sub(r"[^\w.-]+", "_", source_id.rstrip("/").rsplit("/", 1)[-1]) or "source"
