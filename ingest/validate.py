"""The boundary: a message becomes Samples, or a rejection with the reason."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from functools import lru_cache

from telemetry.quantities import Vocabulary
from telemetry.sample import Sample, WireError, decode
from telemetry.topics import Topic, TopicKind

# Topics repeat (one per device): parse each once. Failures are not cached.
_parse_topic = lru_cache(maxsize=65_536)(Topic.parse)


class Rejected(ValueError):
    """A message ingest refuses; the message is the reason."""

    def __init__(self, site: str, reason: str) -> None:
        super().__init__(reason)
        self.site = site
        self.reason = reason


def validate(
    topic: str,
    payload: bytes,
    *,
    vocabulary: Vocabulary,
    sites: Collection[str],
    now: int,
    max_future_ms: int,
    max_age_ms: int,
    devices: Mapping[str, Collection[str]] | None = None,
) -> tuple[Topic, list[Sample]]:
    """Decode and check a message against its topic; raise Rejected naming what is wrong."""
    try:
        t = _parse_topic(topic)
    except ValueError as exc:
        raise Rejected("invalid", str(exc)) from None
    if t.site not in sites:
        raise Rejected(t.site, f"site {t.site!r} is not served by this ingest")
    if t.kind not in (TopicKind.SAMPLE, TopicKind.DERIVED):
        raise Rejected(t.site, f"topic kind {t.kind} carries no Samples")
    allowed = None if devices is None else devices.get(t.site)
    if allowed is not None and t.device is not None and t.device not in allowed:
        raise Rejected(t.site, f"device {t.device!r} is not allowed for site {t.site!r}")
    try:
        samples = decode(payload)
    except WireError as exc:
        raise Rejected(t.site, str(exc)) from None
    for i, s in enumerate(samples):
        where = f"[{i}]" if len(samples) > 1 else ""
        if s.site != t.site:
            raise Rejected(
                t.site, f"payload{where}.site={s.site!r} does not match topic site {t.site!r}"
            )
        if t.device is not None and s.device != t.device:
            raise Rejected(
                t.site,
                f"payload{where}.device={s.device!r} does not match topic device {t.device!r}",
            )
        unknown = vocabulary.unknown(s.values)
        if unknown:
            raise Rejected(t.site, f"payload{where}.values: unknown quantities {unknown}")
        if s.ts > now + max_future_ms:
            raise Rejected(
                t.site, f"payload{where}.ts={s.ts}: {(s.ts - now) // 1000} s in the future"
            )
        if s.ts < now - max_age_ms:
            raise Rejected(t.site, f"payload{where}.ts={s.ts}: older than the accepted age")
    return t, samples
