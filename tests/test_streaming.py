"""
Tests for L{uploadsvc.web.streaming}: bodies reach a receiver at header time,
refusals go out before the body, and the receiver's pause is owned by the
channel. Deterministic: a StringTransport, a Clock, and writes the test
completes by hand.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from uploadsvc.sink import FileSink
from uploadsvc.testing.runners import ManualRunner
from uploadsvc.web.interfaces import IBodyReceiver
from uploadsvc.web.receiver import COMPLETE, UploadReceiver
from uploadsvc.web.streaming import StreamingHTTPChannel, StreamingSite, deliverBody

TIMEOUT = 60


@implementer(IBodyReceiver)
class RecordingReceiver:
    def __init__(self) -> None:
        self.producer: Any = None
        self.chunks: list[bytes] = []
        self.reason: Failure | None = None

    def makeConnection(self, producer: Any) -> None:
        self.producer = producer

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason


class BodyResource(Resource):
    """
    Accepts PUT bodies into a receiver made by C{makeReceiver}, or refuses
    with 409 when C{refuse} is set; answers 204 once the receiver says so.
    """

    isLeaf = True

    def __init__(self, makeReceiver: Callable[[Any], Any], refuse: bool = False) -> None:
        super().__init__()
        self.makeReceiver = makeReceiver
        self.refuse = refuse
        self.requests: list[Any] = []
        self.receivers: list[Any] = []
        self.accept = True

    def render_PUT(self, request: Any) -> Any:
        self.requests.append(request)
        if self.refuse:
            request.setResponseCode(409)
            request.setHeader(b"Content-Length", b"7")
            return b"refused"
        if self.accept:
            self.startBody(request)
        return NOT_DONE_YET

    def startBody(self, request: Any) -> None:
        receiver = self.makeReceiver(request)
        self.receivers.append(receiver)
        deliverBody(request, receiver)

    render_POST = render_PUT

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Length", b"2")
        return b"ok"


def connect(resource: Resource, clock: Clock) -> tuple[Any, StringTransport]:
    site = StreamingSite(resource, timeout=TIMEOUT, reactor=clock)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def put(path: bytes, length: int | None, *extra: bytes) -> bytes:
    lines = [b"PUT " + path + b" HTTP/1.1", b"Host: example"]
    if length is None:
        lines.append(b"Transfer-Encoding: chunked")
    else:
        lines.append(b"Content-Length: %d" % length)
    lines.extend(extra)
    return b"\r\n".join(lines) + b"\r\n\r\n"


class HeaderTimeTests(SynchronousTestCase):
    """
    The resource runs when the headers are complete.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_renderedBeforeBody(self) -> None:
        """A request with a body is rendered before any body byte arrives."""
        resource = BodyResource(lambda r: RecordingReceiver())
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(put(b"/a", 10))
        self.assertEqual(len(resource.requests), 1)
        self.assertEqual(resource.requests[0].path, b"/a")
        self.assertEqual(resource.receivers[0].chunks, [])

    def test_chunksReachReceiver(self) -> None:
        """Body chunks go to the receiver in order, then ResponseDone."""
        resource = BodyResource(lambda r: RecordingReceiver())
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(put(b"/a", 10) + b"01234")
        channel.dataReceived(b"56789")
        receiver = resource.receivers[0]
        self.assertEqual(b"".join(receiver.chunks), b"0123456789")
        self.assertIsNotNone(receiver.reason)
        receiver.reason.trap(ResponseDone)

    def test_noSpool(self) -> None:
        """A streamed body is never written to the request's content spool."""
        resource = BodyResource(lambda r: RecordingReceiver())
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(put(b"/a", 4) + b"abcd")
        self.assertEqual(resource.requests[0].content.getvalue(), b"")

    def test_chunkedPiecesSplitAnywhere(self) -> None:
        """Chunk sizes, data and CRLFs split across reads still give the whole body."""
        resource = BodyResource(lambda r: RecordingReceiver())
        channel, transport = connect(resource, self.clock)
        wire = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        channel.dataReceived(put(b"/a", None))
        for i in range(len(wire)):
            channel.dataReceived(wire[i : i + 1])
        receiver = resource.receivers[0]
        self.assertEqual(b"".join(receiver.chunks), b"hello world")
        receiver.reason.trap(ResponseDone)

    def test_connectionLostMidBody(self) -> None:
        """A connection lost mid-body reaches the receiver as that failure."""
        resource = BodyResource(lambda r: RecordingReceiver())
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(put(b"/a", 10) + b"01234")
        channel.connectionLost(Failure(ConnectionError("gone")))
        receiver = resource.receivers[0]
        self.assertEqual(b"".join(receiver.chunks), b"01234")
        self.assertTrue(receiver.reason.check(ConnectionError))

    def test_earlyBytesWaitForAcceptance(self) -> None:
        """Body bytes that came with the headers are held until the receiver is attached."""
        resource = BodyResource(lambda r: RecordingReceiver())
        resource.accept = False
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(put(b"/a", 6) + b"abc")
        self.assertEqual(transport.producerState, "paused")
        resource.startBody(resource.requests[0])
        self.assertEqual(transport.producerState, "producing")
        channel.dataReceived(b"def")
        self.assertEqual(b"".join(resource.receivers[0].chunks), b"abcdef")

    def test_noContinueBeforeAcceptance(self) -> None:
        """100 Continue is sent only when the body is accepted."""
        resource = BodyResource(lambda r: RecordingReceiver())
        resource.accept = False
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(put(b"/a", 6, b"Expect: 100-continue"))
        self.assertEqual(transport.value(), b"")
        resource.startBody(resource.requests[0])
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")

    def test_refusalBeforeBodyCloses(self) -> None:
        """A refusal before the body has Connection: close, no 100 Continue, and closes."""
        resource = BodyResource(lambda r: RecordingReceiver(), refuse=True)
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(put(b"/a", 6, b"Expect: 100-continue"))
        out = transport.value()
        self.assertTrue(out.startswith(b"HTTP/1.1 409 "), out)
        self.assertIn(b"Connection: close", out)
        self.assertNotIn(b"100 Continue", out)
        self.assertTrue(transport.disconnecting)
        # The unread body is never parsed as a request.
        channel.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(len(resource.requests), 1)

    def test_pipelinedRequests(self) -> None:
        """Two pipelined requests are both served, in order, on one connection."""
        resource = BodyResource(lambda r: RecordingReceiver())
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(put(b"/a", 3) + b"abc" + put(b"/b", 2) + b"de")
        first = resource.requests[0]
        first.setResponseCode(204)
        first.finish()
        self.assertEqual(len(resource.requests), 2)
        self.assertEqual(resource.requests[1].path, b"/b")
        self.assertEqual(b"".join(resource.receivers[1].chunks), b"de")
        resource.requests[1].setResponseCode(204)
        resource.requests[1].finish()
        self.assertEqual(transport.value().count(b"HTTP/1.1 204"), 2)
        self.assertFalse(transport.disconnecting)

    def test_bodilessRequestUsesTwistedPath(self) -> None:
        """A GET keeps working through twisted.web's ordinary path."""
        resource = BodyResource(lambda r: RecordingReceiver())
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: e\r\n\r\n")
        self.assertIn(b"\r\n\r\nok", transport.value())

    def test_bodilessRequestNoContinue(self) -> None:
        """A request without a body that asks for 100 Continue is answered without one."""
        resource = BodyResource(lambda r: RecordingReceiver())
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: e\r\nExpect: 100-continue\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "), transport.value())
        self.assertNotIn(b"100 Continue", transport.value())

    def test_emptyBodyNoContinue(self) -> None:
        """A request with Content-Length: 0 that asks for 100 Continue is rendered without one."""
        resource = BodyResource(lambda r: RecordingReceiver())
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(put(b"/a", 0, b"Expect: 100-continue"))
        self.assertEqual(len(resource.requests), 1)
        self.assertNotIn(b"100 Continue", transport.value())

    def test_requestSetUpAtHeaderTime(self) -> None:
        """At header time the request has its method, version, path and query arguments, and no form body is parsed."""
        resource = BodyResource(lambda r: RecordingReceiver())
        resource.accept = False
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(
            b"POST /a/b?x=1&y=2&x=3 HTTP/1.1\r\nHost: e\r\nContent-Length: 3\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\nz=4"
        )
        [request] = resource.requests
        self.assertEqual(
            (request.method, request.clientproto, request.uri, request.path, request.args),
            (b"POST", b"HTTP/1.1", b"/a/b?x=1&y=2&x=3", b"/a/b", {b"x": [b"1", b"3"], b"y": [b"2"]}),
        )
        self.assertEqual(resource.receivers, [])


