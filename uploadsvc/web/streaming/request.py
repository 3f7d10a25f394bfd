"""
The request side of streaming: L{StreamingRequest}, which renders at header
time and hands its body to an L{IBodyReceiver}, and the functions a resource
calls on it (L{deliverBody}, L{closeAfterResponse}, L{abortRequest}).

The request talks to its connection through a I{body gate}: the HTTP/1.1
channel (L{uploadsvc.web.streaming.http1}) or an HTTP/2 stream
(L{uploadsvc.web.streaming.h2stream}), each with C{_pauseBody},
C{_resumeBody} and C{_send100Continue}.
"""

from __future__ import annotations

import re
from io import BytesIO
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.client import ResponseDone
from twisted.web.http import H2_ENABLED
from zope.interface import implementer

from uploadsvc.web.interfaces import IBodyReceiver
from uploadsvc.web.streaming.splice import startSplicing

if H2_ENABLED:
    from twisted.web._http2 import H2Stream as _H2Stream
else:  # pragma: no cover - without h2 the server speaks HTTP/1.1 only
    _H2Stream = None  # type: ignore[misc,assignment]

if TYPE_CHECKING:
    from uploadsvc.web.streaming.h2stream import HTTP2BodyGate

_log = Logger()


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


#: The interim statuses L{sendInterim} sends, with their reason phrases.
INTERIM_PHRASES = {104: b"Upload Resumption Supported"}

_FIELD_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(rb"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")


def sendInterim(request: Any, status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    """
    Send an interim (1xx) answer to C{request} before its final answer, on
    HTTP/1.1 or HTTP/2 (twisted.web has no public way to: it sends only
    C{100 Continue}, itself). Used for C{104 Upload Resumption Supported}
    (docs/protocol.md section 9). Sends nothing (and says so) to an
    HTTP/1.0 client, behind a pipelined request still being answered, after
    the final answer started, or for a request that took Twisted's own
    path; the draft makes the interim answer optional.

    @param headers: its fields, each checked (no CR, LF or NUL can split
        the answer).
    @raise ValueError: a status not in L{INTERIM_PHRASES}, or a malformed
        field.
    @return: whether it was sent.
    """
    if status not in INTERIM_PHRASES:
        raise ValueError(f"not an interim status this server sends: {status}")
    for name, value in headers:
        if _FIELD_NAME.fullmatch(name) is None or _FIELD_VALUE.fullmatch(value) is None:
            raise ValueError(f"malformed field for an interim answer: {name!r}: {value!r}")
    if not (isinstance(request, StreamingRequest) and request.streaming):
        return False
    gate = request._bodyGate()
    if gate is None or request.finished:
        return False
    head = b"%d %s" % (status, INTERIM_PHRASES[status])
    return bool(gate._sendInterim(request, head, headers))


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


class _FinishNotice:
    """
    One listener in Twisted's C{Request.notifications}, which calls
    C{callback(None)} on each when the answer is done and C{errback(reason)}
    when the client goes away: the same news as C{notifyFinish}, without a
    L{Deferred} and its callback chain kept for as long as the request is
    open.
    """

    __slots__ = ("_call", "_args")

    def __init__(self, call: Callable[..., object], args: tuple[Any, ...]) -> None:
        self._call = call
        self._args = args

    def callback(self, result: None) -> None:
        self._tell(result)

    def errback(self, reason: Failure) -> None:
        self._tell(reason)

    def _tell(self, result: object) -> None:
        try:
            self._call(result, *self._args)
        except Exception:
            # (Twisted goes on to the next listener, as a Deferred would.)
            _log.failure("while telling that a request ended")


def whenFinished(request: Any, call: Callable[..., object], *args: Any) -> None:
    """
    Call C{call(result, *args)} once C{request} ends: C{result} is L{None}
    when its answer was sent, a L{Failure} when its client went away first;
    C{request.notifyFinish().addBoth(call, *args)}, but lighter for a
    L{StreamingRequest} (nothing but one small object while it is open).
    """
    if isinstance(request, StreamingRequest):
        request.notifications.append(_FinishNotice(call, args))  # type: ignore[arg-type]
    else:
        request.notifyFinish().addBoth(call, *args)


@implementer(IPushProducer)
class _SpooledProducer:
    """
    The producer of a body that is already all in: nothing to pause.
    """

    __slots__ = ()

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

    __slots__ = ("_request",)

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
    _http2: HTTP2BodyGate | None = None
    #: Of C{sentLength}, the bytes still queued on its HTTP/2 stream when
    #: the request lost its client (never sent).
    unsentLength = 0
    #: Body chunks that arrived before the receiver (a list made by the
    #: first one: most requests never have any).
    _early: list[bytes] | tuple[()] = ()

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
        The channel has all headers of a request that has a body: render
        now, before any body byte is read.
        """
        self.streaming = True
        self._expectContinue = expectContinue
        # Nothing is read until the resource accepts the body.
        self._bodyGate()._pauseBody("decision")
        # Twisted's requestReceived sets the method, path and query arguments
        # and renders; with an empty content it parses no form body.
        self.content = BytesIO()  # type: ignore[assignment]
        super().requestReceived(command, path, version)

    def _http2HeadersReceived(self, stream: HTTP2BodyGate, hasBody: bool) -> None:
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
            if self._early:
                self._early.append(data)  # type: ignore[union-attr]
            else:
                self._early = [data]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self.streaming:
            super().requestReceived(command, path, version)
            return
        self.bodyComplete = True
        if self._receiver is not None:
            self._receiver.connectionLost(Failure(ResponseDone()))

    def connectionLost(self, reason: Failure) -> None:
        if self._http2 is not None:
            self.unsentLength = self._http2.unsentBytes()
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
        early, self._early = self._early, ()
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
            startSplicing(self, receiver)  # (the zero-copy path, if it may)
            gate._resumeBody("decision")


def _onHTTP2(request: Any) -> bool:
    """
    Whether C{request} arrived on an HTTP/2 stream.
    """
    return _H2Stream is not None and isinstance(_channelOf(request), _H2Stream)

