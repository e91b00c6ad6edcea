"""Delivery through apprise: one worker thread per channel, retries with backoff, a timeout.

Each channel drains its own rows of the outbox in order. A failed attempt is retried after a
doubling, jittered wait; a hung endpoint is given up after the channel's timeout and retried
like any failure. A slow or dead channel holds up only its own messages, never another
channel's and never the caller (the engine only writes the outbox and wakes the workers).
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import apprise

from rules.alerts.config import AlertsConfig, Channel, Retry
from rules.alerts.store import AlertStore
from telemetry import redact
from telemetry.timeutil import now_ms

log = logging.getLogger(__name__)


class ChannelError(ValueError):
    """A channel that cannot be used; the message never contains its URL."""


def channel_url(
    name: str, ch: Channel, base_dir: Path | None = None, env: Mapping[str, str] | None = None
) -> str:
    """The channel's apprise URL, read now from its environment variable or file."""
    env = os.environ if env is None else env
    if ch.url_env is not None:
        url = env.get(ch.url_env, "").strip()
        if not url:
            raise ChannelError(
                f"alerts.channels.{name}: environment variable {ch.url_env} is not set"
            )
    else:
        assert ch.url_file is not None
        path = ch.url_file
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            url = path.read_text("utf-8").strip()
        except OSError as exc:
            raise ChannelError(
                f"alerts.channels.{name}: cannot read url_file {path}: {exc.strerror}"
            ) from None
        if not url:
            raise ChannelError(f"alerts.channels.{name}: url_file {path} is empty")
    redact.register(*redact.url_secrets(url))  # apprise and urllib3 log whole URLs
    if apprise.Apprise.instantiate(url) is None:
        scheme = url.split("://", 1)[0] if "://" in url else "(none)"
        where = f"${ch.url_env}" if ch.url_env else str(ch.url_file)
        raise ChannelError(
            f"alerts.channels.{name}: the URL in {where} is not one apprise can use "
            f"(scheme {scheme!r}; see https://appriseit.com/services/)"
        )
    return url


def _with_timeouts(url: str, timeout_s: float) -> str:
    """Give apprise's connect (cto) and read (rto) timeouts unless the URL sets its own."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    have = {k for k, _ in query}
    query += [(k, f"{timeout_s:g}") for k in ("cto", "rto") if k not in have]
    return urlunsplit(parts._replace(query=urlencode(query)))


def scrub(text: str, url: str) -> str:
    """`text` with the URL's credentials, tokens and keys blanked out."""
    return redact.redact(text, tuple(sorted(set(redact.url_secrets(url)), key=len, reverse=True)))


@dataclass(frozen=True)
class Delivery:
    """How one attempt went."""

    ok: bool
    error: str = ""


def send_once(url: str, title: str, body: str, notify_type: str, timeout_s: float) -> Delivery:
    """One attempt through apprise; the error (if any) with the URL's secrets blanked out."""
    # A fresh Apprise object per attempt: apprise paces the messages of one plugin object
    # (5.5 s apart for most chat plugins) by sleeping; the outbox already paces a channel.
    sender = apprise.Apprise()
    if not sender.add(_with_timeouts(url, timeout_s)):
        return Delivery(False, "apprise does not accept the channel's URL")
    logs: list[str] = []
    try:
        result = sender.notify(
            body=body,
            title=title,
            notify_type=apprise.NotifyType(notify_type),
            body_format=apprise.NotifyFormat.TEXT,
            # connect and read may each take timeout_s; past both the attempt is over
            timeout=2 * timeout_s,
            log_callback=lambda entry, _svc: logs.append(str(entry.message)),
            log_level=logging.WARNING,
        )
    except Exception as exc:  # a plugin's crash is this channel's failure
        return Delivery(False, scrub(f"{type(exc).__name__}: {exc}", url))
    if result:
        return Delivery(True)
    detail = "; ".join(logs[-3:]) or f"apprise reported {result.status.name}"
    return Delivery(False, scrub(detail, url)[:500])


