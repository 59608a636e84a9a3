"""One stream's clock across the jumps of the formats that allow them.

MPEG-TS and MPEG-PS (FFmpeg's AVFMT_TS_DISCONT) carry no file-wide clock: two recordings cut
together, or a camera whose clock restarted, jump back or far ahead mid-file. Written as they
are, the frames after a jump back got timestamps one tick apart (the encoder needs rising ones),
so half a clip played in a millisecond, and copied audio made the muxer fail. As ffmpeg does
for these formats, a timestamp that goes back by more than BACK_S, or forward by more than
JUMP_S, continues the stream where it was instead. Each stream (the video as decoded, each audio
track as copied) keeps its own clock: at a join the audio follows on from where the first part's
audio ended, the video from where its video ended, so the second part's audio is off by the
difference between those ends (tens of ms for whole recordings). ffmpeg keeps one offset per file
instead; doing so here would take the two readers one shared clock.
"""
from __future__ import annotations

from fractions import Fraction

TS_DISCONT = 0x0200  # AVFMT_TS_DISCONT: the format's timestamps may jump
JUMP_S = 10.0  # ffmpeg's dts_delta_threshold: a forward step this long is a jump, not a gap
BACK_S = 0.1  # a step back shorter than this is a reordering glitch, left to the writer's rising-pts rule


def may_jump(container) -> bool:
    """Whether `container`'s format lets timestamps jump (MPEG-TS, MPEG-PS)."""
    return bool(container.format.flags & TS_DISCONT)


class Continuity:
    """Maps one stream's timestamps to a clock without jumps; `jumps` counts those mended."""

    def __init__(self, on: bool = True):
        self.on, self.offset, self.last, self.jumps = on, 0, None, 0

    def __call__(self, ts: int | None, time_base: Fraction, step: int) -> int | None:
        """`ts` (in `time_base`) on the continuous clock; `step`: one frame's (or packet's) ticks."""
        if not self.on or ts is None:
            return ts
        out = ts + self.offset
        if self.last is not None and ((self.last - out) * time_base > BACK_S or (out - self.last) * time_base > JUMP_S):
            self.offset += self.last + max(step, 1) - out
            out, self.jumps = self.last + max(step, 1), self.jumps + 1
        self.last = out
        return out
