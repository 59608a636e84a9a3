"""Where derained frames go: video files (timestamps, audio and metadata kept) and image folders.

The one place that encodes. Every sink writes to a temporary name beside the target
and renames it on success, so a crash or Ctrl-C never leaves a half-written output
that looks complete; `close(ok=False)` removes the partial file. Temporary names are unique
per run (pid, the pid's host and namespace, and a random part), so the next run to the same
output removes what a killed one (SIGKILL, out of memory) left on this machine. `--overwrite`
replaces only what derain wrote: a file, or a folder of PNGs that carries its `.derain-output`
marker and nothing else.

What a container holds is asked of FFmpeg (a header written into memory) before any frame is
derained: a video codec it cannot hold is one line saying what can; audio it cannot hold as it
is gets re-encoded (AAC; Opus in WebM), said once, and the rest of the audio is copied.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ..colour import I420, is_i420
from ..errors import DerainError, OutputError
from ..frames import FrameBatch
from ..images import write_rgb
from .. import hardware, trace
from ..settings import EncodeSettings
from ..sources.files import SourceInfo, ffmpeg_path, main_video, start_seconds
from ..timestamps import Continuity, may_jump

log = logging.getLogger(__name__)

CODECS = {"h264": "libx264", "h265": "libx265", "hevc": "libx265", "av1": "libsvtav1", "vp9": "libvpx-vp9"}
MAX_CRF = {"libx264": 51, "libx265": 51, "libsvtav1": 63, "libvpx-vp9": 63}  # 8-bit scales; 0 is best
DEFAULT_PRESET = {"libx264": "medium", "libx265": "medium", "libsvtav1": "8", "libvpx-vp9": "medium"}
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
# SVT-AV1's presets are numbers, 0 slowest to 13 fastest; its default here is 8 (x264's medium)
SVT_PRESET = {"placebo": 1, "veryslow": 2, "slower": 4, "slow": 6, "medium": 8, "fast": 9, "faster": 10,
              "veryfast": 11, "superfast": 12, "ultrafast": 13}
# libvpx-vp9's speed (cpu-used, with the "good" deadline) for x264's preset names. FFmpeg's default,
# cpu-used 1, is several times slower than 4 for a fraction of a dB (try it: ffmpeg -i IN -c:v
# libvpx-vp9 -crf 12 -b:v 0 -row-mt 1 -cpu-used N OUT.webm, N = 1 and 4).
VP9_CPU_USED = {"placebo": 0, "veryslow": 0, "slower": 1, "slow": 2, "medium": 4, "fast": 5, "faster": 6,
                "veryfast": 7, "superfast": 8, "ultrafast": 8}
# encode.crf auto: per encoder, the highest CRF that keeps >= 90 % of the derain gain with a margin
# (scripts/encoder-quality.py --codec C; docs/BENCHMARKS.md). The scales differ: SVT-AV1 needs a
# lower number than x264 for the same share, x265 a higher one. NVENC's cq is close to x264's.
AUTO_CRF = {"libx264": 12, "libx265": 15, "libvpx-vp9": 14, "libsvtav1": 10}
PRESETS = {"libx264": X264_PRESETS, "libx265": X264_PRESETS, "libsvtav1": SVT_PRESET, "libvpx-vp9": VP9_CPU_USED}
NUMBERED = {"libsvtav1": (range(-2, 14), "preset"), "libvpx-vp9": (range(-8, 9), "speed")}  # own numbers, named

NAME_MAX = 255  # bytes in one file name (ext4, xfs, btrfs, tmpfs, NTFS, APFS)
CONTAINER_NAMES = {"mp4": "MP4", "ipod": "M4V", "mov": "QuickTime (MOV)", "matroska": "Matroska",
                   "webm": "WebM", "avi": "AVI", "mpegts": "MPEG-TS"}  # FFmpeg's muxer names, as said
# MPEG-TS takes every codec (FFmpeg's muxer has no codec table to ask) and writes one it has no
# stream type for as private data, which readers show as bin_data: these are the ones it types.
MPEGTS_CODECS = frozenset({"mpeg1video", "mpeg2video", "mpeg4", "h264", "hevc", "vc1",
                           "mp2", "mp3", "aac", "aac_latm", "ac3", "eac3", "dts", "opus"})
AUDIO_ENCODERS = ("aac", "libopus", "libvorbis")  # audio a container cannot hold becomes the first it takes
USUAL_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
AUDIO_BITRATE = 80_000  # bits per second and channel of re-encoded audio: 160 kb/s stereo, as HandBrake


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v", ".mts", ".m2ts")
NO_SIDE_DATA = ("mpegts", "avi")  # muxers that write neither a display rotation nor chapters
MARKER = ".derain-output"  # in every image folder derain writes: what it wrote, so --overwrite knows


def temp_token() -> str:
    """A name part unique to one writer: its pid, the pid space it lives in (`_pid_space`) and a
    random part."""
    return f"{os.getpid()}-{_pid_space()}{secrets.token_hex(4)}"


@functools.cache
def _pid_space() -> str:
    """6 hex digits naming where a pid means one process: this host, this boot of its kernel and
    this pid namespace (a container sharing the host's name has its own). Outputs on shared
    storage are seen from other machines and containers, whose pids say nothing here."""
    parts = [socket.gethostname()]
    for read in (lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                 lambda: str(os.stat("/proc/self/ns/pid").st_ino)):
        try:
            parts.append(read())
        except OSError:
            parts.append("")
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=3).hexdigest()


def partial_path(path: str | Path, token: str | None = None) -> Path:
    """The hidden temporary name a sink writes before renaming: unique per run, same folder and extension.

    Two runs to one output never share a temporary, so neither can replace the other's. The
    stem is cut so the name fits NAME_MAX: a long but legal output name must not fail for the
    ~26 bytes the temporary adds. The same (path, token) always gives the same name.
    """
    path = Path(path)
    tail = f".{token or temp_token()}.partial{path.suffix}"
    return path.with_name(f".{_cut(path.stem, NAME_MAX - 1 - len(os.fsencode(tail)))}{tail}")


def _cut(text: str, size: int) -> str:
    """`text`'s longest prefix of at most `size` bytes, whole characters only."""
    while text and len(os.fsencode(text)) > size:
        text = text[:-1]
    return text


def partials(path: str | Path) -> list[Path]:
    """Temporaries of any run for `path` that are still there (none after a run ends)."""
    return [p for p, _ in _partials_by_token(Path(path))]


def _partials_by_token(path: Path) -> list[tuple[Path, str]]:
    """`partials(path)` with each one's writer token (`temp_token`)."""
    pattern = re.compile(rf"\..*\.(\d+-[0-9a-f]+)\.partial{re.escape(path.suffix)}", re.DOTALL)
    try:
        return sorted((p, m[1]) for p in path.parent.iterdir()
                      if (m := pattern.fullmatch(p.name)) and partial_path(path, m[1]).name == p.name)
    except OSError:
        return []


def clear_stale_partials(path: str | Path) -> list[str]:
    """Remove the temporaries for `path` that a killed run left (SIGKILL, out of memory): those
    whose writer was in this pid space and is gone. Any other is left alone: another machine's or
    container's run may still be writing it, and a pid alive here may be a new process that took a
    dead writer's number, so only a pid that names no process counts as gone. Returns what it
    removed, as a warning for the run to say."""
    said = []
    for p, token in _partials_by_token(Path(path)):
        pid, _, rest = token.partition("-")
        if len(rest) == 14 and rest[:6] == _pid_space() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            remove_partial(p)
            if not p.exists():  # a place that refuses writes refuses removals too: then nothing is said
                said.append(f"{path}: removed {p.name}, the partial output of a run that was killed (pid {pid})")
    return said


def pid_alive(pid: int) -> bool:
    """Whether `pid` names a process here (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or a number no pid here can be: not ours to judge
    return True


def remove_partial(path: Path) -> None:
    """Delete a temporary (a file, or a folder of derain's PNGs)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        _discard(path)


def _discard(path: Path) -> None:
    """Delete a file if it is there. A place that refused the file (read-only, no permission)
    refuses its removal too; that error would hide the one being reported."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _check_name(path: Path) -> None:
    """A name no file system here can hold fails as one line, before any stat of it raises."""
    size = len(os.fsencode(path.name))
    if size > NAME_MAX:
        raise OutputError(f"{path}: the name is {size} bytes long; file systems take at most {NAME_MAX}")


def _mkdir_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where a folder on the way should be
        above = next(p for p in (path.parent, *path.parent.parents) if p.exists())
        raise OutputError(f"{path}: cannot create its folder ({above} is a file)") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot create its folder ({exc.strerror})") from None


def claim_file(path: Path, overwrite: bool) -> None:
    """Check that a video file may be written at `path` (ffmpeg -n / -y): only a file is replaced."""
    _check_name(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; derain writes a video file here and never replaces a folder")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputError(f"{path}: already exists (use --overwrite to replace it)")
        if not path.is_file():
            raise OutputError(f"{path}: exists and is not a regular file; --overwrite replaces only files")
    _mkdir_parent(path)


def _claim_folder(path: Path, overwrite: bool) -> None:
    """Check that a folder of PNGs may be written at `path`: only a folder derain wrote is replaced."""
    _check_name(path)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        kind = f"{path.suffix!r} is not a video extension ({', '.join(VIDEO_SUFFIXES)})" if path.suffix else \
            "a name without a video extension is written as a folder of PNGs"
        raise OutputError(f"{path}: exists and is a file; {kind}, so derain would write a folder of PNGs "
                          "here and keeps the file")
    if path.is_dir():
        if not overwrite:
            raise OutputError(f"{path}: already exists (use --overwrite to replace it)")
        problem = foreign_content(path)
        if problem:
            raise OutputError(f"{path}: {problem}; --overwrite replaces only what derain wrote, "
                              "so the folder is kept")
    _mkdir_parent(path)


def _marked_files(folder: Path) -> set[str] | None:
    """The names derain's marker lists in `folder` (None: no readable marker)."""
    try:
        data = json.loads((folder / MARKER).read_text())
        return set(data["files"]) if data.get("written_by") == "derain" else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def foreign_content(folder: Path) -> str | None:
    """Why `folder` is not derain's own output (None: it is, or it is empty)."""
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError as exc:
        return f"cannot be listed ({exc.strerror})"
    if not names:
        return None
    ours = _marked_files(folder)
    if ours is None:
        return f"is a folder derain did not write (no {MARKER} marker in it)"
    others = sorted(n for n in names if n != MARKER and (n not in ours or not (folder / n).is_file()))
    if others:
        more = f" and {len(others) - 1} more" if len(others) > 1 else ""
        return f"holds files derain did not write ({others[0]!r}{more})"
    return None


def _fail(path: Path, exc: BaseException, after: str = "; the partial output was removed") -> OutputError:
    """One line for an encoder, muxer or file-system failure while writing `path`; `after`: what
    became of the output (a stream has no partial file)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        why = "the disk is full"
    elif isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        why = "the file is larger than this system allows"
    else:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return OutputError(f"{path}: cannot write ({why}){after}")


def _subsampling(pix_fmt: str) -> tuple[int, int]:
    """(x, y) chroma subsampling of a pixel format: (2, 2) for 4:2:0, (1, 1) for 4:4:4."""
    try:
        f = av.VideoFormat(pix_fmt, 8, 8)
    except (ValueError, av.FFmpegError):
        return 1, 1
    return max(1, 8 // max(1, f.chroma_width())), max(1, 8 // max(1, f.chroma_height()))


def _video_options(codec: str, enc: EncodeSettings, path) -> dict:
    """The CPU encoder's options for `enc`'s preset and quality (crf, unless a bitrate is set)."""
    preset = enc.preset or DEFAULT_PRESET.get(codec)
    if codec == "libvpx-vp9":
        return _vp9_options(str(preset), enc, path)
    if preset and codec in PRESETS:
        preset = _preset(codec, str(preset), path)
    options = {"preset": str(preset)} if preset else {}
    if enc.bitrate is None and enc.crf is not None:
        options["crf"] = str(crf_for(codec, enc))
    if codec == "libx265":
        options["x265-params"] = "log-level=error"
    return options


def crf_for(codec: str, enc: EncodeSettings) -> int:
    """The CRF given to encoder `codec`: as set, or for auto its own (AUTO_CRF)."""
    return AUTO_CRF[codec] if enc.crf == "auto" else enc.crf


def _preset(codec: str, preset: str, path) -> str:
    """The encoder's own preset for `preset`: x264's names everywhere (mapped onto the numbers of
    SVT-AV1's presets and VP9's cpu-used), or the encoder's own value; one line listing them else."""
    names = PRESETS[codec]
    if codec not in NUMBERED:
        if preset not in names:
            raise OutputError(f"{path}: encode.preset {preset!r} is no {codec} preset (use {', '.join(names)})")
        return preset
    numbers, what = NUMBERED[codec]
    if preset.lstrip("-").isdigit() and int(preset) in numbers:
        return str(int(preset))
    if preset in names:
        return str(names[preset])
    raise OutputError(f"{path}: encode.preset {preset!r} is no {codec} {what} (use {', '.join(names)}, "
                      f"or its own number {numbers[0]}..{numbers[-1]})")


def _vp9_options(preset: str, enc: EncodeSettings, path) -> dict:
    """libvpx-vp9 at a usable speed: the "good" deadline at cpu-used from the preset (a name as
    x264's, or the number), row multi-threading on. `-b:v 0 -crf N` asks for constant quality
    outright (FFmpeg's VP9 guide): FFmpeg 5.1 and 8 choose it for a crf alone too (rc_end_usage
    VPX_Q, the same bytes), where older ones capped a crf alone at a default bitrate."""
    options = {"deadline": "good", "cpu-used": _preset("libvpx-vp9", preset, path), "row-mt": "1"}
    if enc.bitrate is None and enc.crf is not None:
        options.update(crf=str(crf_for("libvpx-vp9", enc)), b="0")
    return options


@functools.cache
def _muxer(suffix: str) -> str:
    """FFmpeg's muxer for a file extension (an output container opens no file before its header)."""
    with av.open(f"probe{suffix}", "w") as out:
        return out.format.name


def _chroma_pixels(pix_fmt: str | None) -> float | None:
    """The share of pixels a YUV format's colour planes keep (4:4:4 1, 4:2:2 0.5, 4:2:0 0.25);
    None for RGB, grey and unknown formats (an RGB picture, PNGs, is expected to become 4:2:0)."""
    try:
        fmt = av.VideoFormat(pix_fmt, 64, 64)
    except (TypeError, ValueError):
        return None
    if fmt.is_rgb or len(fmt.components) < 3:
        return None
    return fmt.components[1].width * fmt.components[1].height / 64 / 64


def _avi_rate(info, rate) -> Fraction:
    """AVI's frame rate, one frame a tick: the rate every input frame time is a whole tick of
    (FFmpeg's r_frame_rate: a variable-rate file's fastest part) where a player can take it,
    so no frame shares a tick; else the average."""
    base = info.base_rate
    return Fraction(base) if base and Fraction(rate) <= base <= 120 else Fraction(rate)


def _container_name(fmt) -> str:
    """How messages call a container: its usual name, else FFmpeg's long name."""
    return CONTAINER_NAMES.get(fmt.name) or fmt.long_name or fmt.name


def _rule_refuses(fmt: str, codec: str) -> str | None:
    """Why `fmt` loses `codec` though FFmpeg's muxer takes it (FFmpeg cannot tell); None: it does not."""
    if fmt == "mpegts" and codec not in MPEGTS_CODECS:
        return "MPEG-TS has no stream type for it: written as private data, readers find no stream"
    if fmt == "mp4" and codec.startswith("pcm_"):
        return "PCM in MP4 ('ipcm') is read by FFmpeg 6.1 and later only: older players play noise"
    if fmt == "mp4" and codec == "vorbis":
        return "Vorbis in MP4 is not in the MP4 registry: browsers, QuickTime and phones play it silent"
    return None


def _header_refuses(fmt: str, add: Callable) -> str | None:
    """Why a `fmt` container refuses the stream `add(container)` adds (None: it takes it).

    Asked as FFmpeg asks, by writing the header into memory: avformat_query_codec alone lets
    through what the muxer refuses at the header (VP9 or AV1 in MOV). `add` returns False
    where the stream could not be set up for a reason that is not the container's.
    """
    try:
        with av.open(io.BytesIO(), "w", format=fmt) as trial:
            if not add(trial) or trial.format.no_file:  # RTSP: the header is a network exchange
                return None
            trial.start_encoding()
    except (av.FFmpegError, ValueError, OSError) as exc:
        return _short(exc)
    return None


def _refuses(fmt: str, codec: str, add: Callable) -> str | None:
    """Why a `fmt` container cannot hold `codec` (None: it can): by the rules FFmpeg cannot tell,
    then by writing the header of a trial with the stream `add` adds."""
    return _rule_refuses(fmt, codec) or _header_refuses(fmt, add)


def _video_refuses(fmt: str, encoder: str, options: dict, pix_fmt: str) -> str | None:
    """Why a `fmt` container cannot hold what `encoder` writes (None: it can); a size the
    encoder refuses is `Encoder._check_encoder`'s to say, not this."""
    return _video_refuses_once(fmt, encoder, tuple(sorted(options.items())), pix_fmt)


@functools.cache
def _video_refuses_once(fmt: str, encoder: str, options: tuple, pix_fmt: str) -> str | None:
    """`_video_refuses`, asked once a process: a live recorder opens a sink per segment."""
    def add(trial) -> bool:
        stream = trial.add_stream(encoder, rate=25, options=dict(options))
        stream.width, stream.height, stream.pix_fmt = 64, 64, pix_fmt
        stream.codec_context.thread_count = 1
        try:
            stream.codec_context.open()  # with the container's flags (global headers), as written
        except (av.FFmpegError, ValueError):
            return False
        return True

    return _refuses(fmt, av.Codec(encoder, "w").canonical_name, add)


class Encoder:
    """The one encode loop: frames, with their own pts and time base, into an open PyAV
    container, the input's audio remuxed alongside. `VideoFileSink` (a file renamed into place)
    and the live outputs (`pipeline.sinks.streams`) own the container around it.

    A size the pixel format cannot hold (an odd width or height in 4:2:0) is cut to the
    nearest one it can, with a warning; an encoder that refuses the size fails here, before
    any frame is derained. `warnings` lists what was said.
    """

    def __init__(self, out, info: SourceInfo, encode: EncodeSettings, label):
        self.out, self.info, self.encode, self.path = out, info, encode, label
        self.frames_written = 0
        self._scaled: set[tuple[int, int]] = set()  # sizes of frames scaled to the video's, said once each
        self._last_pts: int | None = None
        self._audio = None
        self._setup()

    def _setup(self) -> None:
        info, enc = self.info, self.encode
        self.warnings: list[str] = []
        self.out.metadata.update(info.container_metadata)
        name = enc.codec_for(self.path)
        codec = CODECS[name]
        if codec not in av.codecs_available:
            raise OutputError(f"{self.path}: encoder {codec} ({name}) is not available in this FFmpeg")
        if codec == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # errors only: SVT-AV1 takes no log level but this
        top = MAX_CRF.get(codec, 63)
        if isinstance(enc.crf, int) and enc.bitrate is None and enc.crf > top:
            raise OutputError(f"{self.path}: encode.crf {enc.crf}: {name} takes 0 to {top} (lower is better)")
        options = _video_options(codec, enc, self.path)
        self._check_container(name, codec, options)
        rate = info.rate or (1 / info.time_base)
        if self.out.format.name == "avi":
            rate = _avi_rate(info, rate)
        self.width, self.height = self._output_size()
        self._kept_sizes = {(self.height, self.width), (info.height, info.width)}  # frames cut, not scaled
        hw = self._hardware(name, rate)  # NVENC, opened once on the side already
        if hw:
            codec, options = hw
        else:
            self._check_encoder(codec, options, rate)
        self.video = self.out.add_stream(codec, rate=rate, options=options)
        self.video.width, self.video.height = self.width, self.height
        self.video.pix_fmt = enc.pix_fmt
        kept, had = _chroma_pixels(enc.pix_fmt), _chroma_pixels(info.pix_fmt)
        if kept is not None and had is not None and kept < had:  # a 4:4:4 or 4:2:2 camera's colour detail
            self._warn(f"{self.path}: {info.pix_fmt} input becomes {enc.pix_fmt}, with less colour detail "
                       f"(encode.pix_fmt: {info.pix_fmt} keeps it where the codec takes it)")
        # Keep the input's clock: frames carry their own pts in this time base (VFR survives).
        # AVI has no timestamps, only a frame rate, which is read from its time base (the
        # input's 1/12800 made players see 12800 fps): there, one tick is one frame.
        self._tick = Fraction(1, 1) / Fraction(rate) if self.out.format.name == "avi" else None
        self._dropped = 0  # AVI: frames left out for sharing a tick with the last
        self.video.codec_context.time_base = self._tick or info.time_base
        self.video.time_base = self._tick or info.time_base
        self.video.codec_context.thread_count = enc.thread_count()
        # The colour tags of what is written, so players read the colours as they were: the
        # input's matrix (RGB input: swscale's default), limited range (swscale writes it; the
        # yuv420p path is taken for limited-range input only), the input's primaries and transfer.
        cc = self.video.codec_context
        cc.colorspace, cc.color_range = self.matrix, 1
        cc.color_primaries, cc.color_trc = info.colour[2:]
        if enc.keyframe_s:
            self.video.codec_context.gop_size = max(1, round(float(rate) * enc.keyframe_s))
        if enc.bitrate:
            self.video.bit_rate = enc.bitrate
        self.video.metadata.update(_kept_tags(info.stream_metadata, "rotate"))
        if info.sar:  # anamorphic: the player stretches the pixels back
            cc.sample_aspect_ratio = self.video.sample_aspect_ratio = info.sar
        if info.rotation:
            self.video.set_display_rotation(info.rotation)
        self._carry_chapters()
        if self.out.format.name in NO_SIDE_DATA:  # said, not lost in silence: a phone video would play sideways
            fmt = _container_name(self.out.format)
            if info.rotation:
                self._warn(f"{self.path}: {fmt} keeps no rotation: the input's turn of {info.rotation:g} degrees "
                           "for display is lost (the picture plays as stored); write .mp4, .mov or .mkv to keep it")
            if info.chapters:
                self._warn(f"{self.path}: {fmt} keeps no chapters: the input's {len(info.chapters)} are lost; "
                           "write .mp4, .mov or .mkv to keep them")
        self._audio = (_AudioPassthrough(info.path, self.out, self.path, info.start)
                       if info.has_audio and info.path else None)
        for message in self._audio.warnings if self._audio else ():
            self._warn(message)

    def _carry_chapters(self) -> None:
        """The input's chapters, on the output's clock (shifted as the frames are, `info.start`)."""
        chapters = []
        for ch in self.info.chapters:
            shift = _ticks(self.info.start, ch["time_base"])
            if ch["end"] > shift:  # one that ended before the first frame marks nothing written
                chapters.append({**ch, "start": max(0, ch["start"] - shift), "end": ch["end"] - shift})
        if chapters:
            self.out.set_chapters(chapters)

    def _check_container(self, name: str, codec: str, options: dict) -> None:
        """Fail before any frame is derained where the container cannot hold the video codec,
        saying which extensions can and which codec this one takes (encode.codec: auto's)."""
        fmt = self.out.format
        if not _video_refuses(fmt.name, codec, options, self.encode.pix_fmt):
            return
        others = [ext for ext in VIDEO_SUFFIXES if _muxer(ext) != fmt.name
                  and not _video_refuses(_muxer(ext), codec, options, self.encode.pix_fmt)]
        auto = EncodeSettings().codec_for(str(self.path))
        fix = (f"use {'/'.join(others)}, or " if others else "use ") + f"--codec {auto}"
        raise OutputError(f"{self.path}: {_container_name(fmt)} cannot hold {name} video; {fix}")

    @property
    def matrix(self) -> int:
        """The colour matrix frames are written with: the input's (FFmpeg's AVColorSpace), or
        unspecified (swscale's BT.601) for an RGB input (0)."""
        return self.info.colour[0] or 2

    def _output_size(self) -> tuple[int, int]:
        """The input's size, cut to what the pixel format holds (even sizes for 4:2:0), said once."""
        w, h, pix = self.info.width, self.info.height, self.encode.pix_fmt
        xs, ys = _subsampling(pix)
        ow, oh = w - w % xs, h - h % ys
        if ow < 1 or oh < 1:
            raise OutputError(f"{self.path}: a {w}x{h} video cannot be encoded as {pix} "
                              f"(it needs at least {xs}x{ys} pixels)")
        if (ow, oh) != (w, h):
            cut = " and ".join(what for what, c in (("the last column", ow != w), ("the last row", oh != h)) if c)
            self._warn(f"{self.path}: {w}x{h} written as {ow}x{oh} ({cut} cut): {pix} needs "
                       f"{'even sizes' if (xs, ys) == (2, 2) else f'multiples of {xs}x{ys}'} "
                       "(encode.pix_fmt: yuv444p keeps the size)")
        return ow, oh

    def _hardware(self, name: str, rate) -> tuple[str, dict] | None:
        """NVENC for codec `name` when wanted and the GPU opens it; None: the CPU codec."""
        enc = self.encode
        nv = hardware.NVENC.get(name)
        if not hardware.wanted(enc.hardware) or nv is None or nv not in av.codecs_available:
            return None
        nv_options = hardware.nvenc_options(enc.preset, crf_for("libx264", enc) if enc.crf is not None else None,
                                            enc.bitrate)
        try:
            self._check_encoder(nv, nv_options, rate)
        except OutputError as exc:
            hardware.fell_back("encode", f"{nv} (NVENC) cannot encode here: {exc}")
            return None
        return nv, nv_options

    def _check_encoder(self, codec: str, options: dict, rate) -> None:
        """Open the encoder once on the side, so a size, format or preset it refuses fails before any
        work, and the line says which of them it was where FFmpeg can tell."""
        taken = [f.name for f in av.Codec(codec, "w").video_formats or ()]
        if taken and self.encode.pix_fmt not in taken:
            raise OutputError(f"{self.path}: the {codec} encoder does not take {self.encode.pix_fmt} "
                              f"(encode.pix_fmt; it takes {', '.join(taken[:12])}{', ...' if len(taken) > 12 else ''})")
        cc = av.CodecContext.create(codec, "w")
        cc.width, cc.height, cc.pix_fmt = self.width, self.height, self.encode.pix_fmt
        cc.time_base = self.info.time_base
        cc.framerate = rate
        cc.thread_count = 1
        cc.options = dict(options)
        try:
            cc.open()
        except (av.FFmpegError, ValueError) as exc:
            preset = f" at encode.preset {options['preset']!r}" if "preset" in options and self.encode.preset else ""
            raise OutputError(f"{self.path}: the {codec} encoder refuses {self.width}x{self.height} "
                              f"{self.encode.pix_fmt} video{preset} ({_short(exc)})") from None

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)

    def _avi_dropped(self, at: Fraction) -> None:
        """A frame within one AVI tick of the last is left out, as ffmpeg does: pushed a tick on
        instead, a faster part drifted from the audio (0.7 s in a 3 s clip)."""
        if not self._dropped:
            self._warn(f"{self.path}: AVI holds one frame every 1/{float(1 / self._tick):.3g} s here: frames closer "
                       f"together (from {float(at):.2f} s on) are left out so the video stays in step with the "
                       "audio; .mkv or .mp4 keep every frame")
        self._dropped += 1

    def _sized(self, image: np.ndarray) -> np.ndarray:
        """A frame at the video's size: the input's cut to even (a column or row), or, for a frame
        of another size (an odd image in a folder), scaled to it and said once per size; a video
        has one size, where a folder of PNGs keeps each image's."""
        h, w = image.shape[:2]
        if (h, w) in self._kept_sizes:
            return image[:self.height, :self.width]
        self._say_scaled(w, h)
        return cv2.resize(image, (self.width, self.height),
                          interpolation=cv2.INTER_AREA if w > self.width else cv2.INTER_CUBIC)

    def _say_scaled(self, w: int, h: int) -> None:
        if (w, h) not in self._scaled:
            self._scaled.add((w, h))
            self._warn(f"{self.path}: a {w}x{h} frame (frame {self.frames_written}) scaled to the video's "
                       f"{self.width}x{self.height}: a video has one size")

    AFTER_FAILURE = "; the partial output was removed"  # what a failed write leaves (StreamSink: nothing)

    def write(self, batch: FrameBatch) -> None:
        try:
            self._write(batch)
        except (av.FFmpegError, OSError) as exc:
            raise _fail(self.path, exc, self.AFTER_FAILURE) from None
        trace.mark("encoded", self.info.uri, batch.seq)

    def _write(self, batch: FrameBatch) -> None:
        planes = is_i420(batch.images)  # yuv420p already (pipeline.colour): no conversion here
        matrix = self.matrix
        for image, pts, tb in zip(batch.images, batch.pts, batch.time_base):
            if planes:
                if image.shape != (self.height * 3 // 2, self.width):  # the encoder scales it
                    self._say_scaled(image.shape[1], image.shape[0] * 2 // 3)
                frame = av.VideoFrame.from_ndarray(image, format=I420)
            else:
                image = self._sized(image)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            # swscale converts RGB with the frame's matrix: the input's, which the stream is tagged with
            frame.colorspace = matrix
            tb = tb or self.info.time_base
            if self._tick and pts is not None:  # AVI: counted in frames
                pts, tb = round(pts * tb / self._tick), self._tick
                if self._last_pts is not None and pts <= self._last_pts:
                    self._avi_dropped(pts * tb)
                    continue
            if pts is None or (self._last_pts is not None and pts <= self._last_pts):
                pts = 0 if self._last_pts is None else self._last_pts + 1  # encoders need rising pts
            frame.pts, frame.time_base = pts - _ticks(self.info.start, tb), tb
            self._last_pts = pts
            self.out.mux(self.video.encode(frame))
            self.frames_written += 1
            if self._audio:
                self._audio.mux_until(float(pts * tb))


class VideoFileSink(Encoder):
    """A video file, written under a hidden partial name and renamed into place only when complete."""

    def __init__(self, path: str | Path, info: SourceInfo, encode: EncodeSettings = EncodeSettings(),
                 overwrite: bool = False, token: str | None = None):
        path = Path(path)
        claim_file(path, overwrite)
        stale = clear_stale_partials(path)
        self.path, self.overwrite = path, overwrite
        self.tmp = partial_path(path, token)
        try:
            self.tmp.touch(exist_ok=False)  # FFmpeg opens lazily: find an unwritable place now, not at the end
        except OSError as exc:  # nothing was created, so nothing is removed (EROFS would refuse that too)
            raise OutputError(f"{path}: cannot write here ({exc.strerror or exc})") from None
        try:
            out = av.open(ffmpeg_path(self.tmp), "w")
        except (av.FFmpegError, OSError, ValueError) as exc:
            _discard(self.tmp)
            raise OutputError(f"{path}: cannot write here ({getattr(exc, 'strerror', None) or exc})") from None
        self.out = out
        try:
            super().__init__(out, info, encode, path)
        except BaseException:
            self.close(ok=False)
            raise
        for message in stale:
            self._warn(message)

    def close(self, ok: bool = True) -> None:
        """Flush and close; on success rename into place, else delete the partial file.

        A failure while finishing (a full disk at the last packets) removes the partial file
        and raises OutputError: a broken file is never renamed into place.
        """
        if getattr(self, "out", None) is None:
            return
        error = None
        try:
            if ok:
                self.out.mux(self.video.encode(None))  # flush the encoder's delayed frames
                if self._audio:
                    self._audio.mux_until(float("inf"))
        except (av.FFmpegError, OSError) as exc:
            ok, error = False, exc
        except BaseException:
            ok = False
            raise
        finally:
            if getattr(self, "_audio", None):
                self._audio.close()
            try:
                self.out.close()
            except (av.FFmpegError, OSError) as exc:
                if ok:
                    ok, error = False, exc
            self.out = None
            if ok:
                try:
                    self._publish()
                except BaseException:
                    _discard(self.tmp)
                    raise
            else:
                _discard(self.tmp)
        if error is not None:
            raise _fail(self.path, error)
        if ok and self._dropped:  # the run's "N frames" counts the frames derained, these among them
            self._warn(f"{self.path}: {self._dropped} frame{'s' if self._dropped > 1 else ''} left out of the AVI "
                       "(closer together than one of its ticks)")

    def _publish(self) -> None:
        """Rename the finished file into place; without --overwrite never over a file that appeared meanwhile."""
        if self.overwrite:
            os.replace(self.tmp, self.path)
            return
        try:
            os.link(self.tmp, self.path)  # atomic and refuses to replace (ffmpeg -n)
        except FileExistsError:
            raise OutputError(f"{self.path}: appeared while this run was writing it (another run?); "
                              "kept, and this run's output removed") from None
        except OSError:  # a file system without hard links
            if self.path.exists():
                raise OutputError(f"{self.path}: appeared while this run was writing it (another run?); "
                                  "kept, and this run's output removed") from None
            os.replace(self.tmp, self.path)
            return
        self.tmp.unlink(missing_ok=True)


def _short(exc: BaseException, limit: int = 160) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def _avi_offsets(src, audio, label) -> list[str]:
    """AVI keeps no start time per stream: audio that starts after the video plays that much
    early there. Said, with the containers that keep it (ffmpeg -c copy loses it the same way)."""
    video = main_video(src)
    video = start_seconds(video) if video else 0.0
    return [f"{label}: AVI keeps no audio delay: audio #{s.index}, {start_seconds(s) - video:.2f} s after the "
            "video, plays that much early (.mkv or .mp4 keep it)" for s in audio if start_seconds(s) - video > 0.04]


class _AudioPassthrough:
    """The input's audio, interleaved with the video as it is written: each stream copied as
    it is, or, where the container cannot hold its codec, re-encoded to one it takes (with a
    warning in `warnings`), its timestamps kept so it stays in step with the video.

    Reading audio lazily up to the current video time keeps memory flat on long files
    (muxing all audio at the end would make the muxer queue every video packet).
    """

    def __init__(self, path: Path, out, label, shift: float = 0.0) -> None:
        self.src = av.open(ffmpeg_path(path), metadata_errors="ignore")
        self.out, self.shift = out, shift  # seconds taken off every timestamp (SourceInfo.start)
        self.warnings: list[str] = []
        try:
            self.tracks = {s.index: t for s in self.src.streams.audio if (t := self._track(s, label)) is not None}
        except BaseException:
            self.src.close()  # the sink never holds this object to close it
            raise
        streams = [s for s in self.src.streams.audio if s.index in self.tracks]
        if self.out.format.name == "avi":
            self.warnings += _avi_offsets(self.src, streams, label)
        self.packets = self.src.demux(*streams) if streams else iter(())  # demux() of none reads all
        self.clocks = {s.index: Continuity(may_jump(self.src)) for s in streams}  # as the video's (timestamps.py)
        self.pending = None
        self.finished = False

    def _track(self, stream, label) -> _CopiedAudio | _ReencodedAudio | None:
        """How one input stream reaches the output: copied, re-encoded, or (said) left out."""
        fmt, codec = self.out.format, _codec_name(stream)
        if not _audio_refuses(fmt.name, stream):
            return _CopiedAudio(self.out.add_stream_from_template(stream), self.out, stream, self.shift)
        said = f"{label}: {_container_name(fmt)} cannot hold {codec} audio as it is"
        encoder = _audio_encoder(fmt.name)
        if stream.codec_context is None or encoder is None:
            why = "this FFmpeg cannot decode it" if stream.codec_context is None else "no audio encoder here fits it"
            self.warnings.append(f"{said} and {why}; left out")
            return None
        track = _ReencodedAudio(stream, self.out, encoder, self.shift)
        self.warnings.append(f"{said}; re-encoded to {track.codec} at {track.bit_rate // 1000} kb/s")
        return track

    def mux_until(self, seconds: float) -> None:
        while True:
            pending, self.pending = self.pending, None
            pkt = pending or next(self.packets, None)
            if pkt is None:
                self._finish()
                return
            if pkt.size == 0:  # the demuxer's flush packet carries nothing to copy
                continue
            if pending is None:
                self._continue(pkt)
            t = pkt.pts if pkt.pts is not None else pkt.dts
            if t is not None and float(t * pkt.time_base) > seconds:
                self.pending = pkt
                return
            self.tracks[pkt.stream.index].mux(pkt)

    def _continue(self, pkt) -> None:
        """The packet on its stream's clock without jumps (MPEG-TS, PS: timestamps.py)."""
        clock = self.clocks[pkt.stream.index]
        if clock.on and pkt.dts is not None:
            dts = clock(pkt.dts, pkt.time_base, pkt.duration or 1)
            if pkt.pts is not None:
                pkt.pts += dts - pkt.dts
            pkt.dts = dts

    def _finish(self) -> None:
        """At the end of the input's audio: what re-encoders still hold goes out, once."""
        if not self.finished:
            self.finished = True
            for track in self.tracks.values():
                track.flush()

    def close(self) -> None:
        self.src.close()


def _codec_name(stream) -> str:
    """The codec's own name (mp3, not the decoder's mp3float)."""
    ctx = stream.codec_context
    return ctx.codec.canonical_name if ctx is not None else "an unknown codec"


@functools.cache
def _audio_encoder(fmt: str) -> str | None:
    """The first of AUDIO_ENCODERS in this FFmpeg whose audio a `fmt` container holds."""
    for encoder in AUDIO_ENCODERS:
        if encoder in av.codecs_available and not _refuses(fmt, av.Codec(encoder, "w").canonical_name,
                                                           lambda trial: bool(trial.add_stream(encoder))):
            return encoder
    return None


def _audio_refuses(fmt: str, stream) -> str | None:
    """Why a `fmt` container cannot hold `stream`'s audio as it is (None: it can)."""
    return _refuses(fmt, _codec_name(stream), lambda trial: bool(trial.add_stream_from_template(stream)))


@functools.lru_cache(maxsize=64)  # per frame on the write path: Fraction arithmetic once per (start, clock)
def _ticks(seconds: float, time_base) -> int:
    """`seconds` in whole ticks of `time_base`, rounded as the frames' own times are (so 1.4 s in
    AVI's 1/25 is 35, not 34 for 34.99999: a shifted first frame lands on 0)."""
    return round(Fraction(seconds) / time_base) if seconds and time_base else 0


def _kept_tags(tags: dict, *also: str) -> dict:
    """A stream's tags as the output keeps them (a track's language and title): without those
    that describe the input's encoding, which would be stale (its encoder, its duration)."""
    drop = {"encoder", "duration", "number_of_frames", "number_of_bytes", "bps", *also}
    return {k: v for k, v in tags.items() if k.lower() not in drop and not k.lower().startswith("_statistics")}


class _CopiedAudio:
    """An input audio stream remuxed packet by packet (its tags too), `shift` seconds earlier."""

    def __init__(self, stream, out, src, shift: float = 0.0) -> None:
        self.stream, self.out = stream, out
        self.stream.metadata.update(_kept_tags(src.metadata))
        self.shift = _ticks(shift, src.time_base)

    def mux(self, pkt) -> None:
        pkt.stream = self.stream
        if self.shift:
            if pkt.pts is not None:
                pkt.pts -= self.shift
            if pkt.dts is not None:
                pkt.dts -= self.shift
        self.out.mux(pkt)

    def flush(self) -> None:
        pass


def _encoder_layout(encoder: str, rate: int, layout) -> av.AudioLayout | str:
    """The input's channel layout where `encoder` takes it; else the usual one for as many
    channels (an AVI's PCM has channels but no layout: mono stays mono), else stereo (a downmix).
    Asked by opening the encoder on the side, so a refusal is not found at the first packet."""
    usual = USUAL_LAYOUTS.get(layout.nb_channels, "stereo")
    for candidate in (layout, usual, "stereo"):
        cc = av.CodecContext.create(encoder, "w")
        cc.sample_rate, cc.layout, cc.format = rate, candidate, av.Codec(encoder, "w").audio_formats[0]
        cc.time_base = Fraction(1, rate)
        try:
            cc.open()
        except (av.FFmpegError, ValueError):
            continue
        return candidate
    return "stereo"


class _ReencodedAudio:
    """An input audio stream decoded and encoded to `encoder` (AAC, Opus): its layout, and its
    rate where the encoder takes it (else 48 kHz); frames keep their timestamps, so the audio
    stays where it was against the video (the encoder's priming delay is the muxer's to note)."""

    def __init__(self, src, out, encoder: str, shift: float = 0.0) -> None:
        self.src, self.out, self.shift = src, out, shift
        rates = av.Codec(encoder, "w").audio_rates
        rate = src.rate if not rates or src.rate in rates else 48000
        layout = _encoder_layout(encoder, rate, src.codec_context.layout)
        self.stream = out.add_stream(encoder, rate=rate, layout=layout)
        self.stream.bit_rate = self.bit_rate = AUDIO_BITRATE * min(self.stream.layout.nb_channels, 6)
        self.stream.metadata.update(_kept_tags(src.metadata))
        self.stream.codec_context.time_base = Fraction(1, rate)
        self.codec = self.stream.codec_context.codec.canonical_name
        self.next_pts: int | None = None  # in samples: where the last frame ended

    def mux(self, pkt) -> None:
        try:
            frames = self.src.codec_context.decode(pkt)
        except av.InvalidDataError:  # a damaged packet: its samples are lost, as ffmpeg loses them
            return
        for frame in frames:
            self._encode(frame)

    def flush(self) -> None:
        for frame in self.src.codec_context.decode(None):
            self._encode(frame)
        self.out.mux(self.stream.encode(None))

    def _encode(self, frame) -> None:
        """Encode one decoded frame, its time counted in samples first: the encoder cuts frames
        into its own size (AAC: 1024), which a coarse input clock (AVI's WMA: one tick per 2048
        samples) would give equal timestamps, and the muxer refuses those. A frame that would
        start before the last one ended (a rounding, an overlap) starts where it ended."""
        start = self.next_pts or 0
        if frame.pts is not None and frame.time_base:
            start = max(0, round((frame.pts * frame.time_base - Fraction(self.shift)) * frame.sample_rate))
            start = start if self.next_pts is None else max(self.next_pts, start)
        frame.pts, frame.time_base = start, Fraction(1, frame.sample_rate)
        self.next_pts = start + frame.samples
        self.out.mux(self.stream.encode(frame))


class ImageFolderSink:
    """One PNG per frame, named after the input images (or by sequence number).

    The folder is written under a temporary name and renamed when complete, with a
    `.derain-output` marker listing its files: `--overwrite` replaces only a folder that
    holds such a marker and nothing but the files it lists, never a user's folder.
    """

    def __init__(self, folder: str | Path, info: SourceInfo, overwrite: bool = False, token: str | None = None):
        self.folder = Path(folder)
        _claim_folder(self.folder, overwrite)
        self.warnings: list[str] = clear_stale_partials(self.folder)
        if info.has_audio:  # said, as a video output's dropped streams are
            self.warnings.append(f"{self.folder}: a folder of images holds frames only; the input's audio "
                                 "and timestamps are not written (a video output keeps them)")
        for message in self.warnings:
            log.warning("%s", message)
        self.tmp = partial_path(self.folder, token)
        try:
            self.tmp.mkdir()
        except OSError as exc:
            raise OutputError(f"{self.folder}: cannot write here ({exc.strerror})") from None
        self.names = info.names
        self.frames_written = 0
        self.written: list[str] = []

    def write(self, batch: FrameBatch) -> None:
        for image, seq in zip(batch.images, batch.seq):
            name = Path(self.names[seq]).stem if seq < len(self.names) else f"{seq:06d}"
            try:
                write_rgb(self.tmp / f"{name}.png", image)
            except DerainError:
                raise
            except OSError as exc:
                raise _fail(self.folder, exc) from None
            self.written.append(f"{name}.png")
            self.frames_written += 1

    def close(self, ok: bool = True) -> None:
        if self.tmp is None:
            return
        tmp, self.tmp = self.tmp, None
        if not ok:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        try:
            marker = {"written_by": "derain", "files": sorted(set(self.written))}
            (tmp / MARKER).write_text(json.dumps(marker, indent=0) + "\n")
            self._publish(tmp)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OutputError):
                raise
            raise _fail(self.folder, exc) from None

    def _publish(self, tmp: Path) -> None:
        """Put the finished folder in place; an old one is set aside and only derain's files deleted."""
        old = None
        if self.folder.is_dir():
            problem = foreign_content(self.folder)  # checked again: files may have appeared meanwhile
            if problem:
                raise OutputError(f"{self.folder}: {problem}; --overwrite replaces only what derain wrote, "
                                  "so the folder is kept and this run's output removed")
            old = partial_path(self.folder)
            self.folder.rename(old)
        try:
            tmp.rename(self.folder)
        except OSError:
            if old is not None:
                old.rename(self.folder)
            raise
        if old is not None:
            _remove_own(old)


def _remove_own(folder: Path) -> None:
    """Delete derain's files of an old output folder, then the folder; anything else stays (and is said)."""
    ours = _marked_files(folder) or set()
    for name in ours | {MARKER}:
        if "/" not in name and name not in (".", ".."):
            (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        log.warning("%s: kept: it holds files derain did not write", folder)


def check_output_name(dst: str) -> None:
    """Refuse a name that is neither a video file nor plainly a folder: `-o out.xyz` (a typo, or a
    container derain does not write) would otherwise become a folder of PNGs without a word, and
    `-o -` a folder named "-" where a pipe to stdout was meant."""
    if dst == "-":
        raise OutputError("-: derain writes files, not a pipe to stdout; give an output file (.mp4, .mkv, ...)")
    if Path(dst).name.lower() in VIDEO_SUFFIXES:  # ".mp4" has no suffix to Python: a hidden folder of PNGs
        raise OutputError(f"{dst}: a name that is only an extension; give the file a name, as out{Path(dst).name}")
    suffix = Path(dst).suffix.lower()
    if suffix and suffix not in VIDEO_SUFFIXES and not dst.endswith(("/", os.sep)) and not Path(dst).is_dir():
        raise OutputError(f"{dst}: {suffix!r} is not a video extension ({', '.join(VIDEO_SUFFIXES)}); "
                          f"for a folder of PNGs end the name with a slash ({dst}/)")


def open_sink(path: str | Path, info: SourceInfo, encode: EncodeSettings = EncodeSettings(),
              overwrite: bool = False, token: str | None = None):
    """A video sink for a path with a video extension, an image-folder sink otherwise."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoFileSink(path, info, encode, overwrite, token=token)
    return ImageFolderSink(path, info, overwrite, token=token)
