"""
Tests for the zero-copy body path (L{uploadsvc.web.streaming.splice}): a
real loopback TCP connection under Twisted's own C{tcp.Server} transport, a
reactor that is a L{MemoryReactorClock} (the test calls C{doRead} where the
reactor would: after sending, so the bytes are there), a real staged file,
and a disk pool whose calls the test completes by hand.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_streaming import BodyResource
from uploadsvc.sink import FileSink
from uploadsvc.storage.staged import StagedFile
from uploadsvc.testing.runners import ManualRunner
from uploadsvc.web.receiver import COMPLETE, LOST, UploadReceiver
from uploadsvc.web.streaming import StreamingSite, abortRequest
from uploadsvc.web.streaming.splice import BodySplicer, PipeBudget
from uploadsvc.web.streaming.zerocopyplan import MIN_SPLICED_BODY, PUMP_SLICE

TIMEOUT = 60
BODY = MIN_SPLICED_BODY * 3


class _Store:
    """
    What a L{StagedFile} asks of its store for writing: no throttle.
    """

    throttle = None


class _Port:
    _realPortNumber = 0


def _noLimit() -> Any:
    raise AssertionError("these bodies have no limit")


def _tcpPair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setblocking(False)
    client.setblocking(False)
    return server, client


def _put(length: int, path: bytes = b"/a") -> bytes:
    return b"PUT %s HTTP/1.1\r\nHost: e\r\nContent-Length: %d\r\n\r\n" % (path, length)


class SpliceTestCase(SynchronousTestCase):
    """
    One connection of a L{StreamingSite} over real loopback TCP; every body
    goes to a L{FileSink} over a real staged file, answered 204 once written.
    """

    zeroCopy = "auto"
    high = 64 * 1024 * 1024
    low = 1024 * 1024
    overlap = 0
    maxPumps = 0

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.runner = ManualRunner()
        self.sinks: list[FileSink] = []
        self.staged: list[StagedFile] = []
        self.outcomes: list[object] = []
        self.resource = BodyResource(self._receiver)
        site = StreamingSite(self.resource, timeout=TIMEOUT, reactor=self.reactor, zeroCopy=self.zeroCopy)
        self.protocol = site.buildProtocol(None)
        serverSocket, self.client = _tcpPair()
        self.addCleanup(self.client.close)
        self.transport = tcp.Server(serverSocket, self.protocol, ("127.0.0.1", 1), _Port(), 1, self.reactor)  # type: ignore[arg-type]
        self.protocol.makeConnection(self.transport)
        self.channel = self.protocol._channel
        self.channel.pipeBudget = self.budget = PipeBudget(16)
        # (The reactor's own splicing; PumpTests hand bodies to pumps.)
        self.channel.pumpBudget = self.pumps = PipeBudget(self.maxPumps)
        self.addCleanup(self._close)

    def _close(self) -> None:
        if self.transport.connected:
            self.transport.connectionLost(Failure(ConnectionDone()))
        for staged in self.staged:
            os.close(staged.fd)

    def _receiver(self, request: Any) -> UploadReceiver:
        fd = os.open(self.mktemp(), os.O_RDWR | os.O_CREAT, 0o600)
        staged = StagedFile(_Store(), "k", fd, 0, hashlib.sha256(), {}, False)  # type: ignore[arg-type]
        self.staged.append(staged)

        def makeSink(producer: Any) -> FileSink:
            sink = FileSink(
                self.runner, staged.writeChunks, producer, self.high, self.low,
                staged.hashChunks, spliceTarget=staged,
            )
            self.sinks.append(sink)
            return sink

        receiver = UploadReceiver(makeSink, self.overlap, None, _noLimit)
        receiver.ended.addCallback(self._ended, request, receiver)
        return receiver

    def _ended(self, outcome: object, request: Any, receiver: UploadReceiver) -> None:
        self.outcomes.append(outcome)

        def answer(_: object) -> None:
            request.setResponseCode(204)
            request.finish()

        if outcome == COMPLETE:
            receiver.sink.drain().addCallback(answer)  # type: ignore[union-attr]

    # -- driving the connection like the reactor would -----------------------

    def send(self, data: bytes) -> int:
        """
        Send what the client socket takes of C{data} now.
        """
        try:
            return self.client.send(data)
        except BlockingIOError:
            return 0

    def read(self) -> None:
        """
        The reactor's turn for a readable socket: C{doRead}, and the
        connection's end if it says so.
        """
        why = self.transport.doRead()
        if why:
            self.transport.connectionLost(Failure(why))

    def reading(self) -> bool:
        return self.transport in self.reactor.getReaders()

    def answers(self) -> bytes:
        for _ in range(100):
            if self.transport not in self.reactor.getWriters():
                break
            self.transport.doWrite()
        try:
            return self.client.recv(65536)
        except BlockingIOError:
            return b""

    def sendBody(self, body: bytes, maxTurns: int = 10_000) -> None:
        """
        Send all of C{body}, reading while the server reads and completing
        the disk pool's calls when it does not.
        """
        sent = 0
        for _ in range(maxTurns):
            if sent == len(body):
                return
            sent += self.send(body[sent:sent + 256 * 1024])
            if self.reading():
                self.read()
            else:
                self.runner.completeAll()
        self.fail(f"sent only {sent} of {len(body)} bytes")

    def settle(self, outcomes: int, maxTurns: int = 1000) -> None:
        """
        Read what was sent and complete the disk pool's calls until
        C{outcomes} bodies have ended (and their writes are done).
        """
        for _ in range(maxTurns):
            if len(self.outcomes) >= outcomes and not self.runner.pending:
                return
            if self.reading() and self.transport.connected:
                self.read()
            self.runner.completeAll()
        self.fail(f"{len(self.outcomes)} bodies ended, not {outcomes}")

    def splicer(self) -> BodySplicer:
        splicer = self.channel._splicer
        self.assertIsInstance(splicer, BodySplicer)
        return splicer  # type: ignore[no-any-return]

    def burst(self) -> tuple[bytes, BodySplicer]:
        """
        Send the headers of a L{BODY}-long PUT and its first 256 KiB, read
        as the reactor would (a pump may start); the body and its splicer.
        """
        body = os.urandom(BODY)
        self.send(_put(len(body)))
        self.read()
        splicer = self.splicer()
        self.send(body[:256 * 1024])
        self.read()
        return body, splicer

    def assertStoredWhole(self, body: bytes) -> None:
        """
        The one body ended complete, the staged file holds exactly it, and
        the running sha-256 is its digest.
        """
        self.assertEqual(self.outcomes, [COMPLETE])
        self.assertEqual(os.pread(self.staged[0].fd, BODY + 1, 0), body)
        self.assertEqual(self.staged[0].hasher.digest(), hashlib.sha256(body).digest())


class SplicedBodyTests(SpliceTestCase):
    """
    A plain HTTP/1.1 body with Content-Length goes socket → pipe → file.
    """

    def test_splicedAndHashed(self) -> None:
        """The body past what came with the headers is spliced, never reaching the receiver as bytes; the file and its sha-256 are the body's."""
        body = os.urandom(BODY)
        self.send(_put(len(body)) + body[:1000])
        self.read()
        splicer = self.splicer()
        self.assertEqual(self.sinks[0].held, 1000)  # the early bytes, as bytes
        self.sendBody(body[1000:])
        self.settle(1)
        self.assertEqual(splicer.spliced, len(body) - 1000)
        self.assertEqual(self.outcomes, [COMPLETE])
        self.assertIn(b"HTTP/1.1 204", self.answers())
        staged = self.staged[0]
        self.assertEqual(os.pread(staged.fd, len(body) + 1, 0), body)
        self.assertEqual(staged.hasher.digest(), hashlib.sha256(body).digest())
        self.assertIsNone(self.channel._splicer)
        self.assertNotIn("doRead", self.transport.__dict__)
        self.assertEqual(self.budget.open, 0)  # the pipe was given back

    def test_keepAliveNextRequest(self) -> None:
        """After a spliced body the connection's next request is read the ordinary way."""
        first, second = os.urandom(BODY), os.urandom(BODY)
        self.send(_put(len(first)))
        self.read()
        self.sendBody(first)
        self.settle(1)
        self.assertIn(b"HTTP/1.1 204", self.answers())
        self.send(_put(len(second), b"/b"))
        self.read()
        self.splicer()
        self.sendBody(second)
        self.settle(2)
        self.assertEqual(self.outcomes, [COMPLETE, COMPLETE])
        self.assertIn(b"HTTP/1.1 204", self.answers())
        self.assertEqual(os.pread(self.staged[1].fd, BODY + 1, 0), second)
        self.assertEqual(self.staged[1].hasher.digest(), hashlib.sha256(second).digest())

    def test_bodyLongerThanLength(self) -> None:
        """Bytes past Content-Length are never spliced: they are parsed as the next request."""
        body = os.urandom(BODY)
        self.send(_put(len(body)))
        self.read()
        self.sendBody(body + b"GET /x HTTP/1.1\r\nHost: e\r\n\r\n")
        self.settle(1)
        self.read()
        self.assertEqual(os.fstat(self.staged[0].fd).st_size, len(body))
        answers = b""
        for _ in range(10):
            answers += self.answers()
        self.assertIn(b"HTTP/1.1 204", answers)
        self.assertIn(b"HTTP/1.1 200", answers)  # the GET after it
        self.assertTrue(answers.endswith(b"ok"))

    def test_connectionLostMidBody(self) -> None:
        """A client that leaves mid-body ends it LOST, and every byte it sent is written."""
        body = os.urandom(BODY)
        self.send(_put(len(body)) + body[:10])
        self.read()
        sent = BODY // 2
        self.sendBody(body[10:sent])
        splicer = self.splicer()
        self.client.close()
        self.settle(1)
        self.assertEqual(self.outcomes, [LOST])
        self.assertIsNone(self.channel._splicer)
        self.assertEqual(os.pread(self.staged[0].fd, BODY, 0), body[:sent])
        self.assertEqual(self.staged[0].hasher.digest(), hashlib.sha256(body[:sent]).digest())
        self.assertEqual(splicer.pipe.readFd, -1)  # closed once drained
        self.assertEqual(self.budget.open, 0)  # and given back

    def test_takeover(self) -> None:
        """A request taken over mid-body is aborted through its transport; its bytes stay written."""
        body = os.urandom(BODY)
        self.send(_put(len(body)))
        self.read()
        self.sendBody(body[:MIN_SPLICED_BODY])
        splicer = self.splicer()
        abortRequest(self.resource.requests[0])
        self.reactor.advance(0)  # (Twisted ends an aborted connection on the next turn)
        self.assertEqual(self.outcomes, [LOST])
        self.assertFalse(self.reading())
        self.assertIsNone(self.channel._splicer)
        self.runner.completeAll()
        self.runner.completeAll()
        # (what the server read before the abort; the rest never left the socket)
        self.assertGreater(splicer.spliced, 0)
        self.assertEqual(os.pread(self.staged[0].fd, BODY, 0), body[:splicer.spliced])

    def test_idleTimeout(self) -> None:
        """Spliced bytes reset the idle timeout; a client silent for the whole timeout is disconnected."""
        body = os.urandom(BODY)
        self.send(_put(len(body)))
        self.read()
        self.reactor.advance(TIMEOUT - 1)
        self.sendBody(body[:1000])
        self.reactor.advance(TIMEOUT - 1)
        self.assertFalse(self.transport.disconnecting)
        self.runner.completeAll()
        self.runner.completeAll()
        self.reactor.advance(2)
        self.assertTrue(self.transport.disconnected or self.transport.disconnecting)


