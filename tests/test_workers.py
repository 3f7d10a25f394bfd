"""
C{--workers N}: the supervisor in memory (spawn, restart with back-off,
shutdown), and real worker processes behind one port (both serve, a killed
worker comes back, takeover across workers).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import re
import signal
import socket
import ssl
import time
from typing import Any

from twisted.internet.error import CannotListenError, ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.python import log
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.test_e2e_takeover import takeOver
from tests.test_e2e_tls import makePKI
from uploadsvc.endpoints import parseEndpoint
from uploadsvc.tap import Options, makeService
from tests.support.rawhttp import exchange, patternBytes
from tests.support.server import freePort, startServer
from uploadsvc.workers import (
    HEALTHY_AFTER,
    RESTART_DELAY,
    STOP_TIMEOUT,
    WorkerPool,
    workerCount,
)


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class Spawner:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, list[str], dict[int, Any]]] = []
        self.processes: list[FakeProcess] = []

    def __call__(self, protocol: Any, executable: str, argv: list[str], env: Any, childFDs: Any) -> FakeProcess:
        self.calls.append((protocol, argv, childFDs))
        process = FakeProcess(1000 + len(self.processes))
        self.processes.append(process)
        return process

    def end(self, index: int, reason: Failure) -> None:
        self.calls[index][0].processEnded(reason)


class WorkerPoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.spawn = Spawner()
        self.port = port = freePort()
        self.pool = WorkerPool(
            self.reactor,
            2,
            [parseEndpoint(f"tcp:{port}:interface=127.0.0.1")],
            ["python", "run"],
            self.spawn,
        )
        self.pool.startService()
        self.addCleanup(self._stop)

    def _stop(self) -> None:
        if self.pool.running:
            d = self.pool.stopService()
            for i, _ in enumerate(self.spawn.calls):
                if not self.spawn.calls[i][0].ended.called:
                    self.spawn.end(i, Failure(ProcessDone(0)))
            self.successResultOf(d)

    def test_startsWorkersWithListeners(self) -> None:
        """N workers start, each told which inherited descriptor to serve."""
        self.assertEqual(len(self.spawn.calls), 2)
        for _, argv, childFDs in self.spawn.calls:
            self.assertEqual(argv[:2], ["python", "run"])
            self.assertEqual(argv[2], "--inherit")
            self.assertTrue(argv[3].startswith("3=tcp:"))
            self.assertIn(3, childFDs)
        # One SO_REUSEPORT socket per worker: different descriptors.
        self.assertNotEqual(self.spawn.calls[0][2][3], self.spawn.calls[1][2][3])

    def test_restartsDeadWorker(self) -> None:
        """A worker that dies is started again after the restart delay."""
        self.spawn.end(0, Failure(ProcessTerminated(signal=9)))
        self.assertEqual(len(self.spawn.calls), 2)
        self.reactor.advance(RESTART_DELAY)
        self.assertEqual(len(self.spawn.calls), 3)
        self.assertEqual(sorted(self.pool.pids()), [1001, 1002])

    def test_backOffWhileDyingYoung(self) -> None:
        """Workers that keep dying young are restarted ever more slowly; a healthy one resets the delay."""
        self.spawn.end(0, Failure(ProcessTerminated(signal=9)))
        self.reactor.advance(RESTART_DELAY)
        self.spawn.end(2, Failure(ProcessTerminated(signal=9)))
        self.reactor.advance(RESTART_DELAY)
        self.assertEqual(len(self.spawn.calls), 3)
        self.reactor.advance(RESTART_DELAY)
        self.assertEqual(len(self.spawn.calls), 4)
        self.reactor.advance(HEALTHY_AFTER)
        self.spawn.end(3, Failure(ProcessTerminated(signal=9)))
        self.reactor.advance(RESTART_DELAY)
        self.assertEqual(len(self.spawn.calls), 5)

    def accepted(self, call: int) -> int:
        """
        How many connections are waiting to be accepted on the listening
        socket that spawn number C{call} was given (accepting them).
        """
        sock = socket.socket(fileno=os.dup(self.spawn.calls[call][2][3]))
        sock.setblocking(False)
        count = 0
        with sock:
            while True:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    return count
                conn.close()
                count += 1

    def connect(self, count: int) -> None:
        """
        Open C{count} connections to the pool's port (closed in cleanup).
        """
        for _ in range(count):
            client = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            self.addCleanup(client.close)

    def test_deadWorkersSocketClosed(self) -> None:
        """While a worker is down, every new connection goes to the running worker (its own socket no longer takes a share)."""
        self.spawn.end(0, Failure(ProcessTerminated(signal=9)))
        self.connect(40)
        self.assertEqual(self.accepted(1), 40)

    def test_replacementGetsFreshSocket(self) -> None:
        """A restarted worker gets a socket of its own again and takes its share of new connections."""
        self.spawn.end(0, Failure(ProcessTerminated(signal=9)))
        self.reactor.advance(RESTART_DELAY)
        self.assertEqual(len(self.spawn.calls), 3)
        self.connect(40)
        shares = [self.accepted(2), self.accepted(1)]
        self.assertEqual(sum(shares), 40)
        self.assertTrue(all(shares), shares)

    def test_lastSocketKeptWhileAllDown(self) -> None:
        """With every worker down the port stays bound; its waiting connections go to the first worker back."""
        self.spawn.end(0, Failure(ProcessTerminated(signal=9)))
        self.spawn.end(1, Failure(ProcessTerminated(signal=9)))
        self.connect(3)
        self.reactor.advance(RESTART_DELAY)
        self.assertEqual(len(self.spawn.calls), 3)
        self.assertEqual(self.accepted(2), 3)

    def test_sharesWhenPortCannotBeBoundAgain(self) -> None:
        """If the port cannot be bound again (privileges dropped), the replacement shares a running worker's socket."""

        def refuse(offset: int) -> socket.socket:
            raise CannotListenError("127.0.0.1", self.port, OSError(errno.EACCES, "denied"))

        self.pool._bindAgain = refuse  # type: ignore[method-assign]
        self.spawn.end(0, Failure(ProcessTerminated(signal=9)))
        self.reactor.advance(RESTART_DELAY)
        self.assertEqual(len(self.spawn.calls), 3)
        self.connect(5)
        self.assertEqual(self.accepted(2), 5)

    def test_signalsPassedOn(self) -> None:
        """SIGHUP for the parent goes to every worker."""
        self.pool.signalAll("HUP")
        self.assertEqual([p.signals for p in self.spawn.processes], [["HUP"], ["HUP"]])

    def test_stopTerminatesAndWaits(self) -> None:
        """Stopping sends SIGTERM, waits for every worker, restarts none, and kills stragglers."""
        d = self.pool.stopService()
        self.assertEqual([p.signals for p in self.spawn.processes], [["TERM"], ["TERM"]])
        self.spawn.end(0, Failure(ProcessDone(0)))
        self.assertNoResult(d)
        self.reactor.advance(STOP_TIMEOUT)
        self.assertEqual(self.spawn.processes[1].signals, ["TERM", "KILL"])
        self.spawn.end(1, Failure(ProcessTerminated(signal=9)))
        self.successResultOf(d)
        self.reactor.advance(RESTART_DELAY * 100)
        self.assertEqual(len(self.spawn.calls), 2)


