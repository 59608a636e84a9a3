"""A YOLO-style ONNX detector on onnxruntime (CPU by default, CUDA when asked for).

Pre-processing letterboxes each RGB frame into `input_size` (aspect kept, grey 114
padding, as YOLO was trained), scales to [0, 1] and lays it out NCHW. The output is
read as (B, 4 + C, N) (YOLOv8) or (B, N, 4 + C); with `objectness` as (B, N, 5 + C)
(YOLOv5). Boxes are (cx, cy, w, h) in input pixels and are mapped back to the frame
by undoing the letterbox.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.frames import FrameBatch

from .base import Plugin
from .boxes import nms
from .results import Detections, Result


class ONNXDetector(Plugin):
    """Args:
        model: path of the .onnx file.
        input_size: network input, an int (square) or [width, height].
        class_names: names by class index (their count is C); left out, they are read from
            the model's `names` metadata, which Ultralytics exports (YOLOv8/11) carry.
        score_threshold: minimum class score (times objectness) to keep a box.
        nms_iou: per-class NMS overlap threshold.
        objectness: the rows carry an objectness score before the class scores (YOLOv5).
        letterbox: keep the aspect ratio with padding (else stretch).
        providers: onnxruntime execution providers, in preference order.
    """

    def __init__(self, model: str, class_names: list[str] | None = None, input_size: int | list[int] = 640,
                 score_threshold: float = 0.25, nms_iou: float = 0.45, objectness: bool = False,
                 letterbox: bool = True, providers: list[str] | None = None):
        model = str(Path(model).expanduser())
        if not Path(model).is_file():
            raise ValueError(f"model: file not found: {model}")
        size = [input_size] * 2 if isinstance(input_size, int) else list(input_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"input_size: must be an int or [width, height] >= 1 (got {input_size!r})")
        if class_names is not None and not class_names:
            raise ValueError("class_names: must list at least one class")
        self.model, self.class_names, self.size = str(model), list(class_names or []), tuple(int(s) for s in size)
        self.score_threshold, self.nms_iou = score_threshold, nms_iou
        self.objectness, self.letterbox = objectness, letterbox
        self.providers = providers or ["CPUExecutionProvider"]

    def setup(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # the derain model owns the cores; scale with replicas instead
        self.session = ort.InferenceSession(self.model, opts, providers=self.providers)
        self.input_name = self.session.get_inputs()[0].name
        if not self.class_names:
            self.class_names = self._names_from_metadata()

    def _names_from_metadata(self) -> list[str]:
        import ast

        raw = self.session.get_modelmeta().custom_metadata_map.get("names")
        try:
            names = ast.literal_eval(raw) if raw else None  # "{0: 'person', 1: 'bicycle', ...}"
        except (ValueError, SyntaxError):
            names = None
        if not isinstance(names, (dict, list)) or not names:
            raise ValueError(f"class_names: not given, and {self.model} has no 'names' metadata to read them from")
        return [str(names[i]) for i in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]

    def process(self, batch: FrameBatch) -> list[Result | None]:
        x, transforms = self.preprocess(batch.images)
        out = np.concatenate([self.session.run(None, {self.input_name: x[i:i + 1]})[0] for i in range(len(x))])
        return [Result(self.postprocess(rows, t)) for rows, t in zip(self.rows(out), transforms)]

    def preprocess(self, images: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
        """(B, H, W, 3) uint8 -> (B, 3, h, w) float32 input and per frame (scale, pad_x, pad_y)."""
        w, h = self.size
        out = np.full((len(images), h, w, 3), 114, np.uint8)
        transforms = []
        for i, img in enumerate(images):
            ih, iw = img.shape[:2]
            if self.letterbox:
                s = min(w / iw, h / ih)
                nw, nh = round(iw * s), round(ih * s)
                px, py = (w - nw) // 2, (h - nh) // 2
                out[i, py:py + nh, px:px + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
                transforms.append((s, s, px, py))
            else:
                out[i] = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
                transforms.append((w / iw, h / ih, 0, 0))
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2), np.float32) / 255, transforms

    def rows(self, out: np.ndarray) -> np.ndarray:
        """The raw output as (B, N, 4 [+1] + C) rows, whichever way round the model wrote it."""
        width = 4 + self.objectness + len(self.class_names)
        if out.ndim != 3 or width not in out.shape[1:]:
            raise ValueError(f"expected output (B, {width}, N) or (B, N, {width}), got {out.shape}")
        return out.transpose(0, 2, 1) if out.shape[1] == width else out

    def postprocess(self, rows: np.ndarray, transform) -> Detections:
        """(N, 4 [+1] + C) rows of one frame -> thresholded, NMS'd boxes in frame pixels."""
        cls_scores = rows[:, 4 + self.objectness:]
        if self.objectness:
            cls_scores = cls_scores * rows[:, 4:5]
        class_ids = cls_scores.argmax(1)
        scores = cls_scores[np.arange(len(rows)), class_ids]
        keep = scores >= self.score_threshold
        cxcywh, scores, class_ids = rows[keep, :4], scores[keep], class_ids[keep]
        sx, sy, px, py = transform
        xyxy = np.stack([(cxcywh[:, 0] - cxcywh[:, 2] / 2 - px) / sx, (cxcywh[:, 1] - cxcywh[:, 3] / 2 - py) / sy,
                         (cxcywh[:, 0] + cxcywh[:, 2] / 2 - px) / sx, (cxcywh[:, 1] + cxcywh[:, 3] / 2 - py) / sy], 1)
        idx = nms(xyxy, scores, self.nms_iou, class_ids)
        return Detections(xyxy[idx], scores[idx], class_ids[idx], tuple(self.class_names[c] for c in class_ids[idx]))
