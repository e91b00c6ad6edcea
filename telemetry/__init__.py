"""The shared language of lingtan: the Sample wire format, quantities, topics and time."""

from telemetry.quantities import Quantity, QuantityKind, Vocabulary, vocabulary
from telemetry.sample import Quality, Sample, WireError, decode, encode
from telemetry.topics import Topic, TopicKind

__all__ = [
    "Quality",
    "Quantity",
    "QuantityKind",
    "Sample",
    "Topic",
    "TopicKind",
    "Vocabulary",
    "WireError",
    "decode",
    "encode",
    "vocabulary",
]
