"""
The protocol switch and the site: a connection speaks HTTP/1.1 through
L{StreamingHTTPChannel}, or HTTP/2 through L{StreamingH2Connection} when
TLS negotiated C{h2} by ALPN.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.web import http, server
from twisted.web.http import H2_ENABLED

from uploadsvc.web.streaming.constants import DEFAULT_READ_SIZE
from uploadsvc.web.streaming.http1 import StreamingHTTPChannel
from uploadsvc.web.streaming.request import StreamingRequest

if H2_ENABLED:
    from uploadsvc.web.streaming.http2 import StreamingH2Connection


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
        # The steps of _GenericHTTPChannelProtocol.dataReceived, with our
        # class: Twisted's builds twisted.web._http2.H2Connection by name in
        # the middle of that method, with no factory or attribute to
        # override, so super() would build a connection that spools bodies.
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

    def closeGracefully(self) -> None:
        """
        Close a connection that has nothing under way: over HTTP/2 with a
        GOAWAY first (L{StreamingH2Connection.goAway}); over HTTP/1.1 after
        what was written.
        """
        goAway = getattr(self._channel, "goAway", None)
        if goAway is not None:
            goAway()
        else:
            self._channel.transport.loseConnection()

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
    # Set only where they differ from the class's: a channel's attributes
    # stay under CPython's 30 shared dict keys (a dict of ~300 bytes
    # instead of ~1.6 KiB per open connection).
    if site.readSize != channel.readSize:
        channel.readSize = site.readSize
    if site.zeroCopy != channel.zeroCopy:
        channel.zeroCopy = site.zeroCopy
    return _NegotiatingChannel(channel)


class StreamingSite(server.Site):
    """
    A L{Site} whose connections stream request bodies, see the package docstring.

    It offers C{h2} and C{http/1.1} by ALPN when the C{h2} package is
    installed (L{server.Site.acceptableProtocols}).
    """

    protocol: Callable[..., Any] = _buildChannel  # type: ignore[assignment]
    requestFactory = StreamingRequest

    def __init__(
        self, resource: Any, *, readSize: int = DEFAULT_READ_SIZE, zeroCopy: str = "auto",
        **kwargs: Any,
    ) -> None:
        """
        @param zeroCopy: C{--zero-copy}, C{auto} or C{off} (see L{splice}).
        """
        super().__init__(resource, **kwargs)
        self.readSize = readSize
        self.zeroCopy = zeroCopy
