"""
Tests for L{bench.profile}'s readings of C{/proc}.
"""

from __future__ import annotations

import os
import threading

from twisted.trial.unittest import SynchronousTestCase

from bench.profile import threadCpu, userSystem


def spin(seconds: float) -> None:
    end = os.times().elapsed + seconds
    while os.times().elapsed < end:
        pass


class ThreadCpuTests(SynchronousTestCase):
    def test_busyThreadSeen(self) -> None:
        """
        A thread that spins shows its CPU under its own id; a thread that
        sleeps shows none (each thread's own figure, not the process's).
        """
        stop = threading.Event()
        sleeper = threading.Thread(target=stop.wait)
        sleeper.start()

        def work() -> None:
            while not stop.is_set():
                pass

        worker = threading.Thread(target=work)
        worker.start()
        try:
            spin(0.4)  # (sharing the GIL: each gets part)
            seen = threadCpu(os.getpid())
        finally:
            stop.set()
            worker.join()
            sleeper.join()
        self.assertIn(os.getpid(), seen)  # the main thread's id is the PID
        self.assertIn(worker.native_id, seen)
        self.assertGreater(seen[worker.native_id], 0.05)
        self.assertLess(seen[sleeper.native_id], 0.02)
        self.assertEqual(threadCpu(2**22 + 12345), {})

    def test_userSystem(self) -> None:
        """The tree's user time grows with work done in it."""
        user0, system0 = userSystem(os.getpid())
        spin(0.3)
        user1, system1 = userSystem(os.getpid())
        self.assertGreaterEqual(user1 + system1 - user0 - system0, 0.2)
