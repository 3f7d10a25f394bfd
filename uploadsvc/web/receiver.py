"""
The body receiver of one write request: drops the bytes a retry repeats, keeps
at most what the range allows, and feeds the rest to a L{FileSink}.
"""

from __future__ import annotations

import enum
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from zope.interface import implementer

from uploadsvc.errors import UploadError
from uploadsvc.sink import FileSink
from uploadsvc.web.interfaces import IBodyReceiver
from uploadsvc.web.streaming.zerocopyplan import receiverReason

class Outcome(enum.Enum):
    """
    How a body that broke no limit ended (L{UploadReceiver.ended}).
    """

    #: The whole body arrived.
    COMPLETE = "complete"
    #: The connection went first.
    LOST = "lost"


COMPLETE = Outcome.COMPLETE
LOST = Outcome.LOST


@implementer(IBodyReceiver)
class UploadReceiver:
    """
    @ivar ended: fires with an L{Outcome} when the body ended; fails with
        the L{UploadError} of a limit the body broke (the bytes before the
        limit are kept), or with the sink's failure when a write failed.
    @ivar sink: the file sink, once the body started.
    """

    # One per open upload: no instance dict.
    __slots__ = ("_makeSink", "_skip", "_take", "_overflow", "_producer", "sink", "ended")

    def __init__(
        self,
        makeSink: Callable[[IPushProducer], FileSink],
        skip: int,
        take: int | None,
        overflow: Callable[[], UploadError],
    ) -> None:
        """
        @param skip: leading body bytes already stored: dropped.
        @param take: how many bytes to keep after those (L{None}: all).
        @param overflow: makes the error for a body longer than C{take}.
        """
        self._makeSink = makeSink
        self._skip = skip
        self._take = take
        self._overflow = overflow
        self._producer: IPushProducer | None = None
        self.sink: FileSink | None = None
        self.ended: Deferred = Deferred()

    def makeConnection(self, producer: IPushProducer) -> None:
        self._producer = producer
        self.sink = self._makeSink(producer)
        self.sink.onFailure = self._sinkFailed

    def _sinkFailed(self, failure: Failure) -> None:
        if not self.ended.called:
            self._producer.pauseProducing()  # type: ignore[union-attr]
            self.ended.errback(failure)

    def dataReceived(self, data: bytes) -> None:
        if self.ended.called:
            return
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return
            data = memoryview(data)[self._skip :]  # type: ignore[assignment]
            self._skip = 0
        if self._take is not None:
            if len(data) > self._take:
                keep = self._take
                if keep:
                    self.sink.write(memoryview(data)[:keep])  # type: ignore[union-attr]
                self._take = 0
                # Stop reading; the answer goes out before the rest arrives.
                self._producer.pauseProducing()  # type: ignore[union-attr]
                self.ended.errback(self._overflow())
                return
            self._take -= len(data)
        self.sink.write(data)  # type: ignore[union-attr]

    def spliceSink(self, remaining: int) -> FileSink | None:
        """
        Offer the sink for the zero-copy path: the rest of the body,
        C{remaining} bytes, may go to the file without being looked at, if
        no overlap is left to drop, the body stays within what may be kept,
        and the sink can take spliced bytes. Those bytes are counted as kept.

        @return: the sink, or L{None} when the bytes must come through
            L{dataReceived}.
        """
        sink = self.sink
        if (
            self.ended.called
            or sink is None
            or sink.failure is not None
            or sink.spliceTarget is None
            or receiverReason(self._skip, self._take, remaining) is not None
        ):
            return None
        if self._take is not None:
            self._take -= remaining
        return sink

    def connectionLost(self, reason: Failure) -> None:
        if not self.ended.called:
            self.ended.callback(Outcome.COMPLETE if reason.check(ResponseDone) else Outcome.LOST)
