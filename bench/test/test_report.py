"""
Tests for L{bench.report}: the S4 line that sets the durable servers'
completions/s against the disk's own fsync rate measured in the same run.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bench.report import render

DISK = (
    "2,000 durable 64 KiB completions/s with 1 thread, 4,000/s with 8 "
    "(write, fsync, rename, fsync folder)"
)


def results(disk: str, perServer: dict[str, list[float]]) -> dict[str, Any]:
    """
    A results file with S4 runs of the given servers at the given uploads/s.
    """
    return {
        "meta": {
            "date": "2026-12-01", "command": "bench/run --scenarios S4", "quick": False,
            "repetitions": 3, "machine": {"disk (work folder)": disk},
            "servers": list(perServer), "durable": ["uploadsvc-fsync", "uploadsvc-fsync-w2"],
        },
        "runs": [
            {"scenario": "S4", "server": name, "summary": {
                "uploadsPerS": rate, "ok": 4000, "verifyFailed": 0, "uploads": 4000,
            }}
            for name, rates in perServer.items() for rate in rates
        ],
    }


class DiskRateTests(SynchronousTestCase):
    """
    The S4 section of the report tells each durable server's median
    completions/s as a ratio to the disk's rates and to C{--no-fsync}.
    """

    def test_ratioToDiskRate(self) -> None:
        """
        A durable server's median is divided by the disk's 1-thread and
        8-thread rates and by the no-fsync server's median.
        """
        text = render(results(DISK, {
            "uploadsvc-fsync": [900.0, 1000.0, 1100.0],
            "uploadsvc": [1900.0, 2000.0, 2100.0],
            "uploadsvc-fsync-w2": [3000.0, 3200.0, 3400.0],
        }))
        self.assertIn(
            "- uploadsvc-fsync: 1,000 durable completions/s = 0.50x the disk's 2,000/s "
            "with 1 thread, 0.25x its 4,000/s with 8; 0.50x uploadsvc --no-fsync (2,000/s)",
            text,
        )
        self.assertIn(
            "- uploadsvc-fsync-w2: 3,200 durable completions/s = 1.60x the disk's 2,000/s "
            "with 1 thread, 0.80x its 4,000/s with 8; 1.60x uploadsvc --no-fsync (2,000/s)",
            text,
        )

    def test_noDurableServer(self) -> None:
        """
        Without a durable server in the run, no such line is written.
        """
        text = render(results(DISK, {"uploadsvc": [2000.0]}))
        self.assertNotIn("against the disk's rate", text)

    def test_unreadableDiskLine(self) -> None:
        """
        A results file without the disk's rates (older, or the probe failed)
        renders without the line rather than failing.
        """
        text = render(results("?", {"uploadsvc-fsync": [1000.0]}))
        self.assertNotIn("against the disk's rate", text)
        self.assertIn("## S4", text)
