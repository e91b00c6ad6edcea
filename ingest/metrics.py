"""Ingest's self-metrics: Prometheus counters and histograms, and the same figures as values."""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Sample-time-to-stored lag and batch write time, in seconds.
_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)
_WRITE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000)


@dataclass
class IngestStats:
    """Counts since start (also the source of the self-metric Samples)."""

    messages: int = 0
    samples_stored: int = 0
    values_stored: int = 0
    duplicates: int = 0
    rejected: Tally[str] = field(default_factory=Tally)
    sink_failures: int = 0
    last_batch_messages: int = 0
    last_write_ms: float = 0.0
    last_lag_ms: float = 0.0

    @property
    def rejected_total(self) -> int:
        """Messages and Samples dead-lettered, all reasons."""
        return sum(self.rejected.values())


class IngestMetrics:
    """One registry per ingest (so several can live in one process, as in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "lingtan_ingest_messages", "MQTT messages taken from the broker", registry=r
        )
        self.samples = Counter(
            "lingtan_ingest_samples_written", "Samples durably written", registry=r
        )
        self.values = Counter(
            "lingtan_ingest_values_written", "Values (fields) durably written", registry=r
        )
        self.duplicates = Counter(
            "lingtan_ingest_duplicates", "Samples seen before, not written again", registry=r
        )
        self.rejected = Counter(
            "lingtan_ingest_rejected",
            "Messages or Samples sent to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        )
        self.sink_errors = Counter(
            "lingtan_ingest_sink_errors", "Failed writes, by sink", ["sink"], registry=r
        )
        self.batch_size = Histogram(
            "lingtan_ingest_batch_messages",
            "Messages per batch",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.write_seconds = Histogram(
            "lingtan_ingest_write_seconds",
            "Time to write a batch durably",
            buckets=_WRITE_BUCKETS,
            registry=r,
        )
        self.lag_seconds = Histogram(
            "lingtan_ingest_lag_seconds",
            "From a Sample's time to its durable write",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.pending = Gauge(
            "lingtan_ingest_pending_messages",
            "Messages received, not yet acknowledged",
            registry=r,
        )


def reason_class(reason: str) -> str:
    """A bounded label for a rejection reason: its first words, without values."""
    head = reason.split(":", 1)[0]
    # "payload[3].values" -> "payload.values": indices would make the label unbounded
    out = []
    depth = 0
    for ch in head:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    text = "".join(out).split("=", 1)[0].split(" ", 1)[0]
    # at most two path parts: a third would be a key the sender chose
    return ".".join(text.split(".")[:2])[:40] or "other"
