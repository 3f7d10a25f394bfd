"""
Tests for L{uploadsvc.client.backoff}: the pure retry schedule.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.client.backoff import RetryPolicy, RetryState


class RetryPolicyTests(SynchronousTestCase):
    """
    L{RetryPolicy}.
    """

    def test_exponentialAndCapped(self) -> None:
        """
        Without jitter the delays double from the initial one up to the cap.
        """
        policy = RetryPolicy(initialDelay=0.5, factor=2.0, maxDelay=5.0, jitter=0.0)
        self.assertEqual(
            [policy.delay(n, random.Random(0)) for n in range(1, 8)],
            [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0],
        )

    def test_hugeFailureCount(self) -> None:
        """
        A very long series of failures still gives the cap, not an overflow.
        """
        self.assertEqual(RetryPolicy(maxDelay=30.0).baseDelay(10_000), 30.0)

    def test_jitterBounds(self) -> None:
        """
        Jitter takes away at most its fraction of the delay, never adds.
        """
        policy = RetryPolicy(initialDelay=4.0, jitter=0.5, maxDelay=4.0)
        rng = random.Random(3)
        delays = [policy.delay(1, rng) for _ in range(200)]
        self.assertTrue(all(2.0 <= d <= 4.0 for d in delays))
        self.assertGreater(len(set(delays)), 100)

    def test_seededReplay(self) -> None:
        """
        The same seed gives the same jittered schedule.
        """
        policy = RetryPolicy()
        first = [policy.delay(n, random.Random(9)) for n in range(1, 6)]
        second = [policy.delay(n, random.Random(9)) for n in range(1, 6)]
        self.assertEqual(first, second)

    def test_giveUp(self) -> None:
        """
        The policy gives up at the attempt limit or the time limit, whichever
        comes first, and never when both are unset.
        """
        policy = RetryPolicy(maxAttempts=3, giveUpAfter=60.0)
        self.assertFalse(policy.shouldGiveUp(2, 59.0))
        self.assertTrue(policy.shouldGiveUp(3, 0.0))
        self.assertTrue(policy.shouldGiveUp(1, 60.0))
        patient = RetryPolicy(maxAttempts=None, giveUpAfter=None)
        self.assertFalse(patient.shouldGiveUp(10**6, 10.0**9))

    def test_invalid(self) -> None:
        """
        Nonsensical policies are refused.
        """
        self.assertRaises(ValueError, RetryPolicy, initialDelay=-1)
        self.assertRaises(ValueError, RetryPolicy, factor=0.5)
        self.assertRaises(ValueError, RetryPolicy, jitter=1.5)
        self.assertRaises(ValueError, RetryPolicy, maxAttempts=0)
        self.assertRaises(ValueError, RetryPolicy, giveUpAfter=-1)


class RetryStateTests(SynchronousTestCase):
    """
    L{RetryState}.
    """

    def test_progressRestartsSchedule(self) -> None:
        """
        Failures grow the delay; progress starts it over.
        """
        state = RetryState(RetryPolicy(initialDelay=1.0, jitter=0.0), lastProgress=0.0)
        rng = random.Random(0)
        self.assertEqual([state.failed(t, rng) for t in (1, 2, 3)], [1.0, 2.0, 4.0])
        state.progressed(4.0)
        self.assertEqual(state.failed(5.0, rng), 1.0)

    def test_giveUpReturnsNone(self) -> None:
        """
        When the policy gives up, L{RetryState.failed} returns L{None}.
        """
        state = RetryState(RetryPolicy(maxAttempts=2, jitter=0.0), lastProgress=0.0)
        rng = random.Random(0)
        self.assertIsNotNone(state.failed(1.0, rng))
        self.assertIsNone(state.failed(2.0, rng))

    def test_timeWithoutProgress(self) -> None:
        """
        The give-up time counts from the last progress.
        """
        policy = RetryPolicy(maxAttempts=None, giveUpAfter=10.0, jitter=0.0)
        state = RetryState(policy, lastProgress=0.0)
        rng = random.Random(0)
        self.assertIsNotNone(state.failed(9.0, rng))
        state.progressed(9.5)
        self.assertIsNotNone(state.failed(19.0, rng))
        self.assertIsNone(state.failed(19.5, rng))