def backoff_s(attempts: int, retry: Retry) -> float:
    """Wait before the next attempt after `attempts` failed ones: doubling, capped, jittered."""
    base = min(retry.max_s, retry.initial_s * 2.0 ** max(0, attempts - 1))
    return float(base * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not cryptography


@dataclass
class ChannelStats:
    """What a channel worker has done since it started."""

    sent: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    last_error: str = ""
    attempts_log: list[tuple[int, bool]] = field(default_factory=list)  # (outbox id, ok)


Sender = Callable[[str, str, str, str, float], Delivery]


class _Worker(threading.Thread):
    """Delivers one channel's outbox rows in order."""

    def __init__(  # noqa: PLR0917 - one worker's whole setting
        self,
        name: str,
        url: str,
        timeout_s: float,
        store: AlertStore,
        retry: Retry,
        stop: threading.Event,
        send: Sender,
        poll_s: float,
    ) -> None:
        super().__init__(name=f"alerts-{name}", daemon=True)
        self.channel, self.url, self.timeout_s = name, url, timeout_s
        self.store, self.retry, self.stop_event, self.send = store, retry, stop, send
        self.poll_s = poll_s
        self.wake = threading.Event()
        self.stats = ChannelStats()

    def run(self) -> None:
        try:
            self._loop()
        except sqlite3.ProgrammingError:
            # the store was closed under a send that outlived stop(): the row stays pending
            if not self.stop_event.is_set():
                raise

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            msg = self.store.next_message(self.channel)
            if msg is None:
                self.wake.wait(self.poll_s)
                self.wake.clear()
                continue
            result = self.send(self.url, msg.title, msg.body, msg.notify_type, self.timeout_s)
            self.stats.attempts_log.append((msg.id, result.ok))
            if result.ok:
                self.store.sent(msg.id, now_ms())
                self.stats.sent += 1
                continue
            attempts = msg.attempts + 1
            give_up = attempts >= self.retry.attempts
            self.store.failed_attempt(msg.id, result.error, give_up=give_up, now_ms=now_ms())
            self.stats.failed_attempts += 1
            self.stats.last_error = result.error
            if give_up:
                self.stats.given_up += 1
                log.error(
                    "alerts: channel %s gave up on message %d after %d attempts: %s",
                    self.channel,
                    msg.id,
                    attempts,
                    result.error,
                )
                continue
            log.warning(
                "alerts: channel %s attempt %d failed: %s", self.channel, attempts, result.error
            )
            self.stop_event.wait(backoff_s(attempts, self.retry))


class Notifier:
    """The delivery threads of a site's channels, over the alerts database's outbox."""

    def __init__(
        self,
        cfg: AlertsConfig,
        store: AlertStore,
        *,
        base_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        send: Sender = send_once,
        poll_s: float = 5.0,
    ) -> None:
        problems, urls = [], {}
        for name, ch in cfg.channels.items():
            try:
                urls[name] = channel_url(name, ch, base_dir, env)
            except ChannelError as exc:
                problems.append(str(exc))
        if problems:
            raise ChannelError("; ".join(problems))
        self._stop = threading.Event()
        self.workers = {
            name: _Worker(
                name,
                urls[name],
                ch.timeout_s,
                store,
                cfg.retry,
                self._stop,
                send,
                poll_s,
            )
            for name, ch in cfg.channels.items()
        }

    def start(self) -> None:
        """Start every channel's thread."""
        for w in self.workers.values():
            w.start()

    def wake(self) -> None:
        """New messages are in the outbox."""
        for w in self.workers.values():
            w.wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the threads to stop and wait a while; a thread stuck in a send is left behind
        (it is a daemon, and its message stays in the outbox for the next start)."""
        self._stop.set()
        self.wake()
        for w in self.workers.values():
            if w.is_alive():
                w.join(timeout_s)

    def stats(self) -> dict[str, ChannelStats]:
        """Per channel: sent, failed attempts, given up, last error."""
        return {n: w.stats for n, w in self.workers.items()}


@dataclass(frozen=True)
class TestResult:
    """How a channel took the test message."""

    channel: str
    ok: bool
    error: str = ""


def send_test(
    site_id: str,
    site_name: str,
    cfg: AlertsConfig,
    *,
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> list[TestResult]:
    """Send one test message through every channel at once; each channel's outcome."""
    title = f"[test] lingtan alerts for {site_name or site_id}"

    def one(name: str) -> TestResult:
        ch = cfg.channels[name]
        try:
            url = channel_url(name, ch, base_dir, env)
        except ChannelError as exc:
            return TestResult(name, False, str(exc))
        body = (
            f"A test message from lingtan for site {site_id} through channel {name!r}. "
            "If you read this, alerts reach you here."
        )
        r = send_once(url, title, body, "info", ch.timeout_s)
        return TestResult(name, r.ok, r.error)

    names = list(cfg.channels)
    if not names:
        return []
    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="alerts-test") as pool:
        return list(pool.map(one, names))
