"""
Request bodies read from a file range, and the whole-file digest computed
while reading them.

L{FileRangeProducer} is L{twisted.web.client.FileBodyProducer} cut down to a
range of a file and with a hook that sees every block it reads, so the
client can hash the file as it sends it. L{RunningHash} is the sha-256 of
the longest prefix of the file read so far: blocks are fed in file order,
bytes that are read again (a retry that resends data the server did not
keep) are not fed twice, and a gap (the server already holds bytes this
process never read, from an earlier run) is filled by L{RunningHash.catchUp}
reading the gap once. No byte of the file is hashed twice and the file is
never read a second time just to hash it.
"""

from __future__ import annotations

import hashlib
from typing import IO, Callable, Generator

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import CooperativeTask, Cooperator, SchedulerError, TaskStopped
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

#: How much one cooperative step reads.
READ_SIZE = 64 * 1024


class RunningHash:
    """
    The sha-256 of the prefix C{[0, position)} of a file, grown in order.

    @ivar position: how many leading bytes of the file are in the hash.
    """

    def __init__(self) -> None:
        self._hasher = hashlib.sha256()
        self.position = 0

    def feed(self, offset: int, data: bytes) -> None:
        """
        Offer the block C{data} read at C{offset}.

        The part already hashed is ignored; a block that starts beyond
        L{position} is ignored too (it leaves a gap that only L{catchUp}
        fills), so the hash is always that of a true prefix.
        """
        if offset > self.position:
            return
        skip = self.position - offset
        if skip >= len(data):
            return
        self._hasher.update(data[skip:] if skip else data)
        self.position = offset + len(data)

    def catchUp(
        self, f: IO[bytes], upTo: int, cooperator: Cooperator, readSize: int = READ_SIZE
    ) -> Deferred[None]:
        """
        Hash the file from L{position} up to C{upTo}, one block per
        cooperative step, without sending anything.

        @param f: the file, opened in binary mode; its position is changed.
        """

        def steps() -> Generator[None, None, None]:
            while self.position < upTo:
                f.seek(self.position)
                data = f.read(min(readSize, upTo - self.position))
                if not data:
                    raise OSError(f"file ended at {self.position}, before {upTo}")
                self.feed(self.position, data)
                yield None

        return cooperator.cooperate(steps()).whenDone().addCallback(lambda _: None)

    def digest(self) -> bytes:
        """
        The sha-256 of the prefix hashed so far.
        """
        return self._hasher.digest()


@implementer(IBodyProducer)
class FileRangeProducer:
    """
    A request body of the bytes C{[start, start + length)} of an open file,
    read one block per cooperative step.

    @ivar length: the body length (L{IBodyProducer}).
    @ivar written: bytes handed to the consumer so far.
    """

    def __init__(
        self,
        f: IO[bytes],
        start: int,
        length: int,
        cooperator: Cooperator,
        onRead: Callable[[int, bytes], None] = lambda offset, data: None,
        readSize: int = READ_SIZE,
    ) -> None:
        """
        @param f: the file, opened in binary mode; several producers may
            share it, each seeks before it reads.
        @param onRead: called with C{(offset, block)} for each block, before
            it is written.
        """
        self._file = f
        self._start = start
        self.length = length
        self._cooperator = cooperator
        self._onRead = onRead
        self._readSize = readSize
        self.written = 0
        self._task: CooperativeTask | None = None
        self._paused = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """
        Start writing the range to C{consumer}.

        @return: a L{Deferred} that fires when all of it was written, fails
            when reading fails, and never fires once L{stopProducing} was
            called (as L{twisted.web.client.FileBodyProducer} does).
        """
        self._task = self._cooperator.cooperate(self._writeLoop(consumer))
        d: Deferred[None] = self._task.whenDone().addCallback(lambda _: None)

        def maybeStopped(reason: Failure) -> Deferred[None]:
            reason.trap(TaskStopped)
            return Deferred()

        d.addErrback(maybeStopped)
        return d

    def _writeLoop(self, consumer: IConsumer) -> Generator[None, None, None]:
        while self.written < self.length:
            offset = self._start + self.written
            self._file.seek(offset)
            data = self._file.read(min(self._readSize, self.length - self.written))
            if not data:
                raise OSError(f"file ended at {offset}, before {self._start + self.length}")
            self._onRead(offset, data)
            self.written += len(data)
            consumer.write(data)
            yield None

    def pauseProducing(self) -> None:
        """
        Stop reading until L{resumeProducing}; idempotent.
        """
        if self._task is not None and not self._paused:
            self._paused = True
            try:
                self._task.pause()
            except SchedulerError:
                pass

    def resumeProducing(self) -> None:
        """
        Carry on after L{pauseProducing}; idempotent.
        """
        if self._task is not None and self._paused:
            self._paused = False
            try:
                self._task.resume()
            except SchedulerError:
                pass

    def stopProducing(self) -> None:
        """
        Stop for good; safe to call more than once, and after the end.
        """
        if self._task is not None:
            try:
                self._task.stop()
            except SchedulerError:
                pass
