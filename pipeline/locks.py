"""Advisory locks that keep two derain processes from writing the same outputs.

`flock` on a file or folder: released when the process ends, however it ends, so a crash
leaves nothing to clean up. A file system without locks runs unguarded, as before.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from .errors import OutputError


def hold(path: Path, taken: str, create: bool = False) -> int | None:
    """Lock `path` (a folder, or a file made if `create`) for this process; the descriptor to
    close when done (None where the file system has no locks). Raises OutputError(`taken`)
    while another process holds it."""
    try:
        fd = os.open(path, (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY, 0o644)
    except OSError as exc:
        raise OutputError(f"{path}: cannot open it to lock ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputError(taken) from None
    except OSError:
        os.close(fd)
        return None
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def held(path: Path, taken: str):
    """`hold` for the length of a `with` block."""
    fd = hold(path, taken)
    try:
        yield
    finally:
        release(fd)
