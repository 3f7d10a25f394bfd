"""
Interfaces of the streaming request path.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import Interface


class IBodyReceiver(Interface):
    """
    Receives a request body while it is still arriving.

    This mirrors the client side's C{IResponse.deliverBody(protocol)}: a Klein
    route that accepts an upload hands a provider of this interface to
    L{uploadsvc.web.streaming.deliverBody}, and from then on every body chunk
    goes to it as it is decoded, never to twisted.web's spool.
    """

    def makeConnection(producer: IPushProducer) -> None:
        """
        The body starts to flow.

        @param producer: an L{IPushProducer} for the body: pausing it stops
            reading the client's connection (so a slow disk slows the sender),
            resuming it reads again, stopping it drops the connection.
        """

    def dataReceived(data: bytes) -> None:
        """
        The next piece of the body, in order, transfer-coding removed.
        """

    def connectionLost(reason: Failure) -> None:
        """
        The body ended.

        @param reason: a L{Failure} wrapping
            L{twisted.web.client.ResponseDone} when the whole body arrived, or
            the connection error (lost, timed out, taken over) when it did not.
        """