def sinkReceivers(
    runner: ManualRunner,
    written: list[bytes],
    sinks: list[FileSink],
    high: int,
    low: int,
    ended: Callable[[object, Any, UploadReceiver], object],
) -> Callable[[Any], UploadReceiver]:
    """
    A receiver factory for L{BodyResource}: each body goes to a L{FileSink}
    on C{runner} (writes completed by the test) that records into
    C{written}; C{ended(outcome, request, receiver)} is called when the
    body ends.
    """

    def makeReceiver(request: Any) -> UploadReceiver:
        def makeSink(producer: Any) -> FileSink:
            sink = FileSink(
                runner,
                lambda chunks: written.extend(bytes(c) for c in chunks),
                producer,
                high,
                low,
            )
            sinks.append(sink)
            return sink

        receiver = UploadReceiver(makeSink, 0, None, lambda: AssertionError())
        receiver.ended.addCallback(ended, request, receiver)
        return receiver

    return makeReceiver


class FlowControlTests(SynchronousTestCase):
    """
    A slow disk pauses the client's connection, and only the sink resumes it.
    """

    HIGH = 8
    LOW = 4

    def setUp(self) -> None:
        self.clock = Clock()
        self.runner = ManualRunner()
        self.written: list[bytes] = []
        self.sinks: list[FileSink] = []
        self.resource = BodyResource(
            sinkReceivers(self.runner, self.written, self.sinks, self.HIGH, self.LOW, self.ended)
        )
        self.channel, self.transport = connect(self.resource, self.clock)

    def ended(self, outcome: object, request: Any, receiver: UploadReceiver) -> None:
        def answer(_: object) -> None:
            request.setResponseCode(204)
            request.finish()

        if outcome == COMPLETE:
            receiver.sink.drain().addCallback(answer)  # type: ignore[union-attr]

    def test_pausedAtHighWater(self) -> None:
        """Bytes held past the high-water mark pause the transport."""
        self.channel.dataReceived(put(b"/a", 100) + b"1234")
        self.assertEqual(self.transport.producerState, "producing")
        self.channel.dataReceived(b"5678")
        self.assertEqual(self.sinks[0].held, 8)
        self.assertEqual(self.transport.producerState, "paused")

    def test_notResumedByChannel(self) -> None:
        """The send buffer draining does not undo a pause the sink asked for."""
        self.channel.dataReceived(put(b"/a", 100) + b"12345678")
        self.assertEqual(self.transport.producerState, "paused")
        self.channel.pauseProducing()  # the transport's send buffer filled...
        self.channel.resumeProducing()  # ...and drained
        self.assertEqual(self.transport.producerState, "paused")

    def test_resumedAtLowWater(self) -> None:
        """Once writes bring the held bytes to the low-water mark, reading resumes."""
        self.channel.dataReceived(put(b"/a", 100) + b"1234")
        self.channel.dataReceived(b"5678")
        self.assertEqual(self.transport.producerState, "paused")
        self.runner.complete()  # writes "1234"; "5678" goes next: 4 held
        self.assertEqual(self.sinks[0].held, 4)
        self.assertEqual(self.transport.producerState, "producing")
        self.runner.complete()
        self.assertEqual(b"".join(self.written), b"12345678")

    def test_memoryBoundedByMark(self) -> None:
        """However many bytes arrive, the sink holds at most one read past the mark."""
        self.channel.dataReceived(put(b"/a", 10_000))
        sent = 0
        peak = 0
        while sent < 10_000:
            if self.transport.producerState == "producing":
                self.channel.dataReceived(b"x" * 3)
                sent += 3
            else:
                self.runner.complete()
            peak = max(peak, self.sinks[0].held)
        self.assertLessEqual(peak, self.HIGH + 3)

    def test_idleTimeoutSuspendedWhilePaused(self) -> None:
        """The idle timeout does not fire while the server is the slow side."""
        self.channel.dataReceived(put(b"/a", 100) + b"12345678")
        self.assertEqual(self.transport.producerState, "paused")
        self.clock.advance(TIMEOUT * 10)
        self.assertFalse(self.transport.disconnecting)
        self.runner.completeAll()
        self.assertEqual(self.transport.producerState, "producing")
        self.clock.advance(TIMEOUT + 1)
        self.assertTrue(self.transport.disconnecting)

    def test_idleClientTimesOut(self) -> None:
        """A client that sends nothing mid-body is disconnected after the idle timeout."""
        self.channel.dataReceived(put(b"/a", 100) + b"12")
        self.clock.advance(TIMEOUT - 1)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(self.transport.disconnecting)

    def test_answeredAfterLastWrite(self) -> None:
        """The answer goes out only once every byte is written."""
        self.channel.dataReceived(put(b"/a", 6) + b"abcdef")
        self.assertNotIn(b"204", self.transport.value())
        self.runner.completeAll()
        self.assertIn(b"HTTP/1.1 204", self.transport.value())
        self.assertEqual(b"".join(self.written), b"abcdef")


