"""InfluxDB sink: line protocol built as strings, written synchronously in batches (v2 write API).

Schema (bounded cardinality: tags come from config identifiers, never from values):
  measurement `meter`   - device readings; tags site, device, quality;
                          fields: one per quantity, plus seq (integer)
  measurement `derived` - figures from rules; same tags and fields
Timestamps are epoch milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision

from ingest.config import InfluxConfig
from telemetry.sample import Sample

DERIVED_MEASUREMENT = "derived"
METER_MEASUREMENT = "meter"


def line(sample: Sample, measurement: str) -> str:
    """One line of line protocol for a Sample (identifiers need no escaping: see Ident)."""
    fields = ",".join(f"{q}={v!r}" for q, v in sample.values.items())
    return (
        f"{measurement},site={sample.site},device={sample.device},"
        f"quality={sample.quality.value} {fields},seq={sample.seq}i {sample.ts}"
    )


class InfluxSink:
    """Writes batches of lines; raises on failure so the caller keeps the batch and retries."""

    def __init__(self, cfg: InfluxConfig, *, lines_per_request: int = 5000) -> None:
        self.cfg = cfg
        token = cfg.token()
        self._client = InfluxDBClient(
            url=cfg.url,
            token=token.get_secret_value() if token else "",
            org=cfg.org,
            timeout=int(cfg.timeout_s * 1000),
        )
        self._write = self._client.write_api(write_options=SYNCHRONOUS)
        self.lines_per_request = lines_per_request

    def write(self, lines: Sequence[str]) -> None:
        """Write all lines, in requests of at most `lines_per_request`."""
        for i in range(0, len(lines), self.lines_per_request):
            self._write.write(
                bucket=self.cfg.bucket,
                org=self.cfg.org,
                record="\n".join(lines[i : i + self.lines_per_request]),
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]
            )

    def close(self) -> None:
        """Release the HTTP pool."""
        self._client.close()  # type: ignore[no-untyped-call]
