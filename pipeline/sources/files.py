"""Where frames come from: video files and image folders (live sources build on the same reader).

The one place that decodes. A source yields `Frame`s in order; `start_reader` runs it
in a thread that fills a bounded `FrameQueue`, so decoding overlaps the model.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
from av.codec.hwaccel import HWAccel

from .. import hardware, trace
from ..colour import fits_i420
from ..errors import InputError
from ..timestamps import Continuity, may_jump
from ..framequeue import FrameQueue
from ..frames import Frame
from ..images import list_images, read_rgb

log = logging.getLogger(__name__)


def main_video(container):
    """The video stream to derain: not a cover picture (an audio file's album art, an MP4's
    thumbnail, which demuxers list as video streams of one frame); of the others FFmpeg's best
    (as ffmpeg picks: a thumbnail that lost its flag, as Matroska keeps none, is one frame
    against many), else the first; None if there is none."""
    videos = {s.index: s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic}
    if not videos:
        return None
    best = container.streams.best("video")
    return videos.get(best.index if best is not None else -1, next(iter(videos.values())))


@dataclass
class SourceInfo:
    """What a sink needs to write a faithful copy."""

    uri: str
    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None
    frames: int | None = None  # as the container claims (may be absent or wrong)
    rotation: float = 0.0
    container_metadata: dict = field(default_factory=dict)
    stream_metadata: dict = field(default_factory=dict)
    has_audio: bool = False
    path: Path | None = None  # a local file whose audio can be remuxed
    names: list[str] = field(default_factory=list)  # image-folder file names, in order
    duration: float | None = None  # seconds of video the container announces (may be absent)
    pix_fmt: str | None = None  # the decoder's pixel format (yuv420p10le, ...)
    # FFmpeg's colour tags of the first frame (AVColorSpace, AVColorRange, AVColorPrimaries,
    # AVColorTransferCharacteristic): the encoder converts with the same matrix and keeps them
    colour: tuple[int, int, int, int] = (2, 0, 2, 2)
    # Seconds the first video or audio timestamp lies past zero: MPEG-TS and PS start anywhere
    # (a DVR's 3600 s); the output starts at zero, as ffmpeg's does, the streams kept in step.
    start: float = 0.0
    sar: Fraction | None = None  # the pixels' aspect where not square (anamorphic DVD, HDV)
    base_rate: Fraction | None = None  # FFmpeg's r_frame_rate: every frame time is a whole tick of it (VFR: the fastest part's)
    chapters: list[dict] = field(default_factory=list)  # as PyAV gives them: start, end, time_base, metadata


def ffmpeg_path(path: str | Path) -> str:
    """A local file's name as FFmpeg must be given it: a relative "a:b.mp4" read as the protocol
    "a" (Protocol not found); "./a:b.mp4" is a file."""
    text = str(path)
    return text if Path(text).is_absolute() or ":" not in text else f"./{text}"


MIN_SIZE = 2  # pixels, each way: smaller frames cannot be derained or encoded


class VideoFileSource:
    """Decode the main video stream of a file with PyAV (`main_video`).

    Args:
        path: the video file.
        threads: decoder threads. Set explicitly: FFmpeg's default takes every core and
            starves the model of them.
    """

    def __init__(self, path: str | Path, threads: int = 1, source_id: str = "0", hardware: str = "off",
                 layout: str = "rgb"):
        self.path, self.threads, self.source_id, self.hardware = Path(path), threads, source_id, hardware
        self.layout = layout  # "rgb", or "yuv420p": the frames as planes (pipeline.colour)
        self._stop = threading.Event()
        self.truncated = False
        self.warnings: list[str] = []  # said once, at open: what the output cannot keep
        self.info = self._probe()

    def _open(self, hwaccel=None):
        if str(self.path) == "-" or self.path.is_fifo() or self.path.is_socket():
            # A pipe gives its bytes once, and a file is read more than once (probe, frames,
            # audio): the second open would wait for a writer that is gone, for ever.
            what = "standard input" if str(self.path) == "-" else "a pipe"
            raise InputError(f"{self.path}: is {what}; derain reads a video file more than once, so save "
                             "the stream to a file first (or give derain a live URL: rtsp://, http://, tcp://)")
        if not self.path.exists():
            raise InputError(f"{self.path}: file not found")
        if self.path.is_file() and self.path.stat().st_size == 0:
            raise InputError(f"{self.path}: file is empty")
        try:
            container = av.open(ffmpeg_path(self.path), metadata_errors="ignore", hwaccel=hwaccel)
        except (av.FFmpegError, OSError) as exc:
            if hwaccel is not None:  # the GPU did not answer: the same file on the CPU
                hardware.fell_back("decode", f"{self.path}: NVDEC (cuda) cannot decode here: {exc}")
                return self._open()
            why = getattr(exc, "strerror", None) or str(exc)  # not the errno and the path again
            raise InputError(f"{self.path}: not a readable video ({why})") from None
        if main_video(container) is None:
            only = " (only a cover picture)" if container.streams.video else ""
            container.close()
            raise InputError(f"{self.path}: has no video stream{only}")
        return container

    def stop(self) -> None:
        """End the frames early (a run that stopped or failed): the reader decodes no further."""
        self._stop.set()

    def _probe(self) -> SourceInfo:
        with self._open() as c:
            s = main_video(c)
            if s.codec_context is None or s.codec_context.name is None:
                raise InputError(f"{self.path}: unknown video codec")
            if s.width == 0 or s.height == 0:
                raise InputError(f"{self.path}: video stream has no size (unsupported codec?)")
            self._video_start = start_seconds(s) if s.start_time is not None and s.time_base else None
            _check_size(self.path, s.width, s.height)
            rotation, colour, interlaced = 0.0, SourceInfo.colour, False
            try:
                for frame in c.decode(s):
                    rotation = float(frame.rotation or 0)
                    colour = colour_tags(frame)
                    interlaced = bool(frame.interlaced_frame)
                    break
            except av.FFmpegError:
                pass
            if interlaced:  # two fields a frame: the network was trained on whole frames, and combs show
                self._warn(f"{self.path}: interlaced video; derained and written as progressive frames "
                           "(deinterlace it first for a clean result: ffmpeg -vf bwdif)")
            info = SourceInfo(
                uri=str(self.path), width=s.width, height=s.height, time_base=s.time_base,
                rate=s.average_rate or s.guessed_rate, frames=s.frames or None, rotation=rotation,
                container_metadata=dict(c.metadata), stream_metadata=dict(s.metadata),
                has_audio=bool(c.streams.audio), path=self.path, duration=_declared_seconds(c, s),
                pix_fmt=s.codec_context.format.name if s.codec_context.format else None,
                colour=colour, start=_first_timestamp(s, c.streams.audio),
                sar=s.sample_aspect_ratio if s.sample_aspect_ratio and s.sample_aspect_ratio != 1 else None,
                chapters=c.chapters(), base_rate=s.base_rate or None,
            )
            self._say_what_is_not_kept(c, s, info)
            return info

    def _say_what_is_not_kept(self, container, video, info: SourceInfo) -> None:
        """One warning line each for a high bit depth and for streams the output will not have."""
        depth = _bit_depth(info.pix_fmt)
        if depth > 8:
            self._warn(f"{self.path}: {depth}-bit input ({info.pix_fmt}) is derained and written as 8-bit")
        dropped = [f"#{st.index} {st.type} ({st.codec_context.name if st.codec_context else 'unknown'})"
                   for st in container.streams
                   if st.index != video.index and st.type != "audio"
                   and not (info.chapters and st.type == "data" and st.codec_context is None)]  # MP4's chapter track
        if dropped:
            self._warn(f"{self.path}: stream{'s' if len(dropped) > 1 else ''} {', '.join(dropped)} not copied: "
                       "the output has the main video stream and the audio")

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)

    def __iter__(self) -> Iterator[Frame]:
        hwaccel = HWAccel("cuda", allow_software_fallback=True) if hardware.wanted(self.hardware) else None
        with self._open(hwaccel) as container:
            decoder = Decoder(container, self.source_id, self.threads, self.layout, self.info.uri, continuous=True)
            for frame in decoder:
                if self._stop.is_set():
                    return
                yield frame
        if decoder.count == 0:  # an output without video is no output: fail, as ffmpeg does
            why = decoder.error or decoder.bad_packet_error
            why = getattr(why, "strerror", None) or why  # FFmpeg's words, without its errno
            raise InputError(f"{self.path}: no video frame could be decoded"
                             + (f" ({why}); the file is damaged" if why else "; its video stream is empty"))
        if decoder.clock.jumps:
            n = decoder.clock.jumps
            self._warn(f"{self.path}: its timestamps jump {n} time{'s' if n > 1 else ''} (recordings joined, or "
                       "a clock reset); each part is written after the last, as ffmpeg does")
        if decoder.bad_packets:
            n = decoder.bad_packets
            self._warn(f"{self.path}: {n} damaged packet{'s' if n > 1 else ''} passed over "
                       f"({decoder.bad_packet_error}); every frame that decodes is kept")
        if decoder.error is not None:  # a truncated or corrupt tail: every frame before it was kept
            self.truncated = True
            self._warn(f"{self.path}: decoding stopped after {decoder.count} frames ({decoder.error}); the file "
                       "looks truncated, every frame before it is kept")
            return
        # Matroska and others announce no frame count, and a demuxer that meets the end of a
        # cut file just stops: compare the video decoded with the duration the file announces.
        # (A frame count alone misleads: AVI counts the empty chunks of a variable rate.)
        # Measured from where the stream starts, not from its first decoded frame: a stream cut
        # mid-GOP (a TS recorded from anywhere) loses its first frames to the decoder, not its tail.
        seq = decoder.count
        declared, rate = self.info.duration, self.info.rate
        frame_s = float(1 / rate) if rate else None
        first = decoder.first_pts * decoder.time_base if self._video_start is None else self._video_start
        decoded = float(decoder.last_pts * decoder.time_base - first) + (frame_s or 0.0)
        short_in_time = bool(declared and frame_s and not decoder.clock.jumps
                             and declared - decoded > max(1.5 * frame_s, 0.1))
        if self.info.frames and seq < self.info.frames and (short_in_time or not declared or not frame_s):
            self.truncated = True
            self._warn(f"{self.path}: the container announces {self.info.frames} frames but only {seq} decoded; "
                       "the file looks truncated, every frame that decodes is kept")
        elif short_in_time and declared - decoded > max(3 * frame_s, 0.5):
            self.truncated = True
            self._warn(f"{self.path}: the file announces {declared:.2f} s of video (about "
                       f"{round(declared / frame_s)} frames) but only {seq} frames ({decoded:.2f} s) decoded; "
                       "the file looks truncated, every frame that decodes is kept")


class Decoder:
    """The one decode loop: the main video stream of an open container, in order, as RGB
    Frames. A missing pts continues the clock; the demuxer's final empty packet flushes the
    decoder, so frame-threaded decoders hand over their last frames too. A packet the decoder
    refuses is passed over (`bad_packets`); a demuxer that fails (a cut tail, or a live
    connection's read timeout) ends the frames without raising: `error` says why, and every
    frame before it was given. Files and live connections both decode here.
    `layout` "yuv420p" gives the planes (no swscale where the decoder's output is yuv420p)."""

    def __init__(self, container, source_id: str, threads: int = 1, layout: str = "rgb", name: str = "",
                 continuous: bool = False):
        self.container, self.source_id, self.threads = container, source_id, threads
        # A file whose format lets timestamps jump (MPEG-TS, PS) is decoded onto one clock
        self.clock = Continuity(continuous and may_jump(container))
        self.name = name or source_id  # the input, as traces name it
        self.format = "rgb24" if layout == "rgb" else layout
        self.count = 0
        self.first_pts: int | None = None
        self.last_pts: int | None = None
        self.time_base = None
        self.error: av.FFmpegError | None = None
        self.bad_packets = 0  # refused by the decoder and passed over
        self.bad_packet_error: av.FFmpegError | None = None

    def __iter__(self) -> Iterator[Frame]:
        stream = main_video(self.container)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self.threads
        self.time_base = tb = stream.time_base
        step = _frame_step(stream)
        for frame in self._decoded(stream):
            pts = frame.pts
            if pts is None:  # some containers omit pts: continue the clock
                pts = 0 if self.last_pts is None else self.last_pts + step
            pts = self.clock(pts, tb, step)
            self.last_pts = pts
            if self.first_pts is None:
                self.first_pts = pts
            decoded = time.monotonic()
            trace.mark("decoded", self.name, (self.count,), decoded)
            # planes only of an even size (a stream may change size): else RGB, as the model and
            # the encoder take either, batch by batch
            fmt = self.format if self.format == "rgb24" or fits_i420(frame.width, frame.height) else "rgb24"
            yield Frame(frame.to_ndarray(format=fmt), self.count, pts, frame.time_base or tb,
                        self.source_id, decoded)
            self.count += 1

    def _decoded(self, stream) -> Iterator:
        """The stream's frames, packet by packet. A packet the decoder refuses (a damaged one, or
        the cut last one of a truncated file) is passed over and the decoder goes on, as ffmpeg's
        does: the frames after it still decode. The demuxer failing ends the frames (`error`)."""
        decode = stream.codec_context.decode
        try:
            for packet in self.container.demux(stream):
                try:
                    frames = decode(packet)
                except av.InvalidDataError as exc:
                    self.bad_packets += 1
                    self.bad_packet_error = self.bad_packet_error or exc
                    continue
                yield from frames
        except av.FFmpegError as exc:
            self.error = exc


def colour_tags(frame_or_codec) -> tuple[int, int, int, int]:
    """FFmpeg's colour tags of a decoded frame (or an opened decoder): the matrix, the range,
    the primaries and the transfer, as `SourceInfo.colour` keeps them."""
    f = frame_or_codec
    return tuple(int(v or 0) for v in (f.colorspace, f.color_range, f.color_primaries, f.color_trc))


def _check_size(path, width: int, height: int) -> None:
    if width < MIN_SIZE or height < MIN_SIZE:
        raise InputError(f"{path}: the video is {width}x{height} pixels; derain needs at least "
                         f"{MIN_SIZE}x{MIN_SIZE}")


def _bit_depth(pix_fmt: str | None) -> int:
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components) if pix_fmt else 8
    except (ValueError, av.FFmpegError):
        return 8


def _declared_seconds(container, stream) -> float | None:
    """How long the file says its video lasts: the stream's duration, Matroska's per-stream
    DURATION tag (less the stream's start), or the container's duration when the video is its
    only stream."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        try:
            h, m, sec = tag.strip().split(":")
            end = int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            pass
        else:  # the tag is where the track ends: a video that starts after the audio lasts less
            return max(0.0, end - start_seconds(stream))
    if container.duration and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def _first_timestamp(video, audio) -> float:
    """Where the earliest of the streams written starts, in seconds; 0 where that is before zero
    or not said (an MP4's edit list already starts it at zero)."""
    starts = [start_seconds(st) for st in (video, *audio) if st.start_time is not None and st.time_base]
    return max(0.0, min(starts)) if starts else 0.0


def start_seconds(stream) -> float:
    """When a stream starts, in seconds (0 where the container does not say)."""
    return float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0


def _frame_step(stream) -> int:
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    return max(1, round(1 / (rate * stream.time_base)))


class ImageFolderSource:
    """Images of a folder in name order, as frames of a video at `fps`."""

    def __init__(self, folder: str | Path, fps: float = 25.0, source_id: str = "0"):
        self.folder = Path(folder)
        self.files = list_images(self.folder)
        if not self.files:
            from ..sinks.files import VIDEO_SUFFIXES  # here: the sinks import this module

            videos = any(p.suffix.lower() in VIDEO_SUFFIXES for p in self.folder.iterdir())
            raise InputError(f"{self.folder}: no images found" + (
                f"; it holds videos: derain archive {self.folder} OUT_DIR derains each" if videos else ""))
        self.source_id = source_id
        self.truncated = False
        self._stop = threading.Event()
        self.warnings: list[str] = []
        first = read_rgb(self.files[0])
        _check_size(self.files[0], first.shape[1], first.shape[0])
        rate = Fraction(fps).limit_denominator(1001)
        self.info = SourceInfo(uri=str(self.folder), width=first.shape[1], height=first.shape[0],
                               time_base=1 / rate, rate=rate, frames=len(self.files),
                               names=[p.name for p in self.files])

    def stop(self) -> None:
        """End the frames early (a run that stopped or failed)."""
        self._stop.set()

    def __iter__(self) -> Iterator[Frame]:
        for seq, path in enumerate(self.files):
            if self._stop.is_set():
                return
            yield Frame(read_rgb(path), seq, seq, self.info.time_base, self.source_id, time.monotonic())


URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def open_source(uri: str | Path, threads: int = 1, fps: float = 25.0, source_id: str = "0",
                hardware: str = "off", layout: str = "rgb"):
    """A file or folder source for `uri` (live URLs are handled by `pipeline.sources.live`);
    `hardware` as `decode.hardware` (NVDEC where wanted and the GPU answers); `layout` "yuv420p"
    for a video file's frames as planes (`pipeline.colour`)."""
    if URL.match(str(uri)):  # a live URL never comes here: this scheme is none derain reads
        from .live import LIVE_SCHEMES  # here: live.py imports this module

        schemes = ", ".join(s.removesuffix("://") for s in LIVE_SCHEMES)
        raise InputError(f"{uri}: derain reads files, folders and live URLs ({schemes}), "
                         f"not {str(uri).split(':', 1)[0]}:// (copy the file here first)")
    path = Path(uri)
    if path.is_dir():
        return ImageFolderSource(path, fps=fps, source_id=source_id)
    return VideoFileSource(path, threads=threads, source_id=source_id, hardware=hardware, layout=layout)


def start_reader(source, queue: FrameQueue, errors: list) -> threading.Thread:
    """Run `source` in a daemon thread that fills `queue` and closes it at the end.

    An exception is appended to `errors` (the runner re-raises it) instead of dying silently.
    """

    def read() -> None:
        try:
            for frame in source:
                queue.put(frame)
        except BaseException as exc:  # noqa: BLE001 - handed to the runner
            errors.append(exc)
        finally:
            queue.close()

    thread = threading.Thread(target=read, name=f"reader-{getattr(source, 'source_id', '0')}", daemon=True)
    thread.start()
    return thread
