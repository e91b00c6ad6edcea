"""Ingest in a thread for the duration of a test block."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ingest.service import IngestService


@contextmanager
def running(service: IngestService, *, connected: bool = True) -> Iterator[IngestService]:
    """Run `service.run(stop)` in a thread; stop and join it when the block ends.

    With `connected`, the block starts once ingest is connected and subscribed.
    """
    stop = threading.Event()
    t = threading.Thread(target=service.run, args=(stop,), name="ingest-under-test")
    t.start()
    try:
        if connected:
            assert service.consumer.wait_connected(10), "ingest did not connect"
        yield service
    finally:
        stop.set()
        t.join(30)
        assert not t.is_alive(), "ingest did not stop"
