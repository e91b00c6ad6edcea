"""The `ingest:` section of a site config: where readings are stored."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from telemetry.config import read_secret, reject_inline_secrets, reject_url_credentials
from telemetry.sample import Ident


class SqliteConfig(BaseModel):
    """The embedded time-series store (the default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The store's file (relative to the config's folder).
    path: Path = Path("var/lingtan.sqlite")
    # Readings older than this are deleted (checked hourly); unset keeps everything.
    # At most 100 years: the cutoff is an epoch-ms integer SQLite compares (64 bits).
    retention_days: Annotated[int, Field(ge=1, le=36_500)] | None = None


class InfluxConfig(BaseModel):
    """InfluxDB (2.x, 3 Core, Cloud, 1.8+) or a server that speaks its v2 write API."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The server's base URL (http:// or https://, no credentials); written through /api/v2/write.
    url: str
    # InfluxDB 2.x / Cloud organisation (ignored by 1.8 and 3 Core).
    org: str = "lingtan"
    # The bucket to write to (InfluxDB 1.8: database/retention-policy; 3 Core: the database).
    bucket: str = "lingtan"
    # Environment variable holding the API token (1.8: user:password).
    token_env: str | None = None
    # File holding the API token.
    token_file: Path | None = None
    # Seconds a write may take before it is retried.
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    # One write request holds at most this many lines and bytes (a 413 still splits it).
    lines_per_request: Annotated[int, Field(ge=1, le=1_000_000)] = 5000
    # The bytes limit, counted as characters of line protocol with newlines (a longer line is
    # sent alone).
    bytes_per_request: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024

    _check_secrets = model_validator(mode="before")(reject_inline_secrets)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return reject_url_credentials(v, "'token_env' or 'token_file'").rstrip("/")

    def token(self) -> SecretStr | None:
        """The API token, read now from the environment or a file."""
        return read_secret(self.token_env, self.token_file, "influxdb token")


class IngestConfig(BaseModel):
    """How ingest consumes the broker and where it writes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Fixed: the broker keeps this client's session (and its queued messages) while it is away.
    client_id: Ident = "lingtan-ingest"
    # Several ingest processes with the same group split the load (MQTT 5 shared subscription).
    share_group: Ident | None = None
    # The embedded store; written when set, and by default when no InfluxDB is configured.
    sqlite: SqliteConfig | None = None
    # The time-series database; both stores are written when both are set.
    influxdb: InfluxConfig | None = None
    # Dedupe window and self-metric seq; default var/{client_id}.state.sqlite
    state_path: Path | None = None
    # Seen seq ranges kept per device (one per gap in its seqs); see ingest/dedupe.py.
    dedupe_ranges: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    # A batch closes at this many messages or this long after its first message.
    batch_messages: Annotated[int, Field(ge=1, le=100_000)] = 2000
    # The longest a batch waits for more messages after its first one.
    batch_wait_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    # Messages unacknowledged at once (MQTT 5 Receive Maximum: the broker sends no more until
    # ingest acknowledges): the bound on ingest's memory while a sink is down.
    max_pending: Annotated[int, Field(ge=10, le=65_535)] = 10_000
    # Readings stamped further ahead than this are refused (a device clock gone wrong).
    max_future_s: Annotated[int, Field(ge=0)] = 300
    # Readings stamped older than this are refused (a device clock gone wrong).
    max_age_days: Annotated[int, Field(ge=1)] = 3650
    # Sites this ingest accepts; empty means the site of this config only.
    sites: list[Ident] = Field(default_factory=list)
    # Devices accepted per site; a site not listed accepts any device.
    devices: dict[Ident, list[Ident]] = Field(default_factory=dict)
    # Self-metrics: a Prometheus endpoint (off unless a port is given) and Samples every
    # health_interval_s as device `device_name` (default ingest-{client_id}).
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    # The address the Prometheus endpoint listens on (0.0.0.0: every interface).
    metrics_host: str = "127.0.0.1"
    # Seconds between ingest's own health Samples (none sent while the broker is away).
    health_interval_s: Annotated[float, Field(gt=0)] = 10.0
    # The device id ingest's own Samples carry; unset: ingest-{client_id}, cut to 64.
    device_name: Ident | None = None

    @property
    def embedded(self) -> SqliteConfig | None:
        """The embedded store's settings, or None when only InfluxDB is written."""
        if self.sqlite is not None:
            return self.sqlite
        return SqliteConfig() if self.influxdb is None else None

    @property
    def self_device(self) -> str:
        """The device name ingest's own Samples carry."""
        return self.device_name or f"ingest-{self.client_id}"[:64]
