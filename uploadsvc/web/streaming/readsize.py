"""
C{--read-size}: how much one read of a connection's socket may return,
whatever TLS layer sits above the socket, and without touching the send
buffer.

Twisted reads a TCP (or UNIX) connection with
C{self.socket.recv(self.bufferSize)} (C{tcp.Connection.doRead}), but
C{bufferSize} is also the threshold of its send buffer: above it, the
producer writing a response is paused (C{FileDescriptor._isSendBufferFull}).
Twisted has no knob for the read size alone, so the socket is wrapped: its
reads ask for the read size, everything else goes to the real socket.
Under C{ssl:} the protocol's transport is Twisted's TLS layer; the socket is
found under it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


class _SizedReads:
    """
    A connection's socket whose reads return up to C{readSize} bytes,
    whatever size the reader asks for.

    @ivar readSize: the most bytes one read returns.
    """

    def __init__(self, socket: Any, readSize: int) -> None:
        self._socket = socket
        self.readSize = readSize

    def recv(self, size: int, *flags: Any) -> bytes:
        return self._socket.recv(self.readSize, *flags)  # type: ignore[no-any-return]

    def recvmsg(self, size: int, *rest: Any) -> Any:
        # (How Twisted reads a UNIX socket, see twisted.python.sendmsg.)
        return self._socket.recvmsg(self.readSize, *rest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)


def socketConnection(transport: Any) -> tcp.Connection | None:
    """
    The TCP or UNIX connection under C{transport} and any protocol wrappers
    (a TLS layer is a wrapper whose C{transport} is the connection), or
    L{None} for a transport of another kind.
    """
    for _ in range(8):  # (wrappers nest a few deep at most)
        if isinstance(transport, tcp.Connection):
            return transport
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


def setReadSize(transport: Any, readSize: int) -> None:
    """
    Make each read of the socket under C{transport} return up to
    C{readSize} bytes; the send buffer's threshold stays Twisted's.
    """
    connection = socketConnection(transport)
    if connection is None:
        return
    socket = connection.socket
    if isinstance(socket, _SizedReads):
        socket.readSize = readSize
    else:
        connection.socket = _SizedReads(socket, readSize)  # type: ignore[assignment]
