"""An HTTP proxy in front of a real VictoriaMetrics that answers the way InfluxDB refuses writes.

VictoriaMetrics accepts every request (it skips lines it cannot parse and answers 204), and the
InfluxDB we can install here (1.6) has no v2 write API. So the refusals InfluxDB 2.x/3 and Cloud
send are injected by this proxy, which we control, while every accepted request goes through
to the real server:
  - a body over `max_body` bytes        -> 413, nothing written;
  - a body holding a `poison` line      -> 400 naming the line, nothing written (InfluxDB 2 OSS
                                           refuses a whole request on a bad line);
  - `throttle(n, retry_after)`          -> the next n requests get 429 with Retry-After;
  - `delay_s`                           -> every write is slow (to be killed in the middle).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson


@dataclass
class Faults:
    """What the proxy refuses, and what it saw."""

    upstream: str
    max_body: int = 1 << 30
    poison: str | None = None
    throttled: int = 0
    retry_after: str = "1"
    delay_s: float = 0.0  # every write takes at least this long (a slow database)
    seen: list[tuple[float, int, int]] = field(default_factory=list)  # (time, bytes, status)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def throttle(self, n: int, retry_after: str) -> None:
        """Answer the next n requests with 429 and this Retry-After."""
        with self.lock:
            self.throttled = n
            self.retry_after = retry_after

    def statuses(self) -> list[int]:
        """Status of every request so far, in order."""
        with self.lock:
            return [s for _, _, s in self.seen]


def _handler(faults: Faults) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                   size: int = 0) -> None:
            with faults.lock:
                faults.seen.append((time.monotonic(), size, status))
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            if body:
                self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            with urllib.request.urlopen(faults.upstream + self.path, timeout=10) as r:
                self._reply(r.status, r.read())

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if faults.delay_s:
                time.sleep(faults.delay_s)
            with faults.lock:
                throttled = faults.throttled > 0
                if throttled:
                    faults.throttled -= 1
            if throttled:
                self._reply(429, orjson.dumps({"code": "too many requests",
                                               "message": "write limit reached"}),
                            {"Retry-After": faults.retry_after}, len(body))
                return
            if len(body) > faults.max_body:
                self._reply(413, orjson.dumps({"code": "request too large",
                                               "message": "request body too large"}),
                            size=len(body))
                return
            if faults.poison is not None:
                for ln in body.decode().splitlines():
                    if faults.poison in ln:
                        msg = f"failure writing points: field type conflict: {ln[:60]}"
                        self._reply(400, orjson.dumps({"code": "invalid", "message": msg}),
                                    size=len(body))
                        return
            req = urllib.request.Request(faults.upstream + self.path, data=body, method="POST",
                                         headers={"Content-Type": "text/plain"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    self._reply(r.status, r.read(), size=len(body))
            except urllib.error.HTTPError as exc:
                self._reply(exc.code, exc.read(), size=len(body))

    return Handler


@contextmanager
def influx_faults(upstream: str) -> Iterator[tuple[str, Faults]]:
    """(url of the proxy, its fault settings) on a free loopback port."""
    faults = Faults(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(faults))
    thread = threading.Thread(target=server.serve_forever, name="influx-faults", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", faults
    finally:
        server.shutdown()
        server.server_close()
