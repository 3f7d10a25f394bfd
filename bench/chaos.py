"""
A bounded chaos run (issue 12, item 3): many clients upload through a
fault proxy and nginx to three uploadsvc servers on three mounts of one
GlusterFS volume, while servers 2 and 3 are killed (C{kill -9}) and
restarted at random every few seconds and server 1 serves the whole run.
At the end: every file byte-identical, no answer 500 in the servers' logs,
no staged upload left once expiry ran, and server 1's RSS over the run.

Run as root (FUSE) on a machine with glusterfs, nginx::

    python -m bench.chaos --seconds 300 --clients 50 --seed 1

It prints its figures as Markdown and writes them as JSON to
C{bench/chaos-results.json} (C{--json}), from which L{bench.report} renders
the chaos section of C{bench/RESULTS.md}. It exits 1 when a check failed.
Every wait is bounded: a client gives up after C{--client-limit} seconds, a
killed server that has not exited after L{KILL_WAIT} seconds (blocked in
its mount) has its mount's client ended and the mount made again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from bench.procfs import cpuModel
from bench.report import renderChaos
from tests.support import rawhttp
from tests.support.cluster import writeNginxConf
from tests.support.gluster import GlusterVolume
from tests.support.rawhttp import patternBytes
from tests.support.server import ServerProcess, freePort

MiB = 1024 * 1024

#: Seconds a killed server may take to exit before it counts as blocked in
#: its mount.
KILL_WAIT = 15.0

#: x86_64 numbers of the system calls a server makes on its mount.
SYSCALLS = {
    0: "read", 1: "write", 3: "close", 5: "fstat", 8: "lseek", 17: "pread64",
    18: "pwrite64", 72: "fcntl", 74: "fsync", 75: "fdatasync", 82: "rename",
    87: "unlink", 217: "getdents64", 257: "openat", 262: "newfstatat",
    263: "unlinkat", 264: "renameat", 316: "renameat2", 332: "statx",
}

#: Seconds between the RSS samples kept in the figures.
SERIES_STEP = 30.0

HERE = os.path.dirname(os.path.abspath(__file__))


def waitListening(port: int, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            rawhttp.connect(port, timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {limit} s")


class Client(threading.Thread):
    """
    One client: uploads file after file until the run's chaos ends, each by
    HEAD (where to go on) and PUT with Content-Range from there, again after
    every failure, until the file is complete or its time is up.
    """

    def __init__(self, index: int, port: int, stopAt: float, maxSize: int, seed: int, limit: float) -> None:
        """
        @param stopAt: when (C{time.monotonic}) to begin no new file.
        @param limit: seconds one file may take before it counts as failed.
        """
        super().__init__(daemon=True)
        self.index = index
        self.port = port
        self.stopAt = stopAt
        self.maxSize = maxSize
        self.rng = random.Random(seed)
        self.limit = limit
        #: path -> (pattern seed, size) of every file begun
        self.files: dict[str, tuple[int, int]] = {}
        self.done: list[str] = []
        self.failed: list[str] = []
        self.attempts = 0
        self.errors = 0
        #: why rounds failed: an answer's method and status, or an exception's type
        self.reasons: dict[str, int] = {}

    def run(self) -> None:
        n = 0
        while time.monotonic() < self.stopAt:
            path = f"/chaos/c{self.index}/f{n}.bin"
            seed, size = self.index * 100000 + n, self.rng.randint(1, self.maxSize)
            self.files[path] = (seed, size)
            if self._upload(path, seed, size):
                self.done.append(path)
            else:
                self.failed.append(path)
            n += 1

    def _upload(self, path: str, seed: int, size: int) -> bool:
        deadline = time.monotonic() + self.limit
        while time.monotonic() < deadline:
            self.attempts += 1
            try:
                _, head = rawhttp.exchange(self.port, "HEAD", path, timeout=10)
                if head.status == 200:
                    return True
                if head.status == 404:
                    offset = 0
                elif head.status == 204:
                    offset = int(head.header("upload-offset") or 0)
                else:
                    raise OSError(f"HEAD {head.status}")
                if offset == size:
                    # Every byte is staged, the completion was cut off: a
                    # status query completes it (docs/protocol.md section 3).
                    _, answer = rawhttp.exchange(
                        self.port, "PUT", path, [("Content-Range", f"bytes */{size}")], timeout=10
                    )
                    if answer.status in (200, 201):
                        return True
                    raise OSError(f"PUT */T {answer.status}")
                body = patternBytes(seed, offset, size - offset)
                _, answer = rawhttp.exchange(
                    self.port, "PUT", path,
                    [("Content-Range", f"bytes {offset}-{size - 1}/{size}"),
                     ("Content-Length", str(size - offset))],
                    body, timeout=10,
                )
                if answer.status in (200, 201):
                    return True
                raise OSError(f"PUT {answer.status}")
            except (OSError, ValueError) as e:  # cut, reset, stalled (timeout), server killed
                self.errors += 1
                reason = str(e) if str(e).startswith(("HEAD", "PUT")) else type(e).__name__
                self.reasons[reason] = self.reasons.get(reason, 0) + 1
                time.sleep(0.2)
        return False


def blockedThreads(pid: int) -> list[str]:
    """
    What the threads of C{pid} in uninterruptible sleep (state C{D}) wait
    in: the system call and the file system function of their kernel
    stack, e.g. C{"fcntl in fuse_setlk"}.
    """
    found: list[str] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if state != "D":
                continue
            with open(f"{base}/syscall") as f:
                number = f.read().split()[0]
            with open(f"{base}/stack") as f:
                frames = [line.split()[-1].split("+")[0] for line in f if line.strip()]
        except (OSError, IndexError):
            continue
        call = SYSCALLS.get(int(number), f"syscall {number}") if number.isdigit() else number
        where = next(
            (frame for frame in frames
             if frame not in ("request_wait_answer", "__fuse_simple_request", "fuse_simple_request")),
            "?",
        )
        found.append(f"{call} in {where}")
    return found


def _output(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, timeout=30, cwd=HERE)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout or done.stderr).decode(errors="replace").strip().splitlines()
    return lines[0] if lines else ""


def stopPrograms(programs: list[subprocess.Popen[bytes]]) -> None:
    """
    Stop programs this run started, by their PIDs: SIGTERM, then SIGKILL
    after 15 s.
    """
    for program in programs:
        program.send_signal(signal.SIGTERM)
        try:
            program.wait(15)
        except subprocess.TimeoutExpired:
            program.kill()
            program.wait(15)


def machine() -> dict[str, str]:
    """
    What the run ran on.
    """
    cpu = cpuModel()
    import twisted

    commit = _output(["git", "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "status", "--porcelain", "--", "../uploadsvc", "../twisted"])
    return {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU": cpu,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "Twisted": twisted.__version__,
        "GlusterFS": _output(["glusterfs", "--version"]),
        "nginx": _output(["nginx", "-v"]).replace("nginx version: ", ""),
        "uploadsvc commit": commit + (" (with uncommitted changes)" if dirty not in ("", "?") else ""),
    }


def rssFigures(samples: list[tuple[float, int]], warmUp: float, seconds: float) -> dict[str, Any]:
    """
    First, after-warm-up, last and largest of C{(seconds into the run,
    bytes)} samples, in MiB, the slope of a least-squares line through
    the samples of the run's second half, in MiB per minute, and one
    sample every L{SERIES_STEP} seconds.
    """
    warm = next((rss for t, rss in samples if t >= warmUp), samples[-1][1])
    half = [(t, rss / MiB) for t, rss in samples if t >= seconds / 2]
    slope = float("nan")
    if len(half) >= 2:
        mt = sum(t for t, _ in half) / len(half)
        mr = sum(r for _, r in half) / len(half)
        var = sum((t - mt) ** 2 for t, _ in half)
        if var > 0:
            slope = sum((t - mt) * (r - mr) for t, r in half) / var * 60
    series: list[tuple[int, float]] = []
    for t, rss in samples:
        if not series or t >= series[-1][0] + SERIES_STEP:
            series.append((round(t), round(rss / MiB, 1)))
    return {
        "samples": len(samples),
        "series": series,
        "firstMiB": samples[0][1] / MiB,
        "warmUpSeconds": warmUp,
        "afterWarmUpMiB": warm / MiB,
        "lastMiB": samples[-1][1] / MiB,
        "maxMiB": max(rss for _, rss in samples) / MiB,
        "slopeMiBPerMinute": slope,
        "slopeFromSeconds": seconds / 2,
    }


class Chaos:
    """
    The servers, the volume under them, and what happened to them.

    @ivar kills: how many times a server was killed.
    @ivar exits: seconds each killed server took to exit.
    @ivar blocked: what the threads of servers that did not exit within
        L{KILL_WAIT} were blocked in (one entry per thread).
    @ivar remounts: how many mounts were made again to free such a server.
    """

    def __init__(self, volume: GlusterVolume, servers: list[ServerProcess]) -> None:
        self.volume = volume
        self.servers = servers
        self.kills = 0
        self.exits: list[float] = []
        self.blocked: list[str] = []
        self.remounts = 0
        self.stuck: list[int] = []

    def kill(self, index: int) -> None:
        """
        C{kill -9} server C{index} and reap it; when it has not exited after
        L{KILL_WAIT} seconds, note what it is blocked in, end its mount's
        client (failing the requests it waits on) and mount again.
        """
        server = self.servers[index]
        process = server.process
        assert process is not None
        began = time.monotonic()
        process.send_signal(signal.SIGKILL)
        try:
            process.wait(KILL_WAIT)
        except subprocess.TimeoutExpired:
            self.blocked += blockedThreads(process.pid) or ["(no thread in D state)"]
            self.volume.remount(index)
            self.remounts += 1
            try:
                process.wait(KILL_WAIT)
            except subprocess.TimeoutExpired:
                self.stuck.append(process.pid)  # left to the volume's teardown
        self.exits.append(time.monotonic() - began)
        self.kills += 1
        server.process = None

    def stop(self, index: int) -> None:
        """
        Stop server C{index} (SIGTERM; SIGKILL after 15 s, then as L{kill}).
        """
        server = self.servers[index]
        process = server.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(server.stopTimeout)
            except subprocess.TimeoutExpired:
                self.kill(index)
        server.process = None
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0,
                        help="how long servers 2 and 3 are killed and clients begin new files")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--max-size", type=int, default=4 * MiB)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--client-limit", type=float, default=300.0)
    parser.add_argument("--expire-after", default="10s")
    parser.add_argument("--warm-up", type=float, default=60.0,
                        help="seconds after which server 1's RSS counts as warmed up")
    parser.add_argument("--json", default=os.path.join(HERE, "chaos-results.json"),
                        help="where the figures go as JSON (empty: nowhere)")
    parser.add_argument("--out", default=None, help="write the Markdown here too")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (the servers' logs, glusterfs and nginx logs)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    base = tempfile.mkdtemp(prefix="uploadsvc-chaos-")
    logs = os.path.join(base, "logs")
    os.makedirs(logs)
    volume = GlusterVolume(os.path.join(base, "gluster"), 3)
    servers: list[ServerProcess] = []
    chaos = Chaos(volume, servers)
    programs: list[subprocess.Popen[bytes]] = []
    command = ["python", "-m", "bench.chaos"] + (sys.argv[1:] if argv is None else list(argv))
    try:
        volume.start()
        for i, mount in enumerate(volume.mounts):
            server = ServerProcess(
                os.path.join(mount, "root"), "--expire-after", args.expire_after,
                "--idle-timeout", "10",
            )
            # Off the volume: kept with --keep (the volume is deleted), and
            # no log write waits on a mount that a kill left hanging.
            server.logPath = os.path.join(logs, f"server{i + 1}.log")
            server.tmpDir = os.path.join(logs, f"server{i + 1}-tmp")
            server.start()
            servers.append(server)
        nginxPort = freePort()
        folder = os.path.join(base, "nginx")
        os.makedirs(folder)
        conf, _ = writeNginxConf(folder, nginxPort, [s.port for s in servers])
        nginx = "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else "nginx"
        programs.append(subprocess.Popen([nginx, "-p", folder, "-c", conf], stdin=subprocess.DEVNULL))
        waitListening(nginxPort)
        proxyPort = freePort()
        programs.append(subprocess.Popen(
            [sys.executable, "-m", "uploadsvc.testing.faultproxy", "--target", f"127.0.0.1:{nginxPort}",
             "--port", str(proxyPort), "--cut", "64K-2M", "--probability", "0.3",
             "--stall", "0.2", "--reset", "0.2", "--seed", str(args.seed)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        ))
        waitListening(proxyPort)
        began = time.monotonic()
        clients = [
            Client(c, proxyPort, began + args.seconds, args.max_size, args.seed * 1000 + c,
                   args.client_limit)
            for c in range(args.clients)
        ]
        #: server 1 (never killed): (seconds into the run, RSS)
        spared: list[tuple[float, int]] = []
        #: servers 2 and 3: RSS samples over all their lives
        lives: dict[int, list[int]] = {1: [], 2: []}
        for client in clients:
            client.start()
        nextKill = began + rng.uniform(2, 5)
        while time.monotonic() - began < args.seconds:
            now = time.monotonic()
            for i, server in enumerate(servers):
                if server.running():
                    try:
                        rss = server.rss()
                    except (OSError, LookupError):
                        continue
                    if i == 0:
                        spared.append((now - began, rss))
                    else:
                        lives[i].append(rss)
                elif i and now >= nextKill - 1:
                    server.start()  # down for a second or more
            if now >= nextKill:
                victim = rng.randrange(1, 3)
                if servers[victim].running():
                    chaos.kill(victim)
                nextKill = time.monotonic() + rng.uniform(2, 5)
            time.sleep(0.5)
        for server in servers:
            if not server.running():
                server.start()
        chaosSeconds = time.monotonic() - began
        for client in clients:
            client.join(args.client_limit + 60)
        total = time.monotonic() - began
        expected = {p: v for c in clients for p, v in c.files.items()}
        done = [p for c in clients for p in c.done]
        failed = [p for c in clients for p in c.failed]
        wrong = []
        root = servers[0].root
        for path in done:
            seed, size = expected[path]
            with open(os.path.join(root, path.lstrip("/")), "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
            if got != hashlib.sha256(patternBytes(seed, 0, size)).hexdigest():
                wrong.append(path)
        staging = os.path.join(root, ".uploadsvc", "uploads")

        def staged() -> list[str]:
            """The staged uploads' files (not the temp files a killed server left)."""
            return [
                n for _, _, names in os.walk(staging) for n in names
                if n.endswith((".data", ".json"))
            ]

        def temps() -> int:
            return len([n for _, _, names in os.walk(staging) for n in names if n.endswith(".tmp")])

        left = staged()
        deadline = time.monotonic() + 120
        while staged() and time.monotonic() < deadline:
            time.sleep(1)
        after = staged()
        reasons: dict[str, int] = {}
        for client in clients:
            for reason, count in client.reasons.items():
                reasons[reason] = reasons.get(reason, 0) + count
        texts = [s.logText() for s in servers]
        errors500 = sum(t.count('" 500 ') for t in texts)
        tracebacks = sum(t.count("Traceback (most recent call last)") for t in texts)
        # What each 500 was: the server's one line (a storage fault), or the
        # line a traceback follows.
        whys = [
            f"server {i + 1}: {line.split('] ', 1)[-1]}"
            for i, t in enumerate(texts) for line in t.splitlines()
            if (": 500 " in line and "uploadsvc.access" not in line) or "#critical]" in line
        ]
        blocked: dict[str, int] = {}
        for what in chaos.blocked:
            blocked[what] = blocked.get(what, 0) + 1
        results = {
            "command": " ".join(command),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "clients": args.clients,
            "maxSize": args.max_size,
            "seed": args.seed,
            "expireAfter": args.expire_after,
            "chaosSeconds": chaosSeconds,
            "wallSeconds": total,
            "kills": chaos.kills,
            "slowExits": sum(1 for e in chaos.exits if e > KILL_WAIT),
            "slowExitLimit": KILL_WAIT,
            "longestExitSeconds": max(chaos.exits, default=0.0),
            "blockedIn": blocked,
            "remounts": chaos.remounts,
            "uploads": len(expected),
            "identical": len(done) - len(wrong),
            "wrong": len(wrong),
            "unfinished": len(failed),
            "rounds": sum(c.attempts for c in clients),
            "failedRounds": sum(c.errors for c in clients),
            "reasons": dict(sorted(reasons.items(), key=lambda r: -r[1])),
            "answers500": errors500,
            "tracebacks": tracebacks,
            "errorLines": whys[:10],
            "stagedWhenDone": len(left),
            "stagedAfterExpiry": len(after),
            "tempsLeft": temps(),
            "rssSpared": rssFigures(spared, args.warm_up, chaosSeconds) if spared else None,
            "rssKilled": {
                str(i + 1): {
                    "samples": len(samples),
                    "firstMiB": samples[0] / MiB,
                    "medianMiB": sorted(samples)[len(samples) // 2] / MiB,
                    "maxMiB": max(samples) / MiB,
                }
                for i, samples in lives.items() if samples
            },
        }
        failures = []
        if wrong:
            failures.append(f"{len(wrong)} files with wrong bytes")
        if failed:
            failures.append(f"{len(failed)} uploads not finished in time")
        if errors500:
            failures.append(f"{errors500} answers 500 in the servers' logs")
        if tracebacks:
            failures.append(f"{tracebacks} tracebacks in the servers' logs")
        if after:
            failures.append(f"{len(after)} staged files left after expiry")
        if chaos.stuck:
            failures.append(f"{len(chaos.stuck)} killed servers never exited")
        results["failures"] = failures
        text = renderChaos(results)
        print(text)
        if args.json:
            with open(args.json, "w") as out:
                json.dump(results, out, indent=1)
                out.write("\n")
            print(f"figures written to {args.json}")
        if args.out:
            with open(args.out, "w") as out:
                out.write(text)
        for failure in failures:
            print(f"FAILED: {failure}", file=sys.stderr)
        return 1 if failures else 0
    finally:
        # Every step, even after one failed: the volume must go.
        stopPrograms(programs)
        for i in range(len(servers)):
            try:
                chaos.stop(i)
            except Exception as e:  # keep tearing down
                print(f"stopping server {i + 1}: {e!r}", file=sys.stderr)
        volume.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base} (servers' logs in {logs}, GlusterFS's in "
                  f"{os.path.join(base, 'gluster', 'log')}, nginx's in {os.path.join(base, 'nginx')})")


if __name__ == "__main__":
    raise SystemExit(main())
