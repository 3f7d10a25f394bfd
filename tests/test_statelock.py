"""
The wait for an upload's state lock (L{uploadsvc.storage.takeover.stateLocked}):
a bounded try-loop whose pauses the store's L{SystemCalls} makes, so these
tests count the pauses instead of sleeping.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import Busy
from uploadsvc.protocol.decisions import Plan
from uploadsvc.protocol.paths import parseRelativePath
from uploadsvc.storage.filestore import FileStore
from uploadsvc.storage.locks import STATE, HeldLock, RegionLocks
from uploadsvc.storage.syscalls import SystemCalls
from uploadsvc.storage.takeover import (
    STATE_POLL_FIRST, STATE_POLL_MAX, STATE_WAIT, stateLocked, statePauses,
)


class PausesTests(SynchronousTestCase):
    def test_shortFirstThenDoubling(self) -> None:
        """The pauses start under a millisecond and double up to the longest pause."""
        pauses = list(statePauses(1.0))
        self.assertEqual(pauses[:3], [STATE_POLL_FIRST, STATE_POLL_FIRST * 2, STATE_POLL_FIRST * 4])
        self.assertEqual(max(pauses), STATE_POLL_MAX)
        self.assertEqual(pauses, sorted(pauses[:-1]) + pauses[-1:])

    def test_addUpToTheLimit(self) -> None:
        """Whatever the limit, the pauses add up to it (the last cut to fit)."""
        for limit in (0.0, 0.0001, 0.003, 0.5, STATE_WAIT):
            with self.subTest(limit=limit):
                pauses = list(statePauses(limit))
                self.assertAlmostEqual(sum(pauses), limit, places=9)
                self.assertTrue(all(0 < pause <= STATE_POLL_MAX for pause in pauses))


class RecordingSleep:
    """
    A sleep that only records its pauses, and may run something at the
    n-th one (a holder letting go meanwhile).
    """

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.at: dict[int, object] = {}

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        action = self.at.get(len(self.pauses))
        if callable(action):
            action()


class StateLockedTests(SynchronousTestCase):
    def setUp(self) -> None:
        path = os.path.abspath(self.mktemp())
        self.mine = RegionLocks(path)
        self.theirs = RegionLocks(path)  # another process's view of the file
        self.addCleanup(self.mine.close)
        self.addCleanup(self.theirs.close)
        self.sleep = RecordingSleep()

    def holdTheirs(self) -> HeldLock:
        lock = self.theirs.tryLock("p-k", STATE)
        assert lock is not None
        self.addCleanup(lock.release)
        return lock

    def test_freeTakenAtOnce(self) -> None:
        """A free state lock is taken without a pause, held inside, and let go after."""
        with stateLocked(self.mine, "p-k", self.sleep):
            self.assertIsNone(self.theirs.tryLock("p-k", STATE))
        self.assertEqual(self.sleep.pauses, [])
        self.assertIsNotNone(self.holdTheirs())

    def test_heldGivesUpAtTheBound(self) -> None:
        """
        A state lock that its holder keeps is tried again after each pause
        and given up after pauses adding up to the limit: 503 state-locked,
        the body never run, the holder's lock untouched.
        """
        self.holdTheirs()
        ran: list[bool] = []

        def enter() -> None:
            with stateLocked(self.mine, "p-k", self.sleep, limit=0.05):
                ran.append(True)

        error = self.assertRaises(Busy, enter)
        self.assertEqual((error.status, error.code), (503, "state-locked"))
        self.assertEqual(ran, [])
        self.assertEqual(self.sleep.pauses, list(statePauses(0.05)))
        self.assertIsNone(self.mine.tryLock("p-k", STATE))

    def test_takenWhenLetGo(self) -> None:
        """A holder that lets go during the third pause is followed at the next try."""
        held = self.holdTheirs()
        self.sleep.at[3] = held.release
        with stateLocked(self.mine, "p-k", self.sleep):
            self.assertIsNone(self.theirs.tryLock("p-k", STATE))
        self.assertEqual(self.sleep.pauses, list(statePauses(STATE_WAIT))[:3])

    def test_otherKeysNotWaitedFor(self) -> None:
        """Another upload's state lock, or the same upload's writer lock, is no reason to wait."""
        self.holdTheirs()
        writer = self.theirs.tryLock("p-w")
        assert writer is not None
        self.addCleanup(writer.release)
        with stateLocked(self.mine, "p-other", self.sleep):
            pass
        with stateLocked(self.mine, "p-w", self.sleep):
            pass
        self.assertEqual(self.sleep.pauses, [])


class PausingSystem(SystemCalls):
    """
    The store's system calls, with a sleep that records instead of sleeping.
    """

    def __init__(self) -> None:
        self.sleep = RecordingSleep()  # type: ignore[method-assign, assignment]


class StoreStateLockTests(SynchronousTestCase):
    def test_queryRefusedAfterTheBound(self) -> None:
        """
        A status query on an upload whose metadata another process keeps
        changing (its state lock held) is refused 503 after the store's
        bounded wait, paused through the store's own system calls, and
        records nothing; once the holder lets go it is answered.
        """
        root = os.path.abspath(self.mktemp())
        system = PausingSystem()
        store = FileStore(root, fsync=False, system=system)
        other = FileStore(root, fsync=False)
        self.addCleanup(store.close)
        self.addCleanup(other.close)
        path = parseRelativePath("s.bin")
        _, _, staged = other.begin(path, lambda s: Plan(True, 0, 0, None, None), {}, None)
        assert staged is not None
        staged.writeChunks([b"abc"])
        staged.close()
        held = other._locks.tryLock(FileStore.keyFor(path), STATE)
        assert held is not None
        self.addCleanup(held.release)
        error = self.assertRaises(Busy, store.record, path, 10, {})
        self.assertEqual((error.status, error.code), (503, "state-locked"))
        self.assertEqual(system.sleep.pauses, list(statePauses(STATE_WAIT)))
        held.release()
        self.assertIsNone(store.inspect(path).total)
        self.assertEqual(store.record(path, 10, {}).total, 10)
