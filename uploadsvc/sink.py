"""
A flow-controlled file sink: bytes from the network go to disk off the reactor
thread, and a slow disk slows the sender instead of growing the server's memory.

One write at most is in flight per upload, so writes land in order; chunks
that arrive meanwhile are coalesced into the next vectored write. When the
bytes held (queued plus in flight) pass C{highWater} the producer is paused;
below C{lowWater} it is resumed. Memory per upload is therefore about
C{highWater} plus one socket read, whatever the upload's size.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure

#: Default marks; see L{FileSink}.
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1 * 1024 * 1024


class IDiskRunner(Protocol):
    """
    Runs blocking file work away from the reactor thread.
    """

    def run(self, f: Callable[..., object], *args: object) -> Deferred: ...


class FileSink:
    """
    Writes a stream of chunks through C{writeChunks} and applies back-pressure
    to C{producer}.

    @ivar held: bytes accepted but not yet written.
    @ivar written: bytes written so far.
    @ivar failure: the first write error, after which everything is dropped.
    @ivar onFailure: called with that error; without it, a producer the sink
        paused is stopped.
    """

    def __init__(
        self,
        runner: IDiskRunner,
        writeChunks: Callable[[Sequence[bytes | memoryview]], None],
        producer: IPushProducer,
        highWater: int = HIGH_WATER,
        lowWater: int = LOW_WATER,
    ) -> None:
        if not 0 <= lowWater < highWater:
            raise ValueError("need 0 <= lowWater < highWater")
        self._runner = runner
        self._writeChunks = writeChunks
        self._producer = producer
        self._high = highWater
        self._low = lowWater
        self._queue: list[bytes | memoryview] = []
        self._inFlight: Deferred | None = None
        self._drained: list[Deferred] = []
        self.paused = False
        self.held = 0
        self.written = 0
        self.failure: Failure | None = None
        self.onFailure: Callable[[Failure], None] | None = None

    def write(self, data: bytes | memoryview) -> None:
        """
        Accept the next chunk; never blocks, may pause the producer.
        """
        if self.failure is not None or not data:
            return
        self._queue.append(data)
        self.held += len(data)
        if self.held >= self._high and not self.paused:
            self.paused = True
            self._producer.pauseProducing()
        if self._inFlight is None:
            self._startWrite()

    def drain(self) -> Deferred:
        """
        @return: a L{Deferred} that fires once everything accepted so far is
            written, or fails with the write error.
        """
        if self.failure is not None:
            return fail(self.failure)
        if self._inFlight is None:
            return succeed(None)
        d: Deferred = Deferred()
        self._drained.append(d)
        return d

    def _startWrite(self) -> None:
        chunks, self._queue = self._queue, []
        size = sum(map(len, chunks))
        self._inFlight = self._runner.run(self._writeChunks, chunks)
        self._inFlight.addCallbacks(self._wrote, self._failed, (size,))

    def _wrote(self, _: object, size: int) -> None:
        self._inFlight = None
        self.held -= size
        self.written += size
        if self._queue:
            self._startWrite()
        if self.paused and self.held <= self._low:
            self.paused = False
            self._producer.resumeProducing()
        if self._inFlight is None:
            self._fireDrained(None)

    def _failed(self, failure: Failure) -> None:
        self._inFlight = None
        self.failure = failure
        self._queue = []
        self.held = 0
        if self.onFailure is not None:
            # The owner answers now (e.g. 507) instead of waiting for a body
            # end that a paused producer would never bring.
            self.onFailure(failure)
        elif self.paused:
            self.paused = False
            self._producer.stopProducing()
        self._fireDrained(failure)

    def _fireDrained(self, result: object) -> None:
        waiting, self._drained = self._drained, []
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
