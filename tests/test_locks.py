"""
Tests for L{uploadsvc.storage.locks.RegionLocks}: one exclusive lock per key
and kind on one shared file, each on its own file description, between locks
of one instance, instances of one process, and processes.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.storage.locks import STATE, WRITER, HeldLock, RegionLocks

#: How long a forked child may take before it is killed (it does no waiting).
_CHILD_DEADLINE = 10.0


class RegionLocksTests(SynchronousTestCase):
    """
    Locks on one file conflict per key and kind, whoever takes them.
    """

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.path = os.path.join(base, "lock")

    def makeLocks(self) -> RegionLocks:
        locks = RegionLocks(self.path)
        self.addCleanup(locks.close)
        return locks

    def test_createsFile(self) -> None:
        """
        The lock file is created when missing, and stays empty: locks are on
        bytes past its end.
        """
        locks = self.makeLocks()
        self.assertIsNotNone(self.hold(locks, "p-abc"))
        self.assertIsNotNone(self.hold(locks, "p-abc", STATE))
        self.assertEqual(os.path.getsize(self.path), 0)

    def hold(self, locks: RegionLocks, key: str, kind: int = WRITER) -> HeldLock | None:
        lock = locks.tryLock(key, kind)
        if lock is not None:
            self.addCleanup(lock.release)
        return lock

    def test_sameKeyConflicts(self) -> None:
        """
        A key locked by one instance cannot be locked by another instance on
        the same file, even in the same process.
        """
        first, second = self.makeLocks(), self.makeLocks()
        self.assertIsNotNone(self.hold(first, "p-one"))
        self.assertIsNone(self.hold(second, "p-one"))

    def test_sameInstanceConflicts(self) -> None:
        """
        A key locked through one instance cannot be locked again through the
        same instance (every lock has its own file description), and the
        refused attempt leaves the holder's lock in place.
        """
        locks, other = self.makeLocks(), self.makeLocks()
        held = self.hold(locks, "p-one")
        self.assertIsNotNone(held)
        self.assertIsNone(self.hold(locks, "p-one"))
        self.assertIsNone(self.hold(other, "p-one"))
        self.assertIsNone(self.hold(locks, "p-one"))

    def test_kindsIndependent(self) -> None:
        """
        The writer lock and the state lock of one key are separate locks.
        """
        locks = self.makeLocks()
        self.assertIsNotNone(self.hold(locks, "p-one", WRITER))
        state = self.hold(locks, "p-one", STATE)
        self.assertIsNotNone(state)
        self.assertIsNone(self.hold(locks, "p-one", STATE))

    def test_otherKeysFree(self) -> None:
        """
        A lock on one key leaves other keys free for another instance.
        """
        first, second = self.makeLocks(), self.makeLocks()
        self.assertIsNotNone(self.hold(first, "p-one"))
        self.assertIsNotNone(self.hold(second, "p-two"))
        self.assertIsNone(self.hold(first, "p-two"))

    def test_releaseFrees(self) -> None:
        """
        After C{release} another instance can take the key, and then holds it
        against the first; a second C{release} does nothing.
        """
        first, second = self.makeLocks(), self.makeLocks()
        lock = first.tryLock("p-one")
        assert lock is not None
        self.assertTrue(lock.held)
        lock.release()
        self.assertFalse(lock.held)
        lock.release()
        self.assertIsNotNone(self.hold(second, "p-one"))
        self.assertIsNone(self.hold(first, "p-one"))

    def test_releaseOnlyThatLock(self) -> None:
        """
        Releasing one lock keeps the instance's other locks.
        """
        first, second = self.makeLocks(), self.makeLocks()
        one = first.tryLock("p-one")
        assert one is not None
        self.assertIsNotNone(self.hold(first, "p-two"))
        one.release()
        self.assertIsNotNone(self.hold(second, "p-one"))
        self.assertIsNone(self.hold(second, "p-two"))

    def test_closeKeepsHeldLocks(self) -> None:
        """
        Closing an instance does not drop the locks taken through it; each
        goes with its own release.
        """
        first = RegionLocks(self.path)
        second = self.makeLocks()
        lock = first.tryLock("p-one")
        assert lock is not None
        first.close()
        self.assertIsNone(self.hold(second, "p-one"))
        lock.release()
        self.assertIsNotNone(self.hold(second, "p-one"))

    def runChild(self, body: Callable[[], int]) -> int:
        """
        Run C{body} in a forked child and return its exit code (the child
        never returns into the test runner; it is killed if it takes longer
        than L{_CHILD_DEADLINE}).
        """
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                code = body()
            finally:
                os._exit(code)
        deadline = time.monotonic() + _CHILD_DEADLINE
        while True:
            donePID, status = os.waitpid(pid, os.WNOHANG)
            if donePID == pid:
                break
            if time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                self.fail("child did not exit in time")
            time.sleep(0.01)
        self.assertTrue(os.WIFEXITED(status), f"child status {status}")
        return os.WEXITSTATUS(status)

    def test_childConflicts(self) -> None:
        """
        A child process with its own instance cannot lock the parent's key,
        and can lock another key.
        """
        parent = self.makeLocks()
        self.assertIsNotNone(self.hold(parent, "p-held"))

        def child() -> int:
            locks = RegionLocks(self.path)
            held = locks.tryLock("p-held") is not None
            free = locks.tryLock("p-free") is not None
            return 10 + int(held) + 2 * int(free)

        # 10 + 0 (held key refused) + 2 (other key granted)
        self.assertEqual(self.runChild(child), 12)
        # And the child's lock on p-free went away with it.
        self.assertIsNotNone(self.hold(parent, "p-free"))

    def test_childAfterUnlock(self) -> None:
        """
        Once the parent releases its lock, a child process can take it.
        """
        parent = self.makeLocks()
        lock = parent.tryLock("p-held")
        assert lock is not None
        lock.release()

        def child() -> int:
            return 10 + int(RegionLocks(self.path).tryLock("p-held") is not None)

        self.assertEqual(self.runChild(child), 11)

    def test_childExitReleases(self) -> None:
        """
        A lock held by a process that exits without unlocking (as after
        C{kill -9}) is free for others.
        """

        def child() -> int:
            locks = RegionLocks(self.path)
            return 10 + int(locks.tryLock("p-crash") is not None)

        self.assertEqual(self.runChild(child), 11)
        self.assertIsNotNone(self.hold(self.makeLocks(), "p-crash"))
