"""Which signals end a run cleanly: one rule for the CLI and the runner."""
from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def stop_signals() -> tuple[int, ...]:
    """SIGTERM, and SIGHUP (a closed terminal or ssh session) unless this process was started to
    ignore it: `nohup derain ...` must outlive the terminal."""
    return tuple(sig for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN)
