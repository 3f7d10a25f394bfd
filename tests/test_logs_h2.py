"""
Tests for the access line of an HTTP/2 download whose client left
(L{uploadsvc.web.observed}): the body bytes counted as sent are those that
went out, not those still queued on the stream for want of window.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import H2_ENABLED
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tests.test_logs import Captured
from tests.test_streaming_h2 import BoundedClock, H2Client, NetworkTransport
from tests.test_streaming_h2_sendloop import BIG, received
from uploadsvc.web.observed import ObservedSite

if H2_ENABLED:
    import h2.events

skip = None if H2_ENABLED else "the h2 package is not installed"


class UnfinishedResource(Resource):
    """
    Writes L{BIG} and leaves the answer unfinished, as a download does
    until its last byte is read from disk.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> object:
        request.setHeader(b"Content-Length", b"%d" % (2 * len(BIG)))
        request.write(BIG)
        return NOT_DONE_YET


class LostH2DownloadTests(SynchronousTestCase):
    def test_queuedBytesNotCounted(self) -> None:
        """A reset GET whose answer waits for window is logged lost with the body bytes the client got, of the length."""
        log = Captured(self)
        clock = BoundedClock()
        site = ObservedSite(UnfinishedResource(), reactor=clock, timeout=60)
        channel = site.buildProtocol(None)
        transport: StringTransport = NetworkTransport()
        transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        channel.makeConnection(transport)
        client = H2Client(channel, transport, clock)
        client.exchange()
        sid = client.request(b"GET", b"/big", end=True)
        got = len(received(client, sid))
        self.assertLess(got, len(BIG))  # the rest waits for window
        client.conn.reset_stream(sid)
        client.exchange()
        [event] = [e for e in log.events if e.get("log_namespace") == "uploadsvc.access"]
        self.assertIn(
            f"lost: the client went away during the answer ({got} of {2 * len(BIG)} body bytes sent)",
            formatEvent(event),
        )
        self.assertTrue(client.of(h2.events.ResponseReceived, sid))
        [access] = log.records("access")
        self.assertEqual((access["status"], access["responseBytes"]), ("lost", got))
