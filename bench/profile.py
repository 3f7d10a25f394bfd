"""
Where one server's time goes under one scenario's load (issue 13's "profile
first"): the profiles that bench/LIMITS.md cites, rerunnable.

It starts one server as the benchmark does (L{bench.servers}), sends one
scenario's load (L{bench.scenarios}, full sizes unless C{--count}) a few
times, and prints per run: the rate, the server's CPU per upload (S4) or
per GiB (others) split into user and system, and the CPU of each thread of
the server over the run (from C{/proc/PID/task}), which tells a reactor
that is the bottleneck from disk threads that wait on each other, and, for
paced uploads (S3's slow clients), how long the server took to answer
after their last byte. With
C{--cprofile FILE}, an uploadsvc server runs under twistd's own profiler
(C{--profiler cprofile}, the reactor thread only; it slows the server about
twofold) and the heaviest functions are printed when it stops.

    .venv/bin/python -m bench.profile S4
    .venv/bin/python -m bench.profile S4 --server aiohttp
    .venv/bin/python -m bench.profile S1 --runs 1
    .venv/bin/python -m bench.profile S4 --cprofile bench/work/s4.prof
    .venv/bin/python -m bench.profile S4 -- --disk-threads 2
    .venv/bin/python -m bench.profile S3 --no-heavy --runs 1

Arguments after C{--} are added to uploadsvc's command line. Bodies come
from the benchmark's source file (made by C{bench/run}, or here when
missing). Each invocation works in a folder of its own under bench/work/
(its server's log stays there); stored files are removed after each run.
"""

from __future__ import annotations

import argparse
import math
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import attr

from bench import procfs
from bench.loadgen import Load, Outcome, runLoad
from bench.scenarios import FULL, build, percentile, sourceSize
from bench.servers import BUILTIN, REPO, command, freePort
from bench.source import ensureSource

WORK = REPO / "bench" / "work"


def threadCpu(pid: int) -> dict[int, float]:
    """
    Each thread of C{pid}: its CPU seconds (user + system) so far.
    """
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for task in procfs.threads(pid):
        fields = procfs.readStat(pid, task)
        if fields is not None:
            out[task] = (int(fields[11]) + int(fields[12])) / tick
    return out


def userSystem(pid: int) -> tuple[float, float]:
    """
    User and system CPU seconds of C{pid}'s whole tree (workers too).
    """
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for member in procfs.processTree(pid):
        fields = procfs.readStat(member)
        if fields is not None:
            user += int(fields[11]) / tick
            system += int(fields[12]) / tick
    return user, system


def startServer(name: str, root: Path, directory: Path, extra: list[str],
                profile: Path | None) -> tuple[subprocess.Popen[bytes], int]:
    """
    Start server C{name} on a free loopback port and wait until it accepts.
    """
    port = freePort()
    argv = command(BUILTIN[name], root, port, directory, None, extra, ())
    assert argv is not None
    if profile is not None:
        if BUILTIN[name].kind != "uploadsvc":
            raise SystemExit("--cprofile profiles an uploadsvc server only")
        at = argv.index("uploadsvc")
        argv[at:at] = [f"--profile={profile}", "--profiler=cprofile", "--savestats"]
    directory.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    with open(directory / "server.log", "wb") as out:
        server = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"{name} exited: see {directory / 'server.log'}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, port
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit(f"{name} did not listen within 30 s")


