"""
Tests for L{uploadsvc.web.streaming.readsize}: C{--read-size} sizes the
reads of the connection's socket, under C{ssl:} too, and leaves Twisted's
send-buffer threshold alone.

Deterministic: a real C{tcp.Server} around one end of a loopback TCP
connection, on a L{MemoryReactor}; the test waits (bounded) until the bytes
it sent are all readable, then calls C{doRead} by hand.
"""

from __future__ import annotations

import fcntl
import select
import socket
import struct
import termios
from typing import Any

from twisted.internet import tcp, unix
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from uploadsvc.web.streaming import StreamingSite
from uploadsvc.web.streaming.readsize import setReadSize, socketConnection

KiB = 1024

#: Twisted's send-buffer threshold (and default read size).
TWISTED_BUFFER = tcp.Server.bufferSize

#: The read size under test: above Twisted's, below what the socket pair
#: holds at once.
READ_SIZE = 2 * TWISTED_BUFFER

#: Bytes the client sends before one read: more than Twisted's read size,
#: less than L{READ_SIZE}.
SENT = TWISTED_BUFFER + 40 * KiB

#: Generous bound on the wait for sent bytes to be readable.
BOUND = 30.0


def readable(sock: socket.socket) -> int:
    """
    How many bytes C{sock} holds for reading.
    """
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0])


class Recorder(Protocol):
    """
    Records the size of each piece of data it is handed.
    """

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def dataReceived(self, data: bytes) -> None:
        self.sizes.append(len(data))


class ReadSizeTests(SynchronousTestCase):
    """
    The read size applies to the socket, whatever wraps it.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.peer = socket.create_connection(listener.getsockname(), timeout=BOUND)
        self.addCleanup(self.peer.close)
        ours, _ = listener.accept()
        self.addCleanup(ours.close)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * READ_SIZE)
        ours.setblocking(False)
        self.ours = ours

    def serve(self, protocol: Any) -> tcp.Server:
        """
        A TCP connection of Twisted's over our end of the pair, handed to
        C{protocol} as a listening port would.
        """
        connection = tcp.Server(self.ours, protocol, ("127.0.0.1", 1), None, 1, self.reactor)  # type: ignore[arg-type]
        protocol.makeConnection(connection)
        return connection

    def send(self, size: int) -> None:
        """
        Send C{size} bytes from the client and wait until they are all
        readable on our end.
        """
        self.peer.sendall(b"x" * size)
        for _ in range(1000):
            if readable(self.ours) >= size:
                return
            select.select([], [], [], BOUND / 1000)
        self.fail(f"sent bytes not readable within {BOUND} s")

    def site(self) -> StreamingSite:
        return StreamingSite(Resource(), readSize=READ_SIZE, reactor=Clock())

    def test_readsUpToReadSize(self) -> None:
        """One read of a connection hands the protocol up to the read size, more than Twisted's own."""
        recorder = Recorder()
        connection = self.serve(recorder)
        setReadSize(connection, READ_SIZE)
        self.send(SENT)
        connection.doRead()
        self.assertEqual(recorder.sizes, [SENT])

    def test_twistedReadSizeWithout(self) -> None:
        """Without a read size, one read hands the protocol Twisted's own size (what the other test exceeds)."""
        recorder = Recorder()
        connection = self.serve(recorder)
        self.send(SENT)
        connection.doRead()
        self.assertEqual(recorder.sizes, [TWISTED_BUFFER])

    def test_plainSendBufferUnchanged(self) -> None:
        """On plain TCP the channel's read size leaves the send-buffer threshold where Twisted has it."""
        channel = self.site().buildProtocol(None)
        connection = self.serve(channel)
        self.assertEqual(connection.bufferSize, TWISTED_BUFFER)
        # The channel is the connection's producer: a response past
        # Twisted's threshold pauses it.
        connection.write(b"y" * (TWISTED_BUFFER + 1))
        self.assertTrue(connection.producerPaused, "not paused past Twisted's send-buffer threshold")
        recorder = Recorder()
        connection.protocol = recorder
        self.send(SENT)
        connection.doRead()
        self.assertEqual(recorder.sizes, [SENT])

    def test_tlsReadSize(self) -> None:
        """Under TLS the channel's read size reaches the socket below the TLS layer, and the send threshold stays Twisted's."""
        tls = TLSMemoryBIOFactory(CertificateOptions(), False, self.site())
        tlsProtocol = tls.buildProtocol(None)
        connection = self.serve(tlsProtocol)
        self.assertIs(socketConnection(tlsProtocol), connection)
        self.assertEqual(connection.bufferSize, TWISTED_BUFFER)
        # What the TLS layer is handed per read of the socket:
        recorder = Recorder()
        tlsProtocol.dataReceived = recorder.dataReceived  # type: ignore[method-assign]
        self.send(SENT)
        connection.doRead()
        self.assertEqual(recorder.sizes, [SENT])

    def test_unixReadSize(self) -> None:
        """On a UNIX socket (read with recvmsg) one read hands the protocol up to the read size too."""
        ours, peer = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(peer.close)
        ours.setblocking(False)
        recorder = Recorder()
        connection = unix.Server(ours, recorder, "", None, 1, self.reactor)
        recorder.makeConnection(connection)
        setReadSize(connection, READ_SIZE)
        peer.sendall(b"x" * SENT)
        connection.doRead()
        self.assertEqual(recorder.sizes, [SENT])
        self.assertEqual(connection.bufferSize, TWISTED_BUFFER)

    def test_otherTransports(self) -> None:
        """A transport with no socket under it (a test's, a pipe's) is left alone."""
        from twisted.internet.testing import StringTransport

        transport = StringTransport()
        setReadSize(transport, READ_SIZE)
        self.assertIsNone(socketConnection(transport))
        self.assertFalse(hasattr(transport, "socket"))
