"""
Tests for L{uploadsvc.ops.shutdown}: the drain of requests in flight on a
L{LimitedSite} driven with StringTransports and a Clock, the order in which
the server's services stop, and the C{--shutdown-timeout} option.
"""

from __future__ import annotations

import os
import shlex
import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import H2_ENABLED

from tests.support.server import freePort
from uploadsvc.endpoints import parseEndpoint
from uploadsvc.ops.shutdown import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    FINISH_MARGIN,
    POLL,
    GracefulShutdown,
    StopsFirst,
    stopTimeout,
)
from uploadsvc.tap import Options, makeService
from uploadsvc.workers import WorkerPool

from .test_limits import LimitsTestCase
from .test_workers import Spawner

TIMEOUT = 10


def aborted(transport: Any) -> bool:
    """
    Whether a L{StringTransport} was aborted (not just closed).
    """
    return bool(getattr(transport, "disconnected", False))  # what its abortConnection sets


class Busy:
    """
    A count of uploads being written that the test sets.
    """

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


class DrainTests(LimitsTestCase):
    """
    L{GracefulShutdown.stopService} on a site with connections in every
    state.
    """

    def setUp(self) -> None:
        super().setUp()
        self.site_ = self.site()
        self.busy = Busy()
        self.shutdown = GracefulShutdown(self.site_, self.busy, self.clock, TIMEOUT)
        self.shutdown.startService()

    def idleConnection(self) -> tuple[Any, Any]:
        """
        A kept-alive connection whose one request was answered.
        """
        channel, transport = self.connect(self.site_)
        channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200", transport.value())
        self.assertFalse(transport.disconnecting)
        return channel, transport

    def uploading(self) -> tuple[Any, Any, Any]:
        """
        A connection whose PUT is under way (body half sent).
        """
        channel, transport = self.connect(self.site_)
        channel.dataReceived(b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        return channel, transport, self.resource.requests[-1]

    def test_nothingInFlight(self) -> None:
        """With nothing in flight the stop is done at once, idle connections closed."""
        _, idle = self.idleConnection()
        d = self.shutdown.stopService()
        self.successResultOf(d)
        self.assertTrue(idle.disconnecting)
        self.assertFalse(aborted(idle))

    def test_idleClosedBusyKept(self) -> None:
        """Idle connections close at once; one with a request under way stays open."""
        _, idle = self.idleConnection()
        _, busy, _ = self.uploading()
        d = self.shutdown.stopService()
        self.assertTrue(idle.disconnecting)
        self.assertFalse(busy.disconnecting)
        self.clock.advance(TIMEOUT - POLL)
        self.assertNoResult(d)
        self.assertFalse(busy.disconnecting)

    def test_requestEndsInTime(self) -> None:
        """A request that ends before the deadline is answered, with Connection: close, and the stop is done."""
        channel, transport, request = self.uploading()
        d = self.shutdown.stopService()
        self.clock.advance(TIMEOUT / 2)
        channel.dataReceived(b"defghij")
        request.setHeader(b"content-length", b"0")
        request.setResponseCode(201)
        request.finish()
        self.assertTrue(transport.disconnecting)
        self.assertFalse(aborted(transport))
        self.assertIn(b"201", transport.value())
        self.assertIn(b"connection: close", transport.value().lower())
        self.assertNoResult(d)  # until the next look
        self.clock.advance(POLL)
        self.successResultOf(d)

    def test_writerEndKeepsStopWaiting(self) -> None:
        """The stop waits for the uploads' end path (busy writers) even after the response."""
        channel, transport, request = self.uploading()
        self.busy.count = 1
        d = self.shutdown.stopService()
        request.finish()
        self.clock.advance(POLL * 3)
        self.assertNoResult(d)
        self.busy.count = 0
        self.clock.advance(POLL)
        self.successResultOf(d)

    def test_deadlineEndsTheRest(self) -> None:
        """At the deadline requests left are ended (connection aborted) and their ends awaited."""
        channel, transport, request = self.uploading()
        self.busy.count = 1
        d = self.shutdown.stopService()
        self.clock.advance(TIMEOUT - POLL)
        self.assertFalse(aborted(transport))
        self.clock.advance(POLL * 2)
        self.assertTrue(aborted(transport))
        self.assertNoResult(d)
        channel.connectionLost(Failure(ConnectionError("aborted")))
        self.assertEqual(self.site_.inFlight, 0)
        self.clock.advance(POLL)
        self.assertNoResult(d)  # the upload's end (fsync, metadata) still runs
        self.busy.count = 0
        self.clock.advance(POLL)
        self.successResultOf(d)

    def test_marginGivesUp(self) -> None:
        """Ends that take longer than the margin after the deadline do not hold the exit for ever."""
        self.uploading()
        self.busy.count = 1
        d = self.shutdown.stopService()
        self.clock.advance(TIMEOUT + POLL)
        self.clock.advance(FINISH_MARGIN - POLL * 2)
        self.assertNoResult(d)
        self.clock.advance(POLL * 3)
        self.successResultOf(d)

    def test_zeroTimeout(self) -> None:
        """With a timeout of 0 requests in flight are ended at once."""
        shutdown = GracefulShutdown(self.site_, self.busy, self.clock, 0)
        shutdown.startService()
        channel, transport, _ = self.uploading()
        d = shutdown.stopService()
        self.assertTrue(aborted(transport))
        channel.connectionLost(Failure(ConnectionError("aborted")))
        self.clock.advance(POLL)
        self.successResultOf(d)

    def test_listenersStopFirst(self) -> None:
        """The listeners (its children) stop as soon as the stop begins."""
        listener = Service()
        listener.setServiceParent(self.shutdown)
        self.uploading()
        self.shutdown.stopService()
        self.assertFalse(listener.running)

    def test_newRequestDuringDrain(self) -> None:
        """A request that still arrives during the drain is answered with Connection: close, then closed."""
        self.site_.drain()
        channel, transport = self.connect(self.site_)
        channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"connection: close", transport.value().lower())
        self.assertTrue(transport.disconnecting)


