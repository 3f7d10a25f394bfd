"""
Tests for the chaos run's figures: L{bench.chaos.rssFigures} and
L{bench.chaos.blockedThreads}, and the section L{bench.report} renders from
them into C{bench/RESULTS.md}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bench import report
from bench.chaos import MiB, blockedThreads, rssFigures


def chaosFigures(**changes: Any) -> dict[str, Any]:
    """
    A chaos run's figures as L{bench.chaos} writes them.
    """
    figures: dict[str, Any] = {
        "command": "python -m bench.chaos --seconds 300 --seed 2",
        "date": "2026-12-01T20:00:00Z",
        "machine": {"uploadsvc commit": "abc1234", "CPUs (nproc)": "2", "CPU": "AMD EPYC",
                    "kernel": "6.1", "Python": "3.11.7", "Twisted": "26.10.0",
                    "GlusterFS": "glusterfs 10.3", "nginx": "nginx/1.22.1"},
        "clients": 50, "maxSize": 4194304, "seed": 2, "expireAfter": "10s",
        "chaosSeconds": 300.4, "wallSeconds": 311.2,
        "kills": 71, "slowExits": 1, "slowExitLimit": 15.0, "longestExitSeconds": 15.6,
        "blockedIn": {"fcntl in fuse_setlk": 1, "close in fuse_flush": 2}, "remounts": 1,
        "uploads": 7000, "identical": 7000, "wrong": 0, "unfinished": 0,
        "rounds": 9000, "failedRounds": 2000, "reasons": {"ConnectionError": 1500, "PUT 502": 500},
        "answers500": 0, "tracebacks": 0,
        "stagedWhenDone": 3, "stagedAfterExpiry": 0, "tempsLeft": 1,
        "rssSpared": {"samples": 600, "series": [[0, 60.0], [30, 80.4], [60, 95.5]],
                      "firstMiB": 60.0, "warmUpSeconds": 60.0,
                      "afterWarmUpMiB": 95.5, "lastMiB": 97.25, "maxMiB": 110.0,
                      "slopeMiBPerMinute": 0.125, "slopeFromSeconds": 150.2},
        "rssKilled": {"2": {"samples": 300, "firstMiB": 61.0, "medianMiB": 88.0, "maxMiB": 101.0}},
        "failures": [],
    }
    figures.update(changes)
    return figures


class RenderChaosTests(SynchronousTestCase):
    """
    L{report.renderChaos} and L{report.replaceChaos}.
    """

    def test_figures(self) -> None:
        """
        The section names the command, commit and machine, and carries the
        checks' figures, the slow exits with what they were blocked in, and
        server 1's RSS with its slope.
        """
        text = report.renderChaos(chaosFigures())
        self.assertTrue(text.startswith(report.CHAOS_HEADING))
        for expected in [
            "`python -m bench.chaos --seconds 300 --seed 2`", "commit abc1234", "glusterfs 10.3",
            "**passed**", "Uploads (50 clients", ": 7000; complete and byte-identical: 7000; "
            "wrong bytes: 0; not finished in time: 0",
            "Answers 500 in the servers' logs: 0; tracebacks: 0",
            "71 times; longest exit after the kill: 15.6 s; exits slower than 15 s: 1 "
            "(blocked in: fcntl in fuse_setlk ×1, close in fuse_flush ×2; freed by ending the "
            "mount's client and mounting again, 1 times)",
            "after expiry (--expire-after 10s): 0",
            "first 60.0, after 60 s 95.5, last 97.2, max 110.0; slope over the second half "
            "(from 150 s): +0.12 MiB/min (600 samples)",
            "server 2 over its lives (MiB, each life starts again): first 61.0, median 88.0",
            "  - every 30 s (s: MiB): 0: 60, 30: 80, 60: 96",
        ]:
            self.assertIn(expected, text)

    def test_failed(self) -> None:
        """
        A run whose checks failed says so, with every failure.
        """
        text = report.renderChaos(chaosFigures(
            failures=["2 answers 500 in the servers' logs", "1 staged files left after expiry"],
            slowExits=0, rssSpared=None, rssKilled={},
        ))
        self.assertIn("- Result: **FAILED**: 2 answers 500 in the servers' logs; 1 staged "
                      "files left after expiry", text)
        self.assertNotIn("blocked in", text)
        self.assertNotIn("RSS", text)

    def test_replace(self) -> None:
        """
        The chaos section of a report is replaced in place (what follows it
        is kept), or appended when the report has none.
        """
        section = report.CHAOS_HEADING + ": new\n\n- new\n"
        old = f"# R\n\n## S1\n\nx\n\n{report.CHAOS_HEADING}: old\n\n- old\n\n## After\n\ny\n"
        self.assertEqual(
            report.replaceChaos(old, section),
            f"# R\n\n## S1\n\nx\n\n{section}\n## After\n\ny\n",
        )
        self.assertEqual(report.replaceChaos("# R\n\nx\n", section), f"# R\n\nx\n\n{section}")

    def test_chaosOnly(self) -> None:
        """
        C{--chaos-only} renews the chaos section of an existing report from
        the figures file, leaving the rest as it was.
        """
        work = Path(os.path.abspath(self.mktemp()))
        work.mkdir()
        figures = work / "chaos.json"
        figures.write_text(json.dumps(chaosFigures()))
        results = work / "RESULTS.md"
        results.write_text("# uploadsvc benchmark results\n\n## S1\n\nfigures\n")
        report.main(["--chaos", str(figures), "--chaos-only", "-o", str(results)])
        text = results.read_text()
        self.assertTrue(text.startswith("# uploadsvc benchmark results\n\n## S1\n\nfigures\n\n"))
        self.assertIn(report.renderChaos(chaosFigures()), text)
        report.main(["--chaos", str(figures), "--chaos-only", "-o", str(results)])
        self.assertEqual(results.read_text(), text)

    def test_committedFigures(self) -> None:
        """
        The committed figures render, and bench/RESULTS.md holds exactly
        what they render to.
        """
        data = json.loads(report.CHAOS_RESULTS.read_text())
        section = report.renderChaos(data)
        results = (report.CHAOS_RESULTS.parent / "RESULTS.md").read_text()
        self.assertIn(section, results)


class RSSFiguresTests(SynchronousTestCase):
    """
    L{rssFigures} summarises the spared server's RSS samples.
    """

    def test_flat(self) -> None:
        """
        RSS that rises during warm-up and then stays flat has a zero slope
        over the second half.
        """
        samples = [(t / 2, int((60 + min(t / 2, 60) / 2) * MiB)) for t in range(600)]
        figures = rssFigures(samples, 60.0, 300.0)
        self.assertEqual((figures["firstMiB"], figures["afterWarmUpMiB"], figures["lastMiB"],
                          figures["maxMiB"], figures["samples"]), (60.0, 90.0, 90.0, 90.0, 600))
        self.assertAlmostEqual(figures["slopeMiBPerMinute"], 0.0)
        self.assertEqual(figures["series"][:3], [(0, 60.0), (30, 75.0), (60, 90.0)])
        self.assertEqual(len(figures["series"]), 10)

    def test_growing(self) -> None:
        """
        RSS growing by 1 MiB every 10 s has a slope of 6 MiB per minute.
        """
        samples = [(float(t), int((100 + t / 10) * MiB)) for t in range(0, 301, 5)]
        self.assertAlmostEqual(rssFigures(samples, 60.0, 300.0)["slopeMiBPerMinute"], 6.0,
                               places=3)


class BlockedThreadsTests(SynchronousTestCase):
    """
    L{blockedThreads} reads /proc.
    """

    def test_noneBlocked(self) -> None:
        """
        A process with no thread in uninterruptible sleep (this one) has
        nothing to report; a process that does not exist neither.
        """
        self.assertEqual(blockedThreads(os.getpid()), [])
        self.assertEqual(blockedThreads(2 ** 22 + 1), [])
