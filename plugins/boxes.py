"""Box helpers shared by the detectors and eval-detect: NMS and IoU on (n, 4) xyxy arrays."""
from __future__ import annotations

import cv2
import numpy as np


def nms(xyxy: np.ndarray, scores: np.ndarray, iou: float, class_ids: np.ndarray | None = None) -> np.ndarray:
    """Indices kept by non-maximum suppression (per class when `class_ids` is given)."""
    if len(xyxy) == 0:
        return np.zeros(0, np.int64)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1).astype(np.float32)
    if class_ids is None:
        keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.astype(float).tolist(), 0.0, iou)
    else:
        keep = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.astype(float).tolist(),
                                       class_ids.astype(int).tolist(), 0.0, iou)
    return np.asarray(keep, np.int64).reshape(-1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of two (n, 4) xyxy arrays."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)
