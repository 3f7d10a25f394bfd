"""
A small body that arrived whole with its headers, taken in hand before any
sink is made: the app can then write, hash and complete it in one trip to
the disk pool instead of one trip per write and one for the completion.
When the body is not all there yet, everything seen so far is handed on to
the ordinary receiver, in the order it came, and the rest goes straight to it.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from zope.interface import implementer

from uploadsvc.web.interfaces import IBodyReceiver


@implementer(IBodyReceiver)
class BodyInHand:
    """
    The body receiver attached first: keeps what arrives until L{handOver}.

    @ivar length: the body's declared length.
    """

    # (One is kept per open small upload, also after it handed over.)
    __slots__ = ("length", "_producer", "_chunks", "_size", "_end", "_target")

    def __init__(self, length: int) -> None:
        self.length = length
        self._producer: IPushProducer | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._end: Failure | None = None
        self._target: IBodyReceiver | None = None

    def makeConnection(self, producer: IPushProducer) -> None:
        self._producer = producer

    def dataReceived(self, data: bytes) -> None:
        if self._target is not None:
            self._target.dataReceived(data)
            return
        self._chunks.append(data)
        self._size += len(data)

    def connectionLost(self, reason: Failure) -> None:
        if self._target is not None:
            self._target.connectionLost(reason)
            return
        self._end = reason

    def whole(self) -> list[bytes] | None:
        """
        The whole body, when it ended normally with exactly its declared
        length before anyone else took it; else L{None}.
        """
        if (
            self._target is None
            and self._end is not None
            and self._end.check(ResponseDone)
            and self._size == self.length
        ):
            return self._chunks
        return None

    def handOver(self, receiver: IBodyReceiver) -> None:
        """
        Make C{receiver} the body's receiver, as if it had been attached
        first: the producer, the bytes kept, and the end if it came.
        """
        assert self._target is None and self._producer is not None
        self._target = receiver
        chunks, self._chunks = self._chunks, []
        receiver.makeConnection(self._producer)
        for chunk in chunks:
            receiver.dataReceived(chunk)
        if self._end is not None:
            receiver.connectionLost(self._end)
