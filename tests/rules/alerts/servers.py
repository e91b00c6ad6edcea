"""Real servers for delivery tests: aiosmtpd for mail, stdlib http.server for webhooks."""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.servers import free_port


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.messages.append(msg)
        return "250 OK"


@dataclass
class Smtp:
    """An SMTP server on loopback and the mail it received."""

    port: int
    box: _Mailbox

    @property
    def messages(self) -> list[EmailMessage]:
        with self.box.lock:
            return list(self.box.messages)

    def url(self, to: str = "energy@example.com") -> str:
        return f"mailto://127.0.0.1:{self.port}?from=lingtan@example.com&to={to}&mode=insecure"


@contextmanager
def smtp_server() -> Iterator[Smtp]:
    """aiosmtpd on a free loopback port."""
    box = _Mailbox()
    port = free_port()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield Smtp(port, box)
    finally:
        ctl.stop()


@dataclass
class Request:
    """One request the HTTP server received."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Http:
    """A webhook endpoint on loopback.

    `fail_first` requests are answered 500; while `hold` is clear, requests are held
    unanswered (a hung endpoint) until it is set.
    """

    port: int
    requests: list[Request] = field(default_factory=list)
    arrived: list[Request] = field(default_factory=list)  # seen, answered or not
    fail_first: int = 0
    hold: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, scheme: str = "json", path: str = "/hook") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def answered(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def seen(self) -> list[Request]:
        with self.lock:
            return list(self.arrived)


@contextmanager
def http_server(*, fail_first: int = 0, hang: bool = False) -> Iterator[Http]:
    """A threaded HTTP server on a free loopback port; see Http."""
    sink = Http(free_port(), fail_first=fail_first)
    if not hang:
        sink.hold.set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            req = Request(self.path, dict(self.headers.items()), body)
            with sink.lock:
                sink.arrived.append(req)
            sink.hold.wait()
            with sink.lock:
                failing = len(sink.arrived) <= sink.fail_first
                if not failing:
                    sink.requests.append(req)
            self.send_response(500 if failing else 200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", sink.port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.hold.set()
        server.shutdown()
        server.server_close()
