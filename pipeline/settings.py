"""Every typed setting, as loaded from configs/*.yaml (pipeline.config) and the CLI flags:
the model, its workers, batching, decoding, encoding, archives, live cameras. One module, so
one place says what a key means and what values it takes (each class's `problems()`)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

from .config import short


DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")  # as torch.device names them
DTYPES = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ModelSettings:
    profile: str = "full"  # full | fast | identity
    weights: str | None = None  # a weights file instead of the shipped one
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    delay_ms: float = 0.0  # identity profile only: a stand-in for a slow model (ms per frame)
    runtime: Literal["auto", "torch", "onnxruntime"] = "auto"  # auto: onnxruntime for fp32 on CPUs
    causal: bool = False  # temporal profiles: neighbours from the past only (live cameras add no delay)
    cuda_graphs: bool | Literal["auto"] = "auto"  # replay each batch shape as one CUDA graph; auto: single-frame networks on CUDA
    align: Literal["auto", "none", "ultrafast", "fast", "medium"] = "auto"  # temporal profiles: warp neighbours onto the target along DIS flow of this preset; auto: fast (chosen on the validation set)
    deflicker: bool | Literal["auto"] = "auto"  # blend each derained frame with the last one along the flow (per stream, past only); auto: temporal profiles
    # settings that change how fast, not what is written (an archive does not redo files for them)
    MACHINE: ClassVar[frozenset[str]] = frozenset({"device", "dtype", "compile", "delay_ms", "runtime", "cuda_graphs"})

    def problems(self) -> list[str]:
        from .model.weights import PROFILES

        known = (*PROFILES, "identity")
        out = []
        if self.profile not in known:
            out.append(f"profile: must be one of {', '.join(known)} (got {self.profile!r})")
        if not DEVICE.fullmatch(str(self.device)):
            out.append(f"device: must be auto, cpu, cuda or cuda:N (or mps, xpu) (got {short(self.device)})")
        if self.dtype not in DTYPES:
            out.append(f"dtype: must be one of {', '.join(DTYPES)} (got {short(self.dtype)})")
        if not 0 <= self.delay_ms <= 60_000:
            out.append(f"delay_ms: must be 0 to 60000 (got {self.delay_ms})")
        return out


@dataclass(frozen=True)
class WorkerSettings:
    backend: Literal["ray", "local"] = "ray"
    count: int = 0  # 0: one per GPU, else one CPU worker per node (holding its cores)
    threads: int = 0  # torch threads per CPU worker; 0: the cores Ray gives it
    inflight: int | Literal["auto"] = "auto"  # batches queued per worker so it never waits for the driver; auto: 4 for a local GPU worker, else 2
    max_tries: int = 3  # a batch whose worker died this many times fails the job
    address: str | None = None  # Ray cluster: None (a local Ray, or $RAY_ADDRESS), "auto", "HOST:6379"
    start_timeout_s: float = 60.0  # workers a busy cluster has not started by then are given up; 0: wait
    codec_processes: bool | Literal["auto"] = "auto"  # decode and encode each file in a process of its own; auto: where the model runs on a GPU

    def depth(self, local_gpu: bool = False) -> int:
        """Batches a worker holds queued or running. A local GPU worker queues them on the device
        (Derainer.start), and a deeper queue carries it through the host's hiccups (a GIL switch
        can take 5 ms, a 1080p frame 14 ms of an H200)."""
        if self.inflight == "auto":
            return 4 if local_gpu else 2
        return self.inflight

    def problems(self) -> list[str]:
        out = []
        if not 0 <= self.threads <= 1024:
            out.append(f"threads: must be 0 to 1024, 0 meaning the cores Ray gives a worker (got {self.threads})")
        if self.count < 0 or self.inflight != "auto" and self.inflight < 1 or self.max_tries < 1:
            out.append("count must be >= 0, inflight >= 1 and max_tries >= 1 "
                       f"(got {self.count}, {self.inflight}, {self.max_tries})")
        if not self.start_timeout_s >= 0:
            out.append(f"start_timeout_s must be >= 0 (got {self.start_timeout_s})")
        return out


@dataclass(frozen=True)
class EncodeSettings:
    codec: Literal["auto", "h264", "h265", "hevc", "av1", "vp9"] = "auto"  # auto: vp9 in .webm (which holds no H.264), else h264
    # constant quality, ignored with bitrate; auto: per codec, the highest CRF keeping >= 90 % of the
    # derain gain (x264 12, x265 15, VP9 14, SVT-AV1 10: docs/BENCHMARKS.md); a number is the codec's own scale
    crf: int | Literal["auto"] | None = "auto"
    bitrate: int | None = None  # bits per second
    preset: str | None = None  # None: the codec's default (medium for x264/x265; VP9: x264's names map to cpu-used, medium 4)
    pix_fmt: str = "yuv420p"
    threads: int | Literal["auto"] = "auto"  # encoder threads; auto: 1 where the model runs on these cores, else the file's share of them (codec_threads)
    keyframe_s: float | None = None  # a keyframe at least this often (live: 1 s, so a viewer joins fast)
    hardware: Literal["auto", "nvenc", "off"] = "auto"  # NVENC; auto: on an NVIDIA machine; falls back to the CPU
    MACHINE: ClassVar[frozenset[str]] = frozenset({"threads", "hardware"})  # as ModelSettings.MACHINE

    def problems(self) -> list[str]:
        out = []
        if isinstance(self.crf, int) and not 0 <= self.crf <= 63:
            out.append(f"crf: must be in 0..63 (got {self.crf})")
        if self.bitrate is not None and not 0 < self.bitrate <= 10**10:
            out.append(f"bitrate: must be 1 to 10000000000 bits per second (got {self.bitrate})")
        if self.keyframe_s is not None and self.keyframe_s <= 0:
            out.append(f"keyframe_s: must be > 0 (got {self.keyframe_s})")
        if not _is_pix_fmt(self.pix_fmt):
            out.append(f"pix_fmt: not a pixel format FFmpeg knows (got {short(self.pix_fmt)}; e.g. yuv420p, yuv444p)")
        return out + threads_problems(self.threads)

    def thread_count(self, share: int | None = None) -> int:
        """The encoder's threads: as set, or for auto `codec_threads(share)`'s."""
        return self.threads if self.threads != "auto" else codec_threads(share)[1]

    def codec_for(self, path: str | os.PathLike | None) -> str:
        """The codec written into `path`: as set, or for auto the one its container expects
        (WebM holds only VP8/VP9/AV1; every other container here takes H.264)."""
        if self.codec != "auto":
            return self.codec
        return "vp9" if path is not None and str(path).lower().endswith(".webm") else "h264"


def _is_pix_fmt(name: str) -> bool:
    try:
        from av import VideoFormat
    except ImportError:  # a bare GPU box (bench --model-only) has no PyAV: the encoder checks it there
        return True

    try:
        VideoFormat(name)
    except (ValueError, TypeError):
        return False
    return True


def on_cuda(model: ModelSettings) -> bool:
    """Whether the model runs on an NVIDIA GPU: `model.device`, or for "auto" whether this
    process sees CUDA (as the model's `pick_device`)."""
    if model.device == "auto":
        import torch

        return torch.cuda.is_available()
    return model.device.startswith("cuda")


def codec_processes(model: ModelSettings, workers: WorkerSettings) -> bool:
    """Decode and encode each file in a process of its own (`workers.codec_processes`): auto does
    where the model runs on a GPU, whose speed one interpreter's codecs cannot keep up with
    (docs/BENCHMARKS.md); on CPUs the model needs the cores."""
    if workers.codec_processes == "auto":
        return on_cuda(model)
    return bool(workers.codec_processes)


MAX_BATCH = 256  # frames a batch may hold: a batch is held whole in memory, and no frame leaves before it does
CODEC_THREADS_MAX = 64  # FFmpeg refuses more (Invalid argument, said of the output or the input)


def threads_problems(threads) -> list[str]:
    if threads == "auto" or isinstance(threads, int) and not isinstance(threads, bool) and 0 <= threads <= CODEC_THREADS_MAX:
        return []
    return [f"threads: must be an integer 0 to {CODEC_THREADS_MAX} (0: FFmpeg's own choice, every core) or 'auto' "
            f"(got {short(threads)})"]


ENCODER_THREADS_MAX = 16  # x264 gains little past this at 1080p, and each frame thread adds a frame of delay


def codec_threads(share: int | None) -> tuple[int, int]:
    """Decoder and encoder threads of `threads: auto`, for a stream with `share` cores to itself.

    None: the model runs on these cores (a CPU network, or cameras in-process), so 1 each, as
    every codec left to FFmpeg's default would take all the cores from it. A number: the codecs
    run in a process of their own while a GPU runs the model, where one 1080p stream's x264 at 4
    threads most likely held the GPU 55-66 % busy (docs/BENCHMARKS.md); so the stream gets its
    share as x264 sizes itself (1.5 threads a core: its threads wait on one another), the
    decoder 2 of them at most (H.264 decodes several times faster than it encodes)."""
    if share is None:
        return 1, 1
    decode = 2 if share >= 6 else 1
    return decode, max(1, min(ENCODER_THREADS_MAX, round(1.5 * share) - decode))


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def model_needs_cores(model: ModelSettings) -> bool:
    """Whether the model runs on this machine's cores: a network on the CPU (not on a GPU, and
    not the identity profile, which does nothing)."""
    return model.profile != "identity" and not on_cuda(model)


def with_codec_threads(settings: "RunSettings", share: int, model_here: bool = True) -> "RunSettings":
    """`settings` with decode and encode `threads: auto` made numbers for streams of `share`
    cores each, where the codecs run in processes of their own (`codec_processes`) and the
    model leaves them the cores (on a GPU, or elsewhere: `model_here` False); as given
    otherwise (auto then means 1)."""
    if not codec_processes(settings.model, settings.workers) or model_here and model_needs_cores(settings.model):
        return settings
    return replace(settings, decode=replace(settings.decode, threads=settings.decode.thread_count(share)),
                   encode=replace(settings.encode, threads=settings.encode.thread_count(share)))


LARGE_FRAME = 2_000_000  # pixels (1080p and up): on CUDA one such frame fills the GPU by itself


def auto_batch(model: ModelSettings, pixels: int | None = None) -> int:
    """Frames per batch for `max_batch: auto`: on CUDA 8, or 1 for frames of `pixels` >= 2 Mpx;
    on CPUs 1, or 2 for the fast profile.

    On an H100 the full network at 1080p ran faster at batch 1 than 8 (62 against 54 frames/s
    alone, 55 against 48 over four streams end to end), at 720p and below the other way round.

    On 2 CPU cores (docs/BENCHMARKS.md) batching does not pay for the full model (batch 4
    runs ~20 % slower than 1: the convolutions already fill the cores); the fast profile's
    small network gains a little from 2 (+6 % bf16, +20 % onnxruntime fp32 at 640x360).
    The device is `model.device`, or for "auto" whether this process sees CUDA (as the
    model's `pick_device`); on a cluster whose GPUs only the workers see, set max_batch.
    """
    if on_cuda(model):
        return 1 if pixels and pixels >= LARGE_FRAME else 8
    return 2 if model.profile == "fast" else 1


FILE_BATCHING = {"max_wait_ms": 1000.0, "queue_size": 16, "policy": "block"}  # every frame kept, full batches
LIVE_BATCHING = {"max_wait_ms": 20.0, "queue_size": 4, "policy": "drop-oldest"}  # the delay stays bounded


@dataclass(frozen=True)
class BatchSettings:
    """How frames become batches, for files and cameras alike (`batching:`). A key left unset
    takes the input's own default: a file keeps every frame and fills its batches, a camera
    keeps its delay bounded (FILE_BATCHING, LIVE_BATCHING; `for_input` applies them)."""

    max_batch: int | Literal["auto"] = "auto"  # frames per batch; auto: files 8 on CUDA, 1 on CPUs (fast: 2); cameras 1
    max_wait_ms: float | None = None  # cut a partial batch after this long (files 1000, cameras 20)
    queue_size: int | None = None  # frames read ahead of the model (files 16, cameras 4)
    policy: Literal["block", "drop-oldest", "drop-newest"] | None = None  # a full queue: files block, cameras drop-oldest

    def problems(self) -> list[str]:
        out = []
        if self.max_batch != "auto" and (isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int)
                                         or not 1 <= self.max_batch <= MAX_BATCH):
            out.append(f"max_batch: must be an integer 1 to {MAX_BATCH} or 'auto' (got {short(self.max_batch)})")
        if self.max_wait_ms is not None and not 0 <= self.max_wait_ms <= 3_600_000:
            out.append(f"max_wait_ms: must be 0 to 3600000 (an hour) (got {self.max_wait_ms})")
        if self.queue_size is not None and self.queue_size < 1:
            out.append(f"queue_size: must be an integer >= 1 (got {self.queue_size})")
        return out

    def for_input(self, model: ModelSettings, live: bool, pixels: int | None = None) -> "BatchSettings":
        """Every key set: what was given, else the default for a camera (`live`) or a file (of
        frames of `pixels`, where known)."""
        defaults = LIVE_BATCHING if live else FILE_BATCHING
        given = {k: v for k, v in vars(self).items() if v is not None and v != "auto"}
        max_batch = 1 if live else auto_batch(model, pixels)
        return BatchSettings(**{"max_batch": max_batch, **defaults, **given})


