"""
Tests for L{uploadsvc.storage.writers}: one writer per upload, and the
newest writer wins (docs/protocol.md section 5).
"""

from __future__ import annotations

from typing import Callable

from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import Conflict
from uploadsvc.protocol.paths import parseUploadPath
from uploadsvc.storage.memory import MemoryStore
from uploadsvc.storage.writers import TakenOver, WriterRegistry
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp


class Interrupts:
    """
    Counts how often a holder is asked to let go.
    """

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def never() -> None:
    raise AssertionError("interrupt called")


class WriterRegistryTests(SynchronousTestCase):
    """
    Tests for L{WriterRegistry}.
    """

    def setUp(self) -> None:
        self.registry = WriterRegistry()

    def acquired(self, d: Deferred) -> Callable[[], None]:
        release = self.successResultOf(d)
        self.assertTrue(callable(release))
        return release  # type: ignore[no-any-return]

    def test_firstImmediate(self) -> None:
        """
        The first writer of an upload gets it at once, without interrupting
        anyone.
        """
        release = self.acquired(self.registry.acquire("k", never))
        self.assertEqual(self.registry.busy(), 1)
        release()
        self.assertEqual(self.registry.busy(), 0)

    def test_secondInterruptsHolder(self) -> None:
        """
        A second writer interrupts the holder once and gets the upload when
        the holder releases it.
        """
        interrupts = Interrupts()
        release1 = self.acquired(self.registry.acquire("k", interrupts))
        d2 = self.registry.acquire("k", never)
        self.assertEqual(interrupts.count, 1)
        self.assertNoResult(d2)
        release1()
        release2 = self.acquired(d2)
        self.assertEqual(self.registry.busy(), 1)
        release2()
        self.assertEqual(self.registry.busy(), 0)

    def test_interruptReleasingAtOnce(self) -> None:
        """
        A holder that releases from inside its interrupt hands the upload to
        the new writer straight away.
        """
        releases: list[Callable[[], None]] = []
        releases.append(
            self.acquired(self.registry.acquire("k", lambda: releases[0]()))
        )
        d2 = self.registry.acquire("k", never)
        self.acquired(d2)
        self.assertEqual(self.registry.busy(), 1)

    def test_thirdTakesOverWaiter(self) -> None:
        """
        A third writer makes the waiting second fail with L{TakenOver} (a
        409), does not interrupt the holder again, and gets the upload after
        the release.
        """
        interrupts = Interrupts()
        release1 = self.acquired(self.registry.acquire("k", interrupts))
        d2 = self.registry.acquire("k", never)
        d3 = self.registry.acquire("k", never)
        failure = self.failureResultOf(d2, TakenOver)
        self.assertIsInstance(failure.value, Conflict)
        self.assertEqual(failure.value.status, 409)
        self.assertEqual(interrupts.count, 1)
        self.assertNoResult(d3)
        release1()
        self.acquired(d3)
        self.assertEqual(self.registry.busy(), 1)

    def test_newHolderInterruptedAgain(self) -> None:
        """
        A writer that got the upload from a release is itself interrupted by
        the next newer writer.
        """
        release1 = self.acquired(self.registry.acquire("k", Interrupts()))
        interrupts2 = Interrupts()
        d2 = self.registry.acquire("k", interrupts2)
        release1()
        self.acquired(d2)
        d3 = self.registry.acquire("k", never)
        self.assertEqual(interrupts2.count, 1)
        self.assertNoResult(d3)

    def test_cancelWaiter(self) -> None:
        """
        Cancelling a waiter removes it: the release then leaves the upload
        free for the next writer.
        """
        release1 = self.acquired(self.registry.acquire("k", Interrupts()))
        d2 = self.registry.acquire("k", never)
        d2.cancel()
        self.failureResultOf(d2, CancelledError)
        release1()
        self.assertEqual(self.registry.busy(), 0)
        self.acquired(self.registry.acquire("k", never))

    def test_cancelledWaiterNotTakenOver(self) -> None:
        """
        A waiter cancelled before a newer one arrives is not failed again, and
        the newer one gets the upload after the release.
        """
        release1 = self.acquired(self.registry.acquire("k", Interrupts()))
        d2 = self.registry.acquire("k", never)
        d2.cancel()
        self.failureResultOf(d2, CancelledError)
        d3 = self.registry.acquire("k", never)
        release1()
        self.acquired(d3)

    def test_releaseIdempotent(self) -> None:
        """
        A second release is a no-op: it does not free the upload from the
        writer that holds it since.
        """
        release1 = self.acquired(self.registry.acquire("k", Interrupts()))
        d2 = self.registry.acquire("k", Interrupts())
        release1()
        self.acquired(d2)
        release1()
        self.assertEqual(self.registry.busy(), 1)
        d3 = self.registry.acquire("k", never)
        self.assertNoResult(d3)

    def test_releaseTwiceWhenAlone(self) -> None:
        """
        Releasing twice with nobody waiting leaves the upload free once.
        """
        release = self.acquired(self.registry.acquire("k", never))
        release()
        release()
        self.assertEqual(self.registry.busy(), 0)

    def test_busyCountsHolders(self) -> None:
        """
        C{busy} counts uploads being written, not waiters.
        """
        releaseA = self.acquired(self.registry.acquire("a", Interrupts()))
        self.acquired(self.registry.acquire("b", never))
        self.registry.acquire("a", never)
        self.assertEqual(self.registry.busy(), 2)
        releaseA()
        self.assertEqual(self.registry.busy(), 2)

    def test_keysIndependent(self) -> None:
        """
        Writers of different uploads do not interrupt each other.
        """
        self.acquired(self.registry.acquire("a", never))
        self.acquired(self.registry.acquire("b", never))


