"""
L{uploadsvc.web.bodyinhand.BodyInHand}: a whole small body is kept for
the app; anything else reaches the receiver handed over, in order.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from zope.interface import implementer

from uploadsvc.web.bodyinhand import BodyInHand
from uploadsvc.web.interfaces import IBodyReceiver


@implementer(IBodyReceiver)
class Recorder:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def makeConnection(self, producer: object) -> None:
        self.seen.append(("producer", producer))

    def dataReceived(self, data: bytes) -> None:
        self.seen.append(data)

    def connectionLost(self, reason: Failure) -> None:
        self.seen.append(reason.type)


class BodyInHandTests(SynchronousTestCase):
    def test_whole(self) -> None:
        """A body that ended with its declared length is whole."""
        body = BodyInHand(5)
        body.makeConnection(object())  # type: ignore[arg-type]
        body.dataReceived(b"ab")
        self.assertIsNone(body.whole())
        body.dataReceived(b"cde")
        self.assertIsNone(body.whole())  # not ended yet
        body.connectionLost(Failure(ResponseDone()))
        self.assertEqual(body.whole(), [b"ab", b"cde"])

    def test_notWhole(self) -> None:
        """A lost body, or one of another length, is not whole."""
        for chunks, end in [([b"abc"], ConnectionLost()), ([b"abcdef"], ResponseDone()),
                            ([b"abc"], ResponseDone())]:
            body = BodyInHand(5)
            body.makeConnection(object())  # type: ignore[arg-type]
            for chunk in chunks:
                body.dataReceived(chunk)
            body.connectionLost(Failure(end))
            self.assertIsNone(body.whole())

    def test_handOverBeforeEnd(self) -> None:
        """
        The receiver handed over gets the producer, the bytes kept, then
        what arrives later and the end, in order; the body is then not
        whole for anyone else.
        """
        producer = object()
        body = BodyInHand(5)
        body.makeConnection(producer)  # type: ignore[arg-type]
        body.dataReceived(b"ab")
        receiver = Recorder()
        body.handOver(receiver)
        body.dataReceived(b"cde")
        body.connectionLost(Failure(ResponseDone()))
        self.assertEqual(receiver.seen, [("producer", producer), b"ab", b"cde", ResponseDone])
        self.assertIsNone(body.whole())

    def test_handOverAfterEnd(self) -> None:
        """An end seen before the hand-over is handed over after the bytes."""
        producer = object()
        body = BodyInHand(5)
        body.makeConnection(producer)  # type: ignore[arg-type]
        body.dataReceived(b"ab")
        body.connectionLost(Failure(ConnectionLost()))
        receiver = Recorder()
        body.handOver(receiver)
        self.assertEqual(receiver.seen, [("producer", producer), b"ab", ConnectionLost])
