"""Secrets kept out of the logs.

Every secret lingtan reads (the broker password, the InfluxDB token, the credentials and tokens
in an alert channel's URL) is registered here when it is read; the filter on the log handler
blanks each out of every record, whichever library logged it (apprise and urllib3 log whole
URLs at debug level).
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import parse_qsl, urlsplit

_MASK = "***"


class _Known:
    """The registered secrets, longest first (a secret inside another goes with it)."""

    lock = threading.Lock()
    secrets: tuple[str, ...] = ()


def register(*secrets: str) -> None:
    """Keep these out of every log record from now on (ones under 4 characters cannot be told
    from ordinary text and are not taken)."""
    with _Known.lock:
        known = set(_Known.secrets) | {s for s in secrets if len(s) >= 4}
        _Known.secrets = tuple(sorted(known, key=len, reverse=True))


def url_secrets(url: str) -> list[str]:
    """What in a URL is a secret: the user name and password, path segments and query values
    long enough to be tokens, and a host that is a token (apprise puts DingTalk's, Slack's and
    others' tokens where a host name goes)."""
    parts = urlsplit(url)
    found = [parts.username or "", parts.password or ""]
    found += [s for s in parts.path.split("/") if len(s) >= 6]
    found += [v for _, v in parse_qsl(parts.query) if len(v) >= 6]
    host = parts.hostname or ""
    if len(host) >= 6 and "." not in host and ":" not in host and host != "localhost":
        found.append(host)
    return [s for s in found if s]


def redact(text: str, secrets: tuple[str, ...] | None = None) -> str:
    """`text` with every registered secret (or the given ones) replaced by ***."""
    for s in _Known.secrets if secrets is None else secrets:
        if s in text:
            text = text.replace(s, _MASK)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter that blanks registered secrets out of the message and the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _Known.secrets:
            return True
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = redact(text), None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
