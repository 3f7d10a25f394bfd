"""
Tests for L{bench.pooltrip}.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from bench.pooltrip import compare, report


class PoolTripTests(TestCase):
    def test_bothPoolsMeasured(self) -> Deferred:
        """Each pool gets one figure per round, and the report gives their ratio."""
        d = compare(reactor, calls=200, callers=4, threads=2, rounds=2)

        def check(figures: dict[str, list[float]]) -> None:
            self.assertEqual(sorted(figures), ["DiskThreads", "ThreadPool"])
            for values in figures.values():
                self.assertEqual(len(values), 2)
                self.assertTrue(all(v > 0 for v in values), values)
            text = report(figures)
            self.assertIn("DiskThreads / ThreadPool: ", text)
            self.assertEqual(len(text.splitlines()), 3)

        return d.addCallback(check)
