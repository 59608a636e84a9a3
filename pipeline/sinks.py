"""Where derained frames go: video files (timestamps, audio and metadata kept) and image folders.

The one place that encodes. Every sink writes to a temporary name beside the target
and renames it on success, so a crash or Ctrl-C never leaves a half-written output
that looks complete; `close(ok=False)` removes the partial file.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np

from .errors import OutputError
from .frames import FrameBatch
from .model.data import write_rgb
from .sources import SourceInfo

log = logging.getLogger(__name__)

CODECS = {"h264": "libx264", "h265": "libx265", "hevc": "libx265", "av1": "libsvtav1", "vp9": "libvpx-vp9"}
DEFAULT_PRESET = {"libx264": "medium", "libx265": "medium", "libsvtav1": "8", "libvpx-vp9": None}


@dataclass(frozen=True)
class EncodeSettings:
    codec: Literal["h264", "h265", "hevc", "av1", "vp9"] = "h264"
    crf: int | None = 20  # constant quality; ignored when bitrate is set
    bitrate: int | None = None  # bits per second
    preset: str | None = None  # None: the codec's default (medium for x264/x265)
    pix_fmt: str = "yuv420p"
    threads: int = 1  # encoder threads, explicit so the model keeps its cores

    def problems(self) -> list[str]:
        out = []
        if self.crf is not None and not 0 <= self.crf <= 63:
            out.append(f"crf: must be in 0..63 (got {self.crf})")
        if self.threads < 0:
            out.append(f"threads: must be >= 0 (got {self.threads})")
        return out


def partial_path(path: Path) -> Path:
    """The temporary name a sink writes before renaming: hidden, same extension."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def _claim(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists (use --overwrite to replace it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create its folder ({exc.strerror})") from None


class VideoFileSink:
    """Encode frames with PyAV, copying each frame's pts/time_base and remuxing the audio untouched."""

    def __init__(self, path: str | Path, info: SourceInfo, encode: EncodeSettings = EncodeSettings(),
                 overwrite: bool = False):
        self.path = Path(path)
        _claim(self.path, overwrite)
        self.tmp = partial_path(self.path)
        self.info, self.encode = info, encode
        self.frames_written = 0
        self._last_pts: int | None = None
        try:
            self.tmp.touch()  # FFmpeg opens lazily: find an unwritable place now, not at the end
            self.out = av.open(str(self.tmp), "w")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise OutputError(f"{self.path}: cannot write here ({exc})") from None
        try:
            self._setup()
        except BaseException:
            self.close(ok=False)
            raise

    def _setup(self) -> None:
        info, enc = self.info, self.encode
        self.out.metadata.update(info.container_metadata)
        codec = CODECS[enc.codec]
        if codec not in av.codecs_available:
            raise OutputError(f"{self.path}: encoder {codec} ({enc.codec}) is not available in this FFmpeg")
        options = {}
        preset = enc.preset or DEFAULT_PRESET.get(codec)
        if preset:
            options["preset"] = str(preset)
        if enc.bitrate is None and enc.crf is not None:
            options["crf"] = str(enc.crf)
        if codec == "libx265":
            options["x265-params"] = "log-level=error"
        rate = info.rate or (1 / info.time_base)
        self.video = self.out.add_stream(codec, rate=rate, options=options)
        self.video.width, self.video.height = info.width, info.height
        self.video.pix_fmt = enc.pix_fmt
        # Keep the input's clock: frames carry their own pts in this time base (VFR survives).
        self.video.codec_context.time_base = info.time_base
        self.video.time_base = info.time_base
        self.video.codec_context.thread_count = enc.threads
        if enc.bitrate:
            self.video.bit_rate = enc.bitrate
        self.video.metadata.update({k: v for k, v in info.stream_metadata.items() if k != "rotate"})
        if info.rotation:
            self.video.set_display_rotation(info.rotation)
        self._audio = _AudioPassthrough(info.path, self.out) if info.has_audio and info.path else None

    def write(self, batch: FrameBatch) -> None:
        for image, pts, tb in zip(batch.images, batch.pts, batch.time_base):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if pts is None or (self._last_pts is not None and pts <= self._last_pts):
                pts = 0 if self._last_pts is None else self._last_pts + 1  # encoders need rising pts
            frame.pts, frame.time_base = pts, tb or self.info.time_base
            self._last_pts = pts
            self.out.mux(self.video.encode(frame))
            self.frames_written += 1
            if self._audio:
                self._audio.mux_until(float(pts * frame.time_base))

    def close(self, ok: bool = True) -> None:
        """Flush and close; on success rename into place, else delete the partial file."""
        if getattr(self, "out", None) is None:
            return
        try:
            if ok:
                self.out.mux(self.video.encode(None))  # flush the encoder's delayed frames
                if self._audio:
                    self._audio.mux_until(float("inf"))
        finally:
            if getattr(self, "_audio", None):
                self._audio.close()
            try:
                self.out.close()
            except av.FFmpegError:
                ok = False
            self.out = None
            if ok:
                self.tmp.replace(self.path)
            else:
                self.tmp.unlink(missing_ok=True)


class _AudioPassthrough:
    """Remux the input's audio packets, interleaved with the video as it is written.

    Reading audio lazily up to the current video time keeps memory flat on long files
    (muxing all audio at the end would make the muxer queue every video packet).
    """

    def __init__(self, path: Path, out):
        self.src = av.open(str(path), metadata_errors="ignore")
        self.map = {s.index: out.add_stream_from_template(s) for s in self.src.streams.audio}
        self.out = out
        self.packets = self.src.demux(*self.src.streams.audio)
        self.pending = None

    def mux_until(self, seconds: float) -> None:
        while True:
            pkt = self.pending or next(self.packets, None)
            self.pending = None
            if pkt is None:
                return
            if pkt.size == 0:  # the demuxer's flush packet carries nothing to copy
                continue
            t = pkt.pts if pkt.pts is not None else pkt.dts
            if t is not None and float(t * pkt.time_base) > seconds:
                self.pending = pkt
                return
            pkt.stream = self.map[pkt.stream.index]
            self.out.mux(pkt)

    def close(self) -> None:
        self.src.close()


class ImageFolderSink:
    """One PNG per frame, named after the input images (or by sequence number)."""

    def __init__(self, folder: str | Path, info: SourceInfo, overwrite: bool = False):
        self.folder = Path(folder)
        _claim(self.folder, overwrite)
        self.tmp = self.folder.with_name(f".{self.folder.name}.partial")
        shutil.rmtree(self.tmp, ignore_errors=True)
        try:
            self.tmp.mkdir(parents=True)
        except OSError as exc:
            raise OutputError(f"{self.folder}: cannot write here ({exc.strerror})") from None
        self.names = info.names
        self.frames_written = 0

    def write(self, batch: FrameBatch) -> None:
        for image, seq in zip(batch.images, batch.seq):
            name = Path(self.names[seq]).stem if seq < len(self.names) else f"{seq:06d}"
            write_rgb(self.tmp / f"{name}.png", image)
            self.frames_written += 1

    def close(self, ok: bool = True) -> None:
        if ok:
            if self.folder.exists():
                shutil.rmtree(self.folder)
            self.tmp.rename(self.folder)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def open_sink(path: str | Path, info: SourceInfo, encode: EncodeSettings = EncodeSettings(),
              overwrite: bool = False):
    """A video sink for a path with a video extension, an image-folder sink otherwise."""
    path = Path(path)
    if path.suffix.lower() in {".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v"}:
        return VideoFileSink(path, info, encode, overwrite)
    return ImageFolderSink(path, info, overwrite)
