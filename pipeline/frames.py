"""Frames and batches: what flows from a source to the sinks.

A `Frame` is one decoded picture with the timing it came with. A `FrameBatch` is a run
of consecutive frames of one source as a single (B, H, W, 3) array, so one batch is
one Ray object, never one object per frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from .colour import planes_shape


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        image: (H, W, 3) uint8 RGB, or (H * 3 / 2, W) uint8 yuv420p planes where only the model
            and a video encoder see the frames (`pipeline.colour`, `decode.yuv`).
        seq: 0-based position in its source (after any drops, gaps show them).
        pts: presentation timestamp in `time_base` units (None when the source gave none).
        time_base: seconds per pts tick.
        source_id: which source it came from.
        arrival: time.monotonic() when the reader got it (for live latency).
    """

    image: np.ndarray
    seq: int
    pts: int | None
    time_base: Fraction | None
    source_id: str = "0"
    arrival: float = 0.0

    def __post_init__(self) -> None:
        rgb = self.image.ndim == 3 and self.image.shape[2] == 3
        if self.image.dtype != np.uint8 or not (rgb or planes_shape(self.image.shape)):
            raise ValueError(f"Frame.image: expected (H, W, 3) or yuv420p (H*3/2, W) uint8, "
                             f"got {self.image.shape} {self.image.dtype}")

    @property
    def seconds(self) -> float | None:
        return None if self.pts is None or self.time_base is None else float(self.pts * self.time_base)


@dataclass(frozen=True)
class FrameBatch:
    """Consecutive frames of one source, as one array.

    Attributes:
        images: (B, H, W, 3) uint8 (or (B, H*3/2, W) yuv420p, as Frame.image): rainy frames
            before the worker, derained after it.
        seq, pts, time_base, arrival: per frame, length B.
        source_id: the source they all came from.
        rainy: (B, H, W, 3) uint8 originals, set once the batch is derained.
        rain_intensity: (B,) float32, the model's mean |R| per frame, set once derained.
        before, after: frames of the same source just before and after these, (k, H, W, 3) or
            None: a temporal network's window reaches into them, so where a batch is cut changes
            nothing. Dropped once derained.
    """

    images: np.ndarray
    seq: tuple[int, ...]
    pts: tuple[int | None, ...]
    time_base: tuple[Fraction | None, ...]
    source_id: str = "0"
    arrival: tuple[float, ...] = ()
    rainy: np.ndarray | None = None
    rain_intensity: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    before: np.ndarray | None = None
    after: np.ndarray | None = None

    def __post_init__(self) -> None:
        b = len(self.seq)
        rgb = self.images.ndim == 4 and self.images.shape[3] == 3
        if not (rgb or self.images.ndim == 3 and planes_shape(self.images.shape[1:])) or self.images.shape[0] != b:
            raise ValueError(f"FrameBatch.images: expected ({b}, H, W, 3) or ({b}, H*3/2, W), got {self.images.shape}")
        for name in ("pts", "time_base"):
            if len(getattr(self, name)) != b:
                raise ValueError(f"FrameBatch.{name}: expected {b} entries, got {len(getattr(self, name))}")

    def __len__(self) -> int:
        return len(self.seq)

    @classmethod
    def of(cls, frames: list[Frame], before: list[Frame] = (), after: list[Frame] = ()) -> "FrameBatch":
        def stack(ctx):
            return np.stack([f.image for f in ctx]) if ctx else None

        return cls(
            images=np.stack([f.image for f in frames]),
            seq=tuple(f.seq for f in frames),
            pts=tuple(f.pts for f in frames),
            time_base=tuple(f.time_base for f in frames),
            source_id=frames[0].source_id,
            arrival=tuple(f.arrival for f in frames),
            before=stack(before),
            after=stack(after),
        )

    def model_input(self) -> tuple[np.ndarray, tuple[int, int]]:
        """The array a worker derains, context frames included, and how many lead and trail."""
        if self.before is None and self.after is None:
            return self.images, (0, 0)
        parts = [a for a in (self.before, self.images, self.after) if a is not None]
        return np.concatenate(parts), (0 if self.before is None else len(self.before),
                                       0 if self.after is None else len(self.after))

    def derained(self, images: np.ndarray, rain_intensity: np.ndarray) -> "FrameBatch":
        """The same batch after the worker: derained images, originals kept in `rainy`."""
        if len(images) != len(self):
            from .errors import WorkerError

            raise WorkerError(f"worker returned {len(images)} frames for a batch of {len(self)}")
        return replace(self, images=images, rainy=self.images, rain_intensity=rain_intensity,
                       before=None, after=None)

