"""A file's decoder and encoder in a child process of their own, frames crossing in shared memory.

One interpreter cannot feed a GPU: decoding, the rgb24 conversions and encoding of a 1080p
stream take ~15 ms of CPU a frame, and with several streams (or a model thread) in one
process they queue on its GIL. Here each file gets a child process that runs the same
`open_source` and `open_sink` as a run in-process, so the codec side grows with the cores,
while the parent keeps the one model and batches every lane (`Runner`). DeepStream and
Savant split the work the same way: codec elements apart from the one inference element.

What crosses: decoded frames into the parent through a ring of frame-sized slots in a
memory-mapped file (/dev/shm where it has room), derained batches back through another; only
slot numbers and timestamps go through the pipes (`Channel`: one way each, each process
holding only its own end, so a death on either side is an EOF or a broken pipe at once). A
child that dies is a `WorkerError` naming the file and its partial output is removed; a
child whose parent died (or that multiprocessing ends at the parent's exit) removes it and
leaves. In the child a decoder thread fills the first ring, an intake thread empties the
second into a short queue as batches arrive, and the main thread encodes from that queue.
"""
from __future__ import annotations

import logging
import logging.handlers
import mmap
import multiprocessing as mp
import os
import queue as queue_mod
import re
import secrets
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import trace
from .colour import I420
from .errors import DerainError, InputError, OutputError, WorkerError
from .frames import Frame, FrameBatch
from .settings import DecodeSettings, EncodeSettings

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often a wait looks whether the other side is still there
READY_TIMEOUT_S = 120.0  # a child that has not opened its input and output by then is given up
STALL_S = 600.0  # a child silent this long while it decodes or encodes is stuck (a decoder looping on a
# damaged file, a stopped process): given up. Its encoder side says it is alive every STALL_S / 4 however
# slow the encode (x265 placebo's flush at 4K), so what is measured there is a process that stopped.


@dataclass(frozen=True)
class _Job:
    src: str
    dst: str
    decode: DecodeSettings
    encode: EncodeSettings
    overwrite: bool
    token: str | None
    ring_in: str
    ring_out: str
    slots_in: int
    slots_out: int
    shape: tuple[int, ...]
    parent: int
    layout: str
    source_id: str


class Channel:
    """One way, one pipe, no feeder thread (as a multiprocessing.Queue has): a message is on its
    way when `put` returns, so a frame's slot comes back without waiting on another thread.

    Each process keeps only its own end (`keep`), so a side that dies is an EOF or a broken
    pipe at once for the other, even in the middle of a message."""

    def __init__(self, ctx):
        self._recv, self._send = ctx.Pipe(duplex=False)
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"_recv": self._recv, "_send": self._send}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def keep(self, end: str) -> None:
        """Close the other end ("recv" or "send" is kept): the other process holds it."""
        other = "_send" if end == "recv" else "_recv"
        getattr(self, other).close()

    def put(self, message, block: bool = True) -> None:
        """Send; with `block` False, skip it if another send is under way (a signal handler's stop
        must never wait on a send its own thread was in the middle of)."""
        if not self._lock.acquire(blocking=block):
            return
        try:  # several threads may send (a frame's slot, a stop)
            self._send.send(message)
        finally:
            self._lock.release()

    def get(self, timeout: float | None = None):
        if not self._recv.poll(timeout):
            raise queue_mod.Empty
        return self._recv.recv()

    def get_nowait(self):
        return self.get(0)

    def close(self) -> None:
        for end in (self._recv, self._send):
            end.close()


class Ring:
    """`slots` frame-sized arrays over one memory-mapped file both processes open."""

    def __init__(self, path: str, slots: int, shape: tuple[int, ...], create: bool = False):
        self.path, self.slots, self.shape = path, slots, shape
        size = max(1, slots * int(np.prod(shape)))
        fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
        try:
            if create:
                os.posix_fallocate(fd, 0, size)  # no room fails here, not as a SIGBUS mid-run
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.frames = np.frombuffer(self._map, np.uint8, slots * int(np.prod(shape))).reshape(slots, *shape)

    def fits(self, image: np.ndarray) -> bool:
        return image.shape == self.shape

    def close(self) -> None:
        self.frames = None
        try:
            self._map.close()
        except BufferError:  # a view still held somewhere: the mapping goes with the process
            pass


