"""
The lifecycle events that L{UploadApp} emits (created, resumed, taken over,
completed, cancelled) and the latencies it times, through StubTreq with a
real store on a temp folder and disk calls run inline.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any, Callable

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from uploadsvc.ops.events import Events, UploadEvent
from uploadsvc.ops.requestnotes import notesFor
from uploadsvc.protocol.paths import parseRelativePath
from uploadsvc.storage.filestore import FileStore
from uploadsvc.web.app import Config, UploadApp
from tests.support.stubapp import StubRequests

BODY = bytes(range(256)) * 4  # 1024 bytes


class SlowRunner:
    """
    Runs each disk call inline, the clock moving a quarter second first:
    every timed disk call takes exactly 0.25 s.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def run(self, f: Callable[..., object], *args: object) -> Deferred:
        self.clock.advance(0.25)
        return maybeDeferred(f, *args)

    def callInThread(self, f: Callable[..., object], *args: object) -> None:
        f(*args)

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        f(*args)


class AppEventsTests(StubRequests, SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.store = FileStore(self.root, fsync=False)
        self.addCleanup(self.store.close)
        self.clock = Clock()
        self.events = Events()
        self.heard: list[UploadEvent] = []
        self.events.subscribe(self.heard.append)
        self.timings: list[tuple[str, float]] = []
        self.app = UploadApp(
            self.store, SlowRunner(self.clock), Config(allowDelete=True), clock=self.clock,
            events=self.events, latency=lambda what, s: self.timings.append((what, s)),
        )
        self.treq = StubTreq(self.app.resource())

    def kinds(self) -> list[tuple[str, str | None, int | None, int | None]]:
        return [(e.kind, e.path, e.offset, e.total) for e in self.heard]

    def test_oneRequestUpload(self) -> None:
        """A whole PUT is created then completed, with its size, and its completion timed."""
        response, _ = self.request("PUT", "/a/b.bin", BODY)
        self.assertEqual(response.code, 201)
        self.assertEqual(
            self.kinds(), [("created", "a/b.bin", 1024, 1024), ("completed", "a/b.bin", 1024, 1024)]
        )
        self.assertEqual(self.heard[0].key, self.store.keyFor(parseRelativePath("a/b.bin")))
        self.assertEqual({e.protocol for e in self.heard}, {"put"})
        self.assertEqual(self.timings, [("completion", 0.25)])

    def test_emptyFile(self) -> None:
        """An empty file is created and completed too."""
        self.request("PUT", "/empty", b"")
        self.assertEqual(self.kinds(), [("created", "empty", 0, 0), ("completed", "empty", 0, 0)])

    def test_resumed(self) -> None:
        """
        A first piece creates the upload (its sync timed), a second resumes
        it from its offset and completes it.
        """
        self.request("PUT", "/r", BODY[:100], Content_Range="bytes 0-99/1024")
        self.assertEqual(self.kinds(), [("created", "r", 100, 1024)])
        self.assertEqual(self.timings, [("fsync", 0.25)])
        self.request("PUT", "/r", BODY[100:], Content_Range="bytes 100-1023/1024")
        self.assertEqual(
            self.kinds()[1:], [("resumed", "r", 100, 1024), ("completed", "r", 1024, 1024)]
        )
        self.assertEqual(self.timings[1:], [("completion", 0.25)])

    def test_refusedEmitsNothing(self) -> None:
        """A refused write (a gap: 409) and a status query tell no event."""
        self.request("PUT", "/g", BODY[:100], Content_Range="bytes 0-99/1024")
        del self.heard[:]
        self.assertEqual(
            self.request("PUT", "/g", BODY[:10], Content_Range="bytes 200-209/1024")[0].code, 409
        )
        self.request("HEAD", "/g")
        self.request("PUT", "/g", Content_Range="bytes */1024")
        self.assertEqual(self.heard, [])

    def test_cancelled(self) -> None:
        """DELETE of an incomplete upload tells cancelled; DELETE of a complete file does not."""
        self.request("PUT", "/c", BODY[:100], Content_Range="bytes 0-99/1024")
        self.request("PUT", "/done", BODY)
        del self.heard[:]
        self.assertEqual(self.request("DELETE", "/c")[0].code, 204)
        self.assertEqual(self.kinds(), [("cancelled", "c", None, None)])
        self.assertEqual(self.request("DELETE", "/done")[0].code, 204)
        self.assertEqual(len(self.heard), 1)

    def test_requestIdAndCredential(self) -> None:
        """Events carry the id and the credential name noted on the request."""
        request = DummyRequest([b""])
        notes = notesFor(request)
        notes.credential = "phones"
        path = parseRelativePath("x.bin")
        self.app._emit("created", request, path, 0, 10)
        self.assertEqual(self.heard[0].requestId, notes.requestId)
        self.assertEqual(self.heard[0].credential, "phones")

    def test_takenOver(self) -> None:
        """
        A newer request for an upload held by an older one tells taken-over
        for the older request, whose connection is dropped.
        """
        path = parseRelativePath("t.bin")
        older, newer = DummyRequest([b""]), DummyRequest([b""])
        aborted: list[bool] = []
        older.channel = SimpleNamespace(  # type: ignore[attr-defined]
            transport=SimpleNamespace(abortConnection=lambda: aborted.append(True))
        )
        release: Any = self.successResultOf(self.app._acquire(older, path))
        waiting = self.app._acquire(newer, path)
        self.assertEqual(self.kinds(), [("taken-over", "t.bin", None, None)])
        self.assertEqual(self.heard[0].requestId, notesFor(older).requestId)
        self.assertEqual(aborted, [True])
        release()
        self.successResultOf(waiting)()