@dataclass(frozen=True)
class DecodeSettings:
    threads: int | Literal["auto"] = "auto"  # decoder threads; auto: 1 where the model runs on these cores, else up to 2 (codec_threads)
    fps: float = 25.0  # frame rate given to a folder of images
    hardware: Literal["auto", "cuda", "off"] = "off"  # NVDEC (cuda, or auto: on an NVIDIA machine); off: it was slower than the CPU decoder and converts chroma differently (docs/BENCHMARKS.md)
    # frames stay yuv420p from decoder to encoder, converted to RGB and back on the model's device
    # (pipeline.colour): where the input and output are 8-bit 4:2:0 video of even size and no plugin
    # or consumer reads the frames; auto: where the model runs on a GPU
    yuv: bool | Literal["auto"] = "auto"

    def problems(self) -> list[str]:
        out = [] if 0.01 <= self.fps <= 1000 else [f"fps: must be 0.01 to 1000 frames a second (got {self.fps})"]
        return out + threads_problems(self.threads)

    def thread_count(self, share: int | None = None) -> int:
        """The decoder's threads: as set, or for auto `codec_threads(share)`'s."""
        return self.threads if self.threads != "auto" else codec_threads(share)[0]


@dataclass(frozen=True)
class ArchiveSettings:
    # any case (IMG_0001.MOV too), inside the input folder only
    patterns: list[str] = field(default_factory=lambda: ["*.mp4", "*.mkv", "*.mov", "*.avi", "*.webm", "*.ts", "*.m4v",
                                                         "*.mts", "*.m2ts"])
    recursive: bool = True
    output_suffix: str = ""  # "" keeps each file's extension
    workers: int = 0  # parallel file workers; 0: one per GPU, else one per node (or per threads_per_worker cores)
    threads_per_worker: int = 0  # torch threads per file worker; 0: cores // workers
    retries: int = 2  # a file whose worker died is retried this many times
    streams_per_worker: int | Literal["auto"] = "auto"  # files a worker derains side by side through its one model; auto: 4 with a GPU, else 1
    # file workers keep no model of their own and send their batches to one model worker per GPU,
    # so nodes without a GPU decode and encode for it; auto: where the cluster has GPU nodes and
    # nodes without one
    shared_model: bool | Literal["auto"] = "auto"

    def problems(self) -> list[str]:
        out = [] if self.workers >= 0 and self.retries >= 0 else ["workers and retries must be >= 0"]
        if self.threads_per_worker < 0:
            out.append(f"threads_per_worker: must be >= 0 (0: the cores shared out) (got {self.threads_per_worker})")
        if self.output_suffix and not re.fullmatch(r"\.[A-Za-z0-9]+", self.output_suffix):
            out.append(f"output_suffix: must be a dot and letters or digits, as .mp4 (got {short(self.output_suffix)})")
        if self.streams_per_worker != "auto" and self.streams_per_worker < 1:
            out.append(f"streams_per_worker: must be >= 1 or 'auto' (got {self.streams_per_worker})")
        return out

    def streams(self, gpu: bool) -> int:
        """Files one worker derains at once: on a GPU several, so the model is busy while one file's
        codecs are not (docs/BENCHMARKS.md: 4 streams reach 0.92 of the model, 1 stream 0.79)."""
        if self.streams_per_worker == "auto":
            return 4 if gpu else 1
        return self.streams_per_worker


