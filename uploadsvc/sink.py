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

On the zero-copy path (L{uploadsvc.web.streaming.splice}) bytes that wait in
a pipe are accepted by count (L{FileSink.acceptSpliced}): the write lane
splices them from the pipe into the file, then hands their file range to
the digest lane, which hashes it from the page cache
(L{ISpliceTarget.hashRange}); ranges gather up to L{HASH_BATCH} first, or
until someone waits for the sink (L{FileSink.drain}). They are held, and
pause the producer, like any other bytes.
"""

from __future__ import annotations

import threading
from itertools import groupby
from typing import Callable, Protocol, Sequence, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure

#: Seconds a sticky lane (L{_Lane}) waits for more work before it gives
#: its thread back.
STICKY_WAIT = 0.01

#: Spliced bytes written and not yet hashed gather into one range until
#: there are this many (or someone waits for the sink, or the producer is
#: paused, or a pump starts): the digest lane then reads and hashes them
#: from the page cache in one job. A slow sender's reads of a few KiB each
#: made one hash job (and one read back) per read. The hash may lag the
#: file: nothing reads it before the sink is drained.
HASH_BATCH = 256 * 1024

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


class ISpliceTarget(Protocol):
    """
    A staged file that bytes can be spliced into (see
    L{uploadsvc.storage.staged.StagedFile}); blocking methods, for the lanes.
    """

    def spliceIn(self, pipeFd: int, count: int) -> int:
        """
        Move C{count} bytes waiting in the pipe to the file's offset; return
        where they start.
        """

    def spliceable(self) -> bool:
        """
        Whether splice(2) into the file is worth trying.
        """

    def hashRange(
        self, start: int, count: int, update: Callable[[Chunks], None]
    ) -> None:
        """
        Feed bytes C{start..start+count} of the file to C{update}.
        """


class _Spliced:
    """
    C{count} body bytes waiting in C{pipe}, for the write lane; C{drained}
    is told (on the lane's thread) once they left the pipe.
    """

    __slots__ = ("count", "pipeFd", "drained")

    def __init__(self, count: int, pipeFd: int, drained: Callable[[int], None]) -> None:
        self.count = count
        self.pipeFd = pipeFd
        self.drained = drained

    def __len__(self) -> int:
        return self.count


class IPump(Protocol):
    """
    A pump (L{uploadsvc.web.streaming.splice.Pump}): moves bytes socket ->
    pipe -> file itself on the write lane.
    """

    def run(self, sink: FileSink, target: ISpliceTarget) -> None:
        """
        Move bytes, counting them with L{FileSink.pumpWritten} (blocking).
        """

    def abandon(self) -> None:
        """
        The lane drops the pump unrun (the sink failed): let go of what it holds.
        """


class _Pumped:
    """
    A pump for the write lane; it counts its bytes as it goes
    (L{FileSink.pumpWritten}), so its own length is zero.
    """

    __slots__ = ("pump",)

    def __init__(self, pump: IPump) -> None:
        self.pump = pump

    def __len__(self) -> int:
        return 0


def _kind(chunk: object) -> type:
    # (Bytes and memoryviews form one run: one vectored write.)
    return chunk.__class__ if isinstance(chunk, (_Pumped, _Spliced)) else bytes


class _FileRange:
    """
    C{count} bytes of the file from C{start}, written, for the digest lane;
    C{pumped} when a pump wrote them (their hashing is counted range by
    range, for the pump's L{FileSink.hashLag}).
    """

    __slots__ = ("start", "count", "pumped")

    def __init__(self, start: int, count: int, pumped: bool = False) -> None:
        self.start = start
        self.count = count
        self.pumped = pumped

    def __len__(self) -> int:
        return self.count


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

    A I{sticky} lane keeps its thread while work keeps coming: it runs
    what arrived meanwhile on the same thread, and waits up to
    L{STICKY_WAIT} seconds for more before it goes idle, instead of
    queueing each batch behind every other lane's job: the digest lane of
    a body a pump moves, while it moves it (L{FileSink.acceptPump}), which
    would otherwise wait its turn behind hundreds of slow uploads' jobs
    while the pump waits for it.
    """

    # (Two are kept per open upload: no dict, and the condition only for a
    # lane made sticky; a Condition is about 750 bytes.)
    __slots__ = ("sink", "work", "lock", "queue", "busy", "notifyIdle", "done", "sticky", "more")

    def __init__(self, sink: FileSink, work: Callable[[Chunks], None]) -> None:
        self.sink = sink
        self.work = work
        self.lock = threading.Lock()
        self.queue: list[bytes | memoryview] = []  # (or _Spliced, _FileRange)
        self.busy = False
        self.notifyIdle = False
        self.done = 0  # bytes finished; written by the job's thread only
        self.sticky = False
        self.more: threading.Condition | None = None  # made by the first stick()

    def stick(self) -> None:
        """
        Make the lane sticky (its condition exists before anyone sees it so).
        """
        with self.lock:
            if self.more is None:
                self.more = threading.Condition(self.lock)
            self.sticky = True

    def add(self, data: bytes | memoryview) -> None:
        with self.lock:
            if self.busy:
                self.queue.append(data)
                if self.sticky:
                    assert self.more is not None
                    self.more.notify()
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
        while chunks:
            chunks = self._step(chunks)

    def _step(self, chunks: list[bytes | memoryview]) -> list[bytes | memoryview]:
        """
        Run one batch; return the next one when this thread runs it too (a
        sticky lane), else an empty list.
        """
        sink = self.sink
        if sink.failure is None:
            try:
                self.work(chunks)
            except BaseException:
                failure = Failure()
                with self.lock:
                    self.busy = False
                    dropped, self.queue = self.queue, []
                _abandon(chunks)
                _abandon(dropped)
                sink._runner.callFromThread(sink._failed, failure)
                return []
            self.done += sum(map(len, chunks))
            if sink.paused and not sink._resumeScheduled and sink.held <= sink._low:
                sink._resumeScheduled = True
                sink._runner.callFromThread(sink._resume)
        else:
            _abandon(chunks)
        with self.lock:
            if not self.queue and self.sticky and sink.failure is None:
                assert self.more is not None
                self.more.wait(STICKY_WAIT)
            batch, self.queue = self.queue, []
            if not batch or sink.failure is not None:
                self.busy = False
                notify, self.notifyIdle = self.notifyIdle, False
        if sink.failure is not None:
            _abandon(batch)
        if batch and sink.failure is None:
            if self.sticky:
                return batch
            # What arrived meanwhile goes as one batch in the next job.
            sink._runner.callInThread(self._job, batch)
        elif notify:
            sink._runner.callFromThread(sink._laneIdle)
        return []


def _abandon(chunks: Sequence[object]) -> None:
    """
    Let the pumps among C{chunks} that a lane drops unrun go (a pump that
    ran already ignores it).
    """
    for chunk in chunks:
        if isinstance(chunk, _Pumped):
            chunk.pump.abandon()


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
        spliceTarget: ISpliceTarget | None = None,
    ) -> None:
        """
        @param writeChunks: blocking; writes the chunks after the previous ones.
        @param hashChunks: blocking; feeds the chunks to a digest, in order.
        @param spliceTarget: the file C{writeChunks} writes, when bytes may
            also be spliced into it (L{acceptSpliced}).
        """
        if not 0 <= lowWater < highWater:
            raise ValueError("need 0 <= lowWater < highWater")
        self._runner = runner
        self._producer = producer
        self._high = highWater
        self._low = lowWater
        self.spliceTarget = spliceTarget
        self._writeChunks = writeChunks
        self._hashChunks = hashChunks
        self._writes = _Lane(self, writeChunks if spliceTarget is None else self._writeMixed)
        self._lanes = [self._writes]
        self._hashes: _Lane | None = None
        if hashChunks is not None:
            self._hashes = _Lane(self, hashChunks if spliceTarget is None else self._hashMixed)
            self._lanes.append(self._hashes)
        self._drained: list[Deferred] = []
        #: The range written and not yet handed to the digest lane
        #: (L{HASH_BATCH}); the write lane's lock guards the hand-over
        #: (write lane's thread, reactor thread), taken before the digest
        #: lane's, never after.
        self._unhashed: _FileRange | None = None
        self._accepted = 0
        self._pumpedWritten = 0  # (by the write lane's thread)
        self._pumpedHashed = 0  # (by the digest lane's thread)
        self._resumeScheduled = False
        self.paused = False
        self.failure: Failure | None = None
        self.onFailure: Callable[[Failure], None] | None = None

    @property
    def runner(self) -> IDiskRunner:
        """
        The disk runner the lanes run on (and come back through).
        """
        return self._runner

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

    def acceptSpliced(self, count: int, pipeFd: int, drained: Callable[[int], None]) -> None:
        """
        Accept the next C{count} bytes, which wait in the pipe C{pipeFd}
        (only with a C{spliceTarget}); never blocks, may pause the producer.

        @param drained: called on the write lane's thread with a count of
            bytes that left the pipe.
        """
        if self.failure is not None or not count:
            return
        assert self.spliceTarget is not None
        self._accepted += count
        if not self.paused and self.held >= self._high:
            self.paused = True
            self._producer.pauseProducing()
        # Only the write lane: the digest lane gets the bytes' file range
        # once they are in the file.
        self._writes.add(_Spliced(count, pipeFd, drained))  # type: ignore[arg-type]

    def acceptPump(self, pump: IPump) -> None:
        """
        Run C{pump.run(sink, target)} on the write lane, after what the lane
        holds (only with a C{spliceTarget}). The pump writes and counts
        bytes itself (L{pumpWritten}); the reactor thread accepts them
        afterwards (L{acceptPumped}).
        """
        assert self.spliceTarget is not None
        if self.failure is not None:
            pump.abandon()
            return
        if self._hashes is not None:
            self._hashes.stick()
        self._writes.add(_Pumped(pump))  # type: ignore[arg-type]

    def pumpWritten(self, start: int, count: int) -> None:
        """
        On the write lane's thread, from a pump: C{count} bytes from
        C{start} are in the file; the digest lane gets their range.
        """
        self._writes.done += count
        if self._hashes is not None:
            self._pumpedWritten += count
            self._hashes.add(_FileRange(start, count, True))  # type: ignore[arg-type]

    def hashLag(self) -> int:
        """
        Bytes written that the digest lane has not hashed yet (any thread).
        """
        # (Counted range by range, not by the digest lane's coalesced jobs:
        # a lag that fell only when a whole job ended would make the pump
        # and the digest take turns instead of overlapping.)
        return self._pumpedWritten - self._pumpedHashed

    def acceptPumped(self, count: int) -> None:
        """
        On the reactor thread, once a pump ended: accept the C{count} bytes
        it wrote (they may still wait for the digest lane, and pause the
        producer like any other bytes).
        """
        self.unstick()
        if self.failure is not None or not count:
            return
        self._accepted += count
        if not self.paused and self.held >= self._high:
            self.paused = True
            self._producer.pauseProducing()
            # The lanes saw these bytes before this thread did: one may
            # have finished them already, before it could see the pause.
            if not self._resumeScheduled and self.held <= self._low:
                self._resume()

    def unstick(self) -> None:
        """
        The pump ended: the digest lane gives its thread back when idle.
        """
        lane = self._hashes
        if lane is not None and lane.sticky:
            with lane.lock:
                lane.sticky = False
                assert lane.more is not None
                lane.more.notify()

    def _writeMixed(self, chunks: Chunks) -> None:
        """
        The write lane's work with a splice target: runs of bytes are
        written, runs of spliced bytes moved from their pipe, pumps run
        (blocking).
        """
        target = self.spliceTarget
        assert target is not None
        for kind, run in groupby(chunks, key=_kind):
            if kind is _Pumped:
                self._handUnhashed()  # (the pump's ranges come after)
                for item in run:
                    item.pump.run(self, target)  # type: ignore[union-attr]
                continue
            if kind is not _Spliced:
                self._writeChunks(list(run))
                continue
            items = list(run)
            count = sum(map(len, items))
            # One splice for the run: the items share one pipe, in order.
            try:
                start = target.spliceIn(items[0].pipeFd, count)  # type: ignore[union-attr]
            finally:
                items[0].drained(count)  # type: ignore[union-attr]
            if self._hashes is not None:
                self._hashLater(start, count)

    def _hashLater(self, start: int, count: int) -> None:
        """
        On the write lane's thread: C{count} spliced bytes from C{start} are
        in the file; add them to the range the digest lane gets once
        L{HASH_BATCH} gathered (at once while the producer is paused, so
        that the bytes held can fall).
        """
        with self._writes.lock:
            pending = self._unhashed
            if pending is not None and pending.start + pending.count == start:
                pending.count += count
            else:
                if pending is not None:  # (not adjacent: never, the file grows in order)
                    self._hashes.add(pending)  # type: ignore[union-attr, arg-type]
                pending = self._unhashed = _FileRange(start, count)
            if pending.count >= HASH_BATCH or self.paused:
                self._unhashed = None
                self._hashes.add(pending)  # type: ignore[union-attr, arg-type]

    def _handUnhashed(self) -> None:
        """
        Any thread: give the digest lane the range it has not got yet.
        """
        with self._writes.lock:
            pending, self._unhashed = self._unhashed, None
            if pending is not None:
                self._hashes.add(pending)  # type: ignore[union-attr, arg-type]

    def _hashMixed(self, chunks: Chunks) -> None:
        """
        The digest lane's work with a splice target: bytes are hashed as
        they are, file ranges read back through the page cache (blocking).
        """
        target, update = self.spliceTarget, self._hashChunks
        assert target is not None and update is not None
        for ranged, run in groupby(chunks, key=lambda c: isinstance(c, _FileRange)):
            if not ranged:
                update(list(run))
                continue
            ranges = list(run)
            fileRanges = cast("list[_FileRange]", ranges)
            if any(r.pumped for r in fileRanges):
                for r in fileRanges:
                    target.hashRange(r.start, r.count, update)
                    if r.pumped:
                        self._pumpedHashed += r.count
                continue
            # Consecutive ranges are adjacent (the file is written in order).
            target.hashRange(ranges[0].start, sum(map(len, ranges)), update)  # type: ignore[union-attr]

    def drain(self) -> Deferred:
        """
        @return: a L{Deferred} that fires once everything accepted so far is
            written (and hashed), or fails with the first error.
        """
        if self.failure is not None:
            return fail(self.failure)
        if not self._lanesBusy():
            return succeed(None)
        d: Deferred = Deferred()
        self._drained.append(d)
        return d

    def _resume(self) -> None:
        self._resumeScheduled = False
        if self.paused and self.failure is None and self.held <= self._low:
            self.paused = False
            self._producer.resumeProducing()

    def _lanesBusy(self) -> bool:
        """
        Whether a lane is busy, each asked to tell when it goes idle.

        The write lane is asked first, then the range it left for the
        digest lane is handed over, then the digest lane is asked: a write
        lane found idle left its range before it went idle, and one found
        busy will tell. (Handed over before the write lane was asked, a
        range left in between was missed, and a drain fired with it
        unhashed: an outside test of d73904c, 131 drains of 10,000.)
        """
        busy = self._writes.waitIdle()
        self._handUnhashed()
        if self._hashes is not None:
            busy = self._hashes.waitIdle() or busy
        return busy

    def _laneIdle(self) -> None:
        # (A lane may have been handed work by another lane's thread since
        # it was last asked: ask every lane again.)
        if self.failure is None and self._drained and not self._lanesBusy():
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
