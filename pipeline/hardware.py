"""Hardware codecs where they exist: NVDEC decoding and NVENC encoding, else the CPU codecs.

`auto` asks for them only on a machine with an NVIDIA device node; the codec is then opened
once on the side, and if the GPU does not answer (no device, or no encoder: an H100 has
NVDEC but no NVENC), the CPU codec is used instead and the log says so once per process.
"""
from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

NVENC = {"h264": "h264_nvenc", "h265": "hevc_nvenc", "hevc": "hevc_nvenc", "av1": "av1_nvenc"}
_said: set[str] = set()
_lock = threading.Lock()


def nvidia_present() -> bool:
    return os.path.exists("/dev/nvidiactl")


def wanted(setting: str) -> bool:
    """Whether to try the hardware codec: asked for by name, or `auto` on an NVIDIA machine."""
    return setting != "off" and (setting != "auto" or nvidia_present())


def fell_back(kind: str, why: str) -> None:
    """One warning per process and kind: which hardware codec failed and what is used instead."""
    with _lock:
        if kind in _said:
            return
        _said.add(kind)
    log.warning("%s; using the CPU codec", why)


def nvenc_options(preset: str | None, crf: int | None, bitrate: int | None) -> dict:
    """x264-style settings in NVENC's terms: low delay for the live (ultrafast) preset, else p4;
    constant quality from the CRF (NVENC's scale is close to x264's)."""
    options = {"preset": "p1", "tune": "ll"} if preset in ("ultrafast", "superfast", "veryfast") else {"preset": "p4"}
    if bitrate is None and crf is not None:
        options.update(rc="vbr", cq=str(max(1, min(51, crf))))
    return options
