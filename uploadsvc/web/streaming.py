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

Requests without a body take Twisted's ordinary path. Every private name of
twisted.web used by uploadsvc is used in this file, and C{tests/test_streaming}
exercises each of them, so a Twisted upgrade that changes them fails loudly here.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, Callable

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.client import ResponseDone
from twisted.web.http import parse_qs
from zope.interface import implementer

from uploadsvc.web.interfaces import IBodyReceiver

#: How much one socket read may return. Twisted's default is 64 KiB; larger
#: reads mean fewer trips through the parser and the sink per GiB.
DEFAULT_READ_SIZE = 256 * 1024


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
    """
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
        channel = _channelOf(self._request)
        if channel is not None:
            channel._pauseBody("receiver")

    def resumeProducing(self) -> None:
        channel = _channelOf(self._request)
        if channel is not None:
            channel._resumeBody("receiver")

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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._early: list[bytes] = []

    def _headersComplete(
        self, command: bytes, path: bytes, version: bytes, expectContinue: bool
    ) -> None:
        """
        The channel has all headers of a request that has a body: set the
        request up as C{requestReceived} would, and render now.
        """
        self.streaming = True
        self._expectContinue = expectContinue
        self.content = BytesIO()
        self.method, self.uri, self.clientproto = command, path, version
        self.args = {}
        self.path, _, query = self.uri.partition(b"?")
        if query:
            self.args = parse_qs(query, 1)
        # Nothing is read until the resource accepts the body.
        self.channel._pauseBody("decision")
        self.process()

    def gotLength(self, length: int | None) -> None:
        if not self.streaming:
            super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if not self.streaming:
            super().handleContentChunk(data)
        elif self.finished or self._disconnected:
            pass
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
            if self._expectContinue:
                self._expectContinue = False
                self.channel._send100Continue()
            self.channel._resumeBody("decision")


class StreamingHTTPChannel(http.HTTPChannel):
    """
    An L{HTTPChannel} that renders requests with a body at header time and owns
    the pause of their body.

    @ivar readSize: the largest socket read, see L{DEFAULT_READ_SIZE}.
    """

    readSize = DEFAULT_READ_SIZE

    def __init__(self) -> None:
        super().__init__()
        self._bodyPauses: set[str] = set()
        self._pausedTimeOut: int | float | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        if hasattr(self.transport, "bufferSize"):
            self.transport.bufferSize = self.readSize

    def allHeadersReceived(self) -> None:
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
        if not self._handlingRequest and not self._bodyPauses:
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
            if not self._waitingForTransport and self.transport is not None:
                self._networkProducer.resumeProducing()

    def _clearBodyPauses(self) -> None:
        if self._bodyPauses:
            self._bodyPauses.clear()
            self._restoreTimeout()

    def _restoreTimeout(self) -> None:
        timeOut, self._pausedTimeOut = self._pausedTimeOut, None
        if timeOut is not None and self.transport is not None:
            self.setTimeout(timeOut)


class StreamingSite(server.Site):
    """
    A L{Site} whose connections stream request bodies, see the module docstring.
    """

    protocol: Callable[[], http.HTTPChannel] = StreamingHTTPChannel  # type: ignore[assignment]
    requestFactory = StreamingRequest

    def __init__(self, resource: Any, *, readSize: int = DEFAULT_READ_SIZE, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.readSize = readSize

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.readSize = self.readSize
        return channel
