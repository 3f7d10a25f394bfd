"""
Tests for L{uploadsvc.runner}: the disk threads and the runner over them.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.runner import DiskThreads, ThreadRunner


class FakeReactor:
    """
    C{callFromThread} that records the calls (from any thread) for the
    test's thread to run, as a reactor would on its own thread.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., object], tuple[object, ...]]] = []
        self.lock = threading.Lock()

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        with self.lock:
            self.calls.append((f, args))

    def runCalls(self) -> None:
        with self.lock:
            calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


class DiskThreadsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.threads = DiskThreads(3, "test-disk", self.reactor)  # type: ignore[arg-type]
        self.runner = ThreadRunner(self.reactor, self.threads)  # type: ignore[arg-type]

    def test_resultsComeBackThroughTheReactor(self) -> None:
        """
        A call runs on a disk thread; its result (or failure) reaches its
        L{Deferred} only through C{callFromThread}.
        """
        self.threads.start()
        ran: list[str] = []
        ok = self.runner.run(lambda a, b: (ran.append(threading.current_thread().name), a + b)[1], 2, 3)
        bad = self.runner.run(lambda: 1 // 0)
        self.threads.stop()
        self.assertNoResult(ok)
        self.assertNoResult(bad)
        self.reactor.runCalls()
        self.assertEqual(self.successResultOf(ok), 5)
        self.failureResultOf(bad, ZeroDivisionError)
        self.assertTrue(ran[0].startswith("test-disk-"), ran)
        self.assertNotEqual(ran[0], threading.current_thread().name)

    def test_stopRunsWhatIsQueued(self) -> None:
        """
        Calls queued before L{DiskThreads.stop} all run (oldest first on one
        thread) before the threads end; then no thread is left.
        """
        threads = DiskThreads(1, "one-disk", self.reactor)  # type: ignore[arg-type]
        gate = threading.Event()
        order: list[int] = []
        threads.put((gate.wait, (10,), None))
        for n in range(100):
            threads.put((order.append, (n,), None))
        threads.start()
        gate.set()
        threads.stop()
        self.assertEqual(order, list(range(100)))
        self.assertEqual([t for t in threading.enumerate() if t.name.startswith("one-disk")], [])

    def test_everyThreadAtStart(self) -> None:
        """
        All C{count} threads run once started, so a call that holds one
        and waits for another call finds a thread for it; L{DiskThreads.stop}
        joins every one.
        """
        self.threads.start()
        started = self.threads.threads
        self.assertEqual(len(started), 3)
        first, second = threading.Event(), threading.Event()
        self.threads.put((lambda: second.set() if first.wait(10) else None, (), None))
        self.threads.put((first.set, (), None))  # queued behind the call that waits for it
        self.assertTrue(second.wait(10))
        self.threads.stop()
        self.assertEqual(self.threads.threads, [])
        self.assertFalse(any(t.is_alive() for t in started))

    def test_stopWaitsOnlySoLong(self) -> None:
        """
        L{DiskThreads.stop} with a timeout returns after about that long
        when a call still runs, with the threads still running; queued
        calls behind it are not waited for.
        """
        gate = threading.Event()
        self.addCleanup(gate.set)
        self.threads.start()
        for _ in range(3):
            self.threads.put((gate.wait, (30,), None))
        began = time.monotonic()
        busy = self.threads.stop(0.2)
        self.assertLess(time.monotonic() - began, 10)
        self.assertEqual(len(busy), 3)
        self.assertTrue(all(t.daemon for t in busy))
        gate.set()
        for thread in busy:
            thread.join(10)
        self.assertFalse(any(t.is_alive() for t in busy))

    def test_failedCallWithoutWaiterLogged(self) -> None:
        """A call nobody waits for that raises is logged, and the thread goes on."""
        seen: list[Any] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        self.threads.start()
        self.runner.callInThread(lambda: 1 // 0)
        later = self.runner.run(lambda: "still running")
        self.threads.stop()
        self.reactor.runCalls()
        self.assertEqual(self.successResultOf(later), "still running")
        failures = [e for e in seen if e.get("log_failure") is not None]
        self.assertEqual(len(failures), 1)
        self.assertTrue(failures[0]["log_failure"].check(ZeroDivisionError))
        self.flushLoggedErrors(ZeroDivisionError)

    def test_atLeastOneThread(self) -> None:
        self.assertRaises(ValueError, DiskThreads, 0, "none", self.reactor)
