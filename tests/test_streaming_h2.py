"""
Tests for the HTTP/2 side of L{uploadsvc.web.streaming}: a stream with a body
is rendered at header time, its DATA reaches the receiver, a refusal goes out
before the body, and a paused body grants its stream no flow-control window.

Deterministic: the server is a L{StreamingSite} channel on a
L{StringTransport} that claims ALPN negotiated C{h2}, the client is the
C{h2} library's state machine, and time moves with a L{Clock}.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.http import H2_ENABLED

from tests.test_streaming import TIMEOUT, BodyResource, RecordingReceiver, sinkReceivers
from uploadsvc.sink import FileSink
from uploadsvc.testing.runners import ManualRunner
from uploadsvc.web.receiver import COMPLETE
from uploadsvc.web.streaming import (
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELDS,
    StreamingH2Connection,
    StreamingHTTPChannel,
    StreamingSite,
    abortRequest,
)

if H2_ENABLED:
    import h2.config
    import h2.connection
    import h2.events
    from h2.errors import ErrorCodes
    from hpack import Encoder
    from hyperframe.frame import DataFrame

skip = None if H2_ENABLED else "the h2 package is not installed"

#: The largest DATA frame before the server says otherwise (RFC 9113 4.2).
FRAME = 16384


class H2Client:
    """
    The client side of one HTTP/2 connection to a server channel, driven by
    hand: L{exchange} moves bytes both ways until both sides are quiet.

    @ivar events: every event the client saw, in order.
    """

    def __init__(self, server: Any, transport: StringTransport, clock: Clock) -> None:
        self.server = server
        self.transport = transport
        self.clock = clock
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.events: list[Any] = []

    def exchange(self) -> list[Any]:
        """
        Send what the client has, let the server run (its send loop is a
        C{callLater(0)}), and read what it answered; repeat until quiet.

        @return: the events of this exchange.
        """
        new: list[Any] = []
        for _ in range(100):
            out = self.conn.data_to_send()
            if out:
                self.server.dataReceived(out)
            self.clock.advance(0)
            back = self.transport.value()
            self.transport.clear()
            if back:
                new.extend(self.conn.receive_data(back))
            if not out and not back:
                break
        self.events.extend(new)
        return new

    def request(
        self, method: bytes, path: bytes, *headers: tuple[bytes, bytes], end: bool = False
    ) -> int:
        """
        Open a stream with a request's headers; C{end} means no body follows.
        """
        streamID = self.conn.get_next_available_stream_id()
        fields = [
            (b":method", method),
            (b":path", path),
            (b":scheme", b"https"),
            (b":authority", b"example"),
            *headers,
        ]
        self.conn.send_headers(streamID, fields, end_stream=end)
        self.exchange()
        return streamID

    def send(self, streamID: int, data: bytes, end: bool = False) -> None:
        """
        Send C{data} on a stream in DATA frames of at most L{FRAME} bytes,
        in one read of the server's unless the window runs out first.
        """
        for start in range(0, len(data), FRAME):
            chunk = data[start : start + FRAME]
            if self.window(streamID) < len(chunk):
                self.exchange()
            self.conn.send_data(streamID, chunk)
        if end:
            self.conn.end_stream(streamID)
        self.exchange()

    def of(self, kind: type, streamID: int, events: list[Any] | None = None) -> list[Any]:
        """
        The events of type C{kind} for C{streamID} (of all events, or of
        C{events}).
        """
        return [
            e for e in (self.events if events is None else events)
            if isinstance(e, kind) and getattr(e, "stream_id", None) == streamID
        ]

    def window(self, streamID: int) -> int:
        """
        How much the client may still send on C{streamID}.
        """
        return int(self.conn.local_flow_control_window(streamID))


class NetworkTransport(StringTransport):
    """
    A L{StringTransport} that, like a TCP or TLS transport, may be paused
    (told to read nothing more) while it closes.
    """

    def pauseProducing(self) -> None:
        self.producerState = "paused"


class BoundedClock(Clock):
    """
    A L{Clock} whose C{advance} runs at most L{limit} calls: a send loop
    that reschedules itself for ever shows up as L{spun}, not as a hung test.

    @ivar spun: whether some C{advance} stopped at the limit.
    """

    limit = 10_000
    spun = False

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        self._sortCalls()
        for _ in range(self.limit):
            if not (self.calls and self.calls[0].getTime() <= self.seconds()):
                return
            call = self.calls.pop(0)
            call.called = 1
            call.func(*call.args, **call.kw)
            self._sortCalls()
        self.spun = True


def connect(resource: Any, clock: Clock) -> H2Client:
    """
    A server channel of a L{StreamingSite} on a transport whose ALPN chose
    C{h2}, with the connection preface and settings exchanged.
    """
    site = StreamingSite(resource, timeout=TIMEOUT, reactor=clock)
    channel = site.buildProtocol(None)
    transport = NetworkTransport()
    transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
    channel.makeConnection(transport)
    client = H2Client(channel, transport, clock)
    client.exchange()
    return client


def status(event: Any) -> bytes:
    return dict(event.headers)[b":status"]


class NegotiationTests(SynchronousTestCase):
    """
    ALPN C{h2} switches the site's channel to L{StreamingH2Connection}.
    """

    def test_switchesToStreamingH2(self) -> None:
        """A connection that negotiated h2 is served by StreamingH2Connection with the site's settings."""
        client = connect(BodyResource(lambda r: RecordingReceiver()), Clock())
        h2channel = client.server._channel
        self.assertIsInstance(h2channel, StreamingH2Connection)
        self.assertEqual(h2channel.timeOut, TIMEOUT)
        self.assertIs(client.transport.producer, h2channel)
        settings = [e for e in client.events if isinstance(e, h2.events.RemoteSettingsChanged)]
        self.assertIn(h2.settings.SettingCodes.INITIAL_WINDOW_SIZE, settings[-1].changed_settings)
        first = settings[0].changed_settings
        self.assertEqual(first[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE].new_value, MAX_HEADER_BYTES)
        self.assertEqual(
            first[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value,
            StreamingH2Connection.maxConcurrentStreams,
        )
        self.assertEqual(client.conn.outbound_flow_control_window, StreamingH2Connection.connectionWindow)

    def test_http11StaysHTTP11(self) -> None:
        """A TLS connection that negotiated http/1.1 keeps the streaming HTTP/1.1 channel."""
        resource = BodyResource(lambda r: RecordingReceiver())
        channel = StreamingSite(resource, timeout=TIMEOUT, reactor=Clock()).buildProtocol(None)
        transport = StringTransport()
        transport.negotiatedProtocol = b"http/1.1"  # type: ignore[attr-defined]
        channel.makeConnection(transport)
        channel.dataReceived(b"PUT /a HTTP/1.1\r\nHost: e\r\nContent-Length: 3\r\n\r\nabc")
        self.assertIsInstance(channel._channel, StreamingHTTPChannel)
        self.assertEqual(resource.receivers[0].chunks, [b"abc"])

    def test_offersH2ByALPN(self) -> None:
        """The site offers h2 before http/1.1."""
        site = StreamingSite(BodyResource(lambda r: RecordingReceiver()))
        self.assertEqual(site.acceptableProtocols(), [b"h2", b"http/1.1"])


class HeaderTimeTests(SynchronousTestCase):
    """
    The resource runs when a stream's headers are in.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = BodyResource(lambda r: RecordingReceiver())
        self.client = connect(self.resource, self.clock)

    def test_renderedBeforeBody(self) -> None:
        """A stream whose HEADERS frame does not end it is rendered before any DATA."""
        self.client.request(b"PUT", b"/a?x=1", (b"content-length", b"10"))
        self.assertEqual(len(self.resource.requests), 1)
        request = self.resource.requests[0]
        self.assertEqual(
            (request.method, request.path, request.args, request.clientproto),
            (b"PUT", b"/a", {b"x": [b"1"]}, b"HTTP/2"),
        )
        self.assertEqual(self.resource.receivers[0].chunks, [])

    def test_chunksReachReceiver(self) -> None:
        """DATA frames reach the receiver in order, then ResponseDone."""
        sid = self.client.request(b"PUT", b"/a")
        self.client.send(sid, b"01234")
        self.client.send(sid, b"56789", end=True)
        receiver = self.resource.receivers[0]
        self.assertEqual(b"".join(receiver.chunks), b"0123456789")
        self.assertIsNotNone(receiver.reason)
        receiver.reason.trap(ResponseDone)

    def test_noSpool(self) -> None:
        """A body without Content-Length never makes a spool: the content is an empty BytesIO."""
        sid = self.client.request(b"PUT", b"/a")
        self.client.send(sid, b"x" * 200_000, end=True)
        request = self.resource.requests[0]
        self.assertIsInstance(request.content, BytesIO)
        self.assertEqual(request.content.getvalue(), b"")
        self.assertEqual(sum(map(len, self.resource.receivers[0].chunks)), 200_000)

    def test_earlyDataWaitsForAcceptance(self) -> None:
        """DATA that arrives before the resource accepts is held, unacknowledged, then delivered."""
        self.resource.accept = False
        sid = self.client.request(b"PUT", b"/a")
        self.client.send(sid, b"a" * (9 * FRAME))
        self.assertEqual(self.client.of(h2.events.WindowUpdated, sid), [])
        self.resource.startBody(self.resource.requests[0])
        self.client.exchange()
        self.assertEqual(b"".join(self.resource.receivers[0].chunks), b"a" * (9 * FRAME))
        self.assertTrue(self.client.of(h2.events.WindowUpdated, sid))

    def test_noContinueBeforeAcceptance(self) -> None:
        """100 Continue goes out only when the body is accepted."""
        self.resource.accept = False
        sid = self.client.request(b"PUT", b"/a", (b"expect", b"100-continue"))
        self.assertEqual(self.client.of(h2.events.InformationalResponseReceived, sid), [])
        self.resource.startBody(self.resource.requests[0])
        self.client.exchange()
        [informational] = self.client.of(h2.events.InformationalResponseReceived, sid)
        self.assertEqual(status(informational), b"100")

    def test_bodilessRequestUsesTwistedPath(self) -> None:
        """A GET whose HEADERS end the stream is answered by Twisted's ordinary path."""
        sid = self.client.request(b"GET", b"/x", end=True)
        [response] = self.client.of(h2.events.ResponseReceived, sid)
        self.assertEqual(status(response), b"200")
        data = b"".join(e.data for e in self.client.of(h2.events.DataReceived, sid))
        self.assertEqual(data, b"ok")
        self.assertTrue(self.client.of(h2.events.StreamEnded, sid))

    def test_zeroLengthIsBodiless(self) -> None:
        """A stream that declares content-length 0 takes Twisted's path, rendered once it ends."""
        sid = self.client.request(b"PUT", b"/a", (b"content-length", b"0"))
        self.assertEqual(self.resource.requests, [])
        self.client.send(sid, b"", end=True)
        self.assertEqual(len(self.resource.requests), 1)
        self.assertFalse(self.resource.requests[0].streaming)

    def test_clientResetMidBody(self) -> None:
        """A stream the client resets mid-body reaches the receiver as a lost connection."""
        sid = self.client.request(b"PUT", b"/a")
        self.client.send(sid, b"01234")
        self.client.conn.reset_stream(sid, ErrorCodes.CANCEL)
        self.client.exchange()
        receiver = self.resource.receivers[0]
        self.assertEqual(b"".join(receiver.chunks), b"01234")
        self.assertTrue(receiver.reason.check(ConnectionLost))


class RefusalTests(SynchronousTestCase):
    """
    An answer that goes out before the body ends the request's stream, not
    the connection.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = BodyResource(lambda r: RecordingReceiver(), refuse=True)
        self.client = connect(self.resource, self.clock)

    def test_refusalBeforeBody(self) -> None:
        """A refusal is a complete response, then RST_STREAM NO_ERROR; no 100 Continue."""
        sid = self.client.request(b"PUT", b"/a", (b"expect", b"100-continue"))
        # (Twisted ends a stream with an empty DATA frame: not counted.)
        events = [
            e for e in self.client.of(h2.events.Event, sid)
            if not (isinstance(e, h2.events.DataReceived) and not e.data)
        ]
        kinds = [type(e) for e in events]
        self.assertEqual(
            kinds,
            [
                h2.events.ResponseReceived,
                h2.events.DataReceived,
                h2.events.StreamEnded,
                h2.events.StreamReset,
            ],
        )
        self.assertEqual(status(events[0]), b"409")
        self.assertEqual(events[1].data, b"refused")
        self.assertEqual(events[3].error_code, ErrorCodes.NO_ERROR)
        self.assertNotIn(b"connection", dict(events[0].headers))
        self.assertFalse(self.client.transport.disconnecting)

    def test_lateDataIgnored(self) -> None:
        """DATA the client sent before it saw the reset is dropped and the connection goes on."""
        sid = self.client.request(b"PUT", b"/a")
        late = DataFrame(sid)
        late.data = b"x" * 1000
        self.client.server.dataReceived(late.serialize())
        self.client.exchange()
        self.assertEqual(len(self.resource.requests), 1)
        self.assertFalse(self.client.transport.disconnecting)
        other = self.client.request(b"GET", b"/x", end=True)
        [response] = self.client.of(h2.events.ResponseReceived, other)
        self.assertEqual(status(response), b"200")

    def test_heldBodyReturnsWindow(self) -> None:
        """The window of body bytes held for an answered stream goes back to the connection."""
        self.resource.refuse = False
        self.resource.accept = False
        window = StreamingH2Connection.streamWindow
        streams = []
        while self.client.conn.outbound_flow_control_window >= window:
            sid = self.client.request(b"PUT", b"/a")
            self.client.send(sid, b"h" * window)
            streams.append(sid)
        self.assertEqual(self.client.conn.outbound_flow_control_window, 0)
        for request in self.resource.requests:
            request.setResponseCode(409)
            request.finish()
        self.client.exchange()
        for sid in streams:
            [reset] = self.client.of(h2.events.StreamReset, sid)
            self.assertEqual(reset.error_code, ErrorCodes.NO_ERROR)
        # h2 batches WINDOW_UPDATE: at most half the window is still owed.
        self.assertGreaterEqual(
            self.client.conn.outbound_flow_control_window,
            StreamingH2Connection.connectionWindow // 2,
        )


class RefusedBodyTests(SynchronousTestCase):
    """
    A client that goes on sending the body of a refused stream, or has many
    streams refused, is closed.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = BodyResource(lambda r: RecordingReceiver(), refuse=True)
        self.client = connect(self.resource, self.clock)

    def goAway(self) -> Any:
        [event] = [e for e in self.client.events if isinstance(e, h2.events.ConnectionTerminated)]
        return event

    def test_inFlightBodyTolerated(self) -> None:
        """A refused stream's body already under way (one stream window) is dropped, and the connection serves on."""
        sid = self.client.request(b"PUT", b"/a")
        for _ in range(StreamingH2Connection.streamWindow // FRAME):
            self.client.server.dataReceived(frame(0x0, 0, sid, b"x" * FRAME))
        self.client.exchange()
        self.assertFalse(self.client.transport.disconnecting)
        other = self.client.request(b"GET", b"/x", end=True)
        [response] = self.client.of(h2.events.ResponseReceived, other)
        self.assertEqual(status(response), b"200")

    def test_refusedBodyForeverClosed(self) -> None:
        """DATA on a refused stream past what flow control allowed closes the connection with ENHANCE_YOUR_CALM."""
        sid = self.client.request(b"PUT", b"/a")
        sent = 0
        transport = self.client.transport
        while not transport.disconnecting and sent < 100 * StreamingH2Connection.streamWindow:
            self.client.server.dataReceived(frame(0x0, 0, sid, b"x" * FRAME))
            sent += FRAME
        self.assertTrue(transport.disconnecting)
        self.assertLessEqual(sent, 2 * StreamingH2Connection.streamWindow + FRAME)
        self.client.exchange()
        self.assertEqual(self.goAway().error_code, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertEqual(transport.producerState, "paused")

    def test_emptyFramesOnRefusedStreamClosed(self) -> None:
        """Empty DATA frames on a refused stream (each answered with a reset by h2) count too: the connection is closed."""
        sid = self.client.request(b"PUT", b"/a")
        sent = 0
        transport = self.client.transport
        while not transport.disconnecting and sent < 100 * StreamingH2Connection.streamWindow:
            self.client.server.dataReceived(frame(0x0, 0, sid, b"") * 1024)
            sent += 9 * 1024
        self.assertTrue(transport.disconnecting)
        self.assertLessEqual(sent, 2 * StreamingH2Connection.streamWindow + 9 * 1024)

    def test_refusedStreamsCapped(self) -> None:
        """maxRefusedStreams refused requests are answered; one more closes the connection with ENHANCE_YOUR_CALM."""
        limit = StreamingH2Connection.maxRefusedStreams
        for _ in range(limit):
            self.client.request(b"PUT", b"/a")
        self.assertFalse(self.client.transport.disconnecting)
        self.client.request(b"PUT", b"/a")
        self.assertTrue(self.client.transport.disconnecting)
        self.assertEqual(self.goAway().error_code, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertEqual(len(self.resource.requests), limit + 1)


class AbortTests(SynchronousTestCase):
    """
    L{abortRequest} on HTTP/2 resets one stream.
    """

    def test_abortResetsOnlyItsStream(self) -> None:
        """Aborting a request resets its stream with CANCEL, tells its receiver, and spares the others."""
        resource = BodyResource(lambda r: RecordingReceiver())
        client = connect(resource, Clock())
        first = client.request(b"PUT", b"/a")
        client.send(first, b"abc")
        second = client.request(b"PUT", b"/b")
        abortRequest(resource.requests[0])
        client.exchange()
        [reset] = client.of(h2.events.StreamReset, first)
        self.assertEqual(reset.error_code, ErrorCodes.CANCEL)
        self.assertTrue(resource.receivers[0].reason.check(ConnectionAborted))
        client.send(second, b"def", end=True)
        self.assertEqual(b"".join(resource.receivers[1].chunks), b"def")
        resource.receivers[1].reason.trap(ResponseDone)
        self.assertFalse(client.transport.disconnecting)


    def test_abortWhileReading(self) -> None:
        """DATA read in the same batch as the frame whose delivery aborted its stream is dropped, its window returned."""

        class AbortingReceiver(RecordingReceiver):
            def dataReceived(self, data: bytes) -> None:
                super().dataReceived(data)
                if len(resource.receivers) == 1:
                    abortRequest(resource.requests[0])

        resource = BodyResource(lambda r: AbortingReceiver())
        client = connect(resource, Clock())
        sid = client.request(b"PUT", b"/a")
        before = client.conn.outbound_flow_control_window
        client.send(sid, b"q" * (3 * FRAME))
        self.assertEqual(resource.receivers[0].chunks, [b"q" * FRAME])
        self.assertTrue(client.of(h2.events.StreamReset, sid))
        self.assertFalse(client.transport.disconnecting)
        # h2 returns window once half the connection's is processed: with
        # the three frames counted, this makes exactly half.
        other = client.request(b"PUT", b"/b")
        client.send(other, b"r" * (StreamingH2Connection.connectionWindow // 2 - 3 * FRAME))
        self.assertEqual(client.conn.outbound_flow_control_window, before)


class FlowControlTests(SynchronousTestCase):
    """
    A paused body grants its stream no window; resuming grants it again.
    """

    #: More than half a stream window: acknowledging it sends WINDOW_UPDATE.
    BODY = 10 * FRAME

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = BodyResource(lambda r: RecordingReceiver())
        self.client = connect(self.resource, self.clock)

    def test_unpausedStreamGrantsWindow(self) -> None:
        """Body bytes handed to the receiver are acknowledged with WINDOW_UPDATE."""
        sid = self.client.request(b"PUT", b"/a")
        self.client.send(sid, b"u" * self.BODY)
        self.assertTrue(self.client.of(h2.events.WindowUpdated, sid))
        self.assertGreater(self.client.window(sid), StreamingH2Connection.streamWindow - self.BODY)

    def test_pausedStreamGrantsNoWindow(self) -> None:
        """While the receiver pauses, DATA is held and no WINDOW_UPDATE goes out; resuming delivers and grants."""
        sid = self.client.request(b"PUT", b"/a")
        receiver = self.resource.receivers[0]
        receiver.producer.pauseProducing()
        self.client.send(sid, b"p" * self.BODY)
        self.assertEqual(receiver.chunks, [])
        self.assertEqual(self.client.of(h2.events.WindowUpdated, sid), [])
        self.assertEqual(self.client.window(sid), StreamingH2Connection.streamWindow - self.BODY)
        receiver.producer.resumeProducing()
        self.client.exchange()
        self.assertEqual(b"".join(receiver.chunks), b"p" * self.BODY)
        self.assertTrue(self.client.of(h2.events.WindowUpdated, sid))
        self.assertGreater(self.client.window(sid), StreamingH2Connection.streamWindow - self.BODY)

    def test_pausedStreamSparesOthers(self) -> None:
        """A stream paused with its whole window held does not stop another stream."""
        first = self.client.request(b"PUT", b"/a")
        self.resource.receivers[0].producer.pauseProducing()
        self.client.send(first, b"1" * StreamingH2Connection.streamWindow)
        self.assertEqual(self.client.window(first), 0)
        second = self.client.request(b"PUT", b"/b")
        self.client.send(second, b"2" * self.BODY)
        self.assertEqual(b"".join(self.resource.receivers[1].chunks), b"2" * self.BODY)
        self.assertTrue(self.client.of(h2.events.WindowUpdated, second))
        self.assertEqual(self.client.of(h2.events.WindowUpdated, first), [])

    def test_heldEndWaitsForResume(self) -> None:
        """The end of a paused stream's body reaches the receiver only after the data before it."""
        sid = self.client.request(b"PUT", b"/a")
        receiver = self.resource.receivers[0]
        receiver.producer.pauseProducing()
        self.client.send(sid, b"end", end=True)
        self.assertIsNone(receiver.reason)
        receiver.producer.resumeProducing()
        self.assertEqual(receiver.chunks, [b"end"])
        receiver.reason.trap(ResponseDone)

    def test_emptyFramesNotHeld(self) -> None:
        """Empty DATA frames on a paused stream are not held; past maxEmptyFrames the connection is closed."""
        sid = self.client.request(b"PUT", b"/a")
        receiver = self.resource.receivers[0]
        receiver.producer.pauseProducing()
        self.client.send(sid, b"p" * self.BODY)
        stream = self.client.server._channel.streams[sid]
        held = len(stream._inboundDataBuffer)
        sent = 0
        transport = self.client.transport
        while not transport.disconnecting and sent < 10 * StreamingH2Connection.maxEmptyFrames:
            self.client.server.dataReceived(frame(0x0, 0, sid, b"") * 16)
            sent += 16
            self.assertEqual(len(stream._inboundDataBuffer), held)
        self.assertTrue(transport.disconnecting)
        self.assertLessEqual(sent, StreamingH2Connection.maxEmptyFrames + 16)
        self.client.exchange()
        [goAway] = [e for e in self.client.events if isinstance(e, h2.events.ConnectionTerminated)]
        self.assertEqual(goAway.error_code, ErrorCodes.ENHANCE_YOUR_CALM)

    def test_emptyFinalFrameEnds(self) -> None:
        """An empty DATA frame that ends the stream still ends the body."""
        sid = self.client.request(b"PUT", b"/a")
        self.client.send(sid, b"abc")
        self.client.server.dataReceived(frame(0x0, 0x1, sid, b""))
        receiver = self.resource.receivers[0]
        self.assertEqual(receiver.chunks, [b"abc"])
        receiver.reason.trap(ResponseDone)

    def test_heldFramesBounded(self) -> None:
        """A paused stream holds at most maxHeldFrames DATA frames (padding only, one window byte each): then the connection is closed."""
        sid = self.client.request(b"PUT", b"/a")
        self.resource.receivers[0].producer.pauseProducing()
        stream = self.client.server._channel.streams[sid]
        transport = self.client.transport
        limit = StreamingH2Connection.maxHeldFrames
        sent = 0
        while not transport.disconnecting and sent < 10 * limit:
            # PADDED (0x8), a pad length of 0: no data, one byte of window.
            self.client.server.dataReceived(frame(0x0, 0x8, sid, b"\x00") * 16)
            sent += 16
            self.assertLessEqual(len(stream._inboundDataBuffer), limit)
        self.assertTrue(transport.disconnecting)
        self.assertLessEqual(sent, limit + 16)

    def test_idleTimeoutSuspendedWhilePaused(self) -> None:
        """The connection's idle timeout does not fire while a body is paused by the server."""
        sid = self.client.request(b"PUT", b"/a")
        receiver = self.resource.receivers[0]
        receiver.producer.pauseProducing()
        self.client.send(sid, b"z" * 100)
        self.clock.advance(TIMEOUT * 10)
        self.assertFalse(self.client.transport.disconnecting)
        receiver.producer.resumeProducing()
        self.clock.advance(TIMEOUT + 1)
        self.assertTrue(self.client.transport.disconnecting)


class SinkTests(SynchronousTestCase):
    """
    A slow disk (a L{FileSink} whose writes the test completes) slows an
    HTTP/2 sender.
    """

    HIGH = 8
    LOW = 4

    def setUp(self) -> None:
        self.clock = Clock()
        self.runner = ManualRunner()
        self.written: list[bytes] = []
        self.sinks: list[FileSink] = []
        self.outcomes: list[object] = []
        makeReceiver = sinkReceivers(
            self.runner, self.written, self.sinks, self.HIGH, self.LOW,
            lambda outcome, request, receiver: self.outcomes.append(outcome),
        )
        self.client = connect(BodyResource(makeReceiver), self.clock)

    def test_slowDiskSlowsSender(self) -> None:
        """Past the high-water mark nothing more is read or granted until writes complete; all bytes land in order."""
        body = bytes(range(256)) * (4 * FRAME // 256)
        sid = self.client.request(b"PUT", b"/a")
        self.client.send(sid, body, end=True)
        sink = self.sinks[0]
        self.assertEqual(sink.held, FRAME)  # one frame taken, then paused
        self.assertEqual(self.client.of(h2.events.WindowUpdated, sid), [])
        peak = sink.held
        for _ in range(len(body)):
            if not self.runner.pending:
                break
            self.runner.complete()
            peak = max(peak, sink.held)
        self.client.exchange()
        self.assertLessEqual(peak, FRAME)
        self.assertEqual(b"".join(self.written), body)
        self.assertEqual(self.outcomes, [COMPLETE])


def frame(kind: int, flags: int, streamID: int, payload: bytes) -> bytes:
    """
    One raw HTTP/2 frame (RFC 9113 section 4.1), whatever the state of the
    connection.
    """
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + streamID.to_bytes(4, "big") + payload


PING = frame(0x6, 0, 0, b"12345678")


class HostileClientTests(SynchronousTestCase):
    """
    A client that breaks the protocol, floods frames or does not read costs
    a bounded amount of memory and time.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = BodyResource(lambda r: RecordingReceiver())
        self.client = connect(self.resource, self.clock)
        self.channel = self.client.server._channel

    def buffered(self) -> int:
        """
        How many received bytes h2 holds for the server (h2's own buffer).
        """
        return len(self.channel.conn.incoming_buffer._data)

    def goAway(self) -> Any:
        [event] = [e for e in self.client.events if isinstance(e, h2.events.ConnectionTerminated)]
        return event

    def test_protocolErrorStopsReading(self) -> None:
        """
        After a protocol error (DATA on an idle stream) the server sends
        GOAWAY, reads nothing more (later frames are neither answered nor
        buffered), lets go of the transport and aborts it after the grace
        period.
        """
        self.client.server.dataReceived(frame(0x0, 0, 1, b"hello"))
        self.client.exchange()
        self.assertEqual(self.goAway().error_code, ErrorCodes.PROTOCOL_ERROR)
        transport = self.client.transport
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.producerState, "paused")
        self.assertIsNone(transport.producer)
        transport.clear()
        for _ in range(1000):
            self.client.server.dataReceived(PING * 8)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.buffered(), 0)
        self.clock.advance(StreamingH2Connection.closeGrace - 0.1)  # type: ignore[operator]
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)

    def test_clientGoAwayStopsReading(self) -> None:
        """After the client's own GOAWAY nothing more is read, and the connection is aborted later."""
        self.client.conn.close_connection()
        self.client.exchange()
        transport = self.client.transport
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.producerState, "paused")
        self.client.server.dataReceived(PING * 100)
        self.assertEqual(self.buffered(), 0)
        self.clock.advance(StreamingH2Connection.closeGrace)  # type: ignore[arg-type]
        self.assertTrue(transport.disconnected)

    def test_continuationFloodRefused(self) -> None:
        """
        A header block that goes on in CONTINUATION frames is refused
        (GOAWAY ENHANCE_YOUR_CALM) as soon as it passes 16 KiB, before h2
        buffers more of it; nothing is rendered.
        """
        block = self.client.conn.encoder.encode(
            [(b":method", b"PUT"), (b":path", b"/a"), (b":scheme", b"https"), (b":authority", b"e")]
        )
        self.client.server.dataReceived(frame(0x1, 0, 1, block))
        sent = len(block)
        while not self.client.transport.disconnecting and sent < 64 * MAX_HEADER_BYTES:
            self.client.server.dataReceived(frame(0x9, 0, 1, b"a" * 4096))
            sent += 4096
        self.assertLessEqual(sent, MAX_HEADER_BYTES + 4096)
        self.client.exchange()
        self.assertEqual(self.goAway().error_code, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertEqual(self.client.transport.producerState, "paused")
        self.assertEqual(self.resource.requests, [])

    def test_blockUnderBoundServed(self) -> None:
        """A header block of about 12 KiB in CONTINUATION frames is served."""
        fields = [(b"x-pad-%d" % i, b"v" * 120) for i in range(80)]
        sid = self.client.request(b"GET", b"/x", *fields, end=True)
        [response] = self.client.of(h2.events.ResponseReceived, sid)
        self.assertEqual(status(response), b"200")

    def test_decodedListBounded(self) -> None:
        """
        A small encoded block that decodes to more than 16 KiB (one field
        repeated from the HPACK table) closes the connection unrendered.
        """
        fields = [(b"x-pad-%d" % i, b"v" * 2000) for i in range(1)] * 40
        self.client.conn.send_headers(
            1, [(b":method", b"GET"), (b":path", b"/x"), (b":scheme", b"https"), (b":authority", b"e")] + fields,
            end_stream=True,
        )
        encoded = self.client.conn.data_to_send()
        self.assertLess(len(encoded), 4096)
        self.client.server.dataReceived(encoded)
        self.client.exchange()
        self.assertTrue(self.client.transport.disconnecting)
        self.assertEqual(self.resource.requests, [])

    def test_tooManyFields(self) -> None:
        """A request with 101 fields is answered 431 and the connection serves the next one."""
        fields = [(b"x-%d" % i, b"v") for i in range(MAX_HEADER_FIELDS + 1)]
        sid = self.client.request(b"PUT", b"/a", *fields)
        [response] = self.client.of(h2.events.ResponseReceived, sid)
        self.assertEqual(status(response), b"431")
        [reset] = self.client.of(h2.events.StreamReset, sid)
        self.assertEqual(reset.error_code, ErrorCodes.NO_ERROR)
        self.assertEqual(self.resource.requests, [])
        other = self.client.request(b"GET", b"/x", *fields[:MAX_HEADER_FIELDS], end=True)
        [response] = self.client.of(h2.events.ResponseReceived, other)
        self.assertEqual(status(response), b"200")

    def test_streamsBoundedBeforeSettingsAcknowledged(self) -> None:
        """
        A client that never acknowledges the server's SETTINGS still may
        open only maxConcurrentStreams streams: one more closes the
        connection.
        """
        resource = BodyResource(lambda r: RecordingReceiver())
        channel = StreamingSite(resource, timeout=TIMEOUT, reactor=self.clock).buildProtocol(None)
        transport = NetworkTransport()
        transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        channel.makeConnection(transport)
        encoder = Encoder()
        block = [(b":method", b"PUT"), (b":path", b"/a"), (b":scheme", b"https"), (b":authority", b"e")]
        channel.dataReceived(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0, b""))
        limit = StreamingH2Connection.maxConcurrentStreams
        for i in range(limit + 1):
            channel.dataReceived(frame(0x1, 0x4, 2 * i + 1, encoder.encode(block)))
        self.assertEqual(len(resource.requests), limit)
        self.assertTrue(transport.disconnecting)

    def test_pingsAreNotProgress(self) -> None:
        """A client that only sends PINGs is closed at the idle timeout."""
        for _ in range(4):
            self.clock.advance(TIMEOUT / 4)
            self.client.conn.ping(b"12345678")
            self.client.exchange()
        self.assertTrue(self.client.transport.disconnecting)
        self.assertEqual(self.goAway().error_code, ErrorCodes.NO_ERROR)
        # Closed for good: nothing more is read, and TLS may start closing.
        self.assertEqual(self.client.transport.producerState, "paused")
        self.assertIsNone(self.client.transport.producer)

    def test_requestsAreProgress(self) -> None:
        """Requests keep a connection alive past the idle timeout."""
        for _ in range(4):
            self.clock.advance(TIMEOUT / 2)
            self.client.request(b"GET", b"/x", end=True)
        self.assertFalse(self.client.transport.disconnecting)

    def test_bodyIsProgress(self) -> None:
        """Body bytes on an open stream keep a connection alive past the idle timeout."""
        sid = self.client.request(b"PUT", b"/a")
        for _ in range(4):
            self.clock.advance(TIMEOUT / 2)
            self.client.send(sid, b"b")
        self.assertFalse(self.client.transport.disconnecting)

    def test_unreadControlFramesBounded(self) -> None:
        """
        Acknowledgements queued for a client that does not read (PING
        floods) are capped: past 17 KiB the connection is aborted.
        """
        self.channel.pauseProducing()  # the transport's buffer is full
        transport = self.client.transport
        transport.clear()
        sent = 0
        while not transport.disconnected and sent < 4000:
            self.client.server.dataReceived(PING * 10)
            sent += 10
        self.assertTrue(transport.disconnected)
        # Each acknowledgement is a 17-byte frame.
        self.assertLessEqual(sent * 17, 17 * 1024 + 10 * 17)


class ZeroWindowTests(SynchronousTestCase):
    """
    A client that grants no window for responses is not spun on, and is
    closed at the idle timeout.
    """

    def setUp(self) -> None:
        self.clock = BoundedClock()
        self.resource = BodyResource(lambda r: RecordingReceiver())
        self.client = connect(self.resource, self.clock)
        self.client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        self.client.exchange()

    def test_noSpinOnZeroWindow(self) -> None:
        """A response with no window to go out leaves no send pass scheduled: the reactor is idle."""
        sid = self.client.request(b"GET", b"/x", end=True)
        self.assertTrue(self.client.of(h2.events.ResponseReceived, sid))
        self.assertEqual(self.client.of(h2.events.DataReceived, sid), [])
        self.assertFalse(self.clock.spun)
        due = [c for c in self.clock.getDelayedCalls() if c.getTime() <= self.clock.seconds()]
        self.assertEqual(due, [])

    def test_windowUpdateSends(self) -> None:
        """A WINDOW_UPDATE for the stream wakes the send loop and the response goes out."""
        sid = self.client.request(b"GET", b"/x", end=True)
        self.client.conn.increment_flow_control_window(100, stream_id=sid)
        self.client.exchange()
        data = b"".join(e.data for e in self.client.of(h2.events.DataReceived, sid))
        self.assertEqual(data, b"ok")
        self.assertTrue(self.client.of(h2.events.StreamEnded, sid))
        self.assertFalse(self.clock.spun)

    def test_settingsWindowSends(self) -> None:
        """A SETTINGS that raises every stream's window wakes the send loop too."""
        sid = self.client.request(b"GET", b"/x", end=True)
        self.client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
        self.client.exchange()
        data = b"".join(e.data for e in self.client.of(h2.events.DataReceived, sid))
        self.assertEqual(data, b"ok")
        self.assertFalse(self.clock.spun)

    def test_idleTimeoutCloses(self) -> None:
        """A connection whose streams only wait for window is closed at the idle timeout."""
        sids = [self.client.request(b"GET", b"/x", end=True) for _ in range(4)]
        self.clock.advance(TIMEOUT - 1)
        self.assertFalse(self.client.transport.disconnecting)
        self.clock.advance(1)
        self.assertFalse(self.clock.spun)
        self.assertTrue(self.client.transport.disconnecting)
        for sid in sids:
            self.assertEqual(self.client.of(h2.events.DataReceived, sid), [])


def priorityFrame(streamID: int, dependsOn: int) -> bytes:
    """
    A PRIORITY frame: C{streamID} depends on C{dependsOn}, weight 16.
    """
    return frame(0x2, 0, streamID, dependsOn.to_bytes(4, "big") + bytes([15]))


class PriorityTests(SynchronousTestCase):
    """
    Priorities for streams that are not open are bounded, and an error of
    the priority tree closes the connection instead of escaping.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = BodyResource(lambda r: RecordingReceiver())
        self.client = connect(self.resource, self.clock)
        self.channel = self.client.server._channel

    def goAway(self) -> Any:
        [event] = [e for e in self.client.events if isinstance(e, h2.events.ConnectionTerminated)]
        return event

    def test_idlePrioritiesCapped(self) -> None:
        """maxIdlePriorityFrames PRIORITY frames for streams never opened are taken; one more closes with ENHANCE_YOUR_CALM."""
        limit = StreamingH2Connection.maxIdlePriorityFrames
        for i in range(limit):
            self.client.server.dataReceived(priorityFrame(1001 + 2 * i, 0))
        self.assertFalse(self.client.transport.disconnecting)
        sid = self.client.request(b"GET", b"/x", end=True)
        [response] = self.client.of(h2.events.ResponseReceived, sid)
        self.assertEqual(status(response), b"200")
        self.client.server.dataReceived(priorityFrame(1001 + 2 * limit, 0))
        self.assertTrue(self.client.transport.disconnecting)
        self.client.exchange()
        self.assertEqual(self.goAway().error_code, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertLessEqual(len(self.channel.priority._streams), limit + 2)

    def test_treeErrorCloses(self) -> None:
        """An error of the priority tree (too many streams) is a GOAWAY and a close, not an unhandled error."""
        self.channel.maxIdlePriorityFrames = 10_000
        for i in range(2000):
            if self.client.transport.disconnecting:
                break
            self.client.server.dataReceived(priorityFrame(1001 + 2 * i, 0))
        self.assertTrue(self.client.transport.disconnecting)
        self.client.exchange()
        self.assertEqual(self.goAway().error_code, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_priorityLoopCloses(self) -> None:
        """A chain deeper than the priority tree accepts, then a HEADERS depending on its end, is a GOAWAY and a close."""
        self.channel.maxIdlePriorityFrames = 10_000
        for i in range(150):
            self.client.server.dataReceived(priorityFrame(1001 + 2 * i, 1001 + 2 * (i - 1) if i else 0))
        self.assertFalse(self.client.transport.disconnecting)
        fields = [(b":method", b"GET"), (b":path", b"/x"), (b":scheme", b"https"), (b":authority", b"e")]
        self.client.conn.send_headers(
            1, fields, end_stream=True, priority_depends_on=1001 + 2 * 149, priority_weight=16
        )
        self.client.exchange()
        self.assertTrue(self.client.transport.disconnecting)
        self.assertEqual(self.goAway().error_code, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertEqual(self.flushLoggedErrors(), [])


class ConnectTests(SynchronousTestCase):
    """
    CONNECT (a request without C{:path}, which h2 accepts) is refused.
    """

    def setUp(self) -> None:
        self.resource = BodyResource(lambda r: RecordingReceiver())
        self.client = connect(self.resource, Clock())

    def connect(self, end: bool) -> int:
        sid = self.client.conn.get_next_available_stream_id()
        self.client.conn.send_headers(
            sid, [(b":method", b"CONNECT"), (b":authority", b"example:443")], end_stream=end
        )
        self.client.exchange()
        return sid

    def test_connectRefused(self) -> None:
        """A CONNECT is answered 400 with a reason, and the connection serves the next request."""
        sid = self.connect(end=True)
        [response] = self.client.of(h2.events.ResponseReceived, sid)
        self.assertEqual(status(response), b"400")
        data = b"".join(e.data for e in self.client.of(h2.events.DataReceived, sid))
        self.assertEqual(data, b"a request without :path (CONNECT is not served)\n")
        self.assertEqual(self.resource.requests, [])
        self.assertEqual(self.flushLoggedErrors(), [])
        other = self.client.request(b"GET", b"/x", end=True)
        [response] = self.client.of(h2.events.ResponseReceived, other)
        self.assertEqual(status(response), b"200")

    def test_connectWithBodyRefused(self) -> None:
        """A CONNECT that goes on sending is answered 400 and reset with NO_ERROR; its data is dropped."""
        sid = self.connect(end=False)
        [response] = self.client.of(h2.events.ResponseReceived, sid)
        self.assertEqual(status(response), b"400")
        [reset] = self.client.of(h2.events.StreamReset, sid)
        self.assertEqual(reset.error_code, ErrorCodes.NO_ERROR)
        self.client.server.dataReceived(frame(0x0, 0, sid, b"tunnel"))
        self.client.exchange()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertFalse(self.client.transport.disconnecting)
