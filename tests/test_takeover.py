"""
Takeover across processes, in pieces: the marker a blocked writer leaves, and
the app's look that ends the local holder.
"""

from __future__ import annotations

import functools
import os
import time
from types import SimpleNamespace
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import Busy, UnsafeState
from uploadsvc.protocol.decisions import planWrite
from uploadsvc.protocol.paths import parseRelativePath
from uploadsvc.storage.filestore import FileStore
from uploadsvc.testing.runners import ImmediateRunner, ManualRunner
from uploadsvc.web.app import LOCK_RETRY, Config, UploadApp
from uploadsvc.web.streaming import StreamingSite
from tests.support.staging import stageFully
from tests.support.stubapp import StubRequests

decide = functools.partial(planWrite, contentRange=None, contentLength=None, allowOverwrite=False)


class MarkerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.holder = FileStore(self.root, fsync=False)
        self.waiter = FileStore(self.root, fsync=False)
        self.addCleanup(self.holder.close)
        self.addCleanup(self.waiter.close)
        self.path = parseRelativePath("m.bin")
        self.key = FileStore.keyFor(self.path)

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

    def test_plantedMarkerRefusedLockFreed(self) -> None:
        """
        A folder planted at the marker's name makes C{begin} refuse with
        L{UnsafeState}, leaves the folder, and frees the writer lock: once
        the operator removed it, the upload is written.
        """
        planted = os.path.join(self.root, ".uploadsvc", "takeover", self.key)
        os.mkdir(planted)
        error = self.assertRaises(UnsafeState, self.holder.begin, self.path, decide, {}, None)
        self.assertEqual(error.code, "unsafe-state")
        self.assertTrue(os.path.isdir(planted))
        os.rmdir(planted)
        _, _, staged = self.waiter.begin(self.path, decide, {}, None)
        staged.close()

    def test_heldRefusedAtOnce(self) -> None:
        """
        C{begin} and C{cancel} of an upload another process holds are
        refused at once, and leave no marker: only a waiter asks the holder
        to let go, and taking the lock withdraws the request.
        """
        _, _, staged = self.holder.begin(self.path, decide, {}, None)
        for call in (
            lambda: self.waiter.begin(self.path, decide, {}, None),
            lambda: self.waiter.cancel(self.path),
        ):
            error = self.assertRaises(Busy, call)
            self.assertEqual((error.status, error.code), (503, "locked"))
            self.assertEqual(self.holder.pendingTakeovers(), [])
        self.waiter.askTakeover(self.key)
        self.assertEqual(self.holder.pendingTakeovers(), [self.key])
        staged.close()
        _, _, taken = self.waiter.begin(self.path, decide, {}, None)
        self.addCleanup(taken.close)
        self.assertEqual(self.holder.pendingTakeovers(), [])


