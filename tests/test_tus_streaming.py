"""
A tus PATCH body streams like a path PUT's (docs/architecture.md): through
the real channel and app, a slow disk (writes the test completes by hand)
pauses the client's connection at the high-water mark, and only the sink's
writes resume it. Deterministic: a StringTransport, a Clock, a MemoryStore.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.storage.memory import MemoryStore
from uploadsvc.testing.runners import ManualRunner
from uploadsvc.web.app import Config, UploadApp
from uploadsvc.web.streaming import StreamingSite

HIGH = 64 * 1024
LOW = 16 * 1024
TOTAL = 1024 * 1024


class TusFlowControlTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.runner = ManualRunner()
        self.store = MemoryStore(now=self.clock.seconds)
        app = UploadApp(
            self.store, self.runner,  # type: ignore[arg-type]
            Config(highWater=HIGH, lowWater=LOW), clock=self.clock,
        )
        self.uploadId = self.store.create(None, total=TOTAL)
        site = StreamingSite(app.resource(), timeout=60, reactor=self.clock)
        self.channel: Any = site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def storeCalls(self) -> None:
        """
        Run the store's pending calls (not the sink's writes), until none
        is left.
        """
        while True:
            calls = [i for i, (_, _, d) in enumerate(self.runner.pending) if d is not None]
            if not calls:
                return
            f, args, d = self.runner.pending.pop(calls[0])
            assert d is not None
            maybeDeferred(f, *args).chainDeferred(d)

    def test_pausedAndResumedBySink(self) -> None:
        """Bytes held past the high-water mark pause the transport; writes resume it."""
        head = (
            b"PATCH /.tus/" + self.uploadId.value.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            b"Content-Type: application/offset+octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n" % TOTAL
        )
        self.channel.dataReceived(head)
        self.storeCalls()  # describe, then begin under the lock
        body = bytes(range(256)) * (TOTAL // 256)
        sent = 0
        while self.transport.producerState == "producing" and sent < TOTAL:
            self.channel.dataReceived(body[sent : sent + 4096])
            sent += 4096
        self.assertEqual(self.transport.producerState, "paused")
        self.assertLess(sent, TOTAL)
        # The disk catches up: reading resumes, and the rest goes through.
        while sent < TOTAL or self.runner.pending:
            if self.transport.producerState == "producing" and sent < TOTAL:
                self.channel.dataReceived(body[sent : sent + 4096])
                sent += 4096
            elif self.runner.pending:
                self.runner.complete()
            else:
                self.fail("paused with nothing pending")
        self.assertIn(b"HTTP/1.1 204 ", self.transport.value())
        self.assertEqual(self.store.files[f"incoming/{self.uploadId.value}"], body)
