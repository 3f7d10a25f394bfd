"""
Tests for L{uploadsvc.ops.collector}: how the server's garbage collector is
settled once it has started.
"""

from __future__ import annotations

import gc

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.ops.collector import YOUNG_THRESHOLD, settle


class FakeCollector:
    def __init__(self) -> None:
        self.calls: list[object] = []
        self.threshold = (700, 10, 10)

    def collect(self) -> None:
        self.calls.append("collect")

    def freeze(self) -> None:
        self.calls.append("freeze")

    def get_threshold(self) -> tuple[int, int, int]:
        return self.threshold

    def set_threshold(self, *values: int) -> None:
        self.calls.append(values)
        self.threshold = values  # type: ignore[assignment]


class SettleTests(SynchronousTestCase):
    def test_order(self) -> None:
        """
        Garbage is collected before the survivors are frozen (frozen
        garbage would never be freed); only the young threshold changes.
        """
        collector = FakeCollector()
        collector.threshold = (700, 11, 12)
        settle(collector)
        self.assertEqual(collector.calls, ["collect", "freeze", (YOUNG_THRESHOLD, 11, 12)])

    def test_realCollector(self) -> None:
        """With Python's own collector: objects are frozen, the threshold is raised."""
        threshold = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *threshold)
        self.addCleanup(gc.unfreeze)
        settle()
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertEqual(gc.get_threshold(), (YOUNG_THRESHOLD, *threshold[1:]))
