"""
Run the benchmark: every chosen scenario against every chosen server,
repeated, with the servers interleaved run by run, then write the report.

    .venv/bin/python -m bench.run                 # everything, full size
    .venv/bin/python -m bench.run --quick         # scaled down, a few minutes
    .venv/bin/python -m bench.run --scenarios S1,S4 --servers uploadsvc,aiohttp -r 5

Results are kept as JSON under the work folder (C{bench/work/}, not in git)
and rendered to C{bench/RESULTS.md} (a quick run writes
C{bench/work/RESULTS-quick.md} unless C{--output} says otherwise).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import fsyncrate, measure, report, servers
from bench.procfs import cpuModel
from bench.scenarios import FULL, QUICK, build, sourceSize
from bench.source import Verifier, ensureSource

HERE = Path(__file__).resolve().parent


def _output(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, timeout=30, cwd=servers.REPO)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (done.stdout or done.stderr).decode(errors="replace").strip()


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


def machine(work: Path) -> dict[str, str]:
    """
    What the figures were measured on.
    """
    cpu = cpuModel()
    with open("/proc/meminfo") as f:
        memory = f.readline().split(":", 1)[1].strip()
    filesystem = _output(["df", "--output=fstype,source", str(work)]).splitlines()
    commit = _output(["git", "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "status", "--porcelain", "--", "uploadsvc", "twisted"])
    nginx = _output(["nginx", "-v"]) if shutil.which("nginx") else "not installed"
    return {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU": cpu,
        "memory": memory,
        "kernel": platform.release(),
        "work folder filesystem": " ".join(filesystem[-1].split()) if filesystem else "?",
        "Python": platform.python_version(),
        "Twisted": _version("twisted"),
        "aiohttp": _version("aiohttp"),
        "nginx": nginx.replace("nginx version: ", ""),
        "uploadsvc commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "disk (work folder)": fsyncrate.describe(work),
    }


def _raiseFileLimit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _brief(summary: dict[str, Any]) -> str:
    if "skipped" in summary:
        return f"skipped: {summary['skipped']}"
    parts = [
        f"ok {summary['ok'] - summary['verifyFailed']}/{summary['uploads']}",
        f"{summary['mibps']:.0f} MiB/s ({summary['mibpsSync']:.0f} incl. sync)",
        f"{summary['uploadsPerS']:.0f} uploads/s",
        f"p99 {summary['latency.all.p99'] * 1000:.1f} ms",
        f"server {summary['serverCpuPerGiB']:.2f} CPU-s/GiB",
        f"client {summary['clientCpuPerGiB']:.2f} CPU-s/GiB",
        f"peak RSS {summary['peakRss'] / (1 << 20):.1f} MiB",
    ]
    if "rssPerOpen" in summary:
        parts.append(f"{summary['rssPerOpen'] / 1024:.1f} KiB/open upload")
    if "heavyMibps" in summary:
        parts.append(
            f"slow p99 {summary['latency.slow.p99']:.2f} s, "
            f"heavy {summary['heavyMibps']:.0f} MiB/s"
        )
    if summary["errors"]:
        parts.append(f"errors: {summary['errors'][:2]}")
    return ", ".join(parts)


def parseArguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark uploadsvc against the aiohttp and nginx baselines.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="scaled-down sizes, for smoke testing")
    parser.add_argument("--scenarios", default="S1,S2,S3,S4,S5,S6",
                        help="comma-separated, from S1..S6 (default: all)")
    parser.add_argument("--servers", default=",".join(servers.SERVERS),
                        help="comma-separated, from %s (default: all; those "
                        "not available here are skipped)" % ", ".join(servers.SERVERS))
    parser.add_argument("-r", "--repetitions", type=int, default=None,
                        help="runs of each scenario per server (default 3; 1 with --quick)")
    parser.add_argument("--work", type=Path, default=HERE / "work",
                        help="scratch folder for the source file, storage roots "
                        "and logs (default bench/work)")
    parser.add_argument("-o", "--output", type=Path,
                        help="report path (default bench/RESULTS.md, or "
                        "bench/work/RESULTS-quick.md with --quick)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                        help="one more uploadsvc server to measure, e.g. "
                        "--variant='uploadsvc-w2=--no-fsync --workers 2' "
                        "(repeatable; NAME must start with 'uploadsvc'; it runs "
                        "unless --servers leaves it out)")
    parser.add_argument("--uploadsvc-arg", action="append", default=[], metavar="ARG",
                        help="an extra argument for both uploadsvc servers, "
                        "e.g. --uploadsvc-arg=--workers=2 (repeatable)")
    parser.add_argument("--slow-disk-arg", action="append", metavar="ARG",
                        help="the uploadsvc arguments for S6's throttled disk, "
                        "'{rate}' standing for bytes per second (repeatable; "
                        "default: %s)" % " ".join(servers.UPLOADSVC_SLOW_DISK_ARGS))
    args = parser.parse_args(argv)
    if args.repetitions is None:
        args.repetitions = 1 if args.quick else 3
    args.scenarios = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    specs = dict(servers.BUILTIN)
    for text in args.variant:
        try:
            variant = servers.parseVariant(text)
        except ValueError as e:
            parser.error(str(e))
        specs[variant.name] = variant
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.servers == parser.get_default("servers"):
        names += [servers.parseVariant(t).name for t in args.variant]
    for name in names:
        if name not in specs:
            parser.error(f"unknown server {name!r}")
    args.servers = [specs[name] for name in names]
    for key in args.scenarios:
        if key not in ("S1", "S2", "S3", "S4", "S5", "S6"):
            parser.error(f"unknown scenario {key!r}")
    if args.repetitions < 1 or args.repetitions > 100:
        parser.error("repetitions must be 1..100")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parseArguments(argv)
    sizes = QUICK if args.quick else FULL
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    output = args.output or (work / "RESULTS-quick.md" if args.quick else HERE / "RESULTS.md")
    _raiseFileLimit()

    unavailable: dict[str, str] = {}
    specs = []
    for spec in args.servers:
        reason = servers.unavailable(spec)
        if reason is None:
            specs.append(spec)
        else:
            unavailable[spec.name] = reason
            print(f"{spec.name}: {reason}", flush=True)
    if not specs:
        print("no server can run here", file=sys.stderr)
        return 1

    source = work / "source.bin"
    size = sourceSize(sizes)
    print(f"source file {source} ({size >> 20} MiB of random bytes)", flush=True)
    ensureSource(source, size)
    scenarios = build(sizes, size)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    resultsPath = work / f"results-{stamp}.json"
    data: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(
                shlex.quote(a) for a in ["python", "-m", "bench.run"] + (
                    argv if argv is not None else sys.argv[1:]
                )
            ),
            "quick": args.quick,
            "repetitions": args.repetitions,
            "servers": [spec.name for spec in specs],
            "durable": [spec.name for spec in specs if spec.durable],
            "serverArgs": {spec.name: list(spec.args) for spec in specs},
            "unavailable": unavailable,
            "uploadsvcArgs": args.uploadsvc_arg,
            "machine": machine(work),
        },
        "runs": [],
    }
    slowDiskArgs = args.slow_disk_arg or servers.UPLOADSVC_SLOW_DISK_ARGS
    verifier = Verifier(source)
    sourceFd = os.open(source, os.O_RDONLY)
    try:
        for key in args.scenarios:
            scenario = scenarios[key]
            print(f"== {key}: {scenario.title}", flush=True)
            for repetition in range(args.repetitions):
                # Rotate the order each repetition, so no server always runs
                # first (on a freshly emptied page cache) or last.
                shift = repetition % len(specs)
                for spec in specs[shift:] + specs[:shift]:
                    runName = f"{key}-{spec.name}-{repetition + 1}"
                    summary = measure.runOne(
                        scenario, spec, work, runName, sourceFd, verifier,
                        uploadsvcArgs=args.uploadsvc_arg, slowDiskArgs=slowDiskArgs,
                    )
                    print(f"  {runName}: {_brief(summary)}", flush=True)
                    data["runs"].append(
                        {"scenario": key, "server": spec.name,
                         "repetition": repetition + 1, "summary": summary}
                    )
                    resultsPath.write_text(json.dumps(data, indent=1))
    finally:
        os.close(sourceFd)
        verifier.close()
    text = report.render(data)
    if not data["meta"]["quick"] and report.CHAOS_RESULTS.exists():
        # (The chaos run's figures are rendered from their own file.)
        chaos = report.renderChaos(json.loads(report.CHAOS_RESULTS.read_text()))
        text = report.replaceChaos(text, chaos)
    output.write_text(text)
    print(f"results: {resultsPath}\nreport: {output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
