"""The typed settings of `derain run` and `derain archive`, as loaded from configs/*.yaml."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .sinks import EncodeSettings
from .workers import ModelSettings, WorkerSettings


@dataclass(frozen=True)
class BatchSettings:
    max_batch: int = 4  # frames per batch
    max_wait_ms: float = 1000.0  # cut a partial batch after this long (live sources: tens of ms)
    queue_size: int = 16  # frames read ahead of the model
    policy: Literal["block", "drop-oldest", "drop-newest"] = "block"  # files never drop

    def problems(self) -> list[str]:
        out = []
        if self.max_batch < 1:
            out.append(f"max_batch: must be an integer >= 1 (got {self.max_batch})")
        if self.max_wait_ms < 0:
            out.append(f"max_wait_ms: must be >= 0 (got {self.max_wait_ms})")
        if self.queue_size < 1:
            out.append(f"queue_size: must be an integer >= 1 (got {self.queue_size})")
        return out


@dataclass(frozen=True)
class DecodeSettings:
    threads: int = 1  # decoder threads; explicit so the model keeps its cores
    fps: float = 25.0  # frame rate given to a folder of images


@dataclass(frozen=True)
class ArchiveSettings:
    patterns: list[str] = field(default_factory=lambda: ["*.mp4", "*.mkv", "*.mov", "*.avi", "*.webm", "*.ts"])
    recursive: bool = True
    output_suffix: str = ""  # "" keeps each file's extension
    workers: int = 0  # parallel file workers; 0: one per GPU, else CPU cores // threads_per_worker
    threads_per_worker: int = 0  # torch threads per file worker; 0: cores // workers
    retries: int = 2  # a file whose worker died is retried this many times

    def problems(self) -> list[str]:
        return [] if self.workers >= 0 and self.retries >= 0 else ["workers and retries must be >= 0"]


@dataclass(frozen=True)
class RunSettings:
    model: ModelSettings = field(default_factory=ModelSettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    batching: BatchSettings = field(default_factory=BatchSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    plugins: list[dict] = field(default_factory=list)
