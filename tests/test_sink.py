"""
Tests for L{uploadsvc.sink.FileSink}: ordered, coalesced writes off the
reactor thread and back-pressure at the marks. Writes are completed by hand
with a L{ManualRunner}.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from uploadsvc import sink as sinkModule
from uploadsvc.sink import FileSink
from uploadsvc.testing.runners import ImmediateRunner, ManualRunner


@implementer(IPushProducer)
class CountingProducer:
    """
    Records every pause, resume and stop, in order.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class DiskError(Exception):
    pass


class RecordingFile:
    """
    Records each vectored write; fails when told to.
    """

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []
        self.failNext = False

    def writeChunks(self, chunks: Sequence[bytes | memoryview]) -> None:
        if self.failNext:
            raise DiskError("disk full")
        self.calls.append([bytes(c) for c in chunks])

    @property
    def data(self) -> bytes:
        return b"".join(b"".join(call) for call in self.calls)


class FileSinkTests(SynchronousTestCase):
    """
    Tests for L{FileSink}.
    """

    def setUp(self) -> None:
        self.runner = ManualRunner()
        self.file = RecordingFile()
        self.producer = CountingProducer()

    def makeSink(self, highWater: int = 10, lowWater: int = 4) -> FileSink:
        return FileSink(
            self.runner, self.file.writeChunks, self.producer, highWater, lowWater
        )

    def test_coalescing(self) -> None:
        """
        Chunks that arrive while a write is in flight go in one next write,
        in order.
        """
        sink = self.makeSink(highWater=1000, lowWater=10)
        sink.write(b"a")
        self.assertEqual(len(self.runner.pending), 1)
        sink.write(b"b")
        sink.write(b"c")
        self.assertEqual(len(self.runner.pending), 1)
        self.runner.complete()
        self.assertEqual(len(self.runner.pending), 1)
        self.runner.complete()
        self.assertEqual(self.file.calls, [[b"a"], [b"b", b"c"]])
        self.assertEqual(sink.written, 3)
        self.assertEqual(sink.held, 0)

    def test_orderPreserved(self) -> None:
        """
        Whatever the completion timing, bytes reach the file in arrival order.
        """
        sink = self.makeSink(highWater=1000, lowWater=10)
        expected = b""
        for i in range(20):
            chunk = b"%d," % i
            expected += chunk
            sink.write(chunk)
            if i % 3 == 0:
                self.runner.complete()
        self.runner.completeAll()
        self.assertEqual(self.file.data, expected)
        self.assertEqual(sink.written, len(expected))

    def test_emptyChunkIgnored(self) -> None:
        """
        An empty chunk starts no write.
        """
        sink = self.makeSink()
        sink.write(b"")
        self.assertEqual(self.runner.pending, [])
        self.successResultOf(sink.drain())

    def test_drainIdle(self) -> None:
        """
        C{drain} with nothing in flight fires at once.
        """
        self.assertIsNone(self.successResultOf(self.makeSink().drain()))

    def test_drainAfterLastWrite(self) -> None:
        """
        C{drain} fires only once the last accepted byte is written.
        """
        sink = self.makeSink(highWater=1000, lowWater=10)
        sink.write(b"one")
        sink.write(b"two")
        d = sink.drain()
        self.runner.complete()
        self.assertNoResult(d)
        self.runner.complete()
        self.successResultOf(d)
        self.assertEqual(self.file.data, b"onetwo")

    def test_writeFailure(self) -> None:
        """
        A failed write makes C{drain} fail with its error, and later chunks
        are dropped.
        """
        sink = self.makeSink(highWater=1000, lowWater=10)
        sink.write(b"good")
        self.runner.complete()
        self.file.failNext = True
        sink.write(b"bad")
        sink.write(b"queued")
        d = sink.drain()
        self.runner.complete()
        self.failureResultOf(d, DiskError)
        self.assertEqual(self.runner.pending, [])
        sink.write(b"later")
        self.assertEqual(self.runner.pending, [])
        self.assertEqual(self.file.data, b"good")
        self.assertEqual(sink.written, 4)

    def test_drainAfterFailure(self) -> None:
        """
        C{drain} called after a write failed fails with that write's error
        (the web layer drains only once the body ended).
        """
        sink = self.makeSink(highWater=1000, lowWater=10)
        self.file.failNext = True
        sink.write(b"bad")
        self.runner.complete()
        self.failureResultOf(sink.drain(), DiskError)
        self.failureResultOf(sink.drain(), DiskError)

    def test_pauseAtHighWater(self) -> None:
        """
        The producer is paused once when the held bytes reach the high mark,
        however many chunks follow.
        """
        sink = self.makeSink(highWater=10, lowWater=4)
        sink.write(b"x" * 9)
        self.assertEqual(self.producer.calls, [])
        sink.write(b"x")
        self.assertEqual(self.producer.calls, ["pause"])
        sink.write(b"x" * 5)
        sink.write(b"x" * 5)
        self.assertEqual(self.producer.calls, ["pause"])
        self.assertTrue(sink.paused)

    def test_resumeAtLowWater(self) -> None:
        """
        The producer is resumed once the held bytes fall to the low mark, not
        before.
        """
        sink = self.makeSink(highWater=10, lowWater=4)
        sink.write(b"a" * 6)  # in flight
        sink.write(b"b" * 5)  # queued: 11 held, paused
        sink.write(b"c" * 4)  # queued: 15 held
        self.assertEqual(self.producer.calls, ["pause"])
        self.runner.complete()  # 6 written; 9 held (b+c in flight)
        self.assertEqual(self.producer.calls, ["pause"])
        self.runner.complete()  # all written: 0 held
        self.assertEqual(self.producer.calls, ["pause", "resume"])
        self.assertFalse(sink.paused)
        self.assertEqual(self.file.calls, [[b"a" * 6], [b"b" * 5, b"c" * 4]])

    def test_resumeExactlyAtLowMark(self) -> None:
        """
        Held bytes equal to the low mark resume the producer.
        """
        sink = self.makeSink(highWater=10, lowWater=4)
        sink.write(b"a" * 6)
        sink.write(b"b" * 4)  # 10 held: paused
        self.assertEqual(self.producer.calls, ["pause"])
        self.runner.complete()  # 4 held, in flight
        self.assertEqual(self.producer.calls, ["pause", "resume"])

    def test_pauseAgainAfterResume(self) -> None:
        """
        After a resume, reaching the high mark again pauses again: pauses and
        resumes alternate.
        """
        sink = self.makeSink(highWater=10, lowWater=4)
        for _ in range(3):
            sink.write(b"x" * 12)
            sink.write(b"y")
            self.runner.completeAll()
        self.assertEqual(self.producer.calls, ["pause", "resume"] * 3)
        self.assertEqual(sink.written, 39)

    def test_failureWhilePausedReleasesProducer(self) -> None:
        """
        A write that fails while the producer is paused does not leave it
        paused: the rest of the body is let through (and dropped) or the
        producer is stopped, so the request can end.
        """
        sink = self.makeSink(highWater=10, lowWater=4)
        self.file.failNext = True
        sink.write(b"x" * 12)
        self.assertEqual(self.producer.calls, ["pause"])
        self.runner.complete()
        self.assertIsNotNone(sink.failure)
        self.assertIn(self.producer.calls[-1], ("resume", "stop"))

    def test_immediateRunner(self) -> None:
        """
        With a runner that writes at once, each chunk is its own write, and a
        chunk over the mark pauses the producer only until it is written.
        """
        sink = FileSink(ImmediateRunner(), self.file.writeChunks, self.producer, 10, 4)
        sink.write(b"x" * 20)
        sink.write(b"y")
        self.assertEqual(self.file.calls, [[b"x" * 20], [b"y"]])
        self.assertEqual(self.producer.calls, ["pause", "resume"])
        self.successResultOf(sink.drain())

    def test_badMarks(self) -> None:
        """
        Marks must satisfy C{0 <= lowWater < highWater}.
        """
        for high, low in [(10, 10), (10, 11), (10, -1), (0, 0)]:
            self.assertRaises(
                ValueError,
                FileSink, self.runner, self.file.writeChunks, self.producer, high, low,
            )
        FileSink(self.runner, self.file.writeChunks, self.producer, 1, 0)


