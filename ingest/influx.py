"""InfluxDB sink: line protocol built as strings, written synchronously in requests (v2 write API).

Schema (bounded cardinality: tags come from config identifiers, never from values):
  measurement `meter`   - device readings; tags site, device, quality;
                          fields: one per quantity (float), plus seq (integer)
  measurement `derived` - figures from rules; same tags and fields
Timestamps are epoch milliseconds.

What the server says decides what happens to a request:
  2xx              written
  413              too large: split in halves and write each
  400 (and 422)    something in it is refused: split until the refused lines stand alone;
                   those are returned to the caller (to dead-letter), the rest is written
  429, 503, other  the server cannot take it now: raise SinkUnavailable (with Retry-After
                   when the server sent one); the caller keeps the batch and tries again
Re-writing a line InfluxDB already holds overwrites the same point, so retrying and splitting
never double a value.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from urllib3.exceptions import HTTPError

from ingest.config import InfluxConfig
from telemetry.sample import Sample

DERIVED_MEASUREMENT = "derived"
METER_MEASUREMENT = "meter"


def line(sample: Sample, measurement: str) -> str:
    """One line of line protocol for a Sample (identifiers need no escaping: see Ident)."""
    # {"q1":1.5,"q2":2.0} -> q1=1.5,q2=2.0 : twice as fast as formatting each float. Safe
    # because quantity names are [a-z0-9_] (the wire model checks them) and the values are
    # finite numbers, which orjson writes in a form line protocol reads as a float.
    fields = orjson.dumps(sample.values)[2:-1].replace(b'":', b"=").replace(b',"', b",").decode()
    return (
        f"{measurement},site={sample.site},device={sample.device},"
        f"quality={sample.quality.value} {fields},seq={sample.seq}i {sample.ts}"
    )


class SinkUnavailable(Exception):
    """The database cannot take writes now; nothing of the request may be assumed written."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class RefusedLine:
    """A line the server refused on its own, with the server's words."""

    index: int
    reason: str


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), if usable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class InfluxSink:
    """Writes lines in requests bounded by count and bytes; see the module doc for errors."""

    def __init__(
        self,
        cfg: InfluxConfig,
        *,
        lines_per_request: int = 5000,
        bytes_per_request: int = 4 * 1024 * 1024,
    ) -> None:
        self.cfg = cfg
        token = cfg.token()
        self._client = InfluxDBClient(
            url=cfg.url,
            token=token.get_secret_value() if token else "",
            org=cfg.org,
            timeout=int(cfg.timeout_s * 1000),
            retries=False,  # we retry, knowing what a status means
        )
        self._write = self._client.write_api(write_options=SYNCHRONOUS)
        self.lines_per_request = lines_per_request
        self.bytes_per_request = bytes_per_request
        self.requests = 0
        self.splits = 0

    def write(self, lines: Sequence[str]) -> list[RefusedLine]:
        """Write all lines; return those the server refused one by one (index into `lines`)."""
        refused: list[RefusedLine] = []
        start = 0
        size = 0
        for i, text in enumerate(lines):
            n = len(text) + 1
            full = i - start >= self.lines_per_request or size + n > self.bytes_per_request
            if i > start and full:
                self._write_range(lines, start, i, refused)
                start, size = i, 0
            size += n
        if start < len(lines):
            self._write_range(lines, start, len(lines), refused)
        return refused

    def _write_range(
        self, lines: Sequence[str], lo: int, hi: int, refused: list[RefusedLine]
    ) -> None:
        status, reason = self._post(lines[lo:hi])
        if status is None:
            return
        if status == 413 or status in (400, 422):
            if hi - lo == 1:
                refused.append(RefusedLine(lo, f"HTTP {status}: {reason}"))
                return
            self.splits += 1
            mid = (lo + hi) // 2
            self._write_range(lines, lo, mid, refused)
            self._write_range(lines, mid, hi, refused)
            return
        raise AssertionError(status)  # _post raises for every other status

    def _post(self, lines: Sequence[str]) -> tuple[int | None, str]:
        """(None, '') when written; (status, server message) for a refusal worth splitting."""
        self.requests += 1
        try:
            self._write.write(
                bucket=self.cfg.bucket,
                org=self.cfg.org,
                record="\n".join(lines),
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]
            )
            return None, ""
        except InfluxDBError as exc:
            status = getattr(exc, "status", None)
            message = exc.message or str(getattr(exc, "reason", "") or "")
            if status in (400, 413, 422):
                return int(status), message
            retry = retry_after_seconds(exc.retry_after)
            if status in (401, 403) and not message.strip():
                message = (
                    "the token was refused; check ingest.influxdb.token_env or token_file "
                    "and the token's write permission on the bucket"
                )
            raise SinkUnavailable(
                f"InfluxDB at {self.cfg.url} answered HTTP {status}: {message}", retry
            ) from None
        except (HTTPError, OSError) as exc:
            raise SinkUnavailable(f"InfluxDB at {self.cfg.url} unreachable: {exc}") from None

    def ping(self) -> None:
        """Raise SinkUnavailable unless the server answers /ping."""
        try:
            ok = self._client.ping()
        except Exception as exc:  # the client wraps transport errors in several types
            raise SinkUnavailable(f"InfluxDB at {self.cfg.url} unreachable: {exc}") from None
        if not ok:
            raise SinkUnavailable(f"InfluxDB at {self.cfg.url} did not answer /ping")

    def close(self) -> None:
        """Release the HTTP pool."""
        self._client.close()  # type: ignore[no-untyped-call]
