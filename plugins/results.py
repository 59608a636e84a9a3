"""What a plugin returns for one frame: detections and any JSON-able data.

Detections hold parallel arrays with documented shapes, checked once at construction,
so every consumer downstream (JSONL, overlay, snapshots, eval-detect) can trust them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Boxes found in one frame.

    Attributes:
        xyxy: (n, 4) float32 pixel boxes (x1, y1, x2, y2) in the frame's own size.
        scores: (n,) float32 confidences in [0, 1] (1.0 for detectors that give none).
        class_ids: (n,) int64 class indices.
        labels: n class names, for JSON and drawing.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, np.float32).reshape(-1, 4) if np.size(self.xyxy) == 0 else self.xyxy
        object.__setattr__(self, "xyxy", np.asarray(xyxy, np.float32))
        object.__setattr__(self, "scores", np.asarray(self.scores, np.float32))
        object.__setattr__(self, "class_ids", np.asarray(self.class_ids, np.int64))
        object.__setattr__(self, "labels", tuple(str(s) for s in self.labels))
        n = len(self.xyxy)
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"Detections.xyxy: must be shape (n, 4), but got {self.xyxy.shape}")
        for name in ("scores", "class_ids"):
            shape = getattr(self, name).shape
            if shape != (n,):
                raise ValueError(f"Detections.{name}: must be shape ({n},), but got {shape}")
        if len(self.labels) != n:
            raise ValueError(f"Detections.labels: must have {n} entries, but got {len(self.labels)}")
        if not np.isfinite(self.xyxy).all():  # NaN boxes broke the overlay and the JSON lines downstream
            raise ValueError("Detections.xyxy: every coordinate must be a finite number (got NaN or inf)")

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), ())

    def __len__(self) -> int:
        return len(self.xyxy)

    def select(self, keep: np.ndarray) -> "Detections":
        """The detections where `keep` (a bool mask or an index array) selects."""
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, np.int64)
        return Detections(self.xyxy[idx], self.scores[idx], self.class_ids[idx],
                          tuple(self.labels[i] for i in idx))

    @staticmethod
    def merge(parts: list["Detections"]) -> "Detections":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Detections.empty()
        return Detections(np.concatenate([p.xyxy for p in parts]), np.concatenate([p.scores for p in parts]),
                          np.concatenate([p.class_ids for p in parts]), sum((p.labels for p in parts), ()))

    def to_json(self) -> list[dict]:
        return [{"box": [round(float(v), 1) for v in self.xyxy[i]], "score": round(float(self.scores[i]), 4),
                 "class_id": int(self.class_ids[i]), "label": self.labels[i]} for i in range(len(self))]


@dataclass(frozen=True)
class Result:
    """One plugin's output for one frame.

    Attributes:
        detections: boxes, when the plugin detects things.
        data: any JSON-able values (counts, tags, file paths written).
    """

    detections: Detections | None = None
    data: dict[str, Any] = field(default_factory=dict)