class DigestLaneTests(SynchronousTestCase):
    """
    The digest lane runs beside the write lane and holds chunks until both
    are done with them.
    """

    def setUp(self) -> None:
        self.runner = ManualRunner()
        self.writes: list[bytes] = []
        self.hashed: list[bytes] = []
        self.producer = CountingProducer()
        self.sink = FileSink(
            self.runner,
            lambda chunks: self.writes.extend(bytes(c) for c in chunks),
            self.producer,
            8,
            4,
            lambda chunks: self.hashed.extend(bytes(c) for c in chunks),
        )

    def test_bothLanesInFlight(self) -> None:
        """A chunk starts a write and a hash call at once, each in order."""
        self.sink.write(b"abcd")
        self.assertEqual(len(self.runner.pending), 2)
        self.runner.completeAll()
        self.assertEqual((self.writes, self.hashed), ([b"abcd"], [b"abcd"]))

    def test_heldUntilBothDone(self) -> None:
        """Bytes stay held (and the producer paused) until the slower lane finishes."""
        self.sink.write(b"12345678")
        self.assertEqual(self.producer.calls, ["pause"])
        self.runner.complete()  # the write lane only
        self.assertEqual(self.sink.held, 8)
        self.assertEqual(self.producer.calls, ["pause"])
        self.runner.complete()  # the digest lane
        self.assertEqual(self.sink.held, 0)
        self.assertEqual(self.producer.calls, ["pause", "resume"])

    def test_drainWaitsForDigest(self) -> None:
        """drain() fires only after the digest lane has caught up."""
        self.sink.write(b"ab")
        d = self.sink.drain()
        self.runner.complete()
        self.assertNoResult(d)
        self.runner.complete()
        self.successResultOf(d)
        self.assertEqual(self.sink.written, 2)