class BindTests(SynchronousTestCase):
    """
    The supervisor binds each worker's socket as Twisted would listen on
    the same endpoint.
    """

    def listenOn(self, description: str) -> socket.socket:
        """
        Start a pool of 2 on C{description} (stopped in cleanup) and return
        the first worker's listening socket.
        """
        spawn = Spawner()
        pool = WorkerPool(MemoryReactorClock(), 2, [parseEndpoint(description)], ["python"], spawn)
        pool.startService()

        def stop() -> None:
            d = pool.stopService()
            for i in range(len(spawn.calls)):
                spawn.end(i, Failure(ProcessDone(0)))
            self.successResultOf(d)

        self.addCleanup(stop)
        sock = socket.socket(fileno=os.dup(spawn.calls[0][2][3]))
        self.addCleanup(sock.close)
        return sock

    def test_ipv6InterfaceOfTcp(self) -> None:
        """A tcp: endpoint on an IPv6 interface gets an IPv6 socket, as Twisted's listenTCP gives it."""
        sock = self.listenOn("tcp:0:interface=\\:\\:1")
        self.assertEqual(sock.family, socket.AF_INET6)
        self.assertEqual(sock.getsockname()[0], "::1")

    def test_ipv4InterfaceOfTcp6(self) -> None:
        """A tcp6: endpoint on an IPv4 interface gets an IPv4 socket, as Twisted's listenTCP gives it."""
        sock = self.listenOn("tcp6:0:interface=127.0.0.1")
        self.assertEqual(sock.family, socket.AF_INET)
        self.assertEqual(sock.getsockname()[0], "127.0.0.1")

    def test_unixMode(self) -> None:
        """A unix: endpoint gets its mode; the socket file is bound where it says."""
        path = os.path.abspath(self.mktemp())
        sock = self.listenOn(f"unix:{path}:mode=600")
        self.assertEqual(sock.family, socket.AF_UNIX)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_boundPortInUse(self) -> None:
        """A port in use is a CannotListenError that names the interface and port."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            pool = WorkerPool(
                MemoryReactorClock(), 2, [parseEndpoint(f"tcp:{port}:interface=127.0.0.1")],
                ["python"], Spawner(),
            )
            error = self.assertRaises(CannotListenError, pool.privilegedStartService)
        self.assertEqual((error.interface, error.port), ("127.0.0.1", port))


class OptionsTests(SynchronousTestCase):
    def test_auto(self) -> None:
        """--workers auto means one per core."""
        self.assertEqual(workerCount("auto"), os.cpu_count())
        self.assertRaises(ValueError, workerCount, "0")

    def test_workerArguments(self) -> None:
        """A worker gets the parent's options but --workers, --listen and --inherit."""
        options = Options()
        options.parseOptions(
            ["--root", "/srv/u", "--workers", "3", "--no-fsync", "--listen", "tcp:9:interface=127.0.0.1",
             "--max-upload-size", "1000", "--min-free", "1G", "--restart-delay", "3"]
        )
        args = options.workerArguments()
        self.assertIn("--root=/srv/u", args)
        self.assertIn("--no-fsync", args)
        self.assertIn("--max-upload-size=1000", args)
        self.assertIn("--min-free=1073741824", args)
        self.assertFalse([a for a in args if a.startswith("--read-size")])  # the default
        self.assertFalse(
            [a for a in args if a.startswith(("--workers", "--listen", "--inherit", "--restart-delay"))]
        )

    def test_parentServesNothing(self) -> None:
        """With --workers 2 the service is only the supervisor; with --inherit a worker adopts its socket."""
        reactor = MemoryReactorClock()
        options = Options()
        options.parseOptions(["--root", self.mktemp(), "--workers", "2"])
        top = makeService(options, reactor)
        self.assertEqual([type(s).__name__ for s in top], ["WorkerPool"])
        options = Options()
        options.parseOptions(["--root", self.mktemp(), "--inherit", "7=tcp:8080:interface=127.0.0.1"])
        top = makeService(options, reactor)
        top.startService()
        self.addCleanup(top.stopService)
        self.assertEqual(reactor.adoptedPorts[0][0], 7)
        self.assertEqual(reactor.tcpServers, [])


