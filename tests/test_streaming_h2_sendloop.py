"""
Tests for the HTTP/2 send loop of L{uploadsvc.web.streaming.h2fixes}: a
C{WINDOW_UPDATE} and an C{RST_STREAM} read together, while the loop sleeps
for want of window, leave the loop alive for the other streams.

Deterministic: the server is a L{StreamingSite} channel on a
L{StringTransport}, the client is the C{h2} library's state machine (see
L{tests.test_streaming_h2}), and time moves with a L{BoundedClock}.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import H2_ENABLED
from twisted.web.resource import Resource

from tests.test_streaming_h2 import BoundedClock, H2Client, connect

if H2_ENABLED:
    import h2.events
    import h2.exceptions

skip = None if H2_ENABLED else "the h2 package is not installed"

#: A response larger than the client's default connection window (65,535).
BIG = bytes(range(256)) * 1024
SMALL = b"a small answer"


class SizedResource(Resource):
    """
    Answers C{GET /big} with L{BIG} and any other C{GET} with L{SMALL}.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        body = BIG if request.path == b"/big" else SMALL
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return body


def received(client: H2Client, streamID: int) -> bytes:
    """
    The response body bytes the client received on C{streamID}.
    """
    return b"".join(e.data for e in client.of(h2.events.DataReceived, streamID))


class WindowUpdateWithResetTests(SynchronousTestCase):
    """
    Two responses wait for connection window; the client opens the window
    and resets one of them in a single packet: the other response and a new
    stream are still served (the reset stream may be the one the send loop
    would have picked first, which C{h2} has already closed while Twisted has
    not yet seen the reset).
    """

    def setUp(self) -> None:
        self.clock = BoundedClock()
        self.client = connect(SizedResource(), self.clock)
        self.first = self.client.request(b"GET", b"/big", end=True)
        self.second = self.client.request(b"GET", b"/big", end=True)
        # Both stall: the client never acknowledges what it receives.
        self.assertEqual(self.client.conn.inbound_flow_control_window, 0)
        self.assertLess(len(received(self.client, self.first)), len(BIG))
        self.assertLess(len(received(self.client, self.second)), len(BIG))

    def resetWithWindowUpdate(self, reset: int, kept: int) -> None:
        """
        Send a connection WINDOW_UPDATE and RST_STREAM for C{reset} in one
        read of the server's; then open C{kept}'s window and ask for a small
        file on the same connection: both answers arrive whole.
        """
        self.client.conn.increment_flow_control_window(len(BIG) * 4)
        self.client.conn.reset_stream(reset)
        self.client.exchange()
        self.client.conn.increment_flow_control_window(len(BIG), stream_id=kept)
        self.client.exchange()
        small = self.client.request(b"GET", b"/small", end=True)
        self.client.exchange()
        self.assertEqual(received(self.client, kept), BIG)
        self.assertTrue(self.client.of(h2.events.StreamEnded, kept))
        self.assertEqual(received(self.client, small), SMALL)
        self.assertTrue(self.client.of(h2.events.StreamEnded, small))
        self.assertFalse(self.clock.spun)
        self.assertEqual(self.flushLoggedErrors(h2.exceptions.StreamClosedError), [])
        channel = self.client.server._channel
        self.assertNotIn(reset, channel.streams)

    def test_resetFirstStream(self) -> None:
        """Resetting the first stream in the packet that opens the window leaves the second and a new stream served."""
        self.resetWithWindowUpdate(self.first, self.second)

    def test_resetSecondStream(self) -> None:
        """Resetting the second stream in the packet that opens the window leaves the first and a new stream served."""
        self.resetWithWindowUpdate(self.second, self.first)

    def test_newStreamInSamePacket(self) -> None:
        """A request answered in the same packet, before the reset is handled, wakes a loop that skips the closed stream."""
        for reset, kept in [(self.first, self.second), (self.second, self.first)]:
            self.setUp()
            self.client.conn.increment_flow_control_window(len(BIG) * 4)
            fields = [(b":method", b"GET"), (b":path", b"/small"), (b":scheme", b"https"), (b":authority", b"x")]
            small = self.client.conn.get_next_available_stream_id()
            self.client.conn.send_headers(small, fields, end_stream=True)
            self.client.conn.reset_stream(reset)
            self.client.exchange()
            self.client.conn.increment_flow_control_window(len(BIG), stream_id=kept)
            self.client.exchange()
            self.assertEqual(received(self.client, small), SMALL)
            self.assertEqual(received(self.client, kept), BIG)
            self.assertFalse(self.clock.spun)
            self.assertEqual(self.flushLoggedErrors(h2.exceptions.StreamClosedError), [])
            self.assertNotIn(reset, self.client.server._channel.streams)

    def test_wakeAfterFrames(self) -> None:
        """A window update wakes the sleeping send loop on the next reactor turn, not while the frames of its read are handled."""
        self.client.conn.increment_flow_control_window(len(BIG) * 4)
        self.client.server.dataReceived(self.client.conn.data_to_send())
        during = self.client.conn.receive_data(self.client.transport.value())
        self.client.transport.clear()
        self.assertEqual([e for e in during if isinstance(e, h2.events.DataReceived)], [])
        later = self.client.exchange()
        # (The first stream used up its own window; the second has some.)
        self.assertTrue(self.client.of(h2.events.DataReceived, self.second, later))

    def test_closedWithoutResetLetGo(self) -> None:
        """A stream h2 closed with no reset left for Twisted to handle is let go of by the send loop, its queued answer dropped."""
        channel = self.client.server._channel
        channel.conn.reset_stream(self.first)
        self.client.conn.increment_flow_control_window(len(BIG) * 4)
        self.client.conn.increment_flow_control_window(len(BIG), stream_id=self.second)
        self.client.exchange()
        self.assertEqual(received(self.client, self.second), BIG)
        self.assertNotIn(self.first, channel.streams)
        self.assertNotIn(self.first, channel._outboundStreamQueues)
        self.assertEqual(self.flushLoggedErrors(h2.exceptions.StreamClosedError), [])
