"""
HTTP/1.1: L{StreamingHTTPChannel}, Twisted's channel rendering requests
with a body at header time, owning the pause of their body, bounding each
header block and refusing framings that could smuggle a second request.
"""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure
from twisted.web import http

from uploadsvc.web.streaming.constants import (
    CLOSE_GRACE,
    DEFAULT_READ_SIZE,
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELDS,
)
from uploadsvc.web.streaming.readsize import setReadSize


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
    #: C{--zero-copy}: whether bodies may be spliced (L{splice}).
    zeroCopy = "auto"
    #: Makes the pipe of a spliced body (L{splice.Pipe}; tests inject
    #: failures here).
    makePipe: Any = None
    #: The L{splice.BodySplicer} reading the current body, if any.
    _splicer: Any = None
    #: While Twisted's allHeadersReceived runs, 100 Continue is held:
    #: C{"held"}, or C{"asked"} once Twisted asked for it (L{None}: not
    #: holding). One attribute, not two: see L{_paused}.
    _continue: str | None = None
    #: The body's pause: why it is paused (a tuple, not a set: at most a
    #: few reasons) and the idle timeout suspended meanwhile. One attribute
    #: for both, and those set only when needed: a channel's instance
    #: attributes (Twisted's and ours) stay under CPython's 30 shared dict
    #: keys, a dict of ~300 bytes instead of ~1.6 KiB per open connection.
    _paused: tuple[tuple[str, ...], int | float | None] = ((), None)

    @property
    def _bodyPauses(self) -> tuple[str, ...]:
        """
        Why the body is paused now.
        """
        return self._paused[0]

    def connectionMade(self) -> None:
        super().connectionMade()
        setReadSize(self.transport, self.readSize)

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
        if self._sawTransferEncoding:  # (set only when needed: see _paused)
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
        self._paused = ((), self._paused[1])
        self._networkProducer.pauseProducing()
        if self.closeGrace is not None:
            self._graceCall = self.callLater(self.closeGrace, self._abortAfterGrace)

    def _abortAfterGrace(self) -> None:
        self._graceCall = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self._splicer is not None:
            self._splicer.stop()
        call, self._graceCall = self._graceCall, None
        if call is not None and call.active():
            call.cancel()
        super().connectionLost(reason)

    # -- requests with a body -----------------------------------------------

    def allHeadersReceived(self) -> None:
        """
        Twisted's steps (cookies, persistence, the request's length, whether
        C{100 Continue} is asked for), holding C{100 Continue} back; then a
        request with a body is rendered now. One without a body takes
        Twisted's own path: rendered once the (empty) body is in, and no
        C{100 Continue} is sent for it.
        """
        self._resetBlock()
        req = self.requests[-1]
        hasBody = self.length != 0
        if hasBody:
            req.streaming = True  # (its gotLength makes no spool)
        self._continue = "held"
        try:
            super().allHeadersReceived()
        finally:
            asked, self._continue = self._continue == "asked", None
        if hasBody:
            req._headersComplete(self._command, self._path, self._version, asked)

    def _send100Continue(self) -> None:
        """
        Twisted asks for C{100 Continue} as soon as the headers are in; it is
        sent only when the receiver accepts the body (the body gate calls
        this again then).
        """
        if self._continue is not None:
            self._continue = "asked"
            return
        super()._send100Continue()

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
        connection paused if the body's receiver paused it, or if the
        connection is closing.
        """
        # Twisted's body with our conditions added, not super(): Twisted's
        # resumes the transport whenever no request is being handled, and
        # pausing it again afterwards would let a transport deliver what it
        # holds in between (TLS delivers what it already decrypted). Hiding
        # the pause behind _handlingRequest instead would go stale if the
        # request producer finishes its request while being resumed.
        self._waitingForTransport = False
        if self._requestProducer is not None:
            self._requestProducer.resumeProducing()
        if not self._handlingRequest and not self._bodyPauses and not self._closing:
            self._networkProducer.resumeProducing()

    def _sendInterim(self, request: Any, head: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        """
        Write an interim (1xx) answer for C{request} ahead of its final one:
        only to an HTTP/1.1 client (RFC 9110 section 15.2: never to 1.0),
        only while C{request} is the one being answered (not behind a
        pipelined request whose answer is still going out), and only
        before its answer started. C{head} is the status line's code and
        phrase.

        @return: whether it was written.
        """
        if (
            self._closing
            or self.transport is None
            or getattr(request, "clientproto", None) != b"HTTP/1.1"
            or not self.requests
            or self.requests[0] is not request
            or request.startedWriting
        ):
            return False
        lines = [b"HTTP/1.1 " + head + b"\r\n"]
        lines += [name + b": " + value + b"\r\n" for name, value in headers]
        self.transport.write(b"".join(lines) + b"\r\n")
        return True

    def _pauseBody(self, reason: str) -> None:
        reasons, timeOut = self._paused
        if not reasons:
            self._networkProducer.pauseProducing()
            # The server is the slow side now: the idle timeout must not fire.
            timeOut = self.setTimeout(None)
        if reason not in reasons:
            self._paused = (reasons + (reason,), timeOut)

    def _resumeBody(self, reason: str) -> None:
        reasons, timeOut = self._paused
        if reason not in reasons:
            return
        reasons = tuple(r for r in reasons if r != reason)
        self._paused = (reasons, timeOut)
        if not reasons:
            self._restoreTimeout()
            if not self._waitingForTransport and self.transport is not None and not self._closing:
                self._networkProducer.resumeProducing()

    def _clearBodyPauses(self) -> None:
        if self._paused[0]:
            self._paused = ((), self._paused[1])
            self._restoreTimeout()

    def _restoreTimeout(self) -> None:
        timeOut = self._paused[1]
        self._paused = (self._paused[0], None)
        if timeOut is not None and self.transport is not None:
            self.setTimeout(timeOut)

