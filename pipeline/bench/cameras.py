"""A local RTSP test camera as a child process, for `derain bench --live` and the live tests.

Runs `rtsp_server.py` (GStreamer's rtsp-server) under the system's python3, which has
python3-gi; the venv does not. The camera can be killed, restarted on the same port, and
paused (SIGSTOP) to simulate a stalled one.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..errors import DerainError

SCRIPT = Path(__file__).with_name("rtsp_server.py")


def system_python() -> str:
    """Debian's python3 (with gi), not the venv's."""
    for candidate in ("/usr/bin/python3", shutil.which("python3") or ""):
        if candidate and Path(candidate).exists():
            return candidate
    raise DerainError("no system python3 with python3-gi found (apt-get install python3-gi "
                      "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-ugly gstreamer1.0-x ...)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspCamera:
    """A GStreamer RTSP server on 127.0.0.1 serving test-pattern H.264 on each mount.

    Args:
        port: the port (0: a free one, kept across restarts).
        size: "WxH"; fps: frame rate; mounts: path names (rtsp://127.0.0.1:PORT/NAME), H.264;
        mjpeg_mounts: more, serving Motion JPEG (an SDP that leaves the picture size out).
    """

    def __init__(self, port: int = 0, size: str = "160x120", fps: int = 25, mounts: tuple[str, ...] = ("cam",),
                 record_mount: str = "", mjpeg_mounts: tuple[str, ...] = ()):
        self.port = port or free_port()
        self.size, self.fps, self.mounts, self.record_mount = size, fps, mounts, record_mount
        self.mjpeg_mounts = mjpeg_mounts
        self.proc: subprocess.Popen | None = None

    def url(self, mount: str | None = None) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount or self.mounts[0]}"

    def start(self, timeout_s: float = 20.0) -> "RtspCamera":
        cmd = [system_python(), str(SCRIPT), "--port", str(self.port), "--size", self.size, "--fps", str(self.fps),
               "--mounts", ",".join(self.mounts), "--record-mount", self.record_mount,
               "--mjpeg-mounts", ",".join(self.mjpeg_mounts)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout_s
        line = self.proc.stdout.readline()  # "READY ..." once it listens
        if not line.startswith("READY") or time.monotonic() > deadline:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.stop()
            raise DerainError(f"RTSP test camera did not start on port {self.port}: {line.strip()} {err.strip()}")
        return self

    def kill(self) -> None:
        """Die at once, as a camera losing power (no RTSP TEARDOWN)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections stay open but nothing arrives, as a stalled camera."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> "RtspCamera":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