def children(pid: int) -> list[int]:
    found: list[int] = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        with open(path) as f:
            found += [int(p) for p in f.read().split()]
    return sorted(found)


def cpuTicks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class RealWorkersTests(TestCase):
    """
    A real twistd uploadsvc --workers 2 on a loopback port.
    """

    timeout = 120

    def startWorkers(self) -> Any:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        server = startServer(self, os.path.join(base, "root"), "--workers", "2", "--idle-timeout", "300")
        deadline = time.monotonic() + 20
        while len(children(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(len(children(server.pid)), 2)
        return server

    def upload(self, port: int, path: str, seed: int) -> None:
        data = patternBytes(seed, 0, 64 * 1024)
        _, answer = exchange(port, "PUT", path, [("Content-Length", str(len(data)))], data, timeout=30)
        self.assertEqual(answer.status, 201, answer.raw)

    def uploadRetryingReset(self, port: int, path: str, seed: int, tries: int = 3) -> None:
        """
        L{upload}, again (at most C{tries} times in all) when the connection
        is reset: what a client sees whose connection the kernel queued on a
        killed worker's socket before the supervisor closed it (see
        L{uploadsvc.workers}).
        """
        for attempt in range(tries):
            try:
                self.upload(port, path, seed)
                return
            except (ConnectionResetError, BrokenPipeError):
                if attempt == tries - 1:
                    raise

    def test_bothWorkersServe(self) -> None:
        """Uploads from many connections are spread over both workers."""
        server = self.startWorkers()
        pids = children(server.pid)
        before = [cpuTicks(p) for p in pids]
        for i in range(300):
            self.upload(server.port, f"/spread/{i}.bin", i)
        used = [cpuTicks(p) - b for p, b in zip(pids, before)]
        self.assertTrue(all(u > 0 for u in used), used)

    def test_killedWorkerComesBack(self) -> None:
        """A worker killed with SIGKILL is replaced, and uploads keep working throughout (one queued on its socket is reset, and works when tried again)."""
        server = self.startWorkers()
        victim = children(server.pid)[0]
        os.kill(victim, signal.SIGKILL)
        for i in range(20):
            self.uploadRetryingReset(server.port, f"/after/{i}.bin", 100 + i)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = children(server.pid)
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.05)
        now = children(server.pid)
        self.assertEqual(len(now), 2)
        self.assertNotIn(victim, now)
        # The replacement listens on a socket of its own again.
        self.assertEqual(listeners(server.port), 2)
        for i in range(20):
            self.upload(server.port, f"/again/{i}.bin", 200 + i)

    def test_deadWorkersShareGoesToTheLiving(self) -> None:
        """While a killed worker is down, every new connection is served by the other one: its socket takes no share."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        # The dead worker stays down for the whole test (its restart is
        # 10 minutes away); the server is stopped in cleanup.
        server = startServer(
            self, os.path.join(base, "root"), "--workers", "2", "--restart-delay", "600",
        )
        started = waitForLog(server, _STARTED, 2)
        pids = {int(m.group(1)): int(m.group(2)) for m in started}
        self.assertEqual(sorted(pids.values()), children(server.pid))
        os.kill(pids[0], signal.SIGKILL)
        waitForLog(server, re.compile(r"worker 0 ended"), 1)
        self.assertEqual(children(server.pid), [pids[1]])
        self.assertEqual(listeners(server.port), 1)
        latencies = []
        for i in range(40):
            began = time.monotonic()
            _, answer = exchange(server.port, "HEAD", f"/down/{i}.bin", timeout=20)
            latencies.append(time.monotonic() - began)
            self.assertEqual(answer.status, 404, answer.raw)
        self.assertEqual(children(server.pid), [pids[1]])  # still down throughout
        log.msg(f"40 HEADs while a worker was down: slowest {max(latencies):.3f} s")

    def test_takeoverAcrossWorkers(self) -> None:
        """A resume on the same port is served within 2 s whichever worker holds the stalled request."""
        server = self.startWorkers()
        for attempt in range(3):
            waited, raw, data = takeOver(self, server.port, server.port, f"/tk/{attempt}.bin", 2.0)
            with open(os.path.join(server.root, "tk", f"{attempt}.bin"), "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).digest(), hashlib.sha256(data).digest())

    def test_stopsCleanly(self) -> None:
        """SIGTERM to the parent ends the workers too."""
        server = self.startWorkers()
        workers = children(server.pid)
        server.terminate()
        deadline = time.monotonic() + 30
        while any(os.path.exists(f"/proc/{p}") for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in workers:
            if os.path.exists(f"/proc/{p}/stat"):
                with open(f"/proc/{p}/stat") as f:
                    self.assertIn(") Z", f.read())  # reaped or a zombie of a gone parent
        with socket.socket() as s:
            self.assertNotEqual(s.connect_ex(("127.0.0.1", server.port)), 0)

    def test_tlsWorkers(self) -> None:
        """Workers serve an ssl: endpoint with its certificate and ALPN, from the settings parsed once."""
        base = os.path.abspath(self.mktemp())
        pki = makePKI(os.path.join(base, "pki"))
        server = startServer(self, os.path.join(base, "root"), "--workers", "2", listen=pki.listen())
        context = ssl.create_default_context(cafile=pki.caPath)
        context.set_alpn_protocols(["http/1.1"])
        for i in range(10):
            with socket.create_connection(("127.0.0.1", server.port), timeout=20) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    self.assertEqual(tls.selected_alpn_protocol(), "http/1.1")
                    tls.sendall(
                        f"HEAD /tls/{i}.bin HTTP/1.1\r\nHost: localhost\r\n"
                        "Connection: close\r\n\r\n".encode()
                    )
                    answer = b""
                    while b"\r\n" not in answer and len(answer) < 4096:
                        chunk = tls.recv(4096)
                        if not chunk:
                            break
                        answer += chunk
            self.assertTrue(answer.startswith(b"HTTP/1.1 404 "), answer)
        self.assertEqual(len(children(server.pid)), 2)

    def test_workersEndWithSupervisor(self) -> None:
        """When the supervisor dies by SIGKILL, its workers end too: no orphan keeps serving the port."""
        server = self.startWorkers()
        workers = children(server.pid)
        server.kill9()
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual([p for p in workers if _alive(p)], [])


#: The supervisor's log line for a started worker: its index and pid.
_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def waitForLog(server: Any, pattern: re.Pattern[str], count: int) -> list[re.Match[str]]:
    """
    Wait (at most 20 s) until C{server}'s log has C{count} matches of
    C{pattern}, and return them.
    """
    deadline = time.monotonic() + 20
    while True:
        found = list(pattern.finditer(server.logText()))
        if len(found) >= count or time.monotonic() > deadline:
            if len(found) < count:
                raise AssertionError(f"{pattern.pattern!r} not {count} times in:\n{server.logTail()}")
            return found
        time.sleep(0.05)


def listeners(port: int) -> int:
    """
    How many sockets listen on TCP C{port} (IPv4), from the kernel's table:
    one per running worker when each has its own C{SO_REUSEPORT} socket.
    """
    count = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # LISTEN
                count += 1
    return count


def _alive(pid: int) -> bool:
    """
    Whether C{pid} runs (a zombie waiting for its reaper does not).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return ") Z" not in f.read()
    except FileNotFoundError:
        return False

