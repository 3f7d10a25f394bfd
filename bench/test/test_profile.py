"""
Tests for L{bench.profile}'s readings of C{/proc}.
"""

from __future__ import annotations

import io
import os
import threading
from contextlib import redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

from bench.loadgen import Outcome, Pacing, Upload
from bench.profile import printAnswerTimes, threadCpu, userSystem


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


class AnswerTimesTests(SynchronousTestCase):
    def test_pacedOnly(self) -> None:
        """
        Only paced uploads that succeeded and sent their whole body count:
        the nearest-rank p50 and p99 of how long each answer took after its
        last byte, and the largest.
        """
        paced = Pacing(0, 1000.0, 100)
        outcomes = [
            Outcome(Upload(f"/{i}", 0, 100, pacing=paced), True, 201, "", 0.0, 0.0,
                    10.0 + i / 1000, 100, sentAll=10.0)
            for i in range(1, 101)
        ] + [
            Outcome(Upload("/fast", 0, 100), True, 201, "", 0.0, 0.0, 99.0, 100, sentAll=1.0),
            Outcome(Upload("/cut", 0, 100, pacing=paced), False, 0, "cut", 0.0, 0.0, 99.0, 50),
        ]
        out = io.StringIO()
        with redirect_stdout(out):
            printAnswerTimes(outcomes)
        self.assertEqual(
            out.getvalue().strip(),
            "paced uploads, answer after their last byte: p50 50 ms, p99 99 ms, max 100 ms (100)",
        )
        out = io.StringIO()
        with redirect_stdout(out):
            printAnswerTimes(outcomes[100:])
        self.assertEqual(out.getvalue(), "")
