"""One JSON line per frame: what the plugins before it found, for offline analysis."""
from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

from pipeline.frames import FrameBatch

from .base import Plugin, upstream
from .results import Result


_writers: dict[str, int] = {}  # writers open on each file in this process: the first replaces it, the rest add
_lock = threading.Lock()


class JSONLWriter(Plugin):
    """Writes {source, seq, time, rain_intensity, detections, data} per frame.

    `source` is the camera's name or the input file's path; `time` is in seconds (pts x
    time_base, None without a pts); each detection carries the name of the plugin that found
    it. Each batch's lines go out in one appending write, so a crash keeps them, and several
    writers to one file (cameras, an archive's files and workers) never cut into each other's.

    Args:
        path: the .jsonl file (its folder is created).
        append: add to an existing file; else the first writer open on it replaces it (cameras
            sharing one file add to it; an archive's workers append, the archive itself starting
            the file afresh where it starts anew).
    """

    _copies_add = False  # Ray actors' copies: the driver started the file (before_actors)

    def __init__(self, path: str, append: bool = False):
        self.path, self.append = Path(path).expanduser(), append

    def before_actors(self) -> None:
        """The file is started here, once a run: each replica, and each actor Ray restarts
        mid-run, then adds to it (each one's setup replaced it, a restart losing every line
        before). `append` itself is left as given, so the next run starts the file again."""
        self.path = self.path.absolute()
        if not self.append:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.open("w").close()
        self._copies_add = True

    def setup(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _lock:
            self.key = str(self.path.resolve())
            replace = not (self.append or self._copies_add) and not _writers.get(self.key)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if replace else 0), 0o644)
            _writers[self.key] = _writers.get(self.key, 0) + 1

    def process(self, batch: FrameBatch) -> list[Result | None]:
        found = upstream(batch)
        text = "".join(json.dumps(_finite(self.line(batch, i, found)), default=_plain) + "\n"
                       for i in range(len(batch)))
        data = text.encode("utf-8")
        while data:  # one write in practice; a short one is finished, never interleaved by us
            data = data[os.write(self.fd, data):]
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
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None
            with _lock:
                _writers[self.key] -= 1


def _plain(value):
    """JSON for what json.dumps does not take: numpy numbers and arrays (a plugin's `data`)."""
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    raise TypeError(f"{type(value).__name__} is not JSON")


def _finite(value):
    """NaN and infinities as null: strict JSON (jq, most parsers) has no word for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
