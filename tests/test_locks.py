"""
Tests for L{uploadsvc.storage.locks.RegionLocks}: one exclusive lock per key
on one shared file, between instances of one process and between processes.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.storage.locks import RegionLocks

#: How long a forked child may take before it is killed (it does no waiting).
_CHILD_DEADLINE = 10.0


class RegionLocksTests(SynchronousTestCase):
    """
    Locks of two L{RegionLocks} on one file conflict per key.
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
        self.assertTrue(locks.tryLock("p-abc"))
        self.assertEqual(os.path.getsize(self.path), 0)

    def test_sameKeyConflicts(self) -> None:
        """
        A key locked by one instance cannot be locked by another instance on
        the same file, even in the same process.
        """
        first, second = self.makeLocks(), self.makeLocks()
        self.assertTrue(first.tryLock("p-one"))
        self.assertFalse(second.tryLock("p-one"))

    def test_otherKeysFree(self) -> None:
        """
        A lock on one key leaves other keys free for another instance.
        """
        first, second = self.makeLocks(), self.makeLocks()
        self.assertTrue(first.tryLock("p-one"))
        self.assertTrue(second.tryLock("p-two"))
        self.assertFalse(first.tryLock("p-two"))

    def test_unlockFrees(self) -> None:
        """
        After C{unlock} another instance can take the key, and then holds it
        against the first.
        """
        first, second = self.makeLocks(), self.makeLocks()
        self.assertTrue(first.tryLock("p-one"))
        first.unlock("p-one")
        self.assertTrue(second.tryLock("p-one"))
        self.assertFalse(first.tryLock("p-one"))

    def test_unlockOnlyThatKey(self) -> None:
        """
        Unlocking one key keeps the instance's other locks.
        """
        first, second = self.makeLocks(), self.makeLocks()
        self.assertTrue(first.tryLock("p-one"))
        self.assertTrue(first.tryLock("p-two"))
        first.unlock("p-one")
        self.assertTrue(second.tryLock("p-one"))
        self.assertFalse(second.tryLock("p-two"))

    def test_relockOwnKey(self) -> None:
        """
        An instance may lock a key it already holds, and still holds it
        against others.
        """
        first, second = self.makeLocks(), self.makeLocks()
        self.assertTrue(first.tryLock("p-one"))
        self.assertTrue(first.tryLock("p-one"))
        self.assertFalse(second.tryLock("p-one"))

    def test_closeReleases(self) -> None:
        """
        Closing an instance lets go of all its locks.
        """
        first = RegionLocks(self.path)
        second = self.makeLocks()
        self.assertTrue(first.tryLock("p-one"))
        first.close()
        self.assertTrue(second.tryLock("p-one"))

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
        self.assertTrue(parent.tryLock("p-held"))

        def child() -> int:
            locks = RegionLocks(self.path)
            return 10 + int(locks.tryLock("p-held")) + 2 * int(locks.tryLock("p-free"))

        # 10 + 0 (held key refused) + 2 (other key granted)
        self.assertEqual(self.runChild(child), 12)
        # And the child's lock on p-free went away with it.
        self.assertTrue(parent.tryLock("p-free"))

    def test_childAfterUnlock(self) -> None:
        """
        Once the parent unlocks its key, a child process can take it.
        """
        parent = self.makeLocks()
        self.assertTrue(parent.tryLock("p-held"))
        parent.unlock("p-held")

        def child() -> int:
            return 10 + int(RegionLocks(self.path).tryLock("p-held"))

        self.assertEqual(self.runChild(child), 11)

    def test_childExitReleases(self) -> None:
        """
        A lock held by a process that exits without unlocking (as after
        C{kill -9}) is free for others.
        """

        def child() -> int:
            locks = RegionLocks(self.path)
            return 10 + int(locks.tryLock("p-crash"))

        self.assertEqual(self.runChild(child), 11)
        self.assertTrue(self.makeLocks().tryLock("p-crash"))
