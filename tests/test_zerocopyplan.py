"""
Tests for L{uploadsvc.web.streaming.zerocopyplan}: which bodies may be
spliced, and how much the next splice asks for.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.web.streaming.zerocopyplan import (
    MIN_SPLICED_BODY,
    MAX_PUMPS,
    PUMP_AFTER,
    PUMP_HASH_BATCH,
    PUMP_SLICE_FLOOR,
    PUMP_STEP,
    NO_LENGTH,
    NO_PIPE_ROOM,
    NOT_HTTP1,
    NOT_PLAIN_SOCKET,
    OFF,
    RECEIVER,
    SMALL,
    UNSUPPORTED,
    fallbackReason,
    hashBehind,
    nextSpliceSize,
    pipeBudget,
    pumpHashBatch,
    pumpKeepsOn,
    pumpLimit,
    pumpStep,
    receiverReason,
    shouldPump,
)

BIG = MIN_SPLICED_BODY


class FallbackReasonTests(SynchronousTestCase):
    """
    L{fallbackReason}.
    """

    def test_eligible(self) -> None:
        """A plain HTTP/1.1 Content-Length body on a plain socket, big enough, is spliced."""
        self.assertIsNone(fallbackReason("auto", True, BIG, True, True))

    def test_each(self) -> None:
        """Each missing condition names itself, the option first."""
        self.assertEqual(fallbackReason("off", True, BIG, True, True), OFF)
        self.assertEqual(fallbackReason("off", False, None, False, False), OFF)
        self.assertEqual(fallbackReason("auto", False, BIG, True, True), NOT_HTTP1)
        self.assertEqual(fallbackReason("auto", True, None, True, True), NO_LENGTH)
        self.assertEqual(fallbackReason("auto", True, BIG, False, True), NOT_PLAIN_SOCKET)
        self.assertEqual(fallbackReason("auto", True, BIG, True, False), UNSUPPORTED)
        self.assertEqual(fallbackReason("auto", True, BIG - 1, True, True), SMALL)
        self.assertEqual(fallbackReason("auto", True, 0, True, True), SMALL)
        self.assertEqual(fallbackReason("auto", True, BIG, True, True, False), NO_PIPE_ROOM)


class PipeBudgetTests(SynchronousTestCase):
    """
    L{pipeBudget}.
    """

    def test_quarterOfTheDescriptors(self) -> None:
        """Pipes (two descriptors each) take at most an eighth of the limit."""
        self.assertEqual(pipeBudget(65536), 4096)
        self.assertEqual(pipeBudget(1024), 64)
        self.assertEqual(pipeBudget(600), 37)
        self.assertEqual(pipeBudget(15), 0)

    @given(st.integers(min_value=0, max_value=1 << 30))
    def test_neverMoreThanAnEighth(self, limit: int) -> None:
        self.assertLessEqual(2 * pipeBudget(limit), limit // 8)


class ReceiverReasonTests(SynchronousTestCase):
    """
    L{receiverReason}.
    """

    def test_overlapPending(self) -> None:
        """An overlap still to drop keeps the bytes in Python."""
        self.assertEqual(receiverReason(1, None, BIG), RECEIVER)

    def test_longerThanKept(self) -> None:
        """A body longer than what may be kept must fail at its exact byte: not spliced."""
        self.assertEqual(receiverReason(0, BIG - 1, BIG), RECEIVER)
        self.assertIsNone(receiverReason(0, BIG, BIG))
        self.assertIsNone(receiverReason(0, None, BIG))


class NextSpliceSizeTests(SynchronousTestCase):
    """
    L{nextSpliceSize}.
    """

    def test_examples(self) -> None:
        """Bounded by the body's rest and the pipe's room."""
        self.assertEqual(nextSpliceSize(10, 0, 100), 10)
        self.assertEqual(nextSpliceSize(1000, 40, 100), 60)
        self.assertEqual(nextSpliceSize(1000, 100, 100), 0)
        self.assertEqual(nextSpliceSize(0, 0, 100), 0)

    @given(st.integers(0, 10**12), st.integers(0, 1 << 20), st.integers(1, 1 << 20))
    def test_neverPastTheBodyOrThePipe(self, remaining: int, inPipe: int, pipeSize: int) -> None:
        """Never more than the body has left, never more than the pipe has room for, never negative."""
        n = nextSpliceSize(remaining, inPipe, pipeSize)
        self.assertTrue(0 <= n <= remaining)
        self.assertLessEqual(inPipe + n, max(pipeSize, inPipe))


class PumpTests(SynchronousTestCase):
    """
    L{shouldPump}, L{hashBehind}, L{pumpStep}: when a pump moves a body,
    when it waits for the digest, how much a step asks for.
    """

    def test_fastSender(self) -> None:
        """A turn that spliced PUMP_AFTER bytes or more, with more to come and a pump free, hands the body to a pump."""
        self.assertTrue(shouldPump(PUMP_AFTER, 1, True))
        self.assertTrue(shouldPump(PUMP_AFTER * 16, 10**9, True))

    def test_notPumped(self) -> None:
        """A small turn (a slow client), a body already done, or no pump free: the reactor goes on reading it."""
        self.assertFalse(shouldPump(PUMP_AFTER - 1, 10**9, True))
        self.assertFalse(shouldPump(PUMP_AFTER, 0, True))
        self.assertFalse(shouldPump(PUMP_AFTER, 10**9, False))

    def test_limitLeavesThreads(self) -> None:
        """Each pump and its digest lane hold a disk thread, and two are always left for the rest: no pump with 3 threads or fewer."""
        self.assertEqual([pumpLimit(n) for n in (1, 2, 3, 4, 5, 6, 8, 64)], [0, 0, 0, 1, 1, 2, 2, MAX_PUMPS])

    @given(st.integers(1, 1000))
    def test_limitNeverTakesEveryThread(self, threads: int) -> None:
        """The pumps and their lanes never hold more than all but two threads."""
        self.assertLessEqual(2 * pumpLimit(threads), max(0, threads - 2))

    def test_sliceFloor(self) -> None:
        """A pump keeps its thread only after a slice that moved at least the floor (a trickling sender, or one stuck waiting for its digest, gives it back)."""
        self.assertTrue(pumpKeepsOn(PUMP_SLICE_FLOOR))
        self.assertFalse(pumpKeepsOn(PUMP_SLICE_FLOOR - 1))
        self.assertFalse(pumpKeepsOn(0))

    def test_hashBehind(self) -> None:
        """A pump waits once the written bytes not yet hashed reach the high-water mark."""
        self.assertFalse(hashBehind(100, 1, 100))
        self.assertTrue(hashBehind(101, 1, 100))
        self.assertFalse(hashBehind(0, 0, 1))

    @given(st.integers(0, 1 << 40))
    def test_stepWithinBodyAndPipe(self, remaining: int) -> None:
        """A step never asks past the body nor more than the pipe holds, and asks for something while the body lasts."""
        step = pumpStep(remaining)
        self.assertLessEqual(step, min(remaining, PUMP_STEP))
        self.assertEqual(step > 0, remaining > 0)

    @given(st.integers(1, 1 << 34))
    def test_hashBatchOverlaps(self, highWater: int) -> None:
        """A pump's hash batch leaves room under the high-water mark for the next while one is hashed (when the mark holds two pipes' worth), and is never smaller than a step."""
        batch = pumpHashBatch(highWater)
        self.assertGreaterEqual(batch, PUMP_STEP)
        self.assertLessEqual(batch, PUMP_HASH_BATCH)
        if highWater >= 2 * PUMP_STEP:
            self.assertLess(batch, highWater)
            self.assertFalse(hashBehind(batch, 0, highWater))
