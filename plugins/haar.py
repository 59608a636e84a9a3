"""OpenCV Haar cascades (faces, eyes, full bodies, cars...) from cv2.data.haarcascades."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.frames import FrameBatch

from .base import Plugin
from .results import Detections, Result


class HaarCascade(Plugin):
    """Viola-Jones cascade detector.

    Args:
        cascade: a file in cv2.data.haarcascades (e.g. "haarcascade_fullbody.xml") or a path.
        label: the class name given to every box.
        scale_factor: pyramid step (>1).
        min_neighbors: overlapping hits a box needs; higher means fewer false boxes.
        min_size: smallest object, pixels (w, h).
    """

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", label: str = "face",
                 scale_factor: float = 1.1, min_neighbors: int = 4, min_size: tuple[int, int] = (24, 24)):
        path = Path(cascade) if Path(cascade).is_file() else Path(cv2.data.haarcascades) / cascade
        if not path.is_file():
            raise ValueError(f"cascade: no file {cascade!r} here or in {cv2.data.haarcascades}")
        if scale_factor <= 1:
            raise ValueError(f"scale_factor: must be > 1 (got {scale_factor})")
        self.path, self.label = str(path), label
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, tuple(min_size)

    def setup(self) -> None:
        self.cascade = cv2.CascadeClassifier(self.path)  # not picklable: built where it runs

    def process(self, batch: FrameBatch) -> list[Result | None]:
        return [Result(self.detect(image)) for image in batch.images]

    def detect(self, image: np.ndarray) -> Detections:
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        rects = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                              minSize=self.min_size)
        rects = np.asarray(rects, np.float32).reshape(-1, 4)
        xyxy = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], 1)
        n = len(xyxy)
        return Detections(xyxy, np.ones(n, np.float32), np.zeros(n, np.int64), (self.label,) * n)
