"""Alert events on the broker: JSON on lingtan/v1/{site}/alert."""

from __future__ import annotations

from collections.abc import Iterable

import orjson
import paho.mqtt.client as paho

from rules.alerts.engine import AlertEvent
from telemetry import topics


def event_json(event: AlertEvent) -> bytes:
    """The event's payload as published."""
    return orjson.dumps(event.payload)


def publish_events(
    client: paho.Client, site: str, events: Iterable[AlertEvent], *, qos: int = 1
) -> dict[int, int]:
    """Publish each event on the site's alert topic; {MQTT message id: event id}.

    Once the broker acknowledges a message id (paho's on_publish), hand the event ids to
    `Alerts.mark_published`; what is not marked is offered again by `Alerts.unpublished`
    after a restart.
    """
    topic = topics.alert(site)
    out: dict[int, int] = {}
    for e in events:
        info = client.publish(topic, event_json(e), qos=qos)
        out[info.mid] = e.id
    return out
