"""
Takeover across processes, in pieces: the marker a blocked writer leaves, and
the app's look that ends the local holder.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from types import SimpleNamespace

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import Busy
from uploadsvc.protocol.decisions import planWrite
from uploadsvc.protocol.paths import parseRelativePath
from uploadsvc.storage.filestore import FileStore
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import UploadApp

decide = functools.partial(planWrite, contentRange=None, contentLength=None, allowOverwrite=False)


class MarkerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.holder = FileStore(self.root, fsync=False)
        self.waiter = FileStore(self.root, fsync=False, lockWait=5.0)
        self.addCleanup(self.holder.close)
        self.addCleanup(self.waiter.close)
        self.path = parseRelativePath("m.bin")
        self.key = FileStore.keyFor(self.path)

    def waiterAsks(self) -> tuple[threading.Thread, list[object]]:
        """
        Start the waiter's C{begin} in a thread and return once its
        takeover marker reaches the holder (the thread, and where its
        result goes).
        """
        result: list[object] = []
        thread = threading.Thread(
            target=lambda: result.append(self.waiter.begin(self.path, decide, {}, None))
        )
        thread.start()
        for _ in range(200):
            if self.holder.pendingTakeovers():
                break
            threading.Event().wait(0.01)
        self.assertEqual(self.holder.pendingTakeovers(), [self.key])
        return thread, result

    def test_blockedWriterAsks(self) -> None:
        """A writer blocked by another store's lock leaves a marker, which goes once it gets the lock."""
        _, _, staged = self.holder.begin(self.path, decide, {}, None)
        thread, result = self.waiterAsks()
        staged.close()  # the holder lets go
        thread.join(10)
        self.assertEqual(len(result), 1)
        result[0][2].close()  # type: ignore[index]
        self.assertEqual(self.holder.pendingTakeovers(), [])

    def test_givingUpClearsMarker(self) -> None:
        """A writer that times out gets Busy (503) and leaves no marker behind."""
        self.waiter.lockWait = 0.2
        _, _, staged = self.holder.begin(self.path, decide, {}, None)
        self.addCleanup(staged.close)
        error = self.assertRaises(Busy, self.waiter.begin, self.path, decide, {}, None)
        self.assertEqual(error.status, 503)
        self.assertEqual(self.holder.pendingTakeovers(), [])

    def test_takeoverFolderRemoved(self) -> None:
        """
        A takeover folder removed while both run (a clean-up of empty
        folders) is made again: the waiter's marker still reaches the
        holder, and nobody answers 500.
        """
        _, _, staged = self.holder.begin(self.path, decide, {}, None)
        os.rmdir(os.path.join(self.root, ".uploadsvc", "takeover"))
        thread, result = self.waiterAsks()
        staged.close()
        thread.join(10)
        self.assertEqual(len(result), 1)
        result[0][2].close()  # type: ignore[index]

    def test_lockFileKeptRecent(self) -> None:
        """
        While uploads are written, the look keeps the lock file's
        modification time recent (an age-based clean-up passes it by).
        """
        lockFile = os.path.join(self.root, ".uploadsvc", "lock")
        os.utime(lockFile, (0, 0))
        self.holder.pendingTakeovers()
        self.assertGreater(os.stat(lockFile).st_mtime, time.time() - 3600)

    def test_staleMarkerCleared(self) -> None:
        """Taking an uncontended lock removes a marker left by a writer that went away."""
        open(os.path.join(self.root, ".uploadsvc", "takeover", self.key), "w").close()
        _, _, staged = self.holder.begin(self.path, decide, {}, None)
        staged.close()
        self.assertEqual(self.holder.pendingTakeovers(), [])


