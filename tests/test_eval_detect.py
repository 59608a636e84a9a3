"""eval-detect: matching rules on known boxes, and a tiny end-to-end run on made-up pairs."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.bench.detection import Counts, evaluate_set, match
from pipeline.images import write_rgb
from pipeline.model.inference import Derainer
from plugins import Detections, Plugin, Result


def dets(boxes, scores, labels):
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores), np.zeros(len(scores)), labels)


def test_match_counts_tp_fp_fn():
    ref = dets([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], ("a", "a"))
    pred = dets([[1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], [0.9, 0.8, 0.7, 0.6],
                ("a", "a", "b", "a"))
    c = match(pred, ref)
    assert (c.tp, c.fp, c.fn) == (1, 3, 1)  # one box per reference; labels must agree
    assert Counts(2, 0, 2).scores() == {"precision": 1.0, "recall": 0.5, "f1": 0.6667}


class BrightSquare(Plugin):
    """Detects the one bright square, unless streaks (value 200) cross it."""

    def process(self, batch):
        out = []
        for img in batch.images:
            ys, xs = np.nonzero(img[..., 0] == 255)
            found = len(xs) and not (img[..., 0] == 200).any()
            boxes = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]] if found else []
            out.append(Result(dets(boxes, [1.0] * len(boxes), ("sq",) * len(boxes))))
        return out


def test_rainy_frames_lose_boxes(tmp_path):
    (tmp_path / "rain").mkdir(), (tmp_path / "clean").mkdir()
    for i in range(3):
        clean = np.zeros((32, 32, 3), np.uint8)
        clean[8:20, 8:20] = 255
        rainy = clean.copy()
        if i:
            rainy[:, 25] = 200
        write_rgb(tmp_path / "clean" / f"norain-{i}.png", clean)
        write_rgb(tmp_path / "rain" / f"rain-{i}.png", rainy)
    r = evaluate_set(tmp_path / "rain", tmp_path / "clean", Derainer.load(profile="identity"), BrightSquare())
    assert r["images"] == 3 and r["reference_boxes"] == 3
    assert r["rainy"]["recall"] == r["derained"]["recall"] == round(1 / 3, 4)


def test_a_detector_whose_setup_fails_is_one_line(tmp_path, shared_data):
    """The same plugin said one line in a run, a 23-line traceback in eval-detect."""
    from pipeline.bench.detection import eval_detect
    from pipeline.errors import PluginError

    class Broken(Plugin):
        def setup(self):
            raise ValueError("class_names: not given, and model.onnx has no 'names' metadata")

        def process(self, batch):
            return [None] * len(batch)

    with pytest.raises(PluginError, match=r"^detector broken \(.*Broken\): setup failed: ValueError: class_names"):
        eval_detect(shared_data, Derainer.load(profile="identity"), Broken(), sets=["rain12"])