class ThreadedSinkTests(TestCase):
    """
    The lanes on a real thread pool: no lost wake-up, no stuck pause.
    """

    def test_manyChunksThroughRealThreads(self) -> None:
        """Thousands of chunks through real threads arrive whole and in order, and every pause ends."""
        from twisted.internet import reactor

        from uploadsvc.runner import DiskThreads, ThreadRunner

        pool = DiskThreads(4, "test-sink", reactor)
        pool.start()
        self.addCleanup(pool.stop)
        out: list[bytes] = []
        hashed: list[bytes] = []
        rng = random.Random(4)
        chunks = [bytes([i % 251]) * rng.randint(1, 5000) for i in range(3000)]
        done: Deferred = Deferred()

        @implementer(IPushProducer)
        class Feeder:
            paused = False
            pauses = 0
            index = 0

            def pauseProducing(self) -> None:
                self.paused = True
                self.pauses += 1

            def resumeProducing(self) -> None:
                self.paused = False
                reactor.callLater(0, self.feed)

            def stopProducing(self) -> None:
                pass

            def feed(self) -> None:
                while not self.paused and self.index < len(chunks):
                    sink.write(chunks[self.index])
                    self.index += 1
                if self.index == len(chunks) and not done.called:
                    sink.drain().chainDeferred(done)

        feeder = Feeder()
        sink = FileSink(
            ThreadRunner(reactor, pool),
            lambda cs: out.extend(bytes(c) for c in cs),
            feeder,
            64 * 1024,
            16 * 1024,
            lambda cs: hashed.extend(bytes(c) for c in cs),
        )
        reactor.callLater(0, feeder.feed)

        def check(_: object) -> None:
            self.assertEqual(b"".join(out), b"".join(chunks))
            self.assertEqual(b"".join(hashed), b"".join(chunks))
            self.assertGreater(feeder.pauses, 0)
            self.assertFalse(sink.paused)
            self.assertEqual(sink.held, 0)

        return done.addCallback(check)

    timeout = 60


