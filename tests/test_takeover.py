"""
Takeover across processes, in pieces: the marker a blocked writer leaves, and
the app's look that ends the local holder.
"""

from __future__ import annotations

import functools
import os
import threading

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

    def test_blockedWriterAsks(self) -> None:
        """A writer blocked by another store's lock leaves a marker, which goes once it gets the lock."""
        _, _, staged = self.holder.begin(self.path, decide, {}, None)
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
        app._staging["p-wanted"] = app._staging["p-other"] = object()  # type: ignore[assignment]
        for key in ("p-wanted", "p-waiting"):
            open(os.path.join(root, ".uploadsvc", "takeover", key), "w").close()
        app.checkTakeovers()
        app.checkTakeovers()
        self.assertEqual(interrupted, ["p-wanted"])

    def test_nothingHeldNoLook(self) -> None:
        """With no upload in progress, the look does not touch the disk."""
        root = os.path.abspath(self.mktemp())
        store = FileStore(root, fsync=False)
        self.addCleanup(store.close)
        self.assertIsNone(UploadApp(store, ImmediateRunner()).checkTakeovers())