class SpliceFlowControlTests(SpliceTestCase):
    """
    A slow disk still slows the sender on the zero-copy path.
    """

    high = 256 * 1024
    low = 64 * 1024

    def test_slowWriteLaneStopsReading(self) -> None:
        """Spliced bytes the write lane has not written count against the high-water mark: reading stops, and resumes once written."""
        body = os.urandom(BODY)
        self.send(_put(len(body)))
        self.read()
        self.splicer()
        sent = 0
        for _ in range(1000):
            if not self.reading():
                break
            sent += self.send(body[sent:sent + 64 * 1024])
            self.read()
        self.assertFalse(self.reading())
        self.assertGreaterEqual(self.sinks[0].held, self.high)
        self.runner.completeAll()
        self.runner.completeAll()
        self.assertTrue(self.reading())

    def test_fullPipeStopsReading(self) -> None:
        """With the high-water mark out of reach, a pipe the write lane has not emptied stops reading until it drains."""
        body = os.urandom(4 * 1024 * 1024)
        self.send(_put(len(body)))
        self.read()
        self.sinks[0]._high = 1 << 40  # (the mark out of reach)
        splicer = self.splicer()
        sent = 0
        for _ in range(10_000):
            if not self.reading():
                break
            sent += self.send(body[sent:sent + 64 * 1024])
            self.read()
        self.assertFalse(self.reading())
        self.assertIn("pipe", self.channel._bodyPauses)
        self.assertGreater(splicer.spliced, 0)
        self.runner.completeAll()
        self.assertTrue(self.reading())
        self.assertNotIn("pipe", self.channel._bodyPauses)


