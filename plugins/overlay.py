"""Draws the detections of the plugins before it onto the frames that get encoded."""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.frames import FrameBatch

from .base import Plugin, detections_at
from .results import Result

_PALETTE = np.array([(255, 56, 56), (72, 249, 10), (0, 194, 255), (255, 157, 151), (146, 204, 23),
                     (255, 178, 29), (52, 69, 147), (207, 210, 49)], np.uint8)


class Overlay(Plugin):
    """Boxes and "label score" captions, one colour per class, drawn in place.

    Args:
        thickness: box line width in pixels.
        show_scores: append the score to each label.
    """

    annotates = True

    def __init__(self, thickness: int = 2, show_scores: bool = True):
        self.thickness, self.show_scores = thickness, show_scores

    def process(self, batch: FrameBatch) -> list[Result | None]:
        for i in range(len(batch)):
            self.draw(batch.images[i], detections_at(batch, i))
        return [None] * len(batch)

    def draw(self, image: np.ndarray, detections) -> None:
        """Draw on one writable (H, W, 3) uint8 RGB frame."""
        h, w = image.shape[:2]
        for box, score, cid, label in zip(detections.xyxy, detections.scores, detections.class_ids,
                                          detections.labels):
            color = tuple(int(c) for c in _PALETTE[cid % len(_PALETTE)])
            x1, y1, x2, y2 = (int(round(v)) for v in np.clip(box, -1, (w, h, w, h)))  # 1e12 overflowed OpenCV
            cv2.rectangle(image, (x1, y1), (x2, y2), color, self.thickness)
            text = f"{label} {score:.2f}" if self.show_scores else label
            cv2.putText(image, text, (x1, max(y1 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
