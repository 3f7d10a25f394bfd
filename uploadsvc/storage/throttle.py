"""
A disk slower than the network, for benchmarks: C{--bench-write-rate}.

Every write of the process waits its turn on one token bucket, in the writer
thread (never the reactor's), as a slow block device would make it wait.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class WriteThrottle:
    """
    At most C{rate} bytes per second, across all threads.
    """

    def __init__(
        self,
        rate: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = clock()  # when the disk is free again

    def wait(self, size: int) -> None:
        """
        Block until C{size} more bytes may be written.
        """
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + size / self._rate
        delay = self._next - now
        if delay > 0:
            self._sleep(delay)
