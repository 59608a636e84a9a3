"""Camera passwords never shown: `rtsp://admin:s3cret@cam/stream` -> `rtsp://admin:***@cam/stream`.

As Prometheus does for its targets: the user name stays (it tells cameras apart), the
password goes, wherever a URL is shown or logged (the preview page, /stats.json, /metrics,
log lines, error messages). Query parameters that usually hold secrets (`password=`,
`token=`, ...) are masked the same way. The URL used to connect is never changed.
"""
from __future__ import annotations

import logging
import re

MASK = "***"

# scheme://user:password@ ; the password runs to the last '@' before the path, so an
# unencoded '@' in it (which cameras accept) is hidden too.
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s'\"]*):[^/?#\s'\"]*@")
_QUERY = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd|pass|token|access_token|secret|api_?key|key|auth|"
                    r"sig|signature)=)[^&;#\s'\"]+", re.IGNORECASE)


def redact(text: object) -> str:
    """`text` (a URL, an error message, a log line) with every URL password replaced by ***."""
    s = str(text)
    if "://" not in s and "=" not in s:
        return s
    s = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", s)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}", s)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts every record's final message (whatever logged it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the logging module's to report
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:  # tracebacks (--debug) carry messages too
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a RedactingFilter to every handler of `logger` (the root logger by default), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