class FakeSpliceTarget:
    """
    A splice target over a list of pieces: spliced bytes come from a fake
    pipe (a list of byte strings) and are recorded like written chunks.
    """

    def __init__(self, file: RecordingFile, pipe: list[bytes]) -> None:
        self.file = file
        self.pipe = pipe
        self.offset = 0

    def spliceIn(self, pipeFd: int, count: int) -> int:
        data = b"".join(self.pipe)
        self.pipe[:] = [data[count:]] if data[count:] else []
        self.file.calls.append([data[:count]])
        start, self.offset = self.offset, self.offset + count
        return start

    def spliceable(self) -> bool:
        return True

    def hashRange(self, start: int, count: int, update: Any) -> None:
        update([self.file.data[start:start + count]])


class SplicedSinkTests(SynchronousTestCase):
    """
    L{FileSink.acceptSpliced}: bytes that wait in a pipe, written and hashed
    in order with the bytes before them.
    """

    def setUp(self) -> None:
        self.runner = ManualRunner()
        self.file = RecordingFile()
        self.pipe: list[bytes] = []
        self.target = FakeSpliceTarget(self.file, self.pipe)
        self.hashed: list[bytes] = []
        self.drained: list[int] = []
        self.producer = CountingProducer()

    def makeSink(self, highWater: int = 100, lowWater: int = 10) -> FileSink:
        def writeChunks(chunks: Sequence[bytes | memoryview]) -> None:
            self.file.writeChunks(chunks)
            self.target.offset += sum(map(len, chunks))

        return FileSink(
            self.runner, writeChunks, self.producer, highWater, lowWater,
            lambda chunks: self.hashed.extend(bytes(c) for c in chunks),
            spliceTarget=self.target,  # type: ignore[arg-type]
        )

    def splice(self, sink: FileSink, data: bytes) -> None:
        self.pipe.append(data)
        sink.acceptSpliced(len(data), 7, self.drained.append)

    def test_inOrderAfterBytes(self) -> None:
        """Bytes accepted before spliced ones are written and hashed first, and the pipe is told what left it."""
        sink = self.makeSink()
        sink.write(b"head-")
        self.splice(sink, b"spliced-")
        self.splice(sink, b"more")
        drained = sink.drain()
        self.runner.completeAll()
        self.successResultOf(drained)
        self.assertEqual(self.file.data, b"head-spliced-more")
        self.assertEqual(b"".join(self.hashed), b"head-spliced-more")
        self.assertEqual(sum(self.drained), len(b"spliced-more"))
        self.assertEqual(sink.held, 0)

    def test_drainWaitsForTheHash(self) -> None:
        """drain() fires only once the range the write lane handed to the digest lane is hashed."""
        sink = self.makeSink()
        self.splice(sink, b"abcdef")
        d = sink.drain()
        self.runner.complete()  # the write: the range goes to the digest lane
        self.assertNoResult(d)
        self.assertEqual(self.hashed, [])
        self.runner.completeAll()
        self.successResultOf(d)
        self.assertEqual(b"".join(self.hashed), b"abcdef")

    def test_hashWaitsForABatch(self) -> None:
        """Spliced runs written one job at a time are hashed once a drain asks (or HASH_BATCH gathered), as one range read back in one job, in order."""
        sink = self.makeSink()
        for piece in (b"one-", b"two-", b"three"):
            self.splice(sink, piece)
            self.runner.completeAll()
        self.assertEqual(self.file.data, b"one-two-three")
        self.assertEqual(self.hashed, [])
        self.assertEqual(self.runner.pending, [])  # no hash job for each
        drained = sink.drain()
        self.assertEqual(len(self.runner.pending), 1)
        self.runner.completeAll()
        self.successResultOf(drained)
        self.assertEqual(self.hashed, [b"one-two-three"])
        self.assertEqual(sink.held, 0)

    def test_batchHandedAtTheMark(self) -> None:
        """Once HASH_BATCH spliced bytes are written and not hashed, the digest lane gets them without a drain."""
        self.patch(sinkModule, "HASH_BATCH", 8)
        sink = self.makeSink()
        self.splice(sink, b"1234")
        self.runner.completeAll()
        self.assertEqual(self.hashed, [])
        self.splice(sink, b"5678")
        self.runner.completeAll()
        self.assertEqual(self.hashed, [b"12345678"])

    def test_drainWhileWriting(self) -> None:
        """A drain asked while the write lane still writes waits for the range that write leaves, and its hash."""
        sink = self.makeSink()
        self.splice(sink, b"abc")
        drained = sink.drain()
        self.runner.complete()  # the write: its range is left for the digest lane
        self.assertNoResult(drained)
        self.runner.completeAll()
        self.successResultOf(drained)
        self.assertEqual(self.hashed, [b"abc"])

    def test_drainRacesTheWriteLane(self) -> None:
        """
        A write job that ends on its thread while a drain looks at the lanes
        (after the hand-over of the range it left, before the look at the
        write lane) still has that range hashed before the drain fires (an
        outside test of d73904c: 131 of 10,000 drains fired first).
        """
        sink = self.makeSink()
        self.splice(sink, b"abc")
        look = sinkModule._Lane.waitIdle

        def jobEndsFirst(lane: Any) -> bool:
            if lane is sink._writes and self.runner.pending:
                self.runner.complete()  # the write lane's job ends, on its thread, now
            return look(lane)

        self.patch(sinkModule._Lane, "waitIdle", jobEndsFirst)
        drained = sink.drain()
        self.runner.completeAll()
        self.successResultOf(drained)
        self.assertEqual(self.hashed, [b"abc"])

    def test_heldUntilHashed(self) -> None:
        """Spliced bytes count against the high-water mark until both lanes are done with them."""
        sink = self.makeSink(highWater=8, lowWater=2)
        self.splice(sink, b"12345678")
        self.splice(sink, b"9")
        self.assertEqual(self.producer.calls, ["pause"])
        self.runner.complete()  # written, not hashed yet
        self.assertEqual(self.producer.calls, ["pause"])
        self.runner.completeAll()
        self.assertEqual(self.producer.calls, ["pause", "resume"])


