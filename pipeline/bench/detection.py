"""Does deraining help a detector? `derain eval-detect`, measured on paired rainy/clean sets.

The detector runs on the clean frame (its boxes are the reference), on the rainy frame
and on the derained one. Predictions match reference boxes of the same label greedily by
score at IoU >= 0.5; precision, recall and F1 are summed over a set. A derainer helps when
derained input scores closer to the clean reference than the rainy input does.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError, PluginError
from ..frames import FrameBatch
from ..images import pair_files, read_rgb

# name -> (rainy folder, clean folder), relative to the data root.
SETS = {
    "ntu-a1": ("ntu_synthetic_video/a1_Rain", "ntu_synthetic_video/a1_GT"),
    "rain12": ("rain12/rain", "rain12/norain"),
    "rain100L": ("rain100_samples/Rain100L/rain", "rain100_samples/Rain100L/norain"),
    "rain100H": ("rain100_samples/Rain100H/rain", "rain100_samples/Rain100H/norain"),
}
IOU = 0.5
VIDEO_SETS = {"ntu-a1"}


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, other: "Counts") -> None:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn

    def scores(self) -> dict[str, float]:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0
        return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4)}


def match(pred, ref, iou: float = IOU) -> Counts:
    """Greedy one-to-one matching by descending score, same label, IoU >= `iou`."""
    from plugins.boxes import iou_matrix

    if len(pred) == 0 or len(ref) == 0:
        return Counts(0, len(pred), len(ref))
    ious = iou_matrix(pred.xyxy, ref.xyxy)
    same = np.array([[a == b for b in ref.labels] for a in pred.labels], bool)
    ious = np.where(same, ious, 0.0)
    used = np.zeros(len(ref), bool)
    tp = 0
    for i in np.argsort(-pred.scores, kind="stable"):
        cand = np.where(used, -1.0, ious[i])
        j = int(cand.argmax())
        if cand[j] >= iou:
            used[j], tp = True, tp + 1
    return Counts(tp, len(pred) - tp, len(ref) - tp)


def _detect(plugin, image: np.ndarray):
    batch = FrameBatch(image[None], (0,), (0,), (Fraction(1, 25),))
    result = plugin.process(batch)[0]
    from plugins import Detections

    return result.detections if result is not None and result.detections is not None else Detections.empty()


def evaluate_set(rain_dir: Path, clean_dir: Path, derainer, plugin, stride: int = 1) -> dict:
    """Scores of rainy and derained input against the clean reference for one paired set."""
    rainy_c, derained_c = Counts(), Counts()
    refs = 0
    pairs = pair_files(rain_dir, clean_dir)[::stride]  # stride > 1 only for video frame sets
    for rain_path, clean_path in pairs:
        rainy, clean = read_rgb(rain_path), read_rgb(clean_path)
        derained = derainer(rainy[None]).frames[0]
        ref = _detect(plugin, clean)
        refs += len(ref)
        rainy_c.add(match(_detect(plugin, rainy), ref))
        derained_c.add(match(_detect(plugin, derained), ref))
    return {"images": len(pairs), "reference_boxes": refs, "rainy": rainy_c.scores(), "derained": derained_c.scores(),
            "rainy_counts": asdict(rainy_c), "derained_counts": asdict(derained_c)}


def eval_detect(data_root: str | Path, derainer, detector: dict, sets: list[str] | None = None,
                stride: int = 1) -> dict[str, dict]:
    """Run every requested set (all of SETS by default) and return {set: scores}.

    Raises InputError naming the first missing set folder, before the detector loads.

    Args:
        data_root: the folder holding the sets (`ntu_synthetic_video/`, `rain12/`, `rain100_samples/`).
        derainer: a callable (B, H, W, 3) uint8 -> DerainResult, e.g. `Derainer.load(...)`.
        detector: a plugin entry, e.g. {"use": "hog"} or {"use": "onnx", "with": {...}}.
        stride: take every n-th pair of the video sets (NTU a1: 168 near-identical frames).
    """
    from plugins import load_plugins

    names = sets or list(SETS)
    missing = [Path(data_root) / d for name in names for d in SETS[name] if not (Path(data_root) / d).is_dir()]
    if missing:
        raise InputError(f"{missing[0]}: not found; --data must be the folder holding the paired sets "
                         f"({', '.join(sorted({SETS[n][0].split('/')[0] + '/' for n in names}))})")
    (spec,) = load_plugins([detector], source="detector")
    try:
        spec.plugin.setup()
    except Exception as exc:  # noqa: BLE001 - the detector's own failure: one line naming it, as a run says it
        raise PluginError(f"detector {spec.plugin.name} ({spec.module}): setup failed: "
                          f"{type(exc).__name__}: {exc}") from None
    try:
        out = {}
        for name in names:
            rain, clean = SETS[name]
            step = stride if name in VIDEO_SETS else 1  # consecutive video frames are near duplicates
            out[name] = evaluate_set(Path(data_root) / rain, Path(data_root) / clean, derainer, spec.plugin, step)
        return out
    finally:
        spec.plugin.close()


def markdown_table(results: dict[str, dict]) -> str:
    lines = ["| set | images | ref. boxes | rainy P | rainy R | rainy F1 | derained P | derained R | derained F1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        a, b = r["rainy"], r["derained"]
        lines.append(f"| {name} | {r['images']} | {r['reference_boxes']} | {a['precision']:.3f} | {a['recall']:.3f} | "
                     f"{a['f1']:.3f} | {b['precision']:.3f} | {b['recall']:.3f} | {b['f1']:.3f} |")
    return "\n".join(lines)
