"""
A flow-controlled file sink: bytes from the network go to disk off the reactor
thread, and a slow disk slows the sender instead of growing the server's memory.

Each chunk goes down one or two I{lanes}: the write lane (vectored writes at
increasing offsets) and, optionally, the digest lane (hash updates). Each lane
has at most one call in flight, so its work stays in order; chunks that arrive
meanwhile are coalesced into its next call. The two lanes run in parallel on
the thread pool, so hashing does not slow the disk writes down on a machine
with a second core.

A chunk is I{held} until every lane is done with it. When the bytes held pass
C{highWater} the producer is paused; at C{lowWater} or below it is resumed.
Memory per upload is therefore about C{highWater} plus one socket read,
whatever the upload's size.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure

#: Default marks; see L{FileSink}.
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1 * 1024 * 1024

Chunks = Sequence["bytes | memoryview"]


class IDiskRunner(Protocol):
    """
    Runs blocking file work away from the reactor thread.
    """

    def run(self, f: Callable[..., object], *args: object) -> Deferred: ...


class _Lane:
    """
    One ordered stream of blocking calls over the sink's chunks.
    """

    def __init__(self, sink: FileSink, work: Callable[[Chunks], None]) -> None:
        self.sink = sink
        self.work = work
        self.queue: list[bytes | memoryview] = []
        self.queued = 0
        self.inFlight = 0  # bytes in the call under way
        self.busy = False

    @property
    def held(self) -> int:
        return self.queued + self.inFlight

    def add(self, data: bytes | memoryview) -> None:
        self.queue.append(data)
        self.queued += len(data)
        if not self.busy:
            self.start()

    def start(self) -> None:
        chunks, self.queue = self.queue, []
        self.inFlight, self.queued = self.queued, 0
        self.busy = True
        d = self.sink._runner.run(self.work, chunks)
        d.addCallbacks(self.done, self.sink._failed)

    def done(self, _: object) -> None:
        finished, self.inFlight = self.inFlight, 0
        self.busy = False
        if self.queue and self.sink.failure is None:
            self.start()
        self.sink._progress(self, finished)


class FileSink:
    """
    Writes a stream of chunks through C{writeChunks} (and C{hashChunks}) and
    applies back-pressure to C{producer}.

    @ivar written: bytes written so far.
    @ivar failure: the first error of a lane, after which everything is
        dropped.
    @ivar onFailure: called with that error; without it, a producer the sink
        paused is stopped.
    """

    def __init__(
        self,
        runner: IDiskRunner,
        writeChunks: Callable[[Chunks], None],
        producer: IPushProducer,
        highWater: int = HIGH_WATER,
        lowWater: int = LOW_WATER,
        hashChunks: Callable[[Chunks], None] | None = None,
    ) -> None:
        """
        @param writeChunks: blocking; writes the chunks after the previous ones.
        @param hashChunks: blocking; feeds the chunks to a digest, in order.
        """
        if not 0 <= lowWater < highWater:
            raise ValueError("need 0 <= lowWater < highWater")
        self._runner = runner
        self._producer = producer
        self._high = highWater
        self._low = lowWater
        self._writes = _Lane(self, writeChunks)
        self._lanes = [self._writes]
        if hashChunks is not None:
            self._lanes.append(_Lane(self, hashChunks))
        self._drained: list[Deferred] = []
        self.paused = False
        self.written = 0
        self.failure: Failure | None = None
        self.onFailure: Callable[[Failure], None] | None = None

    @property
    def held(self) -> int:
        """
        Bytes accepted that some lane has not finished with.
        """
        return max(lane.held for lane in self._lanes)

    def write(self, data: bytes | memoryview) -> None:
        """
        Accept the next chunk; never blocks, may pause the producer.
        """
        if self.failure is not None or not data:
            return
        for lane in self._lanes:
            lane.add(data)
        if not self.paused and self.held >= self._high:
            self.paused = True
            self._producer.pauseProducing()

    def drain(self) -> Deferred:
        """
        @return: a L{Deferred} that fires once everything accepted so far is
            written (and hashed), or fails with the first error.
        """
        if self.failure is not None:
            return fail(self.failure)
        if not any(lane.busy for lane in self._lanes):
            return succeed(None)
        d: Deferred = Deferred()
        self._drained.append(d)
        return d

    def _progress(self, lane: _Lane, finished: int) -> None:
        if lane is self._writes:
            self.written += finished
        if self.failure is not None:
            return
        if self.paused and self.held <= self._low:
            self.paused = False
            self._producer.resumeProducing()
        if not any(lane.busy for lane in self._lanes):
            self._fireDrained(None)

    def _failed(self, failure: Failure) -> None:
        if self.failure is not None:
            return
        self.failure = failure
        for lane in self._lanes:
            lane.queue, lane.queued = [], 0
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
