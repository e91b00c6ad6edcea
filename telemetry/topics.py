"""MQTT topics of the wire format: lingtan/v1/{site}/{device}/sample and friends."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

PREFIX = "lingtan/v1"
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class TopicKind(StrEnum):
    """The last level of a lingtan topic."""

    SAMPLE = "sample"
    STATUS = "status"
    DERIVED = "derived"
    ALERT = "alert"
    DEADLETTER = "deadletter"


_DEVICE_KINDS = {TopicKind.SAMPLE, TopicKind.STATUS}


def _check(name: str, what: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"{what} {name!r} is not a valid identifier (letters, digits, _ . -)")
    return name


@dataclass(frozen=True)
class Topic:
    """A parsed lingtan topic."""

    site: str
    kind: TopicKind
    device: str | None = None

    def __str__(self) -> str:
        if self.device is not None:
            return f"{PREFIX}/{self.site}/{self.device}/{self.kind}"
        return f"{PREFIX}/{self.site}/{self.kind}"

    @classmethod
    def parse(cls, topic: str) -> Topic:
        """Parse a topic string; raise ValueError naming what is wrong."""
        parts = topic.split("/")
        if len(parts) not in (4, 5) or "/".join(parts[:2]) != PREFIX:
            raise ValueError(f"topic {topic!r} is not under {PREFIX}/")
        try:
            kind = TopicKind(parts[-1])
        except ValueError:
            raise ValueError(f"topic {topic!r}: unknown kind {parts[-1]!r}") from None
        site = _check(parts[2], "site")
        if len(parts) == 5:
            if kind not in _DEVICE_KINDS:
                raise ValueError(f"topic {topic!r}: {kind} topics have no device level")
            return cls(site, kind, _check(parts[3], "device"))
        if kind in _DEVICE_KINDS:
            raise ValueError(f"topic {topic!r}: {kind} topics need a device level")
        return cls(site, kind)


def sample(site: str, device: str) -> str:
    """Topic a device's Samples are published on."""
    return str(Topic(_check(site, "site"), TopicKind.SAMPLE, _check(device, "device")))


def status(site: str, device: str) -> str:
    """Retained online/offline topic of a device (also its last will)."""
    return str(Topic(_check(site, "site"), TopicKind.STATUS, _check(device, "device")))


def derived(site: str) -> str:
    """Topic of the figures rules derive for a site."""
    return str(Topic(_check(site, "site"), TopicKind.DERIVED))


def alert(site: str) -> str:
    """Topic of a site's alert events."""
    return str(Topic(_check(site, "site"), TopicKind.ALERT))


def deadletter(site: str) -> str:
    """Topic where rejected messages go, with the reason."""
    return str(Topic(_check(site, "site"), TopicKind.DEADLETTER))


def all_samples(site: str = "+") -> str:
    """Subscription filter for every device's Samples (of one site, or all)."""
    return f"{PREFIX}/{site}/+/{TopicKind.SAMPLE}"


def all_derived(site: str = "+") -> str:
    """Subscription filter for derived figures (of one site, or all)."""
    return f"{PREFIX}/{site}/{TopicKind.DERIVED}"