class LockWaitTests(StubRequests, SynchronousTestCase):
    """
    A request for an upload that another process holds waits for it on the
    app's clock, between tries in the disk pool that never wait.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.holder = FileStore(self.root, fsync=False)  # another process
        self.store = FileStore(self.root, fsync=False)
        self.addCleanup(self.holder.close)
        self.addCleanup(self.store.close)
        self.clock = Clock()
        self.app = UploadApp(self.store, ImmediateRunner(), Config(lockWait=1.0), clock=self.clock)
        self.treq = StubTreq(self.app.resource())
        self.path = parseRelativePath("m.bin")
        self.key = FileStore.keyFor(self.path)

    def recordTries(self, name: str) -> list[str]:
        """
        Record how each call of the store's C{name} (C{begin} or C{cancel})
        in the pool ended: C{"busy"} or C{"done"}.
        """
        tries: list[str] = []
        method = getattr(self.store, name)

        def recording(*args: Any) -> Any:
            try:
                result = method(*args)
            except Busy:
                tries.append("busy")
                raise
            tries.append("done")
            return result

        self.patch(self.store, name, recording)
        return tries

    def hold(self) -> Any:
        _, _, staged = self.holder.begin(self.path, decide, {}, None)
        self.addCleanup(staged.close)
        return staged

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.treq.flush()

    def answer(self, d: Any) -> tuple[Any, bytes]:
        response = self.successResultOf(d)
        return response, self.successResultOf(self.treq.content(response))

    def test_waitsOnTheClock(self) -> None:
        """
        A write blocked by another process's lock leaves a marker asking it
        to let go and is not answered (the pool is not held), tries again as
        the clock moves, and once the holder lets go writes the upload and
        withdraws the marker.
        """
        staged = self.hold()
        tries = self.recordTries("begin")
        d = self.treq.request("PUT", "http://example/m.bin", data=b"data")
        self.treq.flush()
        self.assertNoResult(d)
        self.assertEqual(self.holder.pendingTakeovers(), [self.key])
        self.advance(LOCK_RETRY)
        self.assertNoResult(d)
        self.assertEqual(self.holder.pendingTakeovers(), [self.key])
        staged.close()  # the holder lets go
        self.assertNoResult(d)
        self.advance(LOCK_RETRY)
        response, _ = self.answer(d)
        self.assertEqual(response.code, 201)
        with open(os.path.join(self.root, "m.bin"), "rb") as f:
            self.assertEqual(f.read(), b"data")
        self.assertEqual(self.holder.pendingTakeovers(), [])
        # One try per step of the clock, each answered at once in the pool.
        self.assertEqual(tries, ["busy", "busy", "done"])

    def test_clientGoneEndsTheWait(self) -> None:
        """
        A waiting request whose client goes away stops waiting and
        withdraws its marker: the writer that holds the upload keeps it,
        and its bytes stay, even when it lets go later.
        """
        staged = self.hold()
        staged.writeChunks([b"x" * 1000])
        finished: Deferred = Deferred()
        request = SimpleNamespace(notifyFinish=lambda: finished)
        began = Deferred.fromCoroutine(self.app._whenUnlocked(
            request, self.key, self.store.begin, self.path, decide, {}, None
        ))
        self.assertNoResult(began)
        self.assertEqual(self.holder.pendingTakeovers(), [self.key])
        finished.errback(ConnectionDone("the client hung up"))
        self.advance(LOCK_RETRY)
        self.failureResultOf(began, CancelledError)
        self.assertEqual(self.holder.pendingTakeovers(), [])
        staged.syncAndClose()  # the holder lets go later
        for _ in range(30):
            self.advance(LOCK_RETRY)
        self.assertEqual(self.store.inspect(self.path).offset, 1000)

    def test_givesUpAfterLockWait(self) -> None:
        """
        A holder that does not let go within the app's lockWait gets the
        request answered 503 with Retry-After, and the marker withdrawn.
        """
        self.hold()
        d = self.treq.request("PUT", "http://example/m.bin", data=b"data")
        self.treq.flush()
        for _ in range(19):
            self.advance(LOCK_RETRY)
        self.assertNoResult(d)
        self.advance(LOCK_RETRY)
        response, content = self.answer(d)
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("Retry-After"), ["1"])
        self.assertEqual(content, b"the upload is being written by another process\n")
        self.assertEqual(self.holder.pendingTakeovers(), [])
        self.assertFalse(os.path.exists(os.path.join(self.root, "m.bin")))

    def test_deleteWaitsOnTheClock(self) -> None:
        """A cancel of an upload another process writes waits for it on the clock too."""
        staged = self.hold()
        tries = self.recordTries("cancel")
        d = self.treq.request("DELETE", "http://example/m.bin")
        self.treq.flush()
        self.assertNoResult(d)
        self.assertEqual(self.holder.pendingTakeovers(), [self.key])
        staged.close()
        self.advance(LOCK_RETRY)
        response, _ = self.answer(d)
        self.assertEqual(response.code, 204)
        self.assertEqual(self.holder.pendingTakeovers(), [])
        self.assertEqual(self.store.inspect(self.path).incomplete, False)
        self.assertEqual(tries, ["busy", "done"])

    def test_takeoverFolderRemoved(self) -> None:
        """
        A takeover folder removed while both run (a clean-up of empty
        folders) is made again: the waiter's marker still reaches the
        holder, and nobody answers 500.
        """
        staged = self.hold()
        os.rmdir(os.path.join(self.root, ".uploadsvc", "takeover"))
        d = self.treq.request("PUT", "http://example/m.bin", data=b"data")
        self.treq.flush()
        self.assertEqual(self.holder.pendingTakeovers(), [self.key])
        staged.close()
        self.advance(LOCK_RETRY)
        self.assertEqual(self.answer(d)[0].code, 201)

    def test_refusedWhileWaitingWithdraws(self) -> None:
        """
        A waiter refused for another reason on a later try (here the disk
        filled up) withdraws its marker: the holder is not ended for it.
        """
        self.app = UploadApp(
            self.store, ImmediateRunner(), Config(lockWait=1.0, minFreeBytes=1), clock=self.clock
        )
        self.treq = StubTreq(self.app.resource())
        self.hold()
        d = self.treq.request("PUT", "http://example/m.bin", data=b"data")
        self.treq.flush()
        self.assertEqual(self.holder.pendingTakeovers(), [self.key])
        self.patch(self.store, "freeBytes", lambda: 0)
        self.advance(LOCK_RETRY)
        self.assertEqual(self.answer(d)[0].code, 507)
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
        later = FileStore(root, fsync=False)  # another process, started now
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


class CompletionUnderWayTests(SynchronousTestCase):
    """
    A writer whose completion already runs in the disk pool is not ended by
    a newer request or another process's takeover: the rename cannot be
    called back, so it answers its client, and the next writer then finds
    the upload complete (before, its client lost the connection though its
    file landed, and sometimes no client got the 201).
    """

    BODY = b"c" * 1000

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.store = FileStore(self.root, fsync=False)
        self.addCleanup(self.store.close)
        self.runner = ManualRunner()
        self.app = UploadApp(self.store, self.runner, Config())
        self.heard: list[Any] = []
        self.app.events.subscribe(self.heard.append)
        self.treq = StubTreq(self.app.resource())
        self.key = FileStore.keyFor(parseRelativePath("c.bin"))

    def runUntilCompletion(self) -> None:
        """
        Run the pool's calls until the next one is the completion (the
        write, hash and rename of the whole small body).
        """
        for _ in range(20):
            self.treq.flush()
            if self.runner.pending and self.runner.pending[0][0].__name__ in (
                "_writeAndComplete", "complete",
            ):
                return
            self.runner.complete()
        self.fail(f"no completion queued: {self.runner.pending}")

    def runLatest(self) -> None:
        """
        Run the newest pending pool call (on another thread, ahead of the
        completion), and what it sets off.
        """
        f, args, d = self.runner.pending.pop()
        assert d is not None
        maybeDeferred(f, *args).chainDeferred(d)
        self.treq.flush()

    def finish(self) -> None:
        for _ in range(50):
            self.treq.flush()
            if not self.runner.pending:
                return
            self.runner.complete()

    def test_newerRequestWaits(self) -> None:
        """A newer PUT waits for the completion, then is answered as for a complete file."""
        older = self.treq.put("http://x/c.bin", data=self.BODY)
        self.runUntilCompletion()
        newer = self.treq.put(
            "http://x/c.bin", data=self.BODY, headers={"Content-Range": "bytes 0-999/1000"}
        )
        self.treq.flush()
        # Its disk check runs on another thread meanwhile; then it asks the
        # holder to let go, while the completion still runs.
        self.assertEqual(len(self.runner.pending), 2)
        self.runLatest()
        self.assertTrue(self.app.writers.isHeld(self.key))
        self.finish()
        self.assertEqual(self.successResultOf(older).code, 201)
        self.assertEqual(self.successResultOf(newer).code, 200)  # already complete, same bytes
        self.assertNotIn("taken-over", [e.kind for e in self.heard])
        with open(os.path.join(self.root, "c.bin"), "rb") as f:
            self.assertEqual(f.read(), self.BODY)

    def test_otherProcessWaits(self) -> None:
        """Another process's takeover marker does not end a completion under way."""
        older = self.treq.put("http://x/c.bin", data=self.BODY)
        self.runUntilCompletion()
        open(os.path.join(self.root, ".uploadsvc", "takeover", self.key), "w").close()
        self.app.checkTakeovers()
        self.runLatest()  # its look at the markers, while the completion still runs
        self.finish()
        self.assertEqual(self.successResultOf(older).code, 201)
        self.assertNotIn("taken-over", [e.kind for e in self.heard])

    def test_endedBeforeCompletionDoesNotComplete(self) -> None:
        """
        A writer asked to let go after its whole body arrived but before
        its completion began does not complete: its client is dropped, the
        upload stays staged, and the newer request completes it (before,
        the file landed for a client that never got an answer).
        """
        site = StreamingSite(self.app.resource(), timeout=60, reactor=Clock())
        channel: Any = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(
            b"PUT /c.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        )
        self.assertTrue(self.runner.pending)  # its begin runs in the pool...
        channel.dataReceived(self.BODY)  # ...while the whole body arrives
        self.app.writers.interrupt(self.key)  # a newer request wants the upload
        self.assertTrue(transport.disconnected)  # (aborted)
        channel.connectionLost(Failure(ConnectionDone()))  # as the reactor tells next
        self.finish()
        self.assertEqual(transport.value(), b"")  # no answer owed, none sent
        self.assertFalse(os.path.exists(os.path.join(self.root, "c.bin")))
        # Its bytes are staged (created), not completed.
        self.assertEqual([e.kind for e in self.heard], ["taken-over", "created"])
        newer = self.treq.put("http://x/c.bin", data=self.BODY)
        self.finish()
        self.assertEqual(self.successResultOf(newer).code, 201)

    def test_endedQueryDoesNotComplete(self) -> None:
        """
        A status query that finds the upload fully staged completes it as
        its last write would; ended by a newer request while it begins, it
        does not (before, the file landed and no client was told).
        """
        stageFully(self.store, "c.bin", self.BODY, 1000)
        query = self.treq.put("http://x/c.bin", headers={"Content-Range": "bytes */1000"})
        for _ in range(10):  # up to its begin, which waits in the pool
            self.treq.flush()
            if self.runner.pending and self.runner.pending[0][0] == self.store.begin:
                break
            self.runner.complete()
        else:
            self.fail(f"the query's begin was not queued: {self.runner.pending}")
        self.app.writers.interrupt(self.key)
        self.finish()
        self.failureResultOf(query)
        self.assertFalse(os.path.exists(os.path.join(self.root, "c.bin")))
        self.assertNotIn("completed", [e.kind for e in self.heard])
        again = self.treq.head("http://x/c.bin")
        self.finish()
        self.assertEqual(self.successResultOf(again).headers.getRawHeaders("Upload-Offset"), ["1000"])
