"""OpenCV's HOG + linear SVM people detector (opencv-python-headless < 5 ships it)."""
from __future__ import annotations

import logging

import cv2
import numpy as np

from pipeline.frames import FrameBatch

from .base import Plugin
from .boxes import nms
from .results import Detections, Result


log = logging.getLogger(__name__)
WINDOW = (64, 128)  # the default people detector's window, width x height


class HOGPeople(Plugin):
    """Pedestrians, upright, at least 64x128 pixels (the detector's window).

    Args:
        win_stride: window step in pixels; larger is faster and misses more.
        scale: image pyramid step (>1); smaller finds more sizes and is slower.
        score_threshold: minimum SVM score to keep a box.
        nms_iou: overlap above which the weaker of two boxes is dropped.
    """

    def __init__(self, win_stride: int = 8, scale: float = 1.05, score_threshold: float = 0.3,
                 nms_iou: float = 0.45):
        if win_stride < 1 or scale <= 1:
            raise ValueError(f"win_stride must be >= 1 and scale > 1 (got {win_stride}, {scale})")
        self.win_stride, self.scale = win_stride, scale
        self.score_threshold, self.nms_iou = score_threshold, nms_iou

    def setup(self) -> None:
        self._said: set[tuple[int, int]] = set()
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def process(self, batch: FrameBatch) -> list[Result | None]:
        return [Result(self.detect(image)) for image in batch.images]

    def detect(self, image: np.ndarray) -> Detections:
        """People in one (H, W, 3) uint8 RGB frame."""
        h, w = image.shape[:2]
        if h < WINDOW[1] or w < WINDOW[0]:
            # No window fits, so no person can be found, and OpenCV 4.14 crashes the process
            # (SIGSEGV) on such frames (160x96, 320x96) instead of finding none.
            if (w, h) not in self._said:
                self._said.add((w, h))
                log.warning("hog: %dx%d frames are smaller than the detector's %dx%d window; no people are "
                            "looked for in them", w, h, *WINDOW)
            return Detections.empty()
        rects, weights = self.hog.detectMultiScale(image, winStride=(self.win_stride,) * 2, padding=(8, 8),
                                                   scale=self.scale)
        if len(rects) == 0:
            return Detections.empty()
        rects = np.asarray(rects, np.float32).reshape(-1, 4)
        scores = np.asarray(weights, np.float32).reshape(-1)
        xyxy = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], 1)
        keep = scores >= self.score_threshold
        xyxy, scores = xyxy[keep], scores[keep]
        idx = nms(xyxy, scores, self.nms_iou)
        # SVM margins are unbounded; squash to (0, 1) so scores compare across detectors.
        conf = 1 / (1 + np.exp(-scores[idx]))
        return Detections(xyxy[idx], conf, np.zeros(len(idx), np.int64), ("person",) * len(idx))