class FakePump:
    """
    A pump that writes C{data} through the target in C{steps} pieces, as
    L{uploadsvc.web.streaming.splice.Pump} does, and records its end.
    """

    def __init__(self, test: PumpedSinkTests, data: bytes, steps: int = 2) -> None:
        self.test = test
        self.data = data
        self.steps = steps
        self.ran = self.abandoned = 0

    def run(self, sink: FileSink, target: Any) -> None:
        self.ran += 1
        size = -(-len(self.data) // self.steps)
        for i in range(0, len(self.data), size):
            piece = self.data[i:i + size]
            self.test.pipe.append(piece)
            start = target.spliceIn(7, len(piece))
            sink.pumpWritten(start, len(piece))

    def abandon(self) -> None:
        self.abandoned += 1


class PumpedSinkTests(SplicedSinkTests):
    """
    L{FileSink.acceptPump}: a pump runs on the write lane after what it
    holds; its bytes are hashed in order, and accepted afterwards
    (L{FileSink.acceptPumped}) like any others.
    """

    def test_pumpAfterBytesAndSplices(self) -> None:
        """A pump runs after the bytes and spliced batches accepted before it; everything is written and hashed in order, and what it wrote counts as written."""
        sink = self.makeSink()
        sink.write(b"head-")
        self.splice(sink, b"spliced-")
        pump = FakePump(self, b"pumped-bytes")
        sink.acceptPump(pump)  # type: ignore[arg-type]
        self.runner.completeAll()
        sink.acceptPumped(len(pump.data))
        self.assertEqual(pump.ran, 1)
        self.assertEqual(self.file.data, b"head-spliced-pumped-bytes")
        self.assertEqual(b"".join(self.hashed), b"head-spliced-pumped-bytes")
        self.assertEqual(sink.written, len(b"head-spliced-pumped-bytes"))
        self.assertEqual(sink.held, 0)
        self.assertEqual(sink.hashLag(), 0)

    def test_hashLag(self) -> None:
        """What a pump wrote and the digest lane has not hashed yet is the lag a pump waits on."""
        sink = self.makeSink()
        sink.acceptPump(FakePump(self, b"0123456789", steps=1))  # type: ignore[arg-type]
        self.runner.complete()  # the pump; its range waits for the digest lane
        self.assertEqual(sink.hashLag(), 10)
        self.runner.completeAll()
        self.assertEqual(sink.hashLag(), 0)

    def test_acceptedBytesPauseAndResume(self) -> None:
        """Bytes a pump wrote that are not hashed when the reactor accepts them pause the producer at the high-water mark; the digest lane resumes it."""
        sink = self.makeSink(highWater=8, lowWater=2)
        sink.acceptPump(FakePump(self, b"0123456789", steps=1))  # type: ignore[arg-type]
        self.runner.complete()
        sink.acceptPumped(10)
        self.assertEqual(self.producer.calls, ["pause"])
        self.runner.completeAll()
        self.assertEqual(self.producer.calls, ["pause", "resume"])

    def test_acceptedAfterHashedNoPause(self) -> None:
        """Bytes a pump wrote that both lanes finished before the reactor accepts them do not pause the producer."""
        sink = self.makeSink(highWater=8, lowWater=2)
        sink.acceptPump(FakePump(self, b"0123456789", steps=1))  # type: ignore[arg-type]
        self.runner.completeAll()
        sink.acceptPumped(10)
        self.assertFalse(sink.paused)
        self.assertEqual(self.producer.calls, [])

    def test_abandonedAfterFailure(self) -> None:
        """A pump the write lane drops because an earlier write failed is abandoned (it lets go of its socket), never run."""
        sink = self.makeSink()
        self.file.failNext = True
        sink.write(b"doomed")
        pump = FakePump(self, b"never")
        sink.acceptPump(pump)  # type: ignore[arg-type]
        self.runner.completeAll()
        self.assertIsNotNone(sink.failure)
        self.assertEqual((pump.ran, pump.abandoned), (0, 1))
        late = FakePump(self, b"late")
        sink.acceptPump(late)  # type: ignore[arg-type]
        self.assertEqual((late.ran, late.abandoned), (0, 1))
        self.failureResultOf(sink.drain(), DiskError)

    def test_pumpedDigestLaneKeepsItsThread(self) -> None:
        """Once a pump ran, the digest lane runs what arrived meanwhile on the same thread rather than queueing it behind other jobs."""
        sink = self.makeSink()
        sink.acceptPump(FakePump(self, b"first-", steps=1))  # type: ignore[arg-type]
        self.runner.complete()  # the pump: its range starts a digest job
        sink.acceptPump(FakePump(self, b"second", steps=1))  # type: ignore[arg-type]
        # The second pump runs while the digest job waits for a thread:
        # its range waits in the digest lane's queue.
        write, args, _ = self.runner.pending.pop(1)
        write(*args)
        self.assertEqual(len(self.runner.pending), 1)
        self.runner.complete()  # the digest job, which runs the queued range too
        self.assertEqual(b"".join(self.hashed), b"first-second")
        self.assertEqual(self.runner.pending, [])
        self.assertEqual(sink.hashLag(), 0)

    def test_pumpEndGivesTheThreadBack(self) -> None:
        """The digest lane is sticky only while a pump runs: once the reactor accepts what the pump wrote, it goes idle as usual."""
        sink = self.makeSink()
        sink.acceptPump(FakePump(self, b"bytes", steps=1))  # type: ignore[arg-type]
        self.assertTrue(sink._hashes.sticky)  # type: ignore[union-attr]
        self.runner.complete()
        sink.acceptPumped(5)
        self.assertFalse(sink._hashes.sticky)  # type: ignore[union-attr]
        self.runner.completeAll()
        self.assertEqual(b"".join(self.hashed), b"bytes")
        self.assertEqual(sink.held, 0)

    def test_hashLagFallsRangeByRange(self) -> None:
        """A digest job that takes several of a pump's ranges at once lowers the lag as each is hashed, not only when the job ends (else the pump would wait for the whole job and the two would take turns)."""
        lags: list[int] = []
        sink = self.makeSink()
        sink._hashChunks = lambda chunks: lags.append(sink.hashLag())
        sink.acceptPump(FakePump(self, b"aaaabbbbcccc", steps=3))  # type: ignore[arg-type]
        self.runner.complete()  # the pump: the first range starts a job, two wait
        self.runner.complete()  # the job with the first range
        self.runner.completeAll()  # the two others, in one job
        self.assertEqual(lags, [12, 8, 4])
        self.assertEqual(sink.hashLag(), 0)
