"""
One measured run: one scenario against one freshly started server.

The order of a run: empty the storage root; C{sync} so that earlier runs'
dirty pages are not written during this one; start the server; send one
small warm-up upload (so that lazy imports and first-request set-up are not
counted); read the idle RSS; run the load while sampling the server's RSS;
read the server's CPU time; time a final C{sync}; stop the server; verify
every stored file against its source region; empty the root again.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from bench import procfs, servers
from bench.loadgen import Load, LoadResult, Upload, runLoad
from bench.scenarios import GiB, Scenario, median, percentile
from bench.source import Verifier

HOST = "127.0.0.1"
_VERIFY_ERRORS_KEPT = 5


def _clear(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)


def _idleRss(pid: int, count: int = 5, interval: float = 0.1) -> float:
    samples = []
    for _ in range(count):
        samples.append(procfs.treeRss(pid))
        time.sleep(interval)
    return median(samples)


def _openRss(
    result: LoadResult, settle: float = 1.0
) -> tuple[float, int]:
    """
    The median server RSS while every upload was open (after all had sent
    their initial bytes, plus C{settle} seconds, and before the first one
    finished), with the number of samples it is taken from.
    """
    outcomes = result.outcomes
    opened = [o.opened for o in outcomes]
    if not opened or any(math.isnan(t) for t in opened):
        return math.nan, 0
    allOpen = max(opened) - result.start
    firstEnd = min(o.end for o in outcomes) - result.start
    window = [v for t, v in result.samples if allOpen + settle <= t <= firstEnd - 0.2]
    if not window:
        window = [v for t, v in result.samples if allOpen <= t <= firstEnd]
    return median(window), len(window)


def summarize(
    scenario: Scenario,
    result: LoadResult,
    serverCpu: float,
    syncSeconds: float,
    rssBefore: float,
    hwm: int,
    verifyErrors: Sequence[str],
) -> dict[str, Any]:
    """
    The figures of one run, as a flat JSON-ready dictionary.
    """
    outcomes = result.outcomes
    good = [o for o in outcomes if o.ok]
    total = sum(o.upload.size for o in good)
    elapsed = result.end - result.start
    gib = total / GiB
    summary: dict[str, Any] = {
        "uploads": len(outcomes),
        "ok": len(good),
        "failed": len(outcomes) - len(good),
        "verifyFailed": len(verifyErrors),
        "errors": sorted({o.error for o in outcomes if not o.ok})[:_VERIFY_ERRORS_KEPT]
        + list(verifyErrors[:_VERIFY_ERRORS_KEPT]),
        "bytes": total,
        "elapsed": elapsed,
        "syncSeconds": syncSeconds,
        "mibps": total / (1 << 20) / elapsed if elapsed > 0 else math.nan,
        "mibpsSync": total / (1 << 20) / (elapsed + syncSeconds) if elapsed > 0 else math.nan,
        "uploadsPerS": len(good) / elapsed if elapsed > 0 else math.nan,
        "uploadsPerSSync": len(good) / (elapsed + syncSeconds) if elapsed > 0 else math.nan,
        "serverCpu": serverCpu,
        "serverCpuPerGiB": serverCpu / gib if gib else math.nan,
        "serverCpuPerUpload": serverCpu / len(good) if good else math.nan,
        "clientCpu": result.clientCpu,
        "clientCpuPerGiB": result.clientCpu / gib if gib else math.nan,
        "peakRss": max((v for _, v in result.samples), default=math.nan),
        "hwm": hwm,
        "rssBefore": rssBefore,
    }
    summary["rssGrowth"] = summary["peakRss"] - rssBefore
    groups = sorted({o.upload.group for o in outcomes} | {"all"})
    for group in groups:
        latencies = [o.latency for o in good if group in ("all", o.upload.group)]
        summary[f"latency.{group}.p50"] = percentile(latencies, 50)
        summary[f"latency.{group}.p99"] = percentile(latencies, 99)
        summary[f"latency.{group}.max"] = max(latencies, default=math.nan)
    heavy = [o for o in outcomes if o.upload.group == "heavy"]
    if heavy:
        # A failed heavy hitter counts as a starved one: throughput 0.
        rates = [o.upload.size / (1 << 20) / o.latency if o.ok else 0.0 for o in heavy]
        slowest = min(rates)
        summary["heavyMibps"] = slowest
        # Its throughput including the final sync (the durable comparison).
        worst = max(heavy, key=lambda o: o.latency)
        summary["heavyMibpsSync"] = (
            worst.upload.size / (1 << 20) / (worst.latency + syncSeconds)
            if worst.ok else 0.0
        )
    if scenario.measureOpen:
        rssOpen, count = _openRss(result)
        summary["rssOpen"] = rssOpen
        summary["rssOpenSamples"] = count
        summary["rssPerOpen"] = (rssOpen - rssBefore) / len(outcomes)
    return summary


def runOne(
    scenario: Scenario,
    spec: servers.ServerSpec,
    work: Path,
    runName: str,
    sourceFd: int,
    verifier: Verifier,
    uploadsvcArgs: Sequence[str] = (),
    slowDiskArgs: Sequence[str] = servers.UPLOADSVC_SLOW_DISK_ARGS,
) -> dict[str, Any]:
    """
    Run C{scenario} once against a fresh server C{spec}.

    @return: the run's figures (see L{summarize}), or C{{"skipped": reason}}
        when the server could not be started the way the scenario needs.
    """
    root = work / "root" / spec.name
    directory = work / "runs" / runName
    _clear(root)
    if directory.exists():
        shutil.rmtree(directory)
    os.sync()
    try:
        server = servers.start(
            spec, root, directory, scenario.slowDiskRate,
            uploadsvcArgs=uploadsvcArgs, slowDiskArgs=slowDiskArgs,
        )
    except servers.ServerFailed as e:
        return {"skipped": str(e)}
    try:
        warmup = runLoad(
            Load([Upload("/warmup/warmup.bin", 0, 4096)], 1, False, timeLimit=30),
            HOST, server.port, sourceFd,
        )
        if not warmup.outcomes[0].ok:
            return {"skipped": f"warm-up upload failed: {warmup.outcomes[0].error}"}
        rssBefore = _idleRss(server.pid)
        cpu0 = procfs.cpuSeconds(server.pid)
        result = runLoad(
            scenario.load, HOST, server.port, sourceFd,
            sampler=lambda: procfs.treeRss(server.pid),
            sampleInterval=scenario.sampleInterval,
        )
        serverCpu = procfs.cpuSeconds(server.pid) - cpu0
        hwm = procfs.treeHighWaterMark(server.pid)
        server.remember()
        syncStart = time.monotonic()
        os.sync()
        syncSeconds = time.monotonic() - syncStart
    finally:
        server.stop()
    verifyErrors = []
    for outcome in result.outcomes:
        if outcome.ok:
            upload = outcome.upload
            problem = verifier.check(
                root / upload.path.lstrip("/"), upload.offset, upload.size
            )
            if problem is not None:
                verifyErrors.append(f"{upload.path}: {problem}")
    _clear(root)
    summary = summarize(
        scenario, result, serverCpu, syncSeconds, rssBefore, hwm, verifyErrors
    )
    summary["log"] = str(server.log)
    return summary
