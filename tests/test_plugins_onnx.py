"""The ONNX detector against a tiny exported model whose output encodes known boxes."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from pipeline.frames import FrameBatch
from plugins import load_plugins

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


class BrightBoxNet(torch.nn.Module):
    """Finds the bright (red > 0.5) region and reports it YOLOv8-style as (B, 4 + 2, 3).

    Row 0: the region, class 1, score 0.9. Row 1: the same region 1 px off, score 0.8
    (NMS must drop it). Row 2: a fixed box with score 0.1 (the threshold must drop it).
    """

    def forward(self, x):
        mask = x[:, 0] > 0.5
        h, w = x.shape[2], x.shape[3]
        cols, rows = mask.any(1), mask.any(2)
        ix, iy = torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32)
        x1 = torch.where(cols, ix, torch.full_like(ix, w)).amin(1)
        x2 = torch.where(cols, ix + 1, torch.zeros_like(ix)).amax(1)
        y1 = torch.where(rows, iy, torch.full_like(iy, h)).amin(1)
        y2 = torch.where(rows, iy + 1, torch.zeros_like(iy)).amax(1)
        box = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1)  # (B, 4)
        ones = torch.ones_like(x1)
        r0 = torch.cat([box, torch.stack([0 * ones, 0.9 * ones], 1)], 1)
        r1 = torch.cat([box + torch.tensor([1.0, 0, 0, 0]), torch.stack([0 * ones, 0.8 * ones], 1)], 1)
        r2 = torch.stack([10 * ones, 10 * ones, 8 * ones, 8 * ones, 0.1 * ones, 0 * ones], 1)
        return torch.stack([r0, r1, r2], 2)  # (B, 6, 3)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "bright.onnx"
    torch.onnx.export(BrightBoxNet(), (torch.zeros(1, 3, 64, 64),), str(path), dynamo=False,
                      input_names=["images"], output_names=["output"], opset_version=17)
    return path


def frame_with_box(w: int, h: int, box: tuple[int, int, int, int]) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    return img


@pytest.mark.parametrize("size, box, letterbox", [
    ((160, 96), (40, 30, 100, 70), True),   # wide: padded top and bottom
    ((96, 160), (20, 50, 60, 120), True),   # tall: padded left and right
    ((128, 128), (16, 32, 80, 96), False),  # stretched
])
def test_boxes_come_back_in_frame_pixels(onnx_model, size, box, letterbox):
    (spec,) = load_plugins([{"use": "onnx", "with": {"model": str(onnx_model), "input_size": 64,
                                                     "class_names": ["bg", "thing"], "score_threshold": 0.25,
                                                     "nms_iou": 0.5, "letterbox": letterbox}}])
    plugin = spec.plugin
    plugin.setup()
    images = np.stack([frame_with_box(*size, box)] * 2)
    batch = FrameBatch(images, (0, 1), (0, 1), (Fraction(1, 25),) * 2)
    results = plugin.process(batch)
    assert len(results) == 2
    for r in results:
        d = r.detections
        assert len(d) == 1, d  # NMS dropped the 1-px twin, the threshold the 0.1 box
        assert d.labels == ("thing",) and d.class_ids.tolist() == [1]
        assert d.scores[0] == pytest.approx(0.9)
        np.testing.assert_allclose(d.xyxy[0], box, atol=3)


def test_output_layout_is_checked(onnx_model):
    (spec,) = load_plugins([{"use": "onnx", "with": {"model": str(onnx_model), "input_size": 64,
                                                     "class_names": ["a", "b", "c"]}}])
    with pytest.raises(ValueError, match=r"expected output \(B, 7, N\) or \(B, N, 7\), got \(1, 6, 3\)"):
        spec.plugin.rows(np.zeros((1, 6, 3), np.float32))


def test_class_names_come_from_the_models_metadata_as_ultralytics_writes_them(onnx_model, tmp_path):
    import onnx

    model = onnx.load(str(onnx_model))
    onnx.helper.set_model_props(model, {"names": "{0: 'bg', 1: 'thing'}"})
    path = tmp_path / "named.onnx"
    onnx.save(model, str(path))
    (spec,) = load_plugins([{"use": "onnx", "with": {"model": str(path), "input_size": 64}}])
    spec.plugin.setup()
    assert spec.plugin.class_names == ["bg", "thing"]
    batch = FrameBatch(frame_with_box(64, 64, (8, 8, 40, 40))[None], (0,), (0,), (Fraction(1, 25),))
    assert spec.plugin.process(batch)[0].detections.labels == ("thing",)

    (bare,) = load_plugins([{"use": "onnx", "with": {"model": str(onnx_model), "input_size": 64}}])
    with pytest.raises(ValueError, match=r"bright.onnx has no 'names' metadata"):
        bare.plugin.setup()
