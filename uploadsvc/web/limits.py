"""
Connection-level limits against slow and greedy clients (docs/protocol.md section
6): open connections per client address, and the time a client may take to
send a request's header block.

The body's own limits live elsewhere: its idle timeout is the channel's
timeout (C{--idle-timeout}), its size is checked by the app. The size of a
header block is bounded by the streaming channel (L{MAX_HEADER_FIELDS}
fields, L{MAX_HEADER_BYTES} bytes, counted while the block arrives); more is
answered C{431} and the connection closed.

On shutdown (L{uploadsvc.ops.shutdown}) the site I{drains}: it closes
every HTTP/1 connection that has no request under way, answers the requests
in flight with C{Connection: close} and closes their connections after the
response, and ends whatever is left at the deadline (L{LimitedSite.drain},
L{LimitedSite.abortAll}); it counts the requests in flight for that
(L{LimitedSite.inFlight}).

The I{header deadline}: from the moment a connection is open, or its last
response is done, the client has C{headerTimeout} seconds to complete the
next request's header block, however it trickles the bytes. Without it, a
client sending one byte every few seconds (slowloris) resets the idle timeout
forever. When the deadline passes the connection is closed without an answer
(as an idle keep-alive connection would be). HTTP/2 connections have no
header deadline (only the idle timeout): their streams share the
connection.

Everything here uses public Twisted interfaces only: each connection's
protocol is wrapped in a thin L{IProtocol} proxy that sees it open and close,
and L{LimitedSite.getResourceFor} sees each request when its header block is
complete (the streaming request path renders at that moment).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from uploadsvc.web.streaming import (
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELDS,
    StreamingSite,
    whenFinished,
)

log = Logger()

__all__ = ["LimitedSite", "DEFAULT_HEADER_TIMEOUT", "MAX_HEADER_BYTES", "MAX_HEADER_FIELDS"]

#: Seconds a client has to send a request's header block.
DEFAULT_HEADER_TIMEOUT = 30

#: Seconds a connection closed at its header deadline may take to go away
#: before it is aborted.
ABORT_AFTER = 5


class _Refused(Protocol):
    """
    What an extra connection from a client over its limit gets: closed at
    once, nothing read, nothing written.
    """

    def connectionMade(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]


@implementer(IProtocol)
class _Guarded:
    """
    A connection's protocol as the transport sees it: forwards everything to
    the real one, and keeps the connection's header deadline and its place
    in the per-client count.

    @ivar inner: the real protocol.
    @ivar clientKey: the client address counted for this connection, if any.
    """

    # One per open connection: no instance dict.
    __slots__ = (
        "transport", "inner", "clientKey", "_site", "_deadline", "_requests",
        "_firstData", "_watching", "_closed",
    )

    def __init__(self, site: LimitedSite, inner: Any, clientKey: str | None) -> None:
        self.transport: Any = None
        self.inner = inner
        self.clientKey = clientKey
        self._site = site
        self._deadline: IDelayedCall | None = None
        self._requests = 0
        self._firstData = True
        self._watching = True
        self._closed = False

    # -- IProtocol ----------------------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self._site._guards[transport] = self
        self._site.connectionOpened()
        self._startDeadline()
        self.inner.makeConnection(transport)

    def connectionMade(self) -> None:
        self.inner.connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if self._firstData:
            self._firstData = False
            if getattr(self.transport, "negotiatedProtocol", None) == b"h2":
                self._watching = False
                self._cancelDeadline()
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Any) -> None:
        self._closed = True
        self._cancelDeadline()
        self._site._connectionClosed(self)
        self.inner.connectionLost(reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # -- requests -----------------------------------------------------------

    def requestStarted(self) -> None:
        """
        A request's header block is complete.
        """
        self._requests += 1
        self._cancelDeadline()

    def requestEnded(self, _: object = None) -> None:
        """
        A request's response is done (or its connection gone): with no other
        request under way, the next header block's deadline starts, or,
        while the server drains, the connection closes.
        """
        self._requests -= 1
        if not self._requests and not self._closed:
            if self._site.draining:
                self.close()
            else:
                self._startDeadline()

    def idle(self) -> bool:
        """
        Whether this connection has no request under way: an HTTP/1
        connection between requests (HTTP/2 streams are not counted per
        connection, so such a connection is never called idle).
        """
        return self._watching and not self._requests and not self._closed

    def close(self) -> None:
        """
        Close after what was written, reading nothing more (an HTTP/2
        connection says GOAWAY first).
        """
        self._cancelDeadline()
        closeGracefully = getattr(self.inner, "closeGracefully", None)
        if closeGracefully is not None:
            closeGracefully()
        else:
            self.transport.loseConnection()

    # -- deadline -----------------------------------------------------------

    def _startDeadline(self) -> None:
        self._cancelDeadline()
        timeout = self._site.headerTimeout
        if timeout and self._watching:
            self._deadline = self._site.reactor.callLater(timeout, self._timedOut)

    def _cancelDeadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _timedOut(self) -> None:
        log.info(
            "closing {peer}: no complete request header within {timeout} s",
            peer=str(self.transport.getPeer()), timeout=self._site.headerTimeout,
        )
        self._deadline = self._site.reactor.callLater(ABORT_AFTER, self.transport.abortConnection)
        # Read nothing more: over TLS the transport would otherwise go on
        # decrypting whatever the client still sends until it closes.
        pause = getattr(self.transport, "pauseProducing", None)
        if pause is not None:
            pause()
        self.transport.loseConnection()


class LimitedSite(StreamingSite):
    """
    A L{StreamingSite} with connection-level limits; see the module
    docstring.

    @ivar maxConnectionsPerClient: open connections one client address may
        have; extra ones are closed as soon as they are accepted (0: no
        limit). Connections over UNIX sockets are not counted.
    @ivar headerTimeout: seconds to complete a request's header block
        (0: no deadline beyond the idle timeout).
    @ivar connections: open connections by client address.
    """

    def __init__(
        self,
        resource: Any,
        *,
        maxConnectionsPerClient: int = 0,
        headerTimeout: float = DEFAULT_HEADER_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, **kwargs)
        self.maxConnectionsPerClient = maxConnectionsPerClient
        self.headerTimeout = headerTimeout
        self.connections: dict[str, int] = {}
        self._guards: dict[Any, _Guarded] = {}
        #: Requests whose header block arrived and whose response is not
        #: done (nor their connection gone), HTTP/2 streams included.
        self._inFlight: set[Any] = set()
        #: Whether the server is stopping (see L{drain}).
        self.draining = False

    def buildProtocol(self, addr: Any) -> Any:
        key = getattr(addr, "host", None)
        limit = self.maxConnectionsPerClient
        if limit and key is not None and self.connections.get(key, 0) >= limit:
            log.info(
                "refusing a connection from {client}: {limit} already open",
                client=key, limit=limit,
            )
            return _Refused()
        if key is not None:
            self.connections[key] = self.connections.get(key, 0) + 1
        return _Guarded(self, super().buildProtocol(addr), key)

    @property
    def inFlight(self) -> int:
        """
        How many requests are under way: their header block arrived, their
        response is not done and their connection not gone.
        """
        return len(self._inFlight)

    def getResourceFor(self, request: Any) -> Any:
        self._inFlight.add(request)
        guard = self._guards.get(getattr(request, "transport", None))
        if guard is not None:  # HTTP/1 (HTTP/2 has no Connection header)
            if self.draining:
                request.setHeader(b"connection", b"close")
            guard.requestStarted()
        # One subscription to the request's end for all the site does then,
        # and no Deferred kept for as long as the request is open.
        whenFinished(request, self._finished, request, guard)
        return super().getResourceFor(request)

    def _finished(self, result: object, request: Any, guard: _Guarded | None) -> None:
        self.requestFinished(request, result)
        self._inFlight.discard(request)
        if guard is not None:
            guard.requestEnded()

    def requestFinished(self, request: Any, result: object) -> None:
        """
        C{request}'s answer was sent (C{result} is L{None}) or its client
        went away first (a L{Failure}); for subclasses.
        """

    def connectionOpened(self) -> None:
        """
        A connection was accepted (not one refused over the per-client
        limit); for subclasses that count them.
        """

    def connectionClosed(self) -> None:
        """
        A connection that L{connectionOpened} told of is closed.
        """
    # -- graceful shutdown (see uploadsvc.ops.shutdown) ---------------------

    def drain(self) -> None:
        """
        The server stops: close every connection that has no request under
        way now, and each other one as its last response is sent (with
        C{Connection: close}).
        """
        self.draining = True
        for request in self._inFlight:
            if not request.startedWriting and request.clientproto != b"HTTP/2":
                request.setHeader(b"connection", b"close")
        for guard in list(self._guards.values()):
            if guard.idle():
                guard.close()

    def closeAll(self) -> None:
        """
        Close every connection left (after what was written).
        """
        for guard in list(self._guards.values()):
            guard.close()

    def abortAll(self) -> None:
        """
        End every connection left at once: their requests end as if the
        clients had gone away, keeping what they stored.
        """
        for guard in list(self._guards.values()):
            guard.transport.abortConnection()

    def _connectionClosed(self, guard: _Guarded) -> None:
        self._guards.pop(guard.transport, None)
        self.connectionClosed()
        key, guard.clientKey = guard.clientKey, None
        if key is None:
            return
        count = self.connections.get(key, 0) - 1
        if count > 0:
            self.connections[key] = count
        else:
            self.connections.pop(key, None)
