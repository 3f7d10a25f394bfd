"""
The benchmark's slow disk: one token bucket for the whole process.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.storage.throttle import WriteThrottle


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class WriteThrottleTests(SynchronousTestCase):
    def test_rate(self) -> None:
        """Writes wait so that the bytes per second stay at the rate."""
        t = FakeTime()
        throttle = WriteThrottle(1000, t.clock, t.sleep)
        for _ in range(5):
            throttle.wait(500)
        self.assertAlmostEqual(t.now - 100.0, 2.5)

    def test_idleTimeNotBanked(self) -> None:
        """A disk that sat idle does not let a later burst through faster than the rate."""
        t = FakeTime()
        throttle = WriteThrottle(1000, t.clock, t.sleep)
        t.now += 60
        throttle.wait(1000)
        self.assertEqual(t.slept, [1.0])

    def test_badRate(self) -> None:
        """A rate must be positive."""
        self.assertRaises(ValueError, WriteThrottle, 0)