class HashStateTests(SynchronousTestCase):
    def test_bounded(self) -> None:
        """
        Only the most recently kept hash states are remembered: an upload
        abandoned long ago does not hold memory for ever.
        """
        registry = WriterRegistry(maxHashStates=2)
        for key in ("a", "b", "a", "c"):
            registry.hashStates[key] = ("generation", 1, key)
        self.assertEqual(list(registry.hashStates), ["a", "c"])
        self.assertEqual(registry.hashStates.pop("a", None), ("generation", 1, "a"))

    def test_takenByOneWriter(self) -> None:
        """
        A kept hash state goes to the next request that writes the upload,
        and to no other (a hasher is fed by one request at a time); a
        completed or cancelled upload's is forgotten.
        """
        registry = WriterRegistry()
        registry.keepHashState("a", "generation", 5, "hasher")
        self.assertEqual(registry.takeHashState("a"), ("generation", 5, "hasher"))
        self.assertIsNone(registry.takeHashState("a"))
        registry.keepHashState("a", "generation", 6, "hasher")
        registry.forgetHashState("a")
        registry.forgetHashState("a")
        self.assertIsNone(registry.takeHashState("a"))

    def test_agedOut(self) -> None:
        """
        With C{maxAge} (the server's C{--expire-after}), a hash state kept
        longer ago than that is dropped when the next one is kept: its upload
        has expired, or was completed or taken over by another server (which
        this process never hears of), so it would never be used. Before,
        such states stayed until C{maxHashStates} newer ones pushed them out
        (about 6 MiB), the slow rise of a server in a cluster.
        """
        clock = Clock()
        registry = WriterRegistry(clock=clock, maxAge=10.0)
        registry.keepHashState("old", "g", 1, "h-old")
        clock.advance(5)
        registry.keepHashState("mid", "g", 1, "h-mid")
        clock.advance(5.5)
        registry.keepHashState("new", "g", 1, "h-new")
        self.assertEqual(list(registry.hashStates), ["mid", "new"])
        # Kept again (a request took it and wrote more): its age starts over.
        clock.advance(1)
        registry.keepHashState("mid", "g", 2, registry.takeHashState("mid")[2])  # type: ignore[index]
        clock.advance(9.5)
        registry.keepHashState("newest", "g", 1, "h-newest")
        self.assertEqual(list(registry.hashStates), ["mid", "newest"])
        self.assertEqual(registry.takeHashState("mid"), ("g", 2, "h-mid"))

    def test_agedOutBoundedUnderLoad(self) -> None:
        """
        Uploads that stop here and end elsewhere, one a second for an hour:
        with C{maxAge=10} no more than about 10 s of them are remembered.
        """
        clock = Clock()
        registry = WriterRegistry(clock=clock, maxAge=10.0)
        for n in range(3600):
            registry.keepHashState(f"u{n}", "g", 1, "h")
            clock.advance(1)
        self.assertLessEqual(len(registry.hashStates), 11)
        self.assertLessEqual(len(registry._keptAt), 11)

    def test_noMaxAgeKeepsByCount(self) -> None:
        """
        Without C{maxAge} (C{--expire-after 0}: uploads never expire) only
        the count bounds the hash states.
        """
        clock = Clock()
        registry = WriterRegistry(maxHashStates=3, clock=clock)
        for n in range(5):
            registry.keepHashState(f"u{n}", "g", 1, "h")
            clock.advance(3600)
        self.assertEqual(list(registry.hashStates), ["u2", "u3", "u4"])
        self.assertLessEqual(len(registry._keptAt), 3)


class AppHashStateAgeTests(SynchronousTestCase):
    def test_appDropsStatesOlderThanExpireAfter(self) -> None:
        """
        The app's registry ages hash states by its C{expireAfter}: an upload
        left incomplete here (and, in a cluster, finished on another server)
        has its state dropped once a later upload keeps one more than
        C{expireAfter} seconds on.
        """
        clock = Clock()
        app = UploadApp(
            MemoryStore(now=clock.seconds), ImmediateRunner(),
            Config(maxUploadSize=1_000_000, expireAfter=10.0), clock=clock,
        )
        treq = StubTreq(app.resource())

        def putHalf(path: str) -> None:
            response = self.successResultOf(treq.put(  # type: ignore[attr-defined]
                f"http://example.invalid{path}", b"x" * 100,
                headers={"Content-Range": ["bytes 0-99/200"]},
            ))
            self.assertEqual(response.code, 204)

        putHalf("/a.bin")
        self.assertEqual(len(app.writers.hashStates), 1)
        clock.advance(11)
        putHalf("/b.bin")
        self.assertEqual(len(app.writers.hashStates), 1)
        self.assertEqual(list(app.writers.hashStates), [app.store.keyFor(parseUploadPath(b"/b.bin"))])
