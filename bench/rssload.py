"""
Where a long-lived server's memory goes (issue 12, item 3, without
GlusterFS): two C{twistd uploadsvc} servers on one local folder, each
behind its own fault proxy, and chaos-like clients (L{bench.chaos.Client})
whose every request goes to one of the two at random, so uploads are
resumed and taken over across servers. Server 1's RSS is sampled every
half second; with C{--signal-every N} it is also sent C{SIGUSR2} every N
seconds (for a diagnostic hook in the server's environment, C{--env}).

    python -m bench.rssload --seconds 360 --clients 50 --seed 1

It prints the RSS figures of L{bench.chaos.rssFigures} as JSON. Nothing
waits unbounded: the clients stop beginning files at C{--seconds} and each
gives up after C{--client-limit}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.chaos import Client, rssFigures, stopPrograms, waitListening
from tests.support.server import ServerProcess, freePort

MiB = 1024 * 1024


class AnyServerClient(Client):
    """
    A chaos client whose every request goes to one of several ports, drawn
    at random: successive requests of one upload land on different servers.
    """

    ports: list[int] = []

    @property
    def port(self) -> int:  # type: ignore[override]
        return self.rng.choice(self.ports)

    @port.setter
    def port(self, value: int) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=360.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--max-size", type=int, default=4 * MiB)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--client-limit", type=float, default=120.0)
    parser.add_argument("--expire-after", default="10s")
    parser.add_argument("--warm-up", type=float, default=60.0)
    parser.add_argument("--signal-every", type=float, default=0.0,
                        help="send server 1 SIGUSR2 every this many seconds (0: never)")
    parser.add_argument("--env", action="append", default=[],
                        help="NAME=VALUE for server 1's environment (repeatable)")
    parser.add_argument("--samples", default="", help="write (seconds, RSS bytes) samples here as JSON")
    args = parser.parse_args(argv)
    # Stopped with SIGTERM: still stop the servers and proxies (finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    base = tempfile.mkdtemp(prefix="uploadsvc-rssload-")
    root = os.path.join(base, "root")
    env = dict(item.split("=", 1) for item in args.env)
    ServerProcess.startTimeout = 120.0  # a shared, busy machine; tracemalloc slows the start
    servers = [
        ServerProcess(root, "--expire-after", args.expire_after, "--idle-timeout", "10",
                      env=env if i == 0 else None)
        for i in range(args.servers)
    ]
    proxies: list[subprocess.Popen[bytes]] = []
    try:
        for i, server in enumerate(servers):
            server.logPath = os.path.join(base, f"server{i + 1}.log")
            server.start()
        ports = []
        for i, server in enumerate(servers):
            port = freePort()
            proxies.append(subprocess.Popen(
                [sys.executable, "-m", "uploadsvc.testing.faultproxy", "--target",
                 f"127.0.0.1:{server.port}", "--port", str(port), "--cut", "64K-2M",
                 "--probability", "0.3", "--stall", "0.2", "--reset", "0.2",
                 "--seed", str(args.seed + i)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            ))
            waitListening(port)
            ports.append(port)
        AnyServerClient.ports = ports
        began = time.monotonic()
        clients = [
            AnyServerClient(c, 0, began + args.seconds, args.max_size, args.seed * 1000 + c,
                            args.client_limit)
            for c in range(args.clients)
        ]
        for client in clients:
            client.start()
        samples: list[tuple[float, int]] = []
        nextSignal = began + args.signal_every if args.signal_every else float("inf")
        while time.monotonic() - began < args.seconds:
            now = time.monotonic()
            samples.append((now - began, servers[0].rss()))
            if now >= nextSignal:
                os.kill(servers[0].pid, signal.SIGUSR2)
                nextSignal += args.signal_every
            time.sleep(0.5)
        for client in clients:
            client.join(args.client_limit + 30)
        results: dict[str, Any] = rssFigures(samples, args.warm_up, args.seconds)
        results["uploads"] = sum(len(c.files) for c in clients)
        results["done"] = sum(len(c.done) for c in clients)
        results["rounds"] = sum(c.attempts for c in clients)
        results["failedRounds"] = sum(c.errors for c in clients)
        results["answers500"] = sum(s.logText().count('" 500 ') for s in servers)
        results["tracebacks"] = sum(s.logText().count("Traceback (most") for s in servers)
        print(json.dumps(results, indent=1))
        if args.samples:
            with open(args.samples, "w") as out:
                json.dump(samples, out)
        return 0
    finally:
        stopPrograms(proxies)
        for server in servers:
            if server.running():
                server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