@dataclass(frozen=True)
class CameraSettings:
    """One live source of a many-camera config; empty fields take `live.*`'s values."""

    url: str = ""  # rtsp://, http(s)://, tcp://, udp://, /dev/videoN, or a file with live.realtime
    name: str = ""  # id in logs, metrics and output names (default: cam0, cam1, ...)
    record: str | None = None  # folder of rolling segments
    restream: list[str] = field(default_factory=list)  # rtsp://..., tcp://HOST:PORT, udp://..., http://HOST:PORT
    snapshot: str | None = None  # folder of periodic JPEG snapshots

    def problems(self) -> list[str]:
        out = [] if self.url else ["url: must be set for every camera"]
        if self.name in (".", "..") or any(c in self.name for c in '/\\\0'):
            # it names the camera's files: "gate/north" recorded into a folder nobody made
            out.append(f"name: {short(self.name)} names the camera's files; use no '/', '\\' or '..'")
        return out


@dataclass(frozen=True)
class LiveSettings:
    """Live sources and outputs (pipeline.sources.live, pipeline.sinks.streams, pipeline.sinks.preview)."""

    transport: Literal["tcp", "udp"] = "tcp"  # RTSP transport; TCP survives lossy links without smearing
    open_timeout_s: float = 5.0  # a connection attempt fails after this long
    read_timeout_s: float = 3.0  # no data for this long: the source stalled, reconnect
    first_tries: int = 3  # tries for a first connection before SourceConnectionError
    reconnect_tries: int = 0  # tries per outage once the source has worked; 0: forever
    backoff_s: float = 0.25  # first reconnect delay, doubled per failed try
    backoff_max_s: float = 1.0  # longest reconnect delay (keeps resume within ~1 s of the return)
    jitter: float = 0.2  # +-fraction of random spread, so many cameras don't reconnect in step
    realtime: bool = False  # a file input is played at its own rate, as a camera would send it
    inflight: int = 1  # batches per worker at once: more would wait queued behind each other
    record: str | None = None  # folder of rolling segments
    segment_s: float = 60.0  # length of one recorded segment
    segment_format: Literal["mp4", "mkv", "ts"] = "mp4"
    keep_segments: int = 0  # delete older segments beyond this many; 0: keep all
    restream: list[str] = field(default_factory=list)
    snapshot: str | None = None
    snapshot_every_s: float = 10.0
    preview: str | None = None  # HOST:PORT of the preview page and /metrics
    preview_token: str | None = None  # required by every preview request (?token= or Authorization: Bearer)
    preset: str = "ultrafast"  # live encoder preset: no B-frames, no look-ahead, low delay
    duration_s: float = 0.0  # stop after this long; 0: until SIGINT/SIGTERM or the sources end
    cameras: list[CameraSettings] = field(default_factory=list)
    MOVED: ClassVar[dict[str, str]] = {k: f"batching.{k}" for k in ("max_batch", "max_wait_ms", "queue_size", "policy")}

    def problems(self) -> list[str]:
        out = []
        if self.open_timeout_s <= 0 or self.read_timeout_s <= 0:
            out.append(f"open_timeout_s, read_timeout_s: must be > 0 (got {self.open_timeout_s}, {self.read_timeout_s})")
        if self.first_tries < 1:
            out.append(f"first_tries: must be an integer >= 1 (got {self.first_tries})")
        if self.reconnect_tries < 0:
            out.append(f"reconnect_tries: must be >= 0, 0 meaning forever (got {self.reconnect_tries})")
        if self.backoff_s < 0 or self.backoff_max_s < self.backoff_s:
            out.append(f"backoff_max_s: must be >= backoff_s >= 0 (got {self.backoff_s}, {self.backoff_max_s})")
        if self.inflight < 1:
            out.append(f"inflight: must be an integer >= 1 (got {self.inflight})")
        if self.segment_s < 1:  # a segment starts on a keyframe, one a second live: 0.01 made one-frame files
            out.append(f"segment_s: must be >= 1 second (got {self.segment_s})")
        if self.snapshot_every_s <= 0:
            out.append(f"snapshot_every_s: must be > 0 (got {self.snapshot_every_s})")
        if self.keep_segments < 0:  # a negative count deleted every recording there
            out.append(f"keep_segments: must be >= 0, 0 keeping all (got {self.keep_segments})")
        if not self.duration_s >= 0:
            out.append(f"duration_s: must be >= 0, 0 meaning until stopped (got {self.duration_s})")
        names = [c.name for c in self.cameras if c.name]
        if len(names) != len(set(names)):
            out.append(f"cameras: names must be unique (got {short(names)})")
        return out


@dataclass(frozen=True)
class RunSettings:
    model: ModelSettings = field(default_factory=ModelSettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    batching: BatchSettings = field(default_factory=BatchSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    plugins: list[dict] = field(default_factory=list)
    live: LiveSettings = field(default_factory=LiveSettings)
