"""A null-modem cable in software: two pseudo-terminals whose traffic a thread relays."""

from __future__ import annotations

import os
import select
import threading
import tty
from types import TracebackType


class PtyPair:
    """`a` and `b` are device paths; bytes written to one come out of the other."""

    def __init__(self) -> None:
        self._m1, s1 = os.openpty()
        self._m2, s2 = os.openpty()
        for fd in (s1, s2):
            tty.setraw(fd)
        self.a, self.b = os.ttyname(s1), os.ttyname(s2)
        self._slaves = (s1, s2)  # keep them open so the paths stay valid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="pty-relay", daemon=True)

    def __enter__(self) -> PtyPair:
        self._thread.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in (self._m1, self._m2, *self._slaves):
            os.close(fd)

    def _relay(self) -> None:
        peer = {self._m1: self._m2, self._m2: self._m1}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(peer), [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if data:
                    os.write(peer[fd], data)