class FallbackTests(SpliceTestCase):
    """
    Bodies that must be seen in Python take the ordinary path.
    """

    zeroCopy = "off"

    def test_off(self) -> None:
        """With --zero-copy off every byte is read by Twisted."""
        body = os.urandom(BODY)
        self.send(_put(len(body)))
        self.read()
        self.assertIsNone(self.channel._splicer)
        self.sendBody(body)
        self.settle(1)
        self.assertEqual(self.outcomes, [COMPLETE])
        self.assertEqual(os.pread(self.staged[0].fd, BODY + 1, 0), body)

    def test_chunked(self) -> None:
        """A chunked body is never spliced (its framing must be parsed)."""
        self.zeroCopy = "auto"
        self.channel.zeroCopy = "auto"
        self.send(b"PUT /a HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.read()
        self.assertIsNone(self.channel._splicer)

    def test_noPipe(self) -> None:
        """A body that gets no pipe (no descriptor left) is read by Twisted, whole."""
        self.channel.zeroCopy = "auto"

        def noPipe(budget: Any) -> Any:
            raise OSError(errno.EMFILE, "Too many open files")

        self.channel.makePipe = noPipe
        body = os.urandom(BODY)
        self.send(_put(len(body)))
        self.read()
        self.assertIsNone(self.channel._splicer)
        self.sendBody(body)
        self.settle(1)
        self.assertEqual(self.outcomes, [COMPLETE])
        self.assertEqual(os.pread(self.staged[0].fd, BODY + 1, 0), body)
        self.flushLoggedErrors()

    def test_pipeBudgetSpent(self) -> None:
        """
        With every pipe of the budget open, a body is read by Twisted (it
        needs no descriptor more), and nothing is taken from the budget.
        """
        self.channel.zeroCopy = "auto"
        self.channel.pipeBudget = budget = PipeBudget(1)
        budget.open = 1
        body = os.urandom(BODY)
        self.send(_put(len(body)))
        self.read()
        self.assertIsNone(self.channel._splicer)
        self.sendBody(body)
        self.settle(1)
        self.assertEqual(self.outcomes, [COMPLETE])
        self.assertEqual(os.pread(self.staged[0].fd, BODY + 1, 0), body)
        self.assertEqual(budget.open, 1)

    def test_smallBody(self) -> None:
        """A body too small to be worth a pipe is read by Twisted."""
        self.channel.zeroCopy = "auto"
        self.send(_put(MIN_SPLICED_BODY - 1))
        self.read()
        self.assertIsNone(self.channel._splicer)


class OverlapFallbackTests(SpliceTestCase):
    """
    A receiver that still drops an overlap sees the body as bytes.
    """

    overlap = 10

    def test_overlapPending(self) -> None:
        """With an overlap still to skip, the body is not spliced."""
        self.send(_put(BODY))
        self.read()
        self.assertIsNone(self.channel._splicer)


class PumpedBodyTests(SplicedBodyTests):
    """
    The same bodies with a pump allowed: once a turn of the reactor splices
    a fast sender's batch, a pump on the write lane moves the rest.
    """

    maxPumps = 1

    def test_pumpMovesTheBody(self) -> None:
        """A pump takes the body over after a large turn, while the reactor stops reading it; the file and its sha-256 are the body's, and the pump is given back."""
        body = os.urandom(BODY)
        self.send(_put(len(body)))
        self.read()
        splicer = self.splicer()
        sent = self.send(body[:256 * 1024])
        self.read()
        self.assertIsNotNone(splicer.pump)
        self.assertIn("pump", self.channel._bodyPauses)
        self.assertFalse(self.reading())
        self.assertEqual(self.pumps.open, 1)
        self.assertNotEqual(splicer.pump.fd, self.transport.fileno())  # type: ignore[union-attr]
        sent += self.send(body[sent:])
        self.runner.completeAll()
        self.settle(1)
        self.assertEqual(sent, len(body))
        self.assertStoredWhole(body)
        self.assertEqual(self.pumps.open, 0)
        self.assertIsNone(splicer.pump)
        self.assertEqual(splicer.spliced, len(body))

    def test_pumpNeverTouchesAReusedDescriptor(self) -> None:
        """An aborted connection's descriptor number, closed by its transport and reused by another socket, is never read by the pump that was queued for it: it holds its own reference to the first socket, and stops."""
        body, splicer = self.burst()
        pump = splicer.pump
        assert pump is not None
        number, first = self.transport.fileno(), os.fstat(self.transport.fileno()).st_ino
        abortRequest(self.resource.requests[0])
        self.reactor.advance(0)  # (the transport closes its socket now)
        self.assertEqual(self.outcomes, [LOST])
        # Another connection gets the number.
        other, peer = socket.socketpair()
        self.addCleanup(other.close)
        self.addCleanup(peer.close)
        if other.fileno() != number:
            os.dup2(other.fileno(), number)
            self.addCleanup(os.close, number)
        peer.sendall(b"someone else's bytes")
        self.assertEqual(os.fstat(pump.fd).st_ino, first)
        self.assertNotEqual(os.fstat(number).st_ino, first)
        self.runner.completeAll()
        self.runner.completeAll()
        other.setblocking(False)
        self.assertEqual(other.recv(100), b"someone else's bytes")  # untouched
        self.assertEqual(self.pumps.open, 0)
        self.assertRaises(OSError, os.fstat, pump.fd)  # the pump's reference closed
        self.assertEqual(os.pread(self.staged[0].fd, BODY, 0), body[:splicer.spliced])

    def test_tricklerGivenBack(self) -> None:
        """A pump whose slice moved less than the floor (a sender that burst, then trickles) hands the body back to the reactor, which reads the rest; the body arrives whole."""
        ticks = iter(range(0, 10**6))
        self.channel.pumpClock = lambda: next(ticks) * PUMP_SLICE  # a slice per look
        body, splicer = self.burst()
        self.assertIsNotNone(splicer.pump)
        self.send(body[256 * 1024:256 * 1024 + 10])
        before = splicer.spliced
        self.runner.completeAll()
        # Given back at its first look, with the 10 bytes left unread for
        # the reactor (a pump that went on would have moved them).
        self.assertEqual(splicer.spliced, before)
        self.assertIsNone(splicer.pump)
        self.assertEqual(self.pumps.open, 0)
        self.assertNotIn("pump", self.channel._bodyPauses)
        self.assertTrue(self.reading())
        self.channel.pumpClock = None  # (later pumps: real time)
        splicer.clock = lambda: 0.0
        self.sendBody(body[256 * 1024 + 10:])
        self.settle(1)
        self.assertStoredWhole(body)

    def test_noDescriptorForThePump(self) -> None:
        """When the pump's duplicate of the socket cannot be had (no descriptor left), the reactor goes on splicing the body itself, and it arrives whole."""
        def noDescriptor(fd: int) -> int:
            raise OSError(errno.EMFILE, "Too many open files")

        self.channel.dupSocket = noDescriptor
        body, splicer = self.burst()
        self.assertIsNone(splicer.pump)
        self.assertEqual(self.pumps.open, 0)
        self.assertNotIn("pump", self.channel._bodyPauses)
        self.sendBody(body[256 * 1024:])
        self.settle(1)
        self.assertStoredWhole(body)
