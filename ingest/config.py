"""The `ingest:` section of a site config: where readings are stored."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from telemetry.config import read_secret, reject_inline_secrets
from telemetry.sample import Ident


class SqliteConfig(BaseModel):
    """The embedded time-series store (the default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path = Path("var/lingtan.sqlite")


class InfluxConfig(BaseModel):
    """InfluxDB (2.x, 3 Core, Cloud, 1.8+) or a server that speaks its v2 write API."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    org: str = "lingtan"
    bucket: str = "lingtan"
    token_env: str | None = None
    token_file: Path | None = None
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0

    _check_secrets = model_validator(mode="before")(reject_inline_secrets)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return v.rstrip("/")

    def token(self) -> SecretStr | None:
        """The API token, read now from the environment or a file."""
        return read_secret(self.token_env, self.token_file, "influxdb token")


class IngestConfig(BaseModel):
    """How ingest consumes the broker and where it writes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: Ident = "lingtan-ingest"
    sqlite: SqliteConfig = SqliteConfig()
    influxdb: InfluxConfig | None = None
    # A batch closes at this many messages or this long after its first message.
    batch_messages: Annotated[int, Field(ge=1, le=100_000)] = 2000
    batch_wait_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    # Messages held in memory between the broker and the sink; beyond it ingest stops reading.
    max_pending: Annotated[int, Field(ge=10, le=1_000_000)] = 10_000
    # Readings stamped further ahead than this are refused (a device clock gone wrong).
    max_future_s: Annotated[int, Field(ge=0)] = 300
    max_age_days: Annotated[int, Field(ge=1)] = 3650
    # Sites this ingest accepts; empty means the site of this config only.
    sites: list[Ident] = Field(default_factory=list)