class Recording(Service):
    def __init__(self, name: str, log: list[str], result: Deferred | None = None) -> None:
        self.name = name
        self.log = log
        self.result = result

    def stopService(self) -> Deferred | None:
        super().stopService()
        self.log.append(self.name)
        return self.result


class StopsFirstTests(SynchronousTestCase):
    def test_order(self) -> None:
        """The first child stops, and is waited for, before any other."""
        log: list[str] = []
        held: Deferred = Deferred()
        top = StopsFirst()
        Recording("pool", log).setServiceParent(top)
        first = Recording("drain", log, held)
        first.setServiceParent(top)
        Recording("timer", log).setServiceParent(top)
        top.first = first
        top.startService()
        d = top.stopService()
        self.assertEqual(log, ["drain"])
        self.assertFalse(top.running)
        held.callback(None)
        self.successResultOf(d)
        self.assertEqual(log, ["drain", "timer", "pool"])

    def test_failedFirstStillStopsTheRest(self) -> None:
        """A drain that fails is logged, and the others still stop."""
        log: list[str] = []
        top = StopsFirst()
        Recording("pool", log).setServiceParent(top)
        failing: Deferred = Deferred()
        first = Recording("drain", log, failing)
        first.setServiceParent(top)
        top.first = first
        top.startService()
        d = top.stopService()
        failing.errback(RuntimeError("broken"))
        self.successResultOf(d)
        self.assertEqual(log, ["drain", "pool"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


    def test_othersWaitedForOnlySoLong(self) -> None:
        """
        With a clock, a service whose stop does not end (a look queued
        behind a slow disk's writes) is waited for L{REST_WAIT} seconds,
        then the stop is over, with a warning; one that ends in time ends
        it at once.
        """
        from twisted.internet.task import Clock
        from twisted.logger import globalLogPublisher

        from uploadsvc.ops.shutdown import REST_WAIT

        seen: list[dict[str, object]] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        for endsInTime in (False, True):
            log: list[str] = []
            clock = Clock()
            stuck: Deferred = Deferred()
            top = StopsFirst()
            top.clock = clock
            Recording("look", log, stuck).setServiceParent(top)
            top.startService()
            d = top.stopService()
            if endsInTime:
                stuck.callback(None)
                self.successResultOf(d)
                self.assertEqual(clock.getDelayedCalls(), [])
                continue
            clock.advance(REST_WAIT - 0.01)
            self.assertNoResult(d)
            clock.advance(0.01)
            self.successResultOf(d)
        warned = [e for e in seen if "services still stopping" in str(e.get("log_format"))]
        self.assertEqual(len(warned), 1)


class OptionTests(SynchronousTestCase):
    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_default(self) -> None:
        """--shutdown-timeout defaults to 30 s and is listed in --help."""
        self.assertEqual(self.parse()["shutdown-timeout"], DEFAULT_SHUTDOWN_TIMEOUT)
        self.assertEqual(DEFAULT_SHUTDOWN_TIMEOUT, 30)
        self.assertIn("--shutdown-timeout", str(Options()))

    def test_values(self) -> None:
        """Seconds, fractions and 0 are taken."""
        for text, value in [("0", 0), ("2.5", 2.5), ("120", 120)]:
            self.assertEqual(self.parse("--shutdown-timeout", text)["shutdown-timeout"], value)

    def test_bad(self) -> None:
        """Anything but a number of 0 or more is refused in one line naming the option."""
        for text in ["-1", "soon", "inf", "nan", ""]:
            e = self.assertRaises(UsageError, self.parse, "--shutdown-timeout", text)
            self.assertEqual(str(e), f"--shutdown-timeout {text}: give a number of 0 or more")

    def test_workersGetIt(self) -> None:
        """A worker gets the parent's --shutdown-timeout."""
        options = self.parse("--shutdown-timeout", "7", "--workers", "2")
        self.assertIn("--shutdown-timeout=7.0", options.workerArguments())

    def test_serviceTree(self) -> None:
        """The listeners sit under the drain, which stops first, with the option's timeout."""
        root = self.mktemp()
        reactor = MemoryReactorClock()
        top = makeService(self.parse("--root", root, "--shutdown-timeout", "7"), reactor)
        first = top.first  # type: ignore[attr-defined]
        self.assertIsInstance(first, GracefulShutdown)
        self.assertEqual(first.timeout, 7)
        self.assertEqual(len(list(first)), 1)  # the one --listen
        top.startService()
        self.assertEqual(len(reactor.tcpServers), 1)
        self.successResultOf(top.stopService())

    def test_supervisorWaits(self) -> None:
        """With --workers the parent gives its workers the timeout plus margins before SIGKILL."""
        root = self.mktemp()
        top = makeService(
            self.parse("--root", root, "--workers", "2", "--shutdown-timeout", "7"),
            MemoryReactorClock(),
        )
        [pool] = [s for s in top if isinstance(s, WorkerPool)]
        self.assertEqual(pool._stopTimeout, stopTimeout(7))
        self.assertEqual(stopTimeout(7), 7 + FINISH_MARGIN + 5)


class WorkerStopTests(SynchronousTestCase):
    """
    The C{--workers} parent on SIGTERM: it stops accepting at once and
    gives its workers the graceful stop's time.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.spawn = Spawner()
        self.port = freePort()
        self.pool = WorkerPool(
            self.reactor, 2, [parseEndpoint(f"tcp:{self.port}:interface=127.0.0.1")],
            ["python", "run"], self.spawn, stopTimeout=45,
        )
        self.pool.startService()

    def endAll(self) -> None:
        for i, call in enumerate(self.spawn.calls):
            if not call[0].ended.called:
                self.spawn.end(i, Failure(ProcessDone(0)))

    def test_socketsClosedAtOnce(self) -> None:
        """The parent's listening sockets are closed as the stop begins, while the workers still drain."""
        fds = [call[2][3] for call in self.spawn.calls]
        for fd in fds:
            os.fstat(fd)  # open
        d = self.pool.stopService()
        self.assertNoResult(d)
        for fd in fds:
            self.assertRaises(OSError, os.fstat, fd)
        with socket.socket() as s:
            self.assertRaises(ConnectionRefusedError, s.connect, ("127.0.0.1", self.port))
        self.endAll()
        self.successResultOf(d)

    def test_killAfterStopTimeout(self) -> None:
        """Workers get SIGTERM, and SIGKILL only after the stop timeout."""
        d = self.pool.stopService()
        self.assertEqual([p.signals for p in self.spawn.processes], [["TERM"], ["TERM"]])
        self.reactor.advance(44)
        self.assertEqual([p.signals for p in self.spawn.processes], [["TERM"], ["TERM"]])
        self.reactor.advance(1)
        self.assertEqual([p.signals for p in self.spawn.processes], [["TERM", "KILL"]] * 2)
        self.endAll()
        self.successResultOf(d)


class SystemdUnitTests(SynchronousTestCase):
    def test_stopMatchesTimeout(self) -> None:
        """
        The systemd unit sends SIGTERM to twistd alone (mixed kill mode, so a
        --workers parent forwards it) and waits longer than a graceful stop
        with its --shutdown-timeout may take before SIGKILL.
        """
        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tap-configs", "uploadsvc.service")
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        settings = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
        self.assertEqual((settings["KillSignal"], settings["KillMode"]), ("SIGTERM", "mixed"))
        argv = shlex.split(settings["ExecStart"])
        options = Options()
        options.parseOptions(argv[argv.index("uploadsvc") + 1 :])
        self.assertEqual(options["shutdown-timeout"], DEFAULT_SHUTDOWN_TIMEOUT)
        self.assertGreater(float(settings["TimeoutStopSec"]), stopTimeout(options["shutdown-timeout"]))


class HTTP2DrainTests(LimitsTestCase):
    """
    The drain with HTTP/2 connections, whose streams are not counted per
    connection.
    """

    skip = None if H2_ENABLED else "the h2 package is not installed"

    def setUp(self) -> None:
        super().setUp()
        self.site_ = self.site()
        self.busy = Busy()
        self.shutdown = GracefulShutdown(self.site_, self.busy, self.clock, TIMEOUT)
        self.shutdown.startService()

    def h2(self) -> Any:
        from .test_streaming_h2 import H2Client, NetworkTransport

        transport = NetworkTransport()
        transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        guard = self.site_.buildProtocol(self.addr())
        guard.makeConnection(transport)
        client = H2Client(guard, transport, self.clock)
        client.exchange()
        return client

    def addr(self) -> Any:
        from .test_limits import client

        return client()

    def test_streamFinishesThenClosed(self) -> None:
        """
        An HTTP/2 connection with a stream under way stays open during the
        drain; the stream's response has no Connection field (HTTP/2 forbids
        it), and once nothing is in flight the connection is closed.
        """
        import h2.events

        client = self.h2()
        stream = client.request(b"PUT", b"/u", (b"content-length", b"10"))
        client.send(stream, b"abc")
        d = self.shutdown.stopService()
        self.assertFalse(client.transport.disconnecting)
        client.send(stream, b"defghij", end=True)
        request = self.resource.requests[-1]
        request.setResponseCode(201)
        request.finish()
        events = client.exchange()
        [response] = client.of(h2.events.ResponseReceived, stream, events)
        self.assertEqual(dict(response.headers)[b":status"], b"201")
        self.assertNotIn(b"connection", dict(response.headers))
        self.assertFalse(client.of(h2.events.StreamReset, stream, events))
        self.clock.advance(POLL)
        self.successResultOf(d)
        self.assertTrue(client.transport.disconnecting)

    def test_goAwayBeforeClose(self) -> None:
        """
        When the drain closes an HTTP/2 connection (nothing in flight on it
        any more), a GOAWAY with NO_ERROR goes out first, naming the last
        stream served: the client knows that nothing after it was, and
        opens no new stream there.
        """
        import h2.events
        from h2.errors import ErrorCodes

        client = self.h2()
        first = client.request(b"GET", b"/a", end=True)
        stream = client.request(b"PUT", b"/u", (b"content-length", b"3"))
        d = self.shutdown.stopService()
        # Not while a stream is in flight (h2-based clients would stop it).
        self.assertFalse([e for e in client.events if isinstance(e, h2.events.ConnectionTerminated)])
        client.send(stream, b"abc", end=True)
        request = self.resource.requests[-1]
        request.setResponseCode(201)
        request.finish()
        client.exchange()
        self.clock.advance(POLL)
        self.successResultOf(d)
        events = client.exchange()
        [goAway] = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        self.assertEqual(goAway.error_code, ErrorCodes.NO_ERROR)
        self.assertEqual(goAway.last_stream_id, stream)
        self.assertGreater(stream, first)
        self.assertTrue(client.transport.disconnecting)

    def test_newStreamDuringDrain(self) -> None:
        """A stream opened during the drain is answered without a Connection field."""
        import h2.events

        client = self.h2()
        self.site_.drain()
        stream = client.request(b"GET", b"/a", end=True)
        [response] = client.of(h2.events.ResponseReceived, stream)
        self.assertEqual(dict(response.headers)[b":status"], b"200")
        self.assertNotIn(b"connection", dict(response.headers))
