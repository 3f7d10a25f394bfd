"""
Tests for L{uploadsvc.client.producer}: file-range bodies and the running
whole-file digest.
"""

from __future__ import annotations

import hashlib
import io
import random

from twisted.internet.interfaces import IConsumer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from uploadsvc.client.producer import FileRangeProducer, RunningHash
from uploadsvc.client.testing import Simulation

DATA = random.Random(2).randbytes(10_000)


@implementer(IConsumer)
class Collector:
    """
    A consumer that keeps what it is given.
    """

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def registerProducer(self, producer, streaming) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


class RunningHashTests(SynchronousTestCase):
    """
    L{RunningHash}.
    """

    def test_inOrder(self) -> None:
        """
        Blocks fed in order give the digest of the whole.
        """
        h = RunningHash()
        for i in range(0, len(DATA), 700):
            h.feed(i, DATA[i : i + 700])
        self.assertEqual(h.position, len(DATA))
        self.assertEqual(h.digest(), hashlib.sha256(DATA).digest())

    def test_overlapNotHashedTwice(self) -> None:
        """
        A block read again (a resend after a drop) only adds what is new.
        """
        h = RunningHash()
        h.feed(0, DATA[:5000])
        h.feed(3000, DATA[3000:6000])
        h.feed(0, DATA[:100])
        h.feed(6000, DATA[6000:])
        self.assertEqual(h.digest(), hashlib.sha256(DATA).digest())

    def test_gapIgnoredUntilCaughtUp(self) -> None:
        """
        A block beyond the hashed prefix is ignored (the hash stays a prefix
        hash); L{RunningHash.catchUp} reads the gap once.
        """
        sim = Simulation()
        h = RunningHash()
        h.feed(0, DATA[:1000])
        h.feed(4000, DATA[4000:5000])
        self.assertEqual(h.position, 1000)
        sim.run(h.catchUp(io.BytesIO(DATA), 4000, sim.cooperator, readSize=512))
        self.assertEqual(h.position, 4000)
        h.feed(4000, DATA[4000:])
        self.assertEqual(h.digest(), hashlib.sha256(DATA).digest())

    def test_catchUpShortFile(self) -> None:
        """
        Catching up past the end of the file fails.
        """
        sim = Simulation()
        h = RunningHash()
        self.assertRaises(OSError, sim.run, h.catchUp(io.BytesIO(DATA[:10]), 20, sim.cooperator))


class FileRangeProducerTests(SynchronousTestCase):
    """
    L{FileRangeProducer}.
    """

    def test_range(self) -> None:
        """
        The producer writes exactly the range, block by block, and reports
        each block with its offset.
        """
        sim = Simulation()
        seen = []
        producer = FileRangeProducer(
            io.BytesIO(DATA), 1234, 5000, sim.cooperator, lambda o, d: seen.append((o, len(d))), readSize=2000
        )
        consumer = Collector()
        sim.run(producer.startProducing(consumer))
        self.assertEqual(consumer.data, DATA[1234:6234])
        self.assertEqual(seen, [(1234, 2000), (3234, 2000), (5234, 1000)])
        self.assertEqual((producer.length, producer.written), (5000, 5000))

    def test_pauseResume(self) -> None:
        """
        While paused nothing is read; resuming carries on.
        """
        sim = Simulation()
        producer = FileRangeProducer(io.BytesIO(DATA), 0, 6000, sim.cooperator, readSize=1000)
        consumer = Collector()
        d = producer.startProducing(consumer)
        sim.step(2)
        self.assertEqual(producer.written, 2000)
        producer.pauseProducing()
        producer.pauseProducing()
        sim.step(10)
        self.assertEqual(producer.written, 2000)
        producer.resumeProducing()
        sim.run(d)
        self.assertEqual(consumer.data, DATA[:6000])

    def test_stop(self) -> None:
        """
        After L{FileRangeProducer.stopProducing} nothing more is written and
        the Deferred never fires; stopping again is harmless.
        """
        sim = Simulation()
        producer = FileRangeProducer(io.BytesIO(DATA), 0, 6000, sim.cooperator, readSize=1000)
        consumer = Collector()
        d = producer.startProducing(consumer)
        sim.step()
        producer.stopProducing()
        producer.stopProducing()
        producer.resumeProducing()
        self.assertRaises(AssertionError, sim.run, d)
        self.assertEqual(consumer.data, DATA[:1000])

    def test_readError(self) -> None:
        """
        A file shorter than the range fails the Deferred.
        """
        sim = Simulation()
        producer = FileRangeProducer(io.BytesIO(DATA[:100]), 0, 6000, sim.cooperator)
        self.assertRaises(OSError, sim.run, producer.startProducing(Collector()))

