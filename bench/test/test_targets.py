"""
Tests for the closing section of L{bench.report}: issue 13's targets set
against the figures of the run being rendered (met, or by how much not).
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bench.report import CHAOS_HEADING, render, replaceChaos

HEADING = "## Issue 13's targets against this run"
DISK = (
    "2,000 durable 64 KiB completions/s with 1 thread, 4,000/s with 8 "
    "(write, fsync, rename, fsync folder)"
)
FSYNC_TARGET = (
    "S4 (`uploadsvc-fsync`): completions/s ≥ 0.8x the disk's fsync rate with 8 threads"
)
KiB = 1024
MiB = 1024 * KiB


def results(
    runs: dict[tuple[str, str], list[dict[str, float]]],
    disk: str = DISK,
    quick: bool = False,
) -> dict[str, Any]:
    """
    A results file: for each (scenario, server), one summary per
    repetition (numbered from 1) holding the given figures.
    """
    servers: list[str] = []
    for _, server in runs:
        if server not in servers:
            servers.append(server)
    return {
        "meta": {
            "date": "2026-12-01", "command": "bench/run", "quick": quick,
            "repetitions": 3, "machine": {"disk (work folder)": disk},
            "servers": servers, "durable": ["uploadsvc-fsync"],
        },
        "runs": [
            {"scenario": scenario, "server": server, "repetition": n + 1,
             "summary": dict(figures, ok=10, verifyFailed=0, uploads=10)}
            for (scenario, server), repetitions in runs.items()
            for n, figures in enumerate(repetitions)
        ],
    }


def each(key: str, *values: float) -> list[dict[str, float]]:
    """
    One summary per value, holding C{key}.
    """
    return [{key: value} for value in values]


def section(text: str) -> str:
    """
    The targets section of a rendered report.
    """
    start = text.index(HEADING)
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def row(text: str, target: str) -> str:
    """
    The table row of the targets section whose first cell is C{target}.
    """
    found = [
        line for line in section(text).splitlines() if line.startswith(f"| {target} |")
    ]
    if len(found) != 1:
        raise AssertionError(f"{len(found)} rows for {target!r} in:\n{section(text)}")
    return found[0]


class TargetsTests(SynchronousTestCase):
    """
    Each of issue 13's targets is one row: the measured median ratio to
    aiohttp (or absolute figure) with the range of the per-repetition
    ratios, and whether it is met or by how much it is not.
    """

    def test_heading(self) -> None:
        """
        The report ends with the targets section, under its own heading.
        """
        text = render(results({("S1", "uploadsvc"): each("mibps", 1.0)}))
        self.assertIn("\n" + HEADING + "\n", text)
        self.assertEqual(text.rstrip().rsplit("\n## ", 1)[1].splitlines()[0], HEADING[3:])

    def test_ratioMet(self) -> None:
        """
        A ratio target met: the ratio of the medians, the range of the
        ratios of repetition n to aiohttp's repetition n, both medians.
        """
        text = render(results({
            ("S1", "uploadsvc"): each("mibps", 1400.0, 1200.0, 1300.0),
            ("S1", "aiohttp"): each("mibps", 1000.0, 1000.0, 1000.0),
        }))
        self.assertEqual(
            row(text, "S1: MiB/s ≥ 1.2x"),
            "| S1: MiB/s ≥ 1.2x | 1.30x (1.20–1.40x): 1,300 vs 1,000 MiB/s | met |",
        )

    def test_ratioMissed(self) -> None:
        """
        A ratio target missed says by what factor; a missed target with a
        stretch goal says nothing more about the stretch.
        """
        text = render(results({
            ("S1", "uploadsvc"): each("serverCpuPerGiB", 1.5, 1.6, 1.8),
            ("S1", "aiohttp"): each("serverCpuPerGiB", 1.0, 1.0, 0.9),
        }))
        self.assertEqual(
            row(text, "S1: server CPU-s/GiB ≤ 0.8x (stretch ≤ 0.6x)"),
            "| S1: server CPU-s/GiB ≤ 0.8x (stretch ≤ 0.6x) | 1.60x (1.50–2.00x): "
            "1.60 vs 1.00 CPU-s/GiB | not met, gap 2.00x |",
        )

    def test_stretch(self) -> None:
        """
        A target met tells whether its stretch goal is met too.
        """
        text = render(results({
            ("S1", "uploadsvc"): each("serverCpuPerGiB", 0.7),
            ("S1", "aiohttp"): each("serverCpuPerGiB", 1.0),
        }))
        self.assertEqual(
            row(text, "S1: server CPU-s/GiB ≤ 0.8x (stretch ≤ 0.6x)"),
            "| S1: server CPU-s/GiB ≤ 0.8x (stretch ≤ 0.6x) | 0.70x: 0.70 vs 1.00 CPU-s/GiB "
            "| met; stretch not met, gap 1.17x |",
        )

    def test_namedServer(self) -> None:
        """
        S2 and S4 are measured on C{uploadsvc-w2}, not on C{uploadsvc}.
        """
        text = render(results({
            ("S2", "uploadsvc"): each("mibps", 500.0),
            ("S2", "uploadsvc-w2"): each("mibps", 1400.0),
            ("S2", "aiohttp"): each("mibps", 1000.0),
            ("S4", "uploadsvc-w2"): each("latency.all.p99", 0.090, 0.100, 0.110),
            ("S4", "aiohttp"): each("latency.all.p99", 0.100, 0.100, 0.100),
        }))
        self.assertEqual(
            row(text, "S2 (`uploadsvc-w2`): MiB/s ≥ 1.3x"),
            "| S2 (`uploadsvc-w2`): MiB/s ≥ 1.3x | 1.40x: 1,400 vs 1,000 MiB/s | met |",
        )
        self.assertEqual(
            row(text, "S4 (`uploadsvc-w2`): p99 ≤ 1.0x"),
            "| S4 (`uploadsvc-w2`): p99 ≤ 1.0x | 1.00x (0.90–1.10x): 100.0 vs 100.0 ms | met |",
        )

    def test_serverMissing(self) -> None:
        """
        A row whose server, baseline or scenario is not in the run says so.
        """
        text = render(results({
            ("S2", "uploadsvc"): each("mibps", 500.0),
            ("S2", "aiohttp"): each("mibps", 1000.0),
            ("S3", "uploadsvc"): each("heavyMibps", 500.0),
        }))
        self.assertEqual(
            row(text, "S2 (`uploadsvc-w2`): MiB/s ≥ 1.3x"),
            "| S2 (`uploadsvc-w2`): MiB/s ≥ 1.3x | `uploadsvc-w2` not in this run | – |",
        )
        self.assertEqual(
            row(text, "S3: heavy hitters' MiB/s (slowest) ≥ 1.0x"),
            "| S3: heavy hitters' MiB/s (slowest) ≥ 1.0x | `aiohttp` not in this run | – |",
        )
        self.assertEqual(
            row(text, "S1: MiB/s ≥ 1.2x"), "| S1: MiB/s ≥ 1.2x | S1 not in this run | – |"
        )

    def test_skippedIsMissing(self) -> None:
        """
        A server whose every run of the scenario was skipped is not in
        this run either.
        """
        data = results({
            ("S1", "uploadsvc"): each("mibps", 1300.0),
            ("S1", "aiohttp"): each("mibps", 1000.0),
        })
        for run in data["runs"]:
            if run["server"] == "aiohttp":
                run["summary"] = {"skipped": "not installed"}
        self.assertEqual(
            row(render(data), "S1: MiB/s ≥ 1.2x"),
            "| S1: MiB/s ≥ 1.2x | `aiohttp` not in this run | – |",
        )

    def test_noRepetitionNumbers(self) -> None:
        """
        Runs without repetition numbers (older results) give the ratio of
        the medians without a range.
        """
        data = results({
            ("S1", "uploadsvc"): each("mibps", 1100.0, 1000.0),
            ("S1", "aiohttp"): each("mibps", 1000.0, 1000.0),
        })
        for run in data["runs"]:
            del run["repetition"]
        self.assertEqual(
            row(render(data), "S1: MiB/s ≥ 1.2x"),
            "| S1: MiB/s ≥ 1.2x | 1.05x: 1,050 vs 1,000 MiB/s | not met, gap 1.14x |",
        )

    def test_absolute(self) -> None:
        """
        Absolute targets give the median and the range of the figure.
        """
        text = render(results({
            ("S3", "uploadsvc"): each("latency.slow.p99", 16.2, 18.0, 16.5),
            ("S3", "aiohttp"): each("latency.slow.p99", 16.1),
            ("S5", "uploadsvc"): each("rssPerOpen", 20 * KiB, 19 * KiB, 22 * KiB),
        }))
        self.assertEqual(
            row(text, "S3: slow clients' p99 ≤ 17 s"),
            "| S3: slow clients' p99 ≤ 17 s | 16.50 s (16.20–18.00) | met |",
        )
        self.assertEqual(
            row(text, "S5: RSS per open upload ≤ 10 KiB"),
            "| S5: RSS per open upload ≤ 10 KiB | 20.0 KiB (19.0–22.0) | not met, gap 2.00x |",
        )

    def test_idleRss(self) -> None:
        """
        Idle RSS has no bound: it is reported, absolute and as a ratio.
        """
        text = render(results({
            ("S5", "uploadsvc"): each("rssBefore", 60 * MiB, 66 * MiB, 64 * MiB),
            ("S5", "aiohttp"): each("rssBefore", 40 * MiB, 40 * MiB, 42 * MiB),
        }))
        self.assertEqual(
            row(text, "S5: idle RSS"),
            "| S5: idle RSS | 64.0 MiB (60.0–66.0); 1.60x (1.50–1.65x) aiohttp's 40.0 MiB "
            "| reported |",
        )

    def test_fsyncAgainstDisk(self) -> None:
        """
        C{uploadsvc-fsync}'s completions/s are set against the disk's
        8-thread rate of the same run (per repetition for the range), with
        the 1-thread rate beside.
        """
        target = FSYNC_TARGET
        text = render(results({
            ("S4", "uploadsvc-fsync"): each("uploadsPerS", 3400.0, 3800.0, 3600.0),
            ("S4", "uploadsvc"): each("uploadsPerS", 9000.0),
        }))
        self.assertEqual(
            row(text, target),
            f"| {target} | 0.90x (0.85–0.95x): 3,600 vs 4,000/s; 1.80x the 1-thread "
            "2,000/s | met |",
        )
        missed = render(results({("S4", "uploadsvc-fsync"): each("uploadsPerS", 1000.0)}))
        self.assertEqual(
            row(missed, target),
            f"| {target} | 0.25x: 1,000 vs 4,000/s; 0.50x the 1-thread 2,000/s "
            "| not met, gap 3.20x |",
        )

    def test_diskRateMissing(self) -> None:
        """
        Without the disk's rates in the run, the fsync row says so.
        """
        target = FSYNC_TARGET
        text = render(results(
            {("S4", "uploadsvc-fsync"): each("uploadsPerS", 1000.0)}, disk="?"
        ))
        self.assertEqual(
            row(text, target), f"| {target} | the disk's fsync rate not in this run | – |"
        )

    def test_everyTarget(self) -> None:
        """
        One row per target of issue 13, in its order, even in an empty run.
        """
        rows = [
            line.split(" | ")[0][2:] for line in section(render(results({}))).splitlines()
            if line.startswith("| S")
        ]
        self.assertEqual(rows, [
            "S1: MiB/s ≥ 1.2x",
            "S1: server CPU-s/GiB ≤ 0.8x (stretch ≤ 0.6x)",
            "S2 (`uploadsvc-w2`): MiB/s ≥ 1.3x",
            "S2 (`uploadsvc-w2`): server CPU-s/GiB ≤ 1.0x",
            "S3: heavy hitters' MiB/s (slowest) ≥ 1.0x",
            "S3: slow clients' p99 ≤ 17 s",
            "S3: server CPU-s/GiB ≤ 1.0x",
            "S4 (`uploadsvc-w2`): uploads/s ≥ 1.2x",
            "S4 (`uploadsvc-w2`): p99 ≤ 1.0x",
            FSYNC_TARGET,
            "S5: RSS per open upload ≤ 10 KiB",
            "S5: idle RSS",
        ])

    def test_chaosAfter(self) -> None:
        """
        The chaos section is appended after the targets and renewing it
        keeps the targets.
        """
        text = render(results({("S1", "uploadsvc"): each("mibps", 1.0)}))
        chaos = f"{CHAOS_HEADING}: figures\n\n- one\n"
        joined = replaceChaos(text, chaos)
        self.assertLess(joined.index(HEADING), joined.index(CHAOS_HEADING))
        renewed = replaceChaos(joined, f"{CHAOS_HEADING}: figures\n\n- two\n")
        self.assertEqual(section(renewed), section(text))
        self.assertIn("- two", renewed)