RING_BYTES = 256 * 2**20  # at most this much per ring: 4K frames get fewer slots


def ring_slots(max_batch: int, frame_bytes: int) -> tuple[int, int]:
    """Slots for decoded frames (running ahead of a batch) and for derained ones (behind it):
    two batches and 16 frames at least, within RING_BYTES, never fewer than two batches."""
    cap = max(2, RING_BYTES // max(frame_bytes, 1))
    ahead = max(2 * max_batch, min(max(2 * max_batch + 8, 16), cap))
    behind = max(2 * max_batch, min(16, cap))
    return ahead, behind


def ring_folder(nbytes: int) -> str:
    """/dev/shm where it holds `nbytes` (a container's is often 64 MB), else the temp folder."""
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize > 2 * nbytes:
            return shm
    except OSError:
        pass
    return tempfile.gettempdir()


RING_NAME = re.compile(r"derain-(\d+)-[0-9a-f]{8}\.(?:in|out)")  # derain-<creator's pid>-<hex>.in|out
STALE_RING_S = READY_TIMEOUT_S + 60  # a ring's names go once its child opened it; its maker waits that long at most


def sweep_stale_rings() -> None:
    """Rings whose names outlived the process that made them: a process killed between making
    its rings and its child's opening them (an archive's file worker that Ray kills at Ctrl-C)
    left them in /dev/shm, memory held until a reboot. Each codec process's start removes those
    of processes gone for good and older than STALE_RING_S, in both places `ring_folder` uses:
    past that age even a ring of another pid namespace (a container sharing /dev/shm) was given up."""
    from .sinks.files import pid_alive

    now = time.time()
    for folder in {"/dev/shm", tempfile.gettempdir()}:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            found = RING_NAME.fullmatch(name)
            if not found or pid_alive(int(found.group(1))):
                continue
            path = os.path.join(folder, name)
            try:
                if now - os.stat(path).st_mtime > STALE_RING_S:
                    os.unlink(path)
            except OSError:  # another process swept it, or it is not ours to remove
                pass


class CodecProcess:
    """Starts the child for (src, dst); `source` and `sink` are what a `Runner` lane uses.

    Raises InputError for an unreadable input at once (probed here), and from `ready()` the
    child's InputError / OutputError (an output that exists, an encoder that refuses the size).
    """

    def __init__(self, src: str | Path, dst: str | Path, decode: DecodeSettings, encode: EncodeSettings,
                 overwrite: bool = False, token: str | None = None, max_batch: int = 8, source_id: str = "0",
                 probe=None, layout: str = "rgb"):
        from .sinks.files import temp_token
        from .sources.files import open_source

        token = token or temp_token()  # this side knows the partial output's name, to remove it if the child dies
        self.token = token
        if probe is None:
            probe = open_source(src, threads=1, fps=decode.fps, source_id=source_id, hardware="off")
        self.src, self.dst, self.info = str(src), str(dst), probe.info
        self.source = _ChildSource(self, probe.warnings, source_id)
        self.sink = _ChildSink(self)
        self.layout = layout  # "rgb", or yuv420p planes (pipeline.colour): half the bytes, no conversion here
        shape = ((self.info.height * 3 // 2, self.info.width) if layout == I420 else
                 (self.info.height, self.info.width, 3))
        slots_in, slots_out = ring_slots(max_batch, int(np.prod(shape)))
        sweep_stale_rings()
        folder = ring_folder((slots_in + slots_out) * int(np.prod(shape)))
        stem = os.path.join(folder, f"derain-{os.getpid()}-{secrets.token_hex(4)}")
        self.ring_in = self.ring_out = None
        try:
            self.ring_in = Ring(stem + ".in", slots_in, shape, create=True)
            self.ring_out = Ring(stem + ".out", slots_out, shape, create=True)
        except OSError as exc:
            for path in (stem + ".in", stem + ".out"):
                Path(path).unlink(missing_ok=True)
            raise WorkerError(f"{self.src}: no room for its codec process's frame buffers in {folder} "
                              f"({(slots_in + slots_out) * int(np.prod(shape)) >> 20} MB: {exc.strerror})") from None
        self.channels: list[Channel] = []
        self.process = self.relay = None
        try:
            self._start(decode, encode, overwrite, token, slots_in, slots_out, shape, source_id)
        except BaseException:  # no child: nothing of this one may stay (rings, pipes, a relay)
            self._closed = True
            for channel in self.channels:
                channel.close()
            self.shutdown()
            raise
        self._ready = False
        self._closed = False
        self._opening_error: BaseException | None = None  # what the child could not open (it has left)

    def _start(self, decode, encode, overwrite, token, slots_in, slots_out, shape, source_id) -> None:
        ctx = mp.get_context("spawn")  # never fork a process that holds CUDA and threads
        for _ in range(5):
            self.channels.append(Channel(ctx))
        # decoded frames up and their slots back down; batches to encode down and written slots up;
        # the child's log records (pipes: no semaphore that a killed worker would leak)
        self.frames, self.free_in, self.work, self.done, self.logs = self.channels
        for slot in range(slots_in):
            self.free_in.put(slot)
        self.free_out = list(range(slots_out))
        job = _Job(self.src, self.dst, decode, encode, overwrite, token, self.ring_in.path, self.ring_out.path,
                   slots_in, slots_out, shape, os.getpid(), self.layout, source_id)
        self.process = ctx.Process(target=_child_main, args=(job, self.frames, self.free_in, self.work, self.done,
                                                             self.logs), name=f"derain-codec-{source_id}", daemon=True)
        self.process.start()
        self.relay = threading.Thread(target=_relay, args=(self.logs,), daemon=True, name="codec-logs")
        self.relay.start()
        for channel in (self.frames, self.done, self.logs):
            channel.keep("recv")
        for channel in (self.free_in, self.work):
            channel.keep("send")

    def ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until the child has opened its input and output; raise what it could not open."""
        if self._ready:
            return
        try:
            kind, *rest = self._get(self.done, timeout_s, "opening")
        except WorkerError as exc:  # silent or dead: close() will not wait for it either
            self._opening_error = exc
            raise
        if kind == "error":
            self._opening_error = rest[0]
            raise rest[0]
        self.sink.warnings = rest[0]
        self._ready = True
        for path in (self.ring_in.path, self.ring_out.path):  # both sides hold them open: the names can go
            Path(path).unlink(missing_ok=True)

    def _get(self, q, timeout_s: float | None, doing: str):
        """The next message from the child, or a WorkerError if it died (or said nothing in time)."""
        silent = 0.0  # counted in polls, not by the clock: a parent stopped (Ctrl-Z) and resumed is not its child's silence
        while True:
            try:
                return q.get(timeout=POLL_S)
            except queue_mod.Empty:
                silent += POLL_S
            except (EOFError, OSError):  # the child's end closed: it is gone, maybe mid-message
                raise self._died(doing) from None
            if not self.process.is_alive():
                try:
                    return q.get(timeout=POLL_S)  # its last words, sent just before it ended
                except (queue_mod.Empty, EOFError, OSError):
                    raise self._died(doing) from None
            if timeout_s is not None and silent > timeout_s:
                self._given_up = WorkerError(f"{self.src}: its codec process said nothing for {timeout_s:g} s "
                                             f"while {doing}")
                self.process.kill()  # later waits on it end at once (saying why), and its partial output goes
                raise self._given_up

    _given_up: WorkerError | None = None  # why this side killed the child, if it did

    def _died(self, doing: str) -> WorkerError:
        if self._given_up is not None:  # not a death of its own: the other waits say why it was killed
            return self._given_up
        # A killed child's pipes (and multiprocessing's sentinel) close a moment before the kernel
        # lets it be reaped, a moment that grows on a loaded machine: wait for its exit status.
        deadline = time.monotonic() + 5
        while self.process.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return WorkerError(f"{self.src}: its codec process died while {doing} (exit {self.process.exitcode})")

    def send(self, channel: Channel, message) -> None:
        """Send to the child, or a WorkerError if it is gone."""
        try:
            channel.put(message)
        except OSError:  # a broken pipe: the child's end closed
            raise self._died("taking frames") from None

    def shutdown(self) -> None:
        """Wait for the child to leave (or end it), then free the rings."""
        if self.process is not None and self.process.pid is not None:
            self.process.join(timeout=10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout=5)
        if self.relay is not None:
            self.relay.join(timeout=5)  # it ends at the log pipe's EOF, when the child has left
        for ring in (self.ring_in, self.ring_out):
            Path(ring.path).unlink(missing_ok=True)
            ring.close()
        for channel in self.channels:
            channel.close()


class _ChildSource:
    """The lane's source: frames the child decoded, copied out of the ring (its slot freed at once)."""

    def __init__(self, codec: CodecProcess, warnings: list[str], source_id: str):
        self.codec, self.warnings, self.source_id = codec, list(warnings), source_id
        self.truncated = False
        self._stop = threading.Event()

    @property
    def info(self):
        return self.codec.info

    def stop(self) -> None:
        """The decoder stops at its next frame. Said at once where no other send is under way (a
        signal handler never waits on one), else by the reader at the next frame, or by close."""
        self._stop.set()
        try:
            self.codec.free_in.put(None, block=False)
        except OSError:
            pass

    def __iter__(self):
        c = self.codec
        c.ready()
        while True:
            try:
                kind, *rest = c._get(c.frames, STALL_S, "decoding")
            except WorkerError:
                if c._closed:  # the run closed this lane's output while the reader still waited: over
                    return
                raise
            if kind == "end":  # with what the decode found to say (a truncated tail), logged there
                self.truncated = rest[0]
                self.warnings += [w for w in rest[1] if w not in self.warnings]
                return
            if kind == "error":
                raise rest[0]
            slot, seq, pts, tb, arrival, inline = rest
            image = inline if inline is not None else c.ring_in.frames[slot].copy()
            if inline is None:
                c.send(c.free_in, None if self._stop.is_set() else slot)
            trace.mark("read", c.src, (seq,))
            yield Frame(image, seq, pts, tb, self.source_id, arrival)


class _ChildSink:
    """The lane's sink: derained batches copied into the ring, encoded by the child."""

    def __init__(self, codec: CodecProcess):
        self.codec = codec
        self.warnings: list[str] = []

    def __repr__(self) -> str:
        return f"<encoder of {self.codec.dst} in a codec process>"

    def write(self, batch: FrameBatch) -> None:
        c = self.codec
        c.ready()
        self._take_done(block=False)
        slots, inline = [], []
        for image in batch.images:
            if not c.ring_out.fits(image):
                slots.append(None)
                inline.append(image)
                continue
            while not c.free_out:
                self._take_done(block=True)
            slot = c.free_out.pop()
            c.ring_out.frames[slot] = image
            slots.append(slot)
            inline.append(None)
        c.send(c.work, ("write", slots, inline, batch.seq, batch.pts, batch.time_base))

    def _close_child(self, ok: bool) -> BaseException | None:
        """Tell the child to close its output and wait until it has; the error that spoils the
        output, if any: a write's (said after the batch it broke), the close's, an opening's
        (the child then leaves without a word more), or its death."""
        c = self.codec
        try:
            c.send(c.free_in, None)
            c.send(c.work, ("close", ok))
            failed, opened = None, c._ready
            while True:
                msg = c._get(c.done, STALL_S, "closing the output")
                if msg[0] == "ready":
                    opened = True
                elif msg[0] == "error":
                    failed = failed or msg[1]
                    if not opened:  # it could not open its input or output, and has left
                        return failed
                elif msg[0] == "closed":
                    self.warnings = msg[1] or self.warnings  # the child's at close hold those at opening too
                    return failed or msg[2]
        except WorkerError as exc:
            return exc

    def _take_done(self, block: bool) -> None:
        """Take the child's news: slots it has copied (free again), or the error that ended its output."""
        c = self.codec
        while True:
            if block:
                msg = c._get(c.done, STALL_S, "encoding")
            else:
                try:
                    msg = c.done.get_nowait()
                except queue_mod.Empty:
                    return
                except (EOFError, OSError):  # the child's end closed
                    raise c._died("encoding") from None
            if msg[0] == "error":
                raise msg[1]
            c.free_out.extend(msg[1])
            if block:
                return

    def close(self, ok: bool = True) -> None:
        """Flush and publish (ok) or remove the partial output; then the child leaves."""
        c = self.codec
        if c._closed:
            return
        c._closed = True
        try:
            failed = self._close_child(ok) if c._opening_error is None else c._opening_error
            if ok and failed is not None:
                raise failed
        finally:
            c.shutdown()
            if c.process.exitcode != 0:  # a child that died (or was killed) left its partial output
                from .sinks.files import partial_path, remove_partial

                remove_partial(partial_path(c.dst, c.token))


_said: set[str] = set()  # hardware fallbacks said in this process (said once per run, not once per child)


def _relay(logs: Channel) -> None:
    """Say a child's log records through this process's loggers, as if the run were in-process."""
    while True:
        try:
            record = logs.get(POLL_S)
        except queue_mod.Empty:
            continue
        except (EOFError, OSError):
            return
        if record.name == "pipeline.hardware":
            if record.getMessage() in _said:
                continue
            _said.add(record.getMessage())
        logger = logging.getLogger(record.name)
        try:
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)
        except Exception:  # noqa: BLE001 - a failing handler must not stop the relay (the child would block)
            pass


# ---- the child ------------------------------------------------------------------------------------


def _child_main(job: _Job, frames, free_in, work, done, logs) -> None:
    for channel in (frames, done, logs):  # its own ends only: a parent gone is an EOF or a broken pipe
        channel.keep("send")
    for channel in (free_in, work):
        channel.keep("recv")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the parent decides
    signal.signal(signal.SIGTERM, lambda *_: _abandon(job))
    root = logging.getLogger()
    logs.put_nowait = logs.put  # what QueueHandler sends with
    root.handlers[:] = [logging.handlers.QueueHandler(logs)]
    root.setLevel(logging.INFO)
    from .sinks.files import open_sink
    from .sources.files import open_source

    ring_in = Ring(job.ring_in, job.slots_in, job.shape)
    ring_out = Ring(job.ring_out, job.slots_out, job.shape)
    for path in (job.ring_in, job.ring_out):  # both sides hold them open: the names can go, whoever dies
        Path(path).unlink(missing_ok=True)
    quiet = logging.getLogger("pipeline.sources.files")
    try:
        quiet.disabled = True  # the parent's probe said the input's warnings already
        try:
            source = open_source(job.src, threads=job.decode.thread_count(), fps=job.decode.fps,
                                 hardware=job.decode.hardware, layout=job.layout, source_id=job.source_id)
        finally:
            quiet.disabled = False
    except BaseException as exc:  # noqa: BLE001 - said to the parent, which raises it
        done.put(("error", _portable(exc, job.src, InputError)))
        return
    try:
        sink = open_sink(job.dst, source.info, job.encode, overwrite=job.overwrite, token=job.token)
    except BaseException as exc:  # noqa: BLE001 - said to the parent, which raises it
        done.put(("error", _portable(exc, job.dst, OutputError)))
        return
    try:
        done.put(("ready", list(getattr(sink, "warnings", []))))
    except OSError:  # the parent died while this side opened
        sink.close(ok=False)
        return
    threading.Thread(target=_decode, args=(job, source, ring_in, frames, free_in), daemon=True).start()
    threading.Thread(target=_alive_beat, args=(done,), daemon=True).start()
    _encode(job, sink, ring_out, work, done)


def _alive_beat(done) -> None:
    """An empty 'written' now and then: a slow encode or flush is not a stuck child (STALL_S)."""
    while True:
        time.sleep(STALL_S / 4)
        _say(done, ("written", []))


def _abandon(job: _Job) -> None:
    """SIGTERM (multiprocessing ends daemon children so when the parent exits without closing):
    the output will never be published, so its partial file goes, and so does this process."""
    from .sinks.files import partial_path, remove_partial

    remove_partial(partial_path(job.dst, job.token))
    os._exit(1)


def _parent_gone(job: _Job) -> bool:
    return os.getppid() != job.parent


def _decode(job: _Job, source, ring: Ring, frames, free_in) -> None:
    try:
        for frame in source:
            inline = None if ring.fits(frame.image) else frame.image
            slot = None
            if inline is None:
                slot = _wait(job, free_in)
                if slot is None:  # the parent stopped the run
                    source.stop()
                    break
                ring.frames[slot] = frame.image
            frames.put(("frame", slot, frame.seq, frame.pts, frame.time_base, frame.arrival, inline))  # raises if the parent is gone
        _say(frames, ("end", bool(getattr(source, "truncated", False)), list(getattr(source, "warnings", []))))
    except BaseException as exc:  # noqa: BLE001 - said to the parent, which raises it (if it is there)
        _say(frames, ("error", _portable(exc, job.src, InputError)))


def _say(channel: Channel, message) -> None:
    try:
        channel.put(message)
    except OSError:  # the parent is gone
        pass


def _wait(job: _Job, q):
    while True:
        try:
            return q.get(timeout=POLL_S)
        except (EOFError, OSError):
            return None  # the parent is gone: the encoder's side sees it too, and removes the partial output
        except queue_mod.Empty:
            if _parent_gone(job):
                return None


ENCODE_AHEAD = 4  # batches copied out of the ring, waiting for the encoder


def _encode(job: _Job, sink, ring: Ring, work, done) -> None:
    todo: queue_mod.Queue = queue_mod.Queue(ENCODE_AHEAD)
    threading.Thread(target=_intake, args=(job, ring, work, done, todo), daemon=True).start()
    failed = False
    while True:
        kind, *rest = todo.get()
        if kind == "gone":
            sink.close(ok=False)  # no one will publish it: remove the partial output
            os._exit(1)  # nothing left to say, and no one to read it
        if kind == "close":
            error = None
            try:
                sink.close(ok=rest[0] and not failed)
            except BaseException as exc:  # noqa: BLE001 - said to the parent, which raises it
                error = _portable(exc, job.dst, OutputError)
            _say(done, ("closed", list(getattr(sink, "warnings", [])), error))
            trace.flush()
            return
        if failed:
            continue
        try:
            sink.write(FrameBatch(*rest, source_id=job.source_id))
        except BaseException as exc:  # noqa: BLE001 - the parent raises it at its next write or close
            failed = True
            _say(done, ("error", _portable(exc, job.dst, OutputError)))


def _intake(job: _Job, ring: Ring, work, done, todo: queue_mod.Queue) -> None:
    """Copy each batch out of the ring the moment it arrives and give its slots back, so the parent
    waits for the encoder only once ENCODE_AHEAD batches wait here (and the ring is full)."""
    while True:
        try:
            msg = work.get(timeout=POLL_S)
        except queue_mod.Empty:
            if _parent_gone(job):
                todo.put(("gone",))
                return
            continue
        except (EOFError, OSError):  # the parent's end closed: it is gone
            todo.put(("gone",))
            return
        if msg[0] == "close":
            todo.put(msg)
            return
        _, slots, inline, seq, pts, tbs = msg
        images = np.stack([ring.frames[s] if s is not None else im for s, im in zip(slots, inline)])
        try:
            done.put(("written", [s for s in slots if s is not None]))
        except OSError:
            todo.put(("gone",))
            return
        todo.put(("write", images, tuple(seq), tuple(pts), tuple(tbs)))


def _portable(exc: BaseException, path: str, kind: type) -> BaseException:
    """`exc` if it survives pickling (derain's errors do), else a `kind` error with its text."""
    if isinstance(exc, DerainError) and len(exc.args) == 1:
        return exc
    return kind(f"{path}: {type(exc).__name__}: {exc}")