def runOnce(load: Load, port: int, sourceFd: int, pid: int, perUpload: bool) -> None:
    """
    Send C{load} once and print what it cost the server.
    """
    threads0, cpu0 = threadCpu(pid), userSystem(pid)
    result = runLoad(load, "127.0.0.1", port, sourceFd)
    threads1, cpu1 = threadCpu(pid), userSystem(pid)
    seconds = max(result.end - result.start, 1e-9)
    ok = sum(1 for o in result.outcomes if 200 <= o.status < 300)
    stored = sum(u.size for u in load.uploads)
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    if perUpload:
        unit, scale = "CPU-ms/upload", 1000 / max(len(load.uploads), 1)
        rate = f"{len(load.uploads) / seconds:.0f} uploads/s"
    else:
        unit, scale = "CPU-s/GiB", (1 << 30) / max(stored, 1)
        rate = f"{stored / seconds / (1 << 20):.0f} MiB/s"
    print(f"ok {ok}/{len(load.uploads)}, {rate}, server {(user + system) * scale:.2f} {unit} "
          f"(user {user * scale:.2f}, system {system * scale:.2f})")
    failures = Counter(f"{o.status} {o.error}" for o in result.outcomes if not 200 <= o.status < 300)
    for why, count in failures.most_common(5):
        print(f"    failed: {count} x {why}")
    for task, cpu in sorted(threads1.items(), key=lambda t: -t[1]):
        busy = (cpu - threads0.get(task, 0.0)) / seconds
        if busy >= 0.01:
            print(f"    thread {task}: {busy:.2f} of a core")
    printAnswerTimes(result.outcomes)


def printAnswerTimes(outcomes: Sequence[Outcome]) -> None:
    """
    For paced uploads (S3's slow clients), how long the server took to
    answer once a client had sent its last byte: what a slow client's
    latency has beyond its own pace.
    """
    after = [
        o.end - o.sentAll for o in outcomes
        if o.ok and o.upload.pacing is not None and not math.isnan(o.sentAll)
    ]
    if after:
        p50, p99 = percentile(after, 50) * 1000, percentile(after, 99) * 1000
        print(f"    paced uploads, answer after their last byte: p50 {p50:.0f} ms, "
              f"p99 {p99:.0f} ms, max {max(after) * 1000:.0f} ms ({len(after)})")


def printProfile(path: Path, top: int) -> None:
    stats = pstats.Stats(str(path))
    for order in ("tottime", "cumulative"):
        print(f"\n== reactor thread, top {top} by {order} ({path})")
        stats.sort_stats(order).print_stats(top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=["S1", "S2", "S3", "S4", "S5"])
    parser.add_argument("--server", default="uploadsvc", choices=sorted(BUILTIN))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=None,
                        help="uploads per run (S2, S4, S5; S3's slow clients; default: the"
                             " full benchmark's)")
    parser.add_argument("--no-heavy", action="store_true",
                        help="S3 without its two heavy hitters: the slow clients alone")
    parser.add_argument("--cprofile", type=Path, default=None,
                        help="profile uploadsvc's reactor thread into this file")
    parser.add_argument("--top", type=int, default=30)
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: len(argv) - len(extra) - (1 if extra or "--" in argv else 0)])
    args.extra = extra
    size = sourceSize(FULL)
    source = WORK / "source.bin"
    ensureSource(source, size)
    sizes = FULL
    if args.count is not None:
        sizes = type(FULL)(
            **{**FULL.__dict__, "s2Count": args.count, "s3Slow": args.count,
               "s4Count": args.count, "s5Count": args.count}
        )
    load = build(sizes, size)[args.scenario].load
    if args.no_heavy:
        load = attr.evolve(load, uploads=[u for u in load.uploads if u.group != "heavy"])
    WORK.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="profile-", dir=WORK))  # (one per run of this tool)
    root = directory / "root"
    server, port = startServer(args.server, root, directory, args.extra, args.cprofile)
    fd = os.open(source, os.O_RDONLY)
    try:
        for _ in range(args.runs):
            runOnce(load, port, fd, server.pid, args.scenario == "S4")
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
    finally:
        os.close(fd)
        server.terminate()
        server.wait(60)
        shutil.rmtree(root, ignore_errors=True)
        print(f"server log: {directory / 'server.log'}")
    if args.cprofile is not None:
        printProfile(args.cprofile, args.top)


if __name__ == "__main__":
    main(sys.argv[1:])
