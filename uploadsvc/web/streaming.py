"""
Streaming request bodies in twisted.web: the one module that touches its internals.

twisted.web has no public hook for a body that is still arriving
(twisted/twisted#4688): it spools the body to a BytesIO or a temp file and
renders the resource only once the last byte is in. For an upload server that
is backwards. Here:

  - L{StreamingHTTPChannel} hands the method and path (which at that moment
    exist only on the channel as C{_command}/C{_path}) to the request when the
    headers are complete, and the request renders its resource right away, before
    any body byte is read or C{100 Continue} is sent;
  - the resource refuses (a response before the body: C{Connection: close}) or
    accepts by calling L{deliverBody} with an L{IBodyReceiver};
  - body chunks go to the receiver as they are decoded, never to a spool;
  - the receiver pauses and resumes the client's connection through an
    L{IPushProducer}; the channel owns that pause, so its own
    C{resumeProducing} (send buffer drained) does not undo it, and the idle
    timeout is suspended while the server is the slow side.

Requests without a body take Twisted's ordinary path.

HTTP/2 (negotiated by ALPN over TLS when the C{h2} package is installed) gets
the same treatment from L{StreamingH2Connection}, a small subclass of
Twisted's C{H2Connection}: a stream whose HEADERS frame does not end it is
rendered right away; its DATA goes to the receiver; a paused body stops
granting flow-control window to its stream (the client's sender stalls, the
connection's other streams go on), and resuming grants it again. A response
that goes out before the body ended resets the stream with C{NO_ERROR}
(RFC 9113 section 8.1) instead of closing the connection, and the window of
every byte that nobody will read is handed back to the connection.

Every private name of twisted.web used by uploadsvc is used in this file, and
C{tests/test_streaming} and C{tests/test_streaming_h2} exercise each of them,
so a Twisted upgrade that changes them fails loudly here.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, Callable

from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.client import ResponseDone
from twisted.web.http import H2_ENABLED, parse_qs
from zope.interface import implementer

from uploadsvc.web.interfaces import IBodyReceiver

if H2_ENABLED:
    from h2.errors import ErrorCodes
    from h2.events import WindowUpdated
    from h2.exceptions import StreamClosedError
    from h2.frame_buffer import FrameBuffer
    from h2.settings import SettingCodes, Settings
    from priority.priority import PriorityError
    from twisted.web._http2 import H2Connection as _H2Connection
    from twisted.web._http2 import H2Stream as _H2Stream
else:  # pragma: no cover - without h2 the server speaks HTTP/1.1 only
    _H2Connection = _H2Stream = object  # type: ignore[misc,assignment]

#: How much one socket read may return. Twisted's default is 64 KiB; larger
#: reads mean fewer trips through the parser and the sink per GiB.
DEFAULT_READ_SIZE = 256 * 1024

#: The flow-control window HTTP/2 starts every stream and connection with
#: (RFC 9113 section 6.9.2).
_H2_DEFAULT_WINDOW = 65535

#: The most header fields one request may carry (HTTP/1.1 and HTTP/2); more
#: is answered C{431}. Each field held costs objects well beyond its bytes,
#: so the count is bounded as well as the size.
MAX_HEADER_FIELDS = 100

#: The most bytes of one request's header block: on HTTP/1.1 the request
#: line and the field lines with their line ends, counted while they arrive
#: (an unfinished line included); on HTTP/2 the encoded block (HEADERS and
#: CONTINUATION frames) and the decoded field list. More is answered C{431}
#: (C{414} for a request line alone) and the connection closed.
MAX_HEADER_BYTES = 16 * 1024

#: Seconds a connection the server closed may take to go away before it is
#: aborted. Nothing is read from it meanwhile: over TLS, Twisted would
#: otherwise keep decrypting (and parsing) whatever the client still sends
#: until the client closes.
CLOSE_GRACE = 5


def deliverBody(request: Any, receiver: IBodyReceiver) -> None:
    """
    Start streaming the body of C{request} into C{receiver}.

    Call it from a resource rendered by a L{StreamingSite} once the upload is
    accepted. If the client asked for C{Expect: 100-continue}, this is when it
    is sent. Chunks that arrived before (the rest of the headers' TCP segment)
    are handed over first.
    """
    if isinstance(request, StreamingRequest) and request.streaming:
        request._deliverBody(receiver)
        return
    # A request without a body took Twisted's own path; so does any request
    # of a stock Site (e.g. treq.testing.StubTreq): its body is spooled.
    receiver.makeConnection(_SpooledProducer())
    data = request.content.read() if request.content is not None else b""
    if data:
        receiver.dataReceived(data)
    receiver.connectionLost(Failure(ResponseDone()))


def closeAfterResponse(request: Any) -> None:
    """
    Make the connection close once C{request}'s response is written, whatever
    the client asked for: used when a request is taken over or its body is left
    unread.
    """
    if getattr(request, "_http2", None) is not None:
        # HTTP/2 has no Connection header: the stream is reset after the
        # response instead (StreamingH2Connection._requestDone).
        return
    if not request.startedWriting:
        request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
    channel = _channelOf(request)
    if channel is not None:
        channel.persistent = False


def _channelOf(request: Any) -> Any:
    # Request._cleanup deletes the attribute; connectionLost sets it to None.
    return getattr(request, "channel", None)


def abortRequest(request: Any) -> None:
    """
    Drop C{request}'s connection at once; no answer is owed. Used by takeover.

    On HTTP/2 only the request's stream is reset (C{CANCEL}); the other
    streams of the connection go on.
    """
    stream = getattr(request, "_http2", None)
    if stream is not None:
        stream.abort()
        return
    channel = _channelOf(request)
    if channel is not None and channel.transport is not None:
        channel.transport.abortConnection()


@implementer(IPushProducer)
class _SpooledProducer:
    """
    The producer of a body that is already all in: nothing to pause.
    """

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IPushProducer)
class _BodyProducer:
    """
    The producer a receiver sees: pausing it pauses the client's connection.
    """

    def __init__(self, request: StreamingRequest) -> None:
        self._request = request

    def pauseProducing(self) -> None:
        gate = self._request._bodyGate()
        if gate is not None:
            gate._pauseBody("receiver")

    def resumeProducing(self) -> None:
        gate = self._request._bodyGate()
        if gate is not None:
            gate._resumeBody("receiver")

    def stopProducing(self) -> None:
        abortRequest(self._request)


class StreamingRequest(server.Request):
    """
    A request whose body may stream into an L{IBodyReceiver} instead of a spool.

    @ivar streaming: True when the resource was rendered at header time.
    @ivar bodyComplete: True once the whole body has been decoded.
    """

    # No text/html on our bodiless answers; handlers set their own type.
    defaultContentType = None
    streaming = False
    bodyComplete = False
    _receiver: IBodyReceiver | None = None
    _expectContinue = False
    _lostReason: Failure | None = None
    #: The request's stream, when it came over HTTP/2.
    _http2: _HTTP2Stream | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._early: list[bytes] = []

    def _bodyGate(self) -> Any:
        """
        What pauses and resumes this request's body: its HTTP/2 stream, or
        its HTTP/1.1 channel (L{None} once that is gone).
        """
        if self._http2 is not None:
            return self._http2
        return _channelOf(self)

    def _headersComplete(
        self, command: bytes, path: bytes, version: bytes, expectContinue: bool
    ) -> None:
        """
        The channel has all headers of a request that has a body: set the
        request up as C{requestReceived} would, and render now.
        """
        self.streaming = True
        self._expectContinue = expectContinue
        self.content = BytesIO()  # type: ignore[assignment]
        self.method, self.uri, self.clientproto = command, path, version
        self.args = {}  # type: ignore[assignment]
        self.path, _, query = self.uri.partition(b"?")
        if query:
            self.args = parse_qs(query, 1)
        # Nothing is read until the resource accepts the body.
        self._bodyGate()._pauseBody("decision")
        self.process()

    def _http2HeadersReceived(self, stream: _HTTP2Stream, hasBody: bool) -> None:
        """
        All headers of an HTTP/2 request are in. With a body to come, render
        now, as L{_headersComplete} does for HTTP/1.1; without one, take
        Twisted's path (rendered when the stream ends).
        """
        self._http2 = stream
        if hasBody:
            self._headersComplete(stream.command, stream.path, b"HTTP/2", stream.expectContinue)
        else:
            self.content = BytesIO()  # type: ignore[assignment]

    def gotLength(self, length: int | None) -> None:
        if self.streaming:
            return
        if _onHTTP2(self):
            # HTTP/2 states the length before anyone knows whether a body
            # follows: _http2HeadersReceived decides, and nothing spools.
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if not self.streaming:
            super().handleContentChunk(data)
        elif self.finished or self._disconnected or not data:
            pass  # (HTTP/2 may end a body with an empty DATA frame)
        elif self._receiver is not None:
            self._receiver.dataReceived(data)
        else:
            # Only the tail of the TCP read that held the headers can land
            # here: reading is paused until the receiver is attached.
            self._early.append(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self.streaming:
            super().requestReceived(command, path, version)
            return
        self.bodyComplete = True
        if self._receiver is not None:
            self._receiver.connectionLost(Failure(ResponseDone()))

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self.streaming and not self.bodyComplete:
            self._lostReason = reason
            if self._receiver is not None:
                self._receiver.connectionLost(reason)

    def write(self, data: bytes) -> None:
        if self.streaming and not self.bodyComplete and not self.startedWriting:
            # Answering before the body is read: the rest of the body must
            # never be parsed as a next request.
            closeAfterResponse(self)
        super().write(data)

    def _deliverBody(self, receiver: IBodyReceiver) -> None:
        if self._receiver is not None:
            raise RuntimeError("deliverBody called twice")
        self._receiver = receiver
        receiver.makeConnection(_BodyProducer(self))
        early, self._early = self._early, []
        for chunk in early:
            receiver.dataReceived(chunk)
        if self.bodyComplete:
            receiver.connectionLost(Failure(ResponseDone()))
        elif self._lostReason is not None:
            receiver.connectionLost(self._lostReason)
        else:
            gate = self._bodyGate()
            if self._expectContinue:
                self._expectContinue = False
                gate._send100Continue()
            gate._resumeBody("decision")


def _plainAnswer(code: int, phrase: bytes, reason: str) -> bytes:
    """
    A complete C{HTTP/1.1} refusal that closes the connection, with a
    one-line plain-text reason.
    """
    body = reason.encode("utf-8") + b"\n"
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (code, phrase, len(body), body)
    )


class StreamingHTTPChannel(http.HTTPChannel):
    """
    An L{HTTPChannel} that renders requests with a body at header time, owns
    the pause of their body, bounds each header block and refuses framings
    that could smuggle a second request.

    @ivar readSize: the largest socket read, see L{DEFAULT_READ_SIZE}.
    @ivar maxHeaderFields: see L{MAX_HEADER_FIELDS}.
    @ivar maxHeaderBytes: see L{MAX_HEADER_BYTES}.
    @ivar closeGrace: see L{CLOSE_GRACE}.
    """

    readSize = DEFAULT_READ_SIZE
    maxHeaderFields = MAX_HEADER_FIELDS
    maxHeaderBytes = MAX_HEADER_BYTES
    closeGrace: float | None = CLOSE_GRACE
    # Twisted's own limits stay as a backstop behind ours.
    MAX_LENGTH = MAX_HEADER_BYTES

    #: Lines (request line and field lines) of the header block so far.
    _blockLines = 0
    #: Bytes of the header block so far (complete lines with their CRLF).
    _blockBytes = 0
    #: Whether the block so far had a Transfer-Encoding field.
    _sawTransferEncoding = False
    #: Set once the connection is being closed: nothing more is read.
    _closing = False
    _graceCall: Any = None

    def __init__(self) -> None:
        super().__init__()
        self._bodyPauses: set[str] = set()
        self._pausedTimeOut: int | float | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        if hasattr(self.transport, "bufferSize"):
            self.transport.bufferSize = self.readSize  # type: ignore[union-attr]

    # -- the header block ---------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        super().dataReceived(data)
        if (
            self.line_mode
            and not self._closing
            and not self._handlingRequest
            and self._blockBytes + len(self._buffer) > self.maxHeaderBytes
        ):
            # Refused while the block still arrives, unfinished line included.
            self._refuseBlockSize()

    def lineReceived(self, line: bytes) -> None:
        if self._closing:
            return
        if not line and not self._blockLines:
            # Before a request line (Twisted eats one stray CRLF; more is a
            # malformed request line).
            super().lineReceived(line)
            return
        self._blockBytes += len(line) + 2
        if line:
            self._blockLines += 1
            if self._blockBytes > self.maxHeaderBytes:
                self._refuseBlockSize()
                return
            if self._blockLines - 1 > self.maxHeaderFields:
                self._refuse(
                    431, b"Request Header Fields Too Large",
                    f"too many header fields (at most {self.maxHeaderFields})",
                )
                return
            if self._blockLines > 1 and line[:1] in (b" ", b"\t"):
                # RFC 9112 section 5.2: obs-fold is refused, not unfolded.
                self._refuse(400, b"Bad Request", "obsolete line folding in a header field")
                return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuseBlockSize()

    def headerReceived(self, line: bytes) -> bool:
        name = line.partition(b":")[0]
        if name.lower() == b"transfer-encoding":
            coding = line.partition(b":")[2].strip(b" \t").lower()
            if coding != b"chunked" or self._sawTransferEncoding or self._version != b"HTTP/1.1":
                # RFC 9112 sections 6.1 and 6.3: a body whose final coding is
                # not chunked (identity, gzip, chunked twice...) has no
                # reliable length; neither has Transfer-Encoding on HTTP/1.0.
                self._refuse(
                    400, b"Bad Request",
                    "unsupported Transfer-Encoding (only a single chunked is accepted)",
                )
                return False
            self._sawTransferEncoding = True
        ok: bool = super().headerReceived(line)
        return ok

    def _refuseBlockSize(self) -> None:
        if self._blockLines:
            self._refuse(
                431, b"Request Header Fields Too Large",
                f"request header block too large (at most {self.maxHeaderBytes} bytes)",
            )
        else:
            self._refuse(414, b"URI Too Long", f"request line too long (at most {self.maxHeaderBytes} bytes)")

    def _respondToBadRequestAndDisconnect(self) -> None:
        """
        Twisted's answer to a malformed request line, header or chunk:
        ours carries a reason, and the connection stops being read at once.
        """
        self._refuse(400, b"Bad Request", "malformed request")

    def _refuse(self, code: int, phrase: bytes, reason: str) -> None:
        """
        Answer a request whose header block or framing is refused, and
        close the connection: what follows is never parsed.
        """
        if self._closing:
            return
        if not any(r.startedWriting for r in self.requests):
            # (Mid-body of a request that is already being answered, a
            # refusal would corrupt that answer: then the connection only
            # closes.)
            self.transport.write(_plainAnswer(code, phrase, reason))  # type: ignore[union-attr]
        self.persistent = False
        self.loseConnection()

    def _resetBlock(self) -> None:
        self._blockLines = self._blockBytes = 0
        self._sawTransferEncoding = False

    # -- closing --------------------------------------------------------------

    def loseConnection(self) -> None:
        """
        Close after what was written, and read nothing more meanwhile; abort
        if the client has not let go within L{closeGrace} seconds.
        """
        self._stopReading()
        super().loseConnection()

    def _stopReading(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._bodyPauses.clear()
        self._networkProducer.pauseProducing()
        if self.closeGrace is not None:
            self._graceCall = self.callLater(self.closeGrace, self._abortAfterGrace)

    def _abortAfterGrace(self) -> None:
        self._graceCall = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        call, self._graceCall = self._graceCall, None
        if call is not None and call.active():
            call.cancel()
        super().connectionLost(reason)

    # -- requests with a body -----------------------------------------------

    def allHeadersReceived(self) -> None:
        self._resetBlock()
        req = self.requests[-1]
        req.parseCookies()
        self.persistent = self.checkPersistence(req, self._version)
        if self.length == 0:
            # No body: Twisted's own path renders once the (empty) body is
            # in, and there is nothing to send 100 Continue for.
            req.gotLength(0)
            return
        expect = req.requestHeaders.getRawHeaders(b"Expect")
        expectContinue = bool(
            expect
            and expect[0].lower() == b"100-continue"
            and self._version == b"HTTP/1.1"
        )
        req._headersComplete(self._command, self._path, self._version, expectContinue)

    def allContentReceived(self) -> None:
        self._resetBlock()
        self._clearBodyPauses()
        if not self.requests or self.requests[-1].finished:
            # Answered before its body ended; the connection is closing. Drop
            # the parser state and read nothing more.
            self._transferDecoder = None
            self.length = 0
            self._handlingRequest = True
            return
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        self._clearBodyPauses()
        super().requestDone(request)

    def resumeProducing(self) -> None:
        """
        The send buffer drained. Unlike Twisted's version, leave the client's
        connection paused if the body's receiver paused it.
        """
        self._waitingForTransport = False
        if self._requestProducer is not None:
            self._requestProducer.resumeProducing()
        if not self._handlingRequest and not self._bodyPauses and not self._closing:
            self._networkProducer.resumeProducing()

    def _pauseBody(self, reason: str) -> None:
        if not self._bodyPauses:
            self._networkProducer.pauseProducing()
            # The server is the slow side now: the idle timeout must not fire.
            self._pausedTimeOut = self.setTimeout(None)
        self._bodyPauses.add(reason)

    def _resumeBody(self, reason: str) -> None:
        if reason not in self._bodyPauses:
            return
        self._bodyPauses.discard(reason)
        if not self._bodyPauses:
            self._restoreTimeout()
            if not self._waitingForTransport and self.transport is not None and not self._closing:
                self._networkProducer.resumeProducing()

    def _clearBodyPauses(self) -> None:
        if self._bodyPauses:
            self._bodyPauses.clear()
            self._restoreTimeout()

    def _restoreTimeout(self) -> None:
        timeOut, self._pausedTimeOut = self._pausedTimeOut, None
        if timeOut is not None and self.transport is not None:
            self.setTimeout(timeOut)


#: The client's HTTP/2 connection preface (RFC 9113 section 3.4).
_H2_PREFACE_LENGTH = 24
_H2_FRAME_HEADER_LENGTH = 9
_H2_DATA, _H2_HEADERS, _H2_PUSH_PROMISE, _H2_CONTINUATION = 0x0, 0x1, 0x5, 0x9
_H2_END_HEADERS = 0x4


class _HeaderBlockMeter:
    """
    Reads the 9-byte frame headers of an HTTP/2 byte stream as it arrives,
    before the C{h2} library buffers anything, and measures each header
    block (a HEADERS frame and its CONTINUATION frames): C{h2} keeps up to
    64 CONTINUATION frames of 16 KiB before it decodes a block.

    It also notes the DATA frames it sees, so that the connection can count
    body bytes that C{h2} discards itself (DATA on a stream it reset, to
    which it answers with window) and that no event reports.

    @ivar maxBlock: the most bytes one encoded header block may have.
    @ivar dataBytes: the bytes of the DATA frames (frame headers included,
        so that empty frames count) seen since it was last emptied, by
        stream.
    """

    def __init__(self, maxBlock: int) -> None:
        self.maxBlock = maxBlock
        self._skip = _H2_PREFACE_LENGTH
        self._head = b""
        self._block = 0
        self.dataBytes: dict[int, int] = {}

    def feed(self, data: bytes) -> bool:
        """
        Account for C{data}, the next bytes the client sent.

        @return: L{False} once a header block is larger than L{maxBlock}.
        """
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            step = _H2_FRAME_HEADER_LENGTH - len(self._head)
            self._head += data[pos : pos + step]
            pos += step
            if len(self._head) < _H2_FRAME_HEADER_LENGTH:
                break
            head, self._head = self._head, b""
            length = int.from_bytes(head[:3], "big")
            kind, flags = head[3], head[4]
            if kind == _H2_DATA:
                streamID = int.from_bytes(head[5:], "big") & 0x7FFFFFFF
                self.dataBytes[streamID] = (
                    self.dataBytes.get(streamID, 0) + _H2_FRAME_HEADER_LENGTH + length
                )
            if kind in (_H2_HEADERS, _H2_PUSH_PROMISE, _H2_CONTINUATION):
                if kind != _H2_CONTINUATION:
                    self._block = 0
                self._block += length
                if self._block > self.maxBlock:
                    return False
                if flags & _H2_END_HEADERS:
                    self._block = 0
            self._skip = length
        return True


def _onHTTP2(request: Any) -> bool:
    """
    Whether C{request} arrived on an HTTP/2 stream.
    """
    return H2_ENABLED and isinstance(_channelOf(request), _H2Stream)


class _HTTP2Stream:
    """
    One HTTP/2 stream as a L{StreamingRequest} sees it: what the HTTP/1.1
    channel does for a request's body (pause, resume, C{100 Continue},
    abort), done per stream.

    Pausing the body pauses Twisted's C{H2Stream}: DATA that still arrives is
    held there and, above all, not acknowledged, so no C{WINDOW_UPDATE} goes
    out and the client can send at most the window it already had.

    @ivar command: the request method.
    @ivar path: the request target.
    @ivar expectContinue: whether the client asked for C{100 Continue}.
    """

    def __init__(self, connection: StreamingH2Connection, stream: Any, expectContinue: bool) -> None:
        self._connection = connection
        self._stream = stream
        self._pauses: set[str] = set()
        self.command: bytes = stream.command
        self.path: bytes = stream.path
        self.expectContinue = expectContinue

    @property
    def streamID(self) -> int:
        return int(self._stream.streamID)

    def _active(self) -> bool:
        return self._connection.streams.get(self.streamID) is self._stream

    def _pauseBody(self, reason: str) -> None:
        if not self._pauses and self._active():
            self._stream.pauseProducing()
            self._connection._bodyPaused(self.streamID)
        self._pauses.add(reason)

    def _resumeBody(self, reason: str) -> None:
        if reason not in self._pauses:
            return
        self._pauses.discard(reason)
        if not self._pauses:
            self._connection._bodyResumed(self.streamID)
            if self._active():
                # Hands over what was held, then acknowledges it.
                self._stream.resumeProducing()

    def _send100Continue(self) -> None:
        if self._active():
            self._stream._send100Continue()

    def abort(self) -> None:
        """
        Reset the stream (C{CANCEL}) and tell the request its client is gone.
        """
        self._connection._abortStream(self.streamID, Failure(ConnectionAborted()))


class StreamingH2Connection(_H2Connection):  # type: ignore[misc,valid-type]
    """
    Twisted's HTTP/2 connection, streaming request bodies (see the module
    docstring), with bounded cost for a client that does not play along:

      - each header block is measured as it arrives (L{_HeaderBlockMeter})
        and the decoded field list is capped (C{SETTINGS_MAX_HEADER_LIST_SIZE},
        enforced from the start, not only once the client acknowledged it);
        a block over the bound closes the connection (C{ENHANCE_YOUR_CALM}:
        a block that is not decoded leaves the HPACK state unusable), a
        request with more than L{maxHeaderFields} fields is answered C{431};
      - after a protocol error, a GOAWAY from either side or a reset flood,
        the connection reads nothing more, drops what C{h2} buffered, and is
        aborted if it has not gone within L{closeGrace} seconds (Twisted
        would keep buffering every frame the client still sends, and over
        TLS the connection would never close);
      - the idle timeout counts only progress (a request's headers, body
        bytes, a stream's end, response data sent): PING, SETTINGS,
        WINDOW_UPDATE or PRIORITY frames do not keep a connection alive;
      - control frames queued for a client that does not read (PING and
        SETTINGS acknowledgements, resets) are capped by Twisted
        (C{_maxBufferedControlFrameBytes}, 17 KiB): past it the connection
        is aborted.

    @cvar streamWindow: the flow-control window each stream starts with: how
        much of a body the client may send ahead of what was handed to the
        receiver (Twisted's default is 64 KiB, too little for an upload
        over a link with any latency).
    @cvar connectionWindow: the window of the whole connection, larger than
        one stream's so that a paused stream cannot stall the others; it also
        bounds the body bytes held for one connection.
    @cvar maxConcurrentStreams: streams a client may have open at once (h2's
        default is 100): each open stream holds a request with its fields
        (up to L{maxHeaderBytes}) and, for a client that does not read, its
        answer; this bounds what one connection can make the server hold.
    @cvar maxRefusedStreams: streams one connection may have refused (answered
        and reset while the client still sent a body, or refused at header
        time); one more closes it (C{ENHANCE_YOUR_CALM}). The answer to a
        refused request is sent data, which Twisted counts as progress: this
        bounds how long refused requests keep a connection open, and with
        them the body bytes it may send for nobody (see L{_countDiscarded}).
    @cvar maxHeldFrames: DATA frames held for one paused stream (a client
        sending frames of 256 bytes fits a whole stream window); one more
        closes the connection (C{ENHANCE_YOUR_CALM}).
    @cvar maxEmptyFrames: empty DATA frames that do not end their stream
        (they carry nothing, use no window and, while a body is paused, do
        not even meet the idle timeout); one more closes the connection.
    @cvar maxIdlePriorityFrames: PRIORITY frames (or HEADERS priorities) for
        streams that are not open; each adds a node to Twisted's priority
        tree, which its send loop walks recursively (1000 nodes raise
        C{TooManyStreamsError}, a deep chain C{RecursionError}). One more
        closes the connection (C{ENHANCE_YOUR_CALM}), as does any error of
        the priority tree.
    @cvar maxHeaderFields: see L{MAX_HEADER_FIELDS}.
    @cvar maxHeaderBytes: see L{MAX_HEADER_BYTES}.
    @cvar closeGrace: see L{CLOSE_GRACE}.
    """

    streamWindow = DEFAULT_READ_SIZE
    connectionWindow = 4 * DEFAULT_READ_SIZE
    maxConcurrentStreams = 32
    maxRefusedStreams = 100
    maxHeldFrames = 1024
    maxEmptyFrames = 1024
    maxIdlePriorityFrames = 100
    maxHeaderFields = MAX_HEADER_FIELDS
    maxHeaderBytes = MAX_HEADER_BYTES
    closeGrace: float | None = CLOSE_GRACE

    _closing = False
    _graceCall: Any = None
    #: Whether the frames being handled made progress (see L{resetTimeout}).
    _progress = False
    _handlingFrames = False
    #: Whether a pass of the send loop runs (see L{_sendPrioritisedData}).
    _sendingPass = False
    #: Why the connection is to be closed with ENHANCE_YOUR_CALM once the
    #: frames being handled are done (see L{_enhanceYourCalm}).
    _calmReason: str | None = None
    #: Streams this connection refused (see L{maxRefusedStreams}).
    _refusedStreams = 0
    #: Streams the server reset while the client might still send on them.
    _stoppedStreams = 0
    #: Body bytes received on streams that are no longer served.
    _discardedBytes = 0
    #: Empty DATA frames that did not end their stream.
    _emptyFrames = 0
    #: Priorities given to streams that were not open.
    _idlePriorityFrames = 0

    def __init__(self, reactor: Any = None) -> None:
        super().__init__(reactor)
        self._heldContinues: set[int] = set()
        self._pausedBodies: set[int] = set()
        self._pausedTimeOut: int | float | None = None
        self._meter = _HeaderBlockMeter(self.maxHeaderBytes)
        # The connection's first SETTINGS, in force from the first frame
        # (settings changed later apply only once the client acknowledges
        # them, which a hostile client never does).
        self.conn.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: self.maxConcurrentStreams,
            SettingCodes.MAX_HEADER_LIST_SIZE: self.maxHeaderBytes,
        })
        self.conn.decoder.max_header_list_size = self.maxHeaderBytes

    def connectionMade(self) -> None:
        super().connectionMade()
        self.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: self.streamWindow})
        if self.connectionWindow > _H2_DEFAULT_WINDOW:
            self.conn.increment_flow_control_window(self.connectionWindow - _H2_DEFAULT_WINDOW)
        self._tryToWriteControlData()

    # -- reading --------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if not self._meter.feed(data):
            self._log.info(
                "closing {client}: an HTTP/2 header block over {limit} bytes",
                client=self.transport.getPeer(), limit=self.maxHeaderBytes,  # type: ignore[union-attr]
            )
            self.conn.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
            self._terminate(Failure(ConnectionAborted("header block too large")))
            return
        self._progress = False
        self._handlingFrames = True
        initialWindow = self.conn.remote_settings.initial_window_size
        try:
            super().dataReceived(data)
        finally:
            self._handlingFrames = False
        if self._stillProducing and self.conn.remote_settings.initial_window_size != initialWindow:
            self._initialWindowChanged()
        if self._progress:
            self.resetTimeout()
        self._countDiscarded()
        if self._calmReason is not None:
            self._calmDown()
        if not self._stillProducing:
            # The client's GOAWAY, or an error Twisted met: the connection
            # is over, whatever the client still sends.
            self._stopReading()
            self._letGo()

    def resetTimeout(self) -> None:
        """
        Twisted resets the idle timeout for any frame; frames that are not
        progress (PING, SETTINGS, WINDOW_UPDATE, PRIORITY) must not keep a
        connection alive, so while frames are handled only L{_progress} counts.
        """
        if self._handlingFrames or self._sendingPass:
            return
        super().resetTimeout()

    def _countDiscarded(self) -> None:
        """
        Count the DATA just handled for streams that are not served (reset
        or refused by the server): C{h2} drops it and gives its window back,
        so a client could send a refused body for ever. A stream the server
        stops may still receive what the client sent before it knew, at most
        the stream's window (the server grants a stopped stream no more); past
        one L{streamWindow} per stopped stream (and one to spare) the
        connection is closed (C{ENHANCE_YOUR_CALM}). Frame headers count, so
        that empty frames (which C{h2} answers with a reset each) do too.
        """
        seen, self._meter.dataBytes = self._meter.dataBytes, {}
        if not self._stillProducing:
            return
        for streamID, length in seen.items():
            if streamID not in self.streams:
                self._discardedBytes += length
        if self._discardedBytes > self.streamWindow * (self._stoppedStreams + 1):
            self._enhanceYourCalm(
                f"{self._discardedBytes} body bytes sent on streams it was told to stop"
            )

    def _streamStopped(self, refused: bool, sending: bool = True) -> None:
        """
        The server stopped a stream: if the client may still send on it,
        allow for the body bytes already under way; count a refusal.

        @param refused: whether the stream was refused (not taken over).
        @param sending: whether the client may still send on it.
        """
        if sending:
            self._stoppedStreams += 1
        if refused:
            self._refusedStreams += 1
            if self._refusedStreams > self.maxRefusedStreams:
                self._enhanceYourCalm(f"more than {self.maxRefusedStreams} refused streams")

    # -- sending --------------------------------------------------------------

    def _sendPrioritisedData(self, *args: Any) -> None:
        """
        One pass of Twisted's send loop. Twisted never blocks a stream whose
        response data has no flow-control window: the loop would pick it,
        send nothing and reschedule itself at once, for ever, resetting the
        idle timeout each time. Such streams are blocked first (a
        C{WINDOW_UPDATE} unblocks them), and only a pass that sent something
        is progress.
        """
        self._blockStarvedStreams()
        before = (self.conn.outbound_flow_control_window, len(self._outboundStreamQueues))
        self._sendingPass = True
        try:
            super()._sendPrioritisedData(*args)
        finally:
            self._sendingPass = False
        after = (self.conn.outbound_flow_control_window, len(self._outboundStreamQueues))
        if after != before:
            self.resetTimeout()

    def _blockStarvedStreams(self) -> None:
        """
        Block, in the priority tree, every stream whose next response bytes
        cannot be sent for want of window (its own or the connection's).
        """
        for streamID, queue in self._outboundStreamQueues.items():
            if (
                queue
                and isinstance(queue[0], bytes)  # (not Twisted's end-of-stream marker)
                and queue[0]
                and self.conn.local_flow_control_window(streamID) <= 0
            ):
                self.priority.block(streamID)

    def _handleWindowUpdate(self, event: Any) -> None:
        """
        Window opened: Twisted unblocks the streams that have data waiting,
        but leaves a send loop that found nothing to send asleep.
        """
        super()._handleWindowUpdate(event)
        waiting, self._sendingDeferred = self._sendingDeferred, None
        if waiting is not None:
            waiting.callback(None)

    def _initialWindowChanged(self) -> None:
        """
        The client's SETTINGS changed every stream's window, which Twisted
        ignores: streams blocked for want of window may send again.
        """
        self._handleWindowUpdate(WindowUpdated(stream_id=0, delta=0))

    # -- closing --------------------------------------------------------------

    def _terminate(self, reason: Failure) -> None:
        """
        A protocol error (or a reset flood): GOAWAY goes out, then nothing
        more is read and the connection closes.
        """
        self._stopReading()
        super()._terminate(reason)
        if not self._stillProducing:
            self._letGo()

    def timeoutConnection(self) -> None:
        super().timeoutConnection()
        self._stopReading()
        self._letGo()

    def _letGo(self) -> None:
        """
        Unregister from the transport, which Twisted never does: until then
        a TLS transport does not even start to close.
        """
        transport: Any = self.transport
        if transport is not None:
            try:
                transport.unregisterProducer()
            except RuntimeError:
                pass  # (nothing was registered)

    def _enhanceYourCalm(self, reason: str) -> None:
        """
        The client abuses the connection: send GOAWAY (C{ENHANCE_YOUR_CALM})
        and close, with one log line; while frames are being handled, once
        they are done (Twisted would go on handling the rest of the batch
        with its streams gone).

        @param reason: what the client did, for the log.
        """
        if self._calmReason is None:
            self._calmReason = reason
        if not self._handlingFrames:
            self._calmDown()

    def _calmDown(self) -> None:
        reason = self._calmReason
        if self._closing or not self._stillProducing or reason is None:
            return
        self._log.info(
            "closing {client}: {reason}",
            client=self.transport.getPeer(), reason=reason,  # type: ignore[union-attr]
        )
        self.conn.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
        self._terminate(Failure(ConnectionAborted(reason)))

    def _stopReading(self) -> None:
        if self._closing:
            return
        self._closing = True
        # What h2 buffered (an unfinished frame or header block) is dropped.
        self.conn.incoming_buffer = FrameBuffer(server=True)
        self.conn.incoming_buffer.max_frame_size = self.conn.max_inbound_frame_size
        transport = self.transport
        if transport is None:
            return
        pause = getattr(transport, "pauseProducing", None)
        if pause is not None:
            pause()
        if self.closeGrace is not None:
            self._graceCall = self.callLater(self.closeGrace, self._abortAfterGrace)

    def _abortAfterGrace(self) -> None:
        self._graceCall = None
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def connectionLost(self, reason: Failure, _cancelTimeouts: bool = True) -> None:  # type: ignore[override]
        super().connectionLost(reason, _cancelTimeouts)
        if _cancelTimeouts:
            # The transport is really gone (not Twisted's own early call).
            self._closing = True
            call, self._graceCall = self._graceCall, None
            if call is not None and call.active():
                call.cancel()

    def _requestReceived(self, event: Any) -> None:
        """
        A stream's headers are in: Twisted builds its C{H2Stream} and
        request; a request with a body to come is rendered now. One with
        too many fields is answered C{431} without a request.
        """
        self._progress = True
        if self._refusedWithoutPath(event):
            return
        fields = sum(1 for name, _ in event.headers if not name.startswith(b":"))
        if fields > self.maxHeaderFields:
            self._refuseStream(
                event.stream_id, event.stream_ended is None,
                431, f"too many header fields (at most {self.maxHeaderFields})",
            )
            return
        super()._requestReceived(event)
        streamID = event.stream_id
        expectContinue = streamID in self._heldContinues
        self._heldContinues.discard(streamID)
        stream = self.streams[streamID]
        request = stream._request
        if isinstance(request, StreamingRequest):
            hasBody = (
                event.stream_ended is None
                and request.requestHeaders.getRawHeaders(b"content-length") != [b"0"]
            )
            request._http2HeadersReceived(_HTTP2Stream(self, stream, expectContinue), hasBody)

    def _refusedWithoutPath(self, event: Any) -> bool:
        """
        Refuse (C{400}) a request without C{:path}: h2 accepts one for
        C{CONNECT} (RFC 9113 section 8.5), which Twisted cannot build a
        request from (C{None.split}).

        @return: whether the request was refused.
        """
        if any(name == b":path" for name, _ in event.headers):
            return False
        self._refuseStream(
            event.stream_id, event.stream_ended is None,
            400, "a request without :path (CONNECT is not served)",
        )
        return True

    def _refuseStream(self, streamID: int, open: bool, code: int, reason: str) -> None:
        """
        Answer a stream that gets no request, and reset it with C{NO_ERROR}
        if the client is still sending on it.
        """
        body = reason.encode("utf-8") + b"\n"
        self.conn.send_headers(streamID, [
            (b":status", b"%d" % code),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ])
        self.conn.send_data(streamID, body, end_stream=True)
        if open:
            self.conn.reset_stream(streamID, ErrorCodes.NO_ERROR)
        self._streamStopped(refused=True, sending=open)
        self._tryToWriteControlData()

    def _send100Continue(self, streamID: int) -> None:
        if streamID not in self.streams:
            # The H2Stream asks while it is being built, before the request
            # decided anything: held until the body is accepted.
            self._heldContinues.add(streamID)
            return
        super()._send100Continue(streamID)

    def _requestDataReceived(self, event: Any) -> None:
        if event.stream_id in self.streams:
            if not self._dataFrameAllowed(event):
                return
            if event.data:
                self._progress = True
            super()._requestDataReceived(event)
        else:
            # A frame read together with the one that made us let go of its
            # stream: nobody reads it, only the connection's window is owed.
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def _dataFrameAllowed(self, event: Any) -> bool:
        """
        Whether a DATA frame of a served stream is handed to Twisted, which
        holds every frame of a paused stream, empty ones included (they use
        no window, so nothing bounds them). An empty frame that does not end
        the stream carries nothing and is dropped; past L{maxEmptyFrames} of
        them, or past L{maxHeldFrames} frames held for one paused stream, the
        connection is closed (C{ENHANCE_YOUR_CALM}).
        """
        if not event.data and not event.flow_controlled_length:
            if event.stream_ended is None:
                self._emptyFrames += 1
                if self._emptyFrames > self.maxEmptyFrames:
                    self._enhanceYourCalm(f"more than {self.maxEmptyFrames} empty DATA frames")
            return False
        stream = self.streams[event.stream_id]
        if not stream.producing and len(stream._inboundDataBuffer) >= self.maxHeldFrames:
            self._enhanceYourCalm(f"more than {self.maxHeldFrames} DATA frames for a paused stream")
            return False
        return True

    def _handlePriorityUpdate(self, event: Any) -> None:
        """
        A priority for a stream: counted if the stream is not open (see
        L{maxIdlePriorityFrames}); an error of the priority tree closes the
        connection instead of escaping from C{dataReceived}.
        """
        if self._calmReason is not None:
            return
        if event.stream_id not in self.streams:
            self._idlePriorityFrames += 1
            if self._idlePriorityFrames > self.maxIdlePriorityFrames:
                self._enhanceYourCalm(
                    f"more than {self.maxIdlePriorityFrames} priorities for streams that are not open"
                )
                return
        try:
            super()._handlePriorityUpdate(event)
        except PriorityError as e:
            self._enhanceYourCalm(f"a priority the tree refused: {e!r}")

    def _requestEnded(self, event: Any) -> None:
        if event.stream_id in self.streams:
            self._progress = True
            super()._requestEnded(event)

    def _requestAborted(self, event: Any) -> None:
        if event.stream_id in self.streams:
            super()._requestAborted(event)

    def _requestDone(self, streamID: int) -> None:
        """
        Twisted lets go of a stream: its response ended, it was reset, or
        the connection is gone.
        """
        stream = self.streams.get(streamID)
        super()._requestDone(streamID)
        self._bodyResumed(streamID)
        if stream is None or not self._stillProducing:
            return
        h2stream = self.conn.streams.get(streamID)
        if h2stream is not None and not h2stream.closed:
            # Answered while the client still sends the body: ask it to stop
            # (RFC 9113 section 8.1) instead of reading what nobody wants.
            self.conn.reset_stream(streamID, ErrorCodes.NO_ERROR)
            self._streamStopped(refused=True)
        # Body bytes held for a paused stream were never acknowledged; hand
        # their window back to the connection.
        held = stream._inboundDataBuffer
        owed = sum(length for _, length in held if length is not None)
        held.clear()
        if owed:
            self.conn.acknowledge_received_data(owed, streamID)
        self._tryToWriteControlData()

    def _abortStream(self, streamID: int, reason: Failure) -> None:
        stream = self.streams.get(streamID)
        if stream is None:
            return
        try:
            self.conn.reset_stream(streamID, ErrorCodes.CANCEL)
        except StreamClosedError:
            pass
        else:
            self._streamStopped(refused=False)
        if not self._tryToWriteControlData():
            return  # the whole connection was dropped
        stream.connectionLost(reason)
        self._requestDone(streamID)

    def _bodyPaused(self, streamID: int) -> None:
        if not self._pausedBodies:
            # The server is the slow side now: the idle timeout must not fire.
            self._pausedTimeOut = self.setTimeout(None)
        self._pausedBodies.add(streamID)

    def _bodyResumed(self, streamID: int) -> None:
        if streamID not in self._pausedBodies:
            return
        self._pausedBodies.discard(streamID)
        if not self._pausedBodies:
            timeOut, self._pausedTimeOut = self._pausedTimeOut, None
            if timeOut is not None and self._stillProducing:
                self.setTimeout(timeOut)


class _NegotiatingChannel(http._GenericHTTPChannelProtocol):  # type: ignore[misc]
    """
    Twisted's protocol switch (HTTP/1.1, or HTTP/2 when TLS negotiated C{h2}
    by ALPN), switching to L{StreamingH2Connection} where Twisted's would
    switch to its own C{H2Connection}, which spools bodies.

    It is the push producer of whichever channel is speaking.
    """

    def dataReceived(self, data: bytes) -> None:
        if (
            self._negotiatedProtocol is None
            and H2_ENABLED
            and getattr(self._channel.transport, "negotiatedProtocol", None) == b"h2"
        ):
            self._switchToHTTP2()
        super().dataReceived(data)

    def _switchToHTTP2(self) -> None:
        # The steps of _GenericHTTPChannelProtocol.dataReceived, with our class.
        old = self._channel
        networkProducer = old._networkProducer
        networkProducer.unregisterProducer()
        old.setTimeout(None)
        transport = old.transport
        reactor = getattr(self._factory, "reactor", None)
        channel: Any = StreamingH2Connection(reactor)
        channel.requestFactory = self._requestFactory
        channel.site = self._site
        channel.factory = self._factory
        channel.timeOut = self._timeOut
        channel.callLater = self._callLater
        self._channel = channel
        channel.makeConnection(transport)
        networkProducer.registerProducer(channel, True)
        self._negotiatedProtocol = b"h2"  # type: ignore[assignment]

    def pauseProducing(self) -> None:
        self._channel.pauseProducing()

    def resumeProducing(self) -> None:
        self._channel.resumeProducing()

    def stopProducing(self) -> None:
        self._channel.stopProducing()


def _buildChannel(site: StreamingSite) -> _NegotiatingChannel:
    """
    The C{protocol} of L{StreamingSite}, as Twisted's HTTPFactory has it.
    """
    channel = StreamingHTTPChannel()
    channel.readSize = site.readSize
    return _NegotiatingChannel(channel)


class StreamingSite(server.Site):
    """
    A L{Site} whose connections stream request bodies, see the module docstring.

    It offers C{h2} and C{http/1.1} by ALPN when the C{h2} package is
    installed (L{server.Site.acceptableProtocols}).
    """

    protocol: Callable[..., Any] = _buildChannel  # type: ignore[assignment]
    requestFactory = StreamingRequest

    def __init__(self, resource: Any, *, readSize: int = DEFAULT_READ_SIZE, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.readSize = readSize