class FramingTests(SynchronousTestCase):
    """
    Framings that could make a body be read as a second request are refused
    with 400 before anything is rendered, and the connection closes (RFC
    9112 sections 5.2, 6.1, 6.3).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = BodyResource(lambda r: RecordingReceiver())

    def send(self, head: bytes, body: bytes = b"") -> tuple[Any, StringTransport]:
        channel, transport = connect(self.resource, self.clock)
        channel.dataReceived(head + body)
        return channel, transport

    def assertRefused(self, transport: StringTransport, code: bytes = b"400") -> bytes:
        out = transport.value()
        self.assertTrue(out.startswith(b"HTTP/1.1 " + code + b" "), out)
        self.assertIn(b"Connection: close\r\n", out)
        self.assertIn(b"Content-Type: text/plain; charset=utf-8\r\n", out)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.resource.requests, [])
        return out

    def test_identityRefused(self) -> None:
        """Transfer-Encoding: identity is refused, and the body after it is never parsed as a request."""
        smuggled = b"PUT /smuggled HTTP/1.1\r\nHost: e\r\nContent-Length: 3\r\n\r\nabc"
        channel, transport = self.send(
            b"PUT /a HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: identity\r\n\r\n", smuggled
        )
        out = self.assertRefused(transport)
        self.assertIn(b"Transfer-Encoding", out)
        self.assertEqual(out.count(b"HTTP/1.1 "), 1)

    def test_identityWithLengthRefused(self) -> None:
        """Transfer-Encoding: identity is refused even beside a Content-Length."""
        _, transport = self.send(
            b"PUT /a HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\n", b"abc"
        )
        self.assertRefused(transport)

    def test_chunkedNotLastRefused(self) -> None:
        """A coding list whose last coding is not chunked, or a list at all, is refused."""
        for value in [b"chunked, gzip", b"gzip, chunked", b"chunked, chunked", b"gzip", b"chunked;q=1"]:
            self.resource.requests.clear()
            _, transport = self.send(
                b"PUT /a HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: " + value + b"\r\n\r\n", b"0\r\n\r\n"
            )
            self.assertRefused(transport)

    def test_chunkedTwiceRefused(self) -> None:
        """Two Transfer-Encoding: chunked fields are refused."""
        _, transport = self.send(
            b"PUT /a HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.assertRefused(transport)

    def test_identityThenChunkedRefused(self) -> None:
        """identity in one field and chunked in the next is refused (the list is identity, chunked)."""
        _, transport = self.send(
            b"PUT /a HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.assertRefused(transport)

    def test_lengthAndChunkedRefused(self) -> None:
        """Transfer-Encoding with Content-Length is refused, in either order."""
        for fields in [
            b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        ]:
            _, transport = self.send(b"PUT /a HTTP/1.1\r\nHost: e\r\n" + fields + b"\r\n", b"abc")
            self.assertRefused(transport)

    def test_differentLengthsRefused(self) -> None:
        """Two Content-Length values that differ (in two fields, or a list in one) are refused."""
        for fields in [b"Content-Length: 3\r\nContent-Length: 5\r\n", b"Content-Length: 3, 5\r\n"]:
            _, transport = self.send(b"PUT /a HTTP/1.1\r\nHost: e\r\n" + fields + b"\r\n", b"abcde")
            self.assertRefused(transport)

    def test_chunkedOnHTTP10Refused(self) -> None:
        """Transfer-Encoding on an HTTP/1.0 request is refused."""
        _, transport = self.send(b"PUT /a HTTP/1.0\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.assertRefused(transport)

    def test_obsFoldRefused(self) -> None:
        """A folded header line (obs-fold) is refused, not unfolded."""
        _, transport = self.send(
            b"PUT /a HTTP/1.1\r\nHost: e\r\nX-Long: one\r\n two\r\nContent-Length: 3\r\n\r\n", b"abc"
        )
        out = self.assertRefused(transport)
        self.assertIn(b"folding", out)

    def test_chunkedAccepted(self) -> None:
        """A single Transfer-Encoding: chunked, any case, still streams."""
        _, transport = self.send(
            b"PUT /a HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: Chunked\r\n\r\n", b"3\r\nabc\r\n0\r\n\r\n"
        )
        self.assertEqual(len(self.resource.requests), 1)
        self.assertEqual(self.resource.receivers[0].chunks, [b"abc"])


class ClosingTests(SynchronousTestCase):
    """
    A connection the server closes is not read any more, and is aborted if
    the client does not let go (over TLS Twisted would otherwise keep
    decrypting what the client sends).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = BodyResource(lambda r: RecordingReceiver(), refuse=True)

    def test_badRequestStopsReading(self) -> None:
        """After Twisted's own 400 the transport is paused, and aborted after the grace period."""
        channel, transport = connect(self.resource, self.clock)
        channel.dataReceived(b"PUT /a HTTP/1.1\r\nHost: e\r\nBad Header: 1\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.producerState, "paused")
        # The send buffer drains: reading must stay paused.
        channel.resumeProducing()
        self.assertEqual(transport.producerState, "paused")
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: e\r\n\r\n" * 10)
        self.assertEqual(transport.value().count(b"HTTP/1.1 "), 1)
        self.clock.advance(StreamingHTTPChannel.closeGrace - 0.1)  # type: ignore[operator]
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)

    def test_refusalBeforeBodyStopsReading(self) -> None:
        """A refusal before the body stops reading once answered, whatever drains, and aborts later."""
        channel, transport = connect(self.resource, self.clock)
        channel.dataReceived(put(b"/a", 1 << 30))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 409 "))
        self.assertTrue(transport.disconnecting)
        channel.resumeProducing()
        self.assertEqual(transport.producerState, "paused")
        self.clock.advance(StreamingHTTPChannel.closeGrace)  # type: ignore[arg-type]
        self.assertTrue(transport.disconnected)

    def test_idleTimeoutStopsReading(self) -> None:
        """A connection closed by the idle timeout reads nothing more."""
        channel, transport = connect(self.resource, self.clock)
        self.clock.advance(TIMEOUT)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.producerState, "paused")
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: e\r\n\r\n")
        self.assertEqual(transport.value(), b"")

    def test_closedInTimeNoAbort(self) -> None:
        """A connection that goes away within the grace period is not aborted later."""
        channel, transport = connect(self.resource, self.clock)
        channel.dataReceived(b"PUT /a HTTP/1.1\r\nHost: e\r\nBad Header: 1\r\n\r\n")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
