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

import threading
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

    def run(self, f: Callable[..., object], *args: object) -> Deferred:
        """
        Run C{f(*args)} in a thread; its result arrives on the reactor thread.
        """

    def callInThread(self, f: Callable[..., object], *args: object) -> None:
        """
        Run C{f(*args)} in a thread, nothing reported back.
        """

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        """
        From a thread, run C{f(*args)} on the reactor thread.
        """


class _Lane:
    """
    One ordered stream of blocking calls over the sink's chunks.

    A lane is either idle or has one job in the thread pool. Chunks that
    arrive while a job runs coalesce into the next batch, which the job hands
    to the pool itself when it ends.
    Nothing comes back to the reactor thread unless the sink needs it (to
    resume its producer, or because someone waits in L{FileSink.drain}).
    The reactor thread appends; the job's thread takes; C{lock} guards the
    queue and the idle/busy switch.
    """

    def __init__(self, sink: FileSink, work: Callable[[Chunks], None]) -> None:
        self.sink = sink
        self.work = work
        self.lock = threading.Lock()
        self.queue: list[bytes | memoryview] = []
        self.busy = False
        self.notifyIdle = False
        self.done = 0  # bytes finished; written by the job's thread only

    def add(self, data: bytes | memoryview) -> None:
        with self.lock:
            if self.busy:
                self.queue.append(data)
                return
            self.busy = True
        self.sink._runner.callInThread(self._job, [data])

    def waitIdle(self) -> bool:
        """
        Ask to be told when the lane goes idle; false if it is idle now.
        """
        with self.lock:
            if self.busy:
                self.notifyIdle = True
            return self.busy

    def _job(self, chunks: list[bytes | memoryview]) -> None:
        sink = self.sink
        if sink.failure is None:
            try:
                self.work(chunks)
            except BaseException:
                failure = Failure()
                with self.lock:
                    self.busy = False
                    self.queue = []
                sink._runner.callFromThread(sink._failed, failure)
                return
            self.done += sum(map(len, chunks))
            if sink.paused and not sink._resumeScheduled and sink.held <= sink._low:
                sink._resumeScheduled = True
                sink._runner.callFromThread(sink._resume)
        with self.lock:
            batch, self.queue = self.queue, []
            if not batch or sink.failure is not None:
                self.busy = False
                notify, self.notifyIdle = self.notifyIdle, False
        if batch and sink.failure is None:
            # What arrived meanwhile goes as one batch in the next job.
            sink._runner.callInThread(self._job, batch)
        elif notify:
            sink._runner.callFromThread(sink._laneIdle)


class FileSink:
    """
    Writes a stream of chunks through C{writeChunks} (and C{hashChunks}) and
    applies back-pressure to C{producer}.

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
        self._accepted = 0
        self._resumeScheduled = False
        self.paused = False
        self.failure: Failure | None = None
        self.onFailure: Callable[[Failure], None] | None = None

    @property
    def written(self) -> int:
        """
        Bytes written so far.
        """
        return self._writes.done

    @property
    def held(self) -> int:
        """
        Bytes accepted that some lane has not finished with.
        """
        return self._accepted - min(lane.done for lane in self._lanes)

    def write(self, data: bytes | memoryview) -> None:
        """
        Accept the next chunk; never blocks, may pause the producer.
        """
        if self.failure is not None or not data:
            return
        self._accepted += len(data)
        # Pause before the lanes see the data: a lane's thread that finishes
        # it must find C{paused} set, or nobody would resume.
        if not self.paused and self.held >= self._high:
            self.paused = True
            self._producer.pauseProducing()
        for lane in self._lanes:
            lane.add(data)

    def drain(self) -> Deferred:
        """
        @return: a L{Deferred} that fires once everything accepted so far is
            written (and hashed), or fails with the first error.
        """
        if self.failure is not None:
            return fail(self.failure)
        busy = [lane.waitIdle() for lane in self._lanes]
        if not any(busy):
            return succeed(None)
        d: Deferred = Deferred()
        self._drained.append(d)
        return d

    def _resume(self) -> None:
        self._resumeScheduled = False
        if self.paused and self.failure is None and self.held <= self._low:
            self.paused = False
            self._producer.resumeProducing()

    def _laneIdle(self) -> None:
        if self.failure is None and not any(lane.busy for lane in self._lanes):
            self._fireDrained(None)

    def _failed(self, failure: Failure) -> None:
        if self.failure is not None:
            return
        self.failure = failure
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
