"""Config sections every component shares: the site and the broker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from telemetry import redact
from telemetry.sample import Ident

_SECRET_KEYS = {"password", "token", "secret", "api_key"}


def reject_inline_secrets(data: Any) -> Any:
    """Secrets never live in the YAML: point at an environment variable or a file instead."""
    if isinstance(data, dict):
        for key in data:
            if key in _SECRET_KEYS:
                raise ValueError(
                    f"'{key}' must not be written in the config; "
                    f"use '{key}_env' (an environment variable) or '{key}_file' (a file) instead"
                )
    return data


def reject_url_credentials(url: str, secret: str) -> str:
    """A URL must not carry a user name or password: they would be logged with the URL. The
    error does not repeat the URL, which holds the secret."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"the URL must not carry credentials (user:password@); give {secret} instead"
        )
    return url


def read_secret(env: str | None, file: Path | None, what: str) -> SecretStr | None:
    """Resolve a secret from an environment variable or a file; the error never shows the value."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ValueError(f"{what}: environment variable {env} is not set")
    elif file is not None:
        try:
            value = file.read_text("utf-8").strip()
        except OSError as exc:
            raise ValueError(f"{what}: cannot read {file}: {exc.strerror}") from None
    else:
        return None
    redact.register(value)
    return SecretStr(value)


class SiteInfo(BaseModel):
    """Who and where the plant is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The site's id: in every topic, tag and ledger row; never change it once data exists.
    id: Ident
    # The plant's name as people say it, for reports and alert messages.
    name: str = ""
    # IANA time zone (e.g. Asia/Shanghai): days, months and fiscal years are the site's own, DST
    # included.
    timezone: str = "UTC"
    region: str = Field(default="", description="grid region code, e.g. CN or CN-HB")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long
            raise ValueError(
                f"unknown time zone {v!r} (expected an IANA name such as Asia/Shanghai)"
            ) from None
        return v


class BrokerConfig(BaseModel):
    """How every component reaches the MQTT broker."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # mqtt://host:port, or mqtts://host:port for TLS; no credentials in the URL.
    url: str = "mqtt://127.0.0.1:1883"
    # 5 against Mosquitto or EMQX; 3.1.1 against the embedded amqtt broker, which never
    # answers an MQTT 5 CONNECT.
    protocol: Literal["5", "3.1.1"] = "5"
    # The broker user; its password comes from password_env or password_file.
    username: str | None = None
    # Environment variable holding the broker password.
    password_env: str | None = None
    # File holding the broker password (relative to the config's folder).
    password_file: Path | None = None
    # CA certificate to verify an mqtts:// broker with (default: the system's).
    ca_file: Path | None = None
    # Seconds between MQTT keep-alives; a dead connection is noticed after 1.5 times this.
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    # How long the broker keeps a persistent session (and its queued messages) while we are away.
    # MQTT 5 carries it in four bytes; 4294967295 means the session never expires.
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0, le=2**32 - 1)

    _check_secrets = model_validator(mode="before")(reject_inline_secrets)

    @field_validator("url")
    @classmethod
    def _valid_url(cls, v: str) -> str:
        reject_url_credentials(v, "'username' and 'password_env' or 'password_file'")
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(
                f"{v!r} is not a broker URL (expected mqtt://host:port or mqtts://host:port)"
            )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"{v!r} has an invalid port") from None
        return v

    @property
    def host(self) -> str:
        """Broker host name."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """Broker port (1883, or 8883 for mqtts, unless given)."""
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        """Whether to speak TLS."""
        return urlsplit(self.url).scheme == "mqtts"

    def password(self) -> SecretStr | None:
        """The broker password, read now from the environment or a file."""
        return read_secret(self.password_env, self.password_file, "broker password")