class CheckTakeoversTests(SynchronousTestCase):
    def test_interruptsLocalHolder(self) -> None:
        """The app's look ends the local request holding the lock of an upload another process wants, and no other, not even one of its own that waits for that lock."""
        root = os.path.abspath(self.mktemp())
        store = FileStore(root, fsync=False)
        self.addCleanup(store.close)
        app = UploadApp(store, ImmediateRunner())
        interrupted: list[str] = []
        for key in ("p-wanted", "p-other", "p-waiting"):
            app.writers.acquire(key, lambda key=key: interrupted.append(key))
        # Two of them hold the store's lock; p-waiting is still waiting for it.
        app._staging["p-wanted"] = app._staging["p-other"] = SimpleNamespace(lock=None)  # type: ignore[assignment]
        for key in ("p-wanted", "p-waiting"):
            open(os.path.join(root, ".uploadsvc", "takeover", key), "w").close()
        app.checkTakeovers()
        app.checkTakeovers()
        self.assertEqual(interrupted, ["p-wanted"])

    def test_replacedLockFileEndsWriters(self) -> None:
        """
        When the lock file is removed or replaced, a process that starts
        later locks another file, so the look ends this process's writers
        still holding locks in the old one (their bytes are kept); writers
        that begin afterwards lock the new file.
        """
        root = os.path.abspath(self.mktemp())
        store = FileStore(root, fsync=False)
        self.addCleanup(store.close)
        app = UploadApp(store, ImmediateRunner())
        path = parseRelativePath("l.bin")
        key = FileStore.keyFor(path)
        interrupted: list[str] = []
        app.writers.acquire(key, lambda: interrupted.append(key))
        _, _, staged = store.begin(path, decide, {}, None)
        assert staged is not None
        self.addCleanup(staged.close)
        app._staging[key] = staged
        app.checkTakeovers()
        self.assertEqual(interrupted, [])
        os.unlink(os.path.join(root, ".uploadsvc", "lock"))
        later = FileStore(root, fsync=False, lockWait=0.2)  # another process, started now
        self.addCleanup(later.close)
        app.checkTakeovers()
        self.assertEqual(interrupted, [key])
        # Until this writer has let go, the later process is kept out by
        # the lock on the data file itself.
        self.assertRaises(Busy, later.begin, path, decide, {}, None)
        staged.close()
        _, _, again = store.begin(path, decide, {}, None)
        assert again is not None
        self.addCleanup(again.close)
        self.assertTrue(store.holdsCurrentLock(again))
        self.assertRaises(Busy, later.begin, path, decide, {}, None)

    def test_reopeningKeepsNoDescriptors(self) -> None:
        """
        A clean-up job that keeps removing the empty takeover folder makes
        the store reopen its state each time, without piling up
        descriptors.
        """
        root = os.path.abspath(self.mktemp())
        store = FileStore(root, fsync=False)
        self.addCleanup(store.close)
        store.pendingTakeovers()
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            os.rmdir(os.path.join(root, ".uploadsvc", "takeover"))
            self.assertEqual(store.pendingTakeovers(), [])
        self.assertLessEqual(len(os.listdir("/proc/self/fd")), before + 8)

    def test_nothingHeldNoLook(self) -> None:
        """With no upload in progress, the look does not touch the disk."""
        root = os.path.abspath(self.mktemp())
        store = FileStore(root, fsync=False)
        self.addCleanup(store.close)
        self.assertIsNone(UploadApp(store, ImmediateRunner()).checkTakeovers())


class LookFailureTests(SynchronousTestCase):
    def test_storageFaultLoggedOnce(self) -> None:
        """
        While the root is missing, the twice-a-second look logs one line,
        not a traceback each time; once it works again, a new fault is
        logged again.
        """
        base = os.path.abspath(self.mktemp())
        root = os.path.join(base, "root")
        store = FileStore(root, fsync=False)
        self.addCleanup(store.close)
        app = UploadApp(store, ImmediateRunner())
        app._staging["p-x"] = SimpleNamespace(lock=None)  # type: ignore[assignment]
        logged: list[dict[str, object]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        os.rename(root, root + ".away")
        for _ in range(5):
            app.checkTakeovers()
        errors = [e for e in logged if "looking for takeovers" in str(e.get("log_format"))]
        self.assertEqual(len(errors), 1)
        self.assertNotIn("log_failure", errors[0])
        os.rename(root + ".away", root)
        app.checkTakeovers()
        os.rename(root, root + ".away")
        app.checkTakeovers()
        errors = [e for e in logged if "looking for takeovers" in str(e.get("log_format"))]
        self.assertEqual(len(errors), 2)
