"""
A bounded chaos run (issue 12, item 3): many clients upload through a
fault proxy and nginx to three uploadsvc servers on three mounts of one
GlusterFS volume, while servers are killed (C{kill -9}) and restarted at
random every few seconds. At the end: every file byte-identical, no staged
upload left once expiry ran, and each server's RSS over the run.

Run as root (FUSE) on a machine with glusterfs, nginx::

    python -m bench.chaos --seconds 120 --clients 50 --seed 1

It prints its figures as Markdown (add C{--out FILE} to write them too).
Every wait is bounded; a client gives up after C{--client-limit} seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from tests.support import rawhttp
from tests.support.cluster import writeNginxConf
from tests.support.gluster import GlusterVolume
from tests.support.rawhttp import patternBytes
from tests.support.server import ServerProcess, freePort

MiB = 1024 * 1024


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long servers are killed")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--max-size", type=int, default=4 * MiB)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--client-limit", type=float, default=300.0)
    parser.add_argument("--expire-after", default="10s")
    parser.add_argument("--out", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (bricks, logs)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    base = tempfile.mkdtemp(prefix="uploadsvc-chaos-")
    volume = GlusterVolume(os.path.join(base, "gluster"), 3)
    servers: list[ServerProcess] = []
    programs: list[subprocess.Popen[bytes]] = []
    lines: list[str] = []
    try:
        volume.start()
        for mount in volume.mounts:
            server = ServerProcess(
                os.path.join(mount, "root"), "--expire-after", args.expire_after,
                "--idle-timeout", "10",
            )
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
        rss: dict[int, list[int]] = {i: [] for i in range(3)}
        kills = 0
        slowDeaths = 0
        for client in clients:
            client.start()
        nextKill = began + rng.uniform(2, 5)
        while time.monotonic() - began < args.seconds and any(c.is_alive() for c in clients):
            now = time.monotonic()
            for i, server in enumerate(servers):
                if server.running():
                    try:
                        rss[i].append(server.rss())
                    except (OSError, LookupError):
                        pass
                elif now >= nextKill - 1:
                    server.start()  # down for a second or more
            if now >= nextKill:
                victim = servers[rng.randrange(3)]
                if victim.running():
                    try:
                        victim.kill9()
                    except subprocess.TimeoutExpired:
                        # Still in a file system call SIGKILL cannot cut
                        # short (a FUSE request the mount has not answered).
                        slowDeaths += 1
                        assert victim.process is not None
                        victim.process.wait(120)
                        victim.process = None
                    kills += 1
                nextKill = now + rng.uniform(2, 5)
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
        errors500 = sum(s.logText().count('" 500 ') for s in servers)
        lines += [
            "## Chaos run (issue 12 item 3): three servers on GlusterFS, nginx, fault proxy",
            "",
            f"- Command: `python -m bench.chaos --seconds {args.seconds:g} --clients {args.clients} "
            f"--max-size {args.max_size} --seed {args.seed}`",
            f"- Date: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; CPUs: {os.cpu_count()}",
            f"- Servers killed (`kill -9`) and restarted: {kills} times in {chaosSeconds:.0f} s "
            f"({slowDeaths} took more than 15 s to die, blocked in the mount)",
            f"- Uploads: {len(expected)}; complete and byte-identical: {len(done) - len(wrong)}; "
            f"wrong bytes: {len(wrong)}; not finished in time: {len(failed)}",
            f"- Client requests (HEAD+PUT rounds): {sum(c.attempts for c in clients)}; "
            f"failed rounds (cut, reset, stalled, server killed): {sum(c.errors for c in clients)}",
            f"- Wall time until every client was done: {total:.0f} s "
            f"(new files begun during the first {args.seconds:g} s)",
            "- Why rounds failed: " + ", ".join(
                f"{reason} {count}" for reason, count in sorted(reasons.items(), key=lambda r: -r[1])
            ),
            f"- Answers 500 in the servers' logs: {errors500}",
            f"- Staged files (.data, .json) when clients were done: {len(left)}; after expiry "
            f"(--expire-after {args.expire_after}): {len(after)}; metadata temp files left by "
            f"killed servers (removed after an hour): {temps()}",
        ]
        for i in range(3):
            samples = rss[i]
            if samples:
                lines.append(
                    f"- Server {i + 1} RSS over the run (MiB, each life starts again): first "
                    f"{samples[0] / MiB:.1f}, median {sorted(samples)[len(samples) // 2] / MiB:.1f}, "
                    f"max {max(samples) / MiB:.1f} ({len(samples)} samples)"
                )
        text = "\n".join(lines) + "\n"
        print(text)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        return 0 if not wrong and not failed and not after else 1
    finally:
        # Every step, even after one failed: the volume must go.
        for program in programs:
            program.send_signal(signal.SIGTERM)
            try:
                program.wait(15)
            except subprocess.TimeoutExpired:
                program.kill()
                program.wait(15)
        for server in servers:
            try:
                server.stop()
            except subprocess.TimeoutExpired:
                assert server.process is not None
                server.process.wait(120)
        volume.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")


if __name__ == "__main__":
    raise SystemExit(main())
