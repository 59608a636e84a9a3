"""One JSON line per frame: what the plugins before it found, for offline analysis."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.frames import FrameBatch

from .base import Plugin, upstream
from .results import Result


class JSONLWriter(Plugin):
    """Writes {source, seq, time, rain_intensity, detections, data} per frame.

    `time` is in seconds (pts x time_base, None without a pts); each detection carries the
    name of the plugin that found it. Lines are flushed per batch, so a crash keeps them.

    Args:
        path: the .jsonl file (its folder is created).
        append: add to an existing file instead of replacing it.
    """

    def __init__(self, path: str, append: bool = False):
        self.path, self.append = Path(path), append

    def setup(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("a" if self.append else "w", encoding="utf-8")

    def process(self, batch: FrameBatch) -> list[Result | None]:
        found = upstream(batch)
        for i in range(len(batch)):
            self.file.write(json.dumps(self.line(batch, i, found)) + "\n")
        self.file.flush()
        return [None] * len(batch)

    @staticmethod
    def line(batch: FrameBatch, i: int, found: dict) -> dict:
        pts, tb = batch.pts[i], batch.time_base[i]
        intensity = batch.rain_intensity
        detections, data = [], {}
        for name, results in found.items():
            r = results[i]
            if r is None:
                continue
            if r.detections is not None:
                detections += [{**d, "plugin": name} for d in r.detections.to_json()]
            if r.data:
                data[name] = r.data
        return {"source": batch.source_id, "seq": batch.seq[i],
                "time": None if pts is None or tb is None else round(float(pts * tb), 6),
                "rain_intensity": None if intensity is None else round(float(intensity[i]), 6),
                "detections": detections, "data": data}

    def close(self) -> None:
        if getattr(self, "file", None) is not None:
            self.file.close()
            self.file = None
