"""ffprobe as the tests' independent judge of what we write."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path


def ffprobe(path: str | Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-count_frames",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def video_stream(info: dict) -> dict:
    return next(s for s in info["streams"] if s["codec_type"] == "video")


def audio_streams(info: dict) -> list[dict]:
    return [s for s in info["streams"] if s["codec_type"] == "audio"]


def frame_pts(path: str | Path) -> list[int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    return [int(x.split(",")[0]) for x in out.stdout.split() if x.split(",")[0].lstrip("-").isdigit()]
