"""
A small client of the IETF resumable-upload draft, written from the
draft's text for the end-to-end tests: raw sockets, HTTP/1.1 read by h11
(a strict parser that knows interim answers), the C{104 Upload Resumption
Supported} read before the final answer.
"""

from __future__ import annotations

import socket
from typing import Iterable

import attrs
import h11

TIMEOUT = 20.0


@attrs.frozen
class Exchange:
    """
    What one request got: its interim answers, the final one (L{None} when
    the connection was cut first) and its body.
    """

    interims: list[h11.InformationalResponse]
    final: h11.Response | None
    body: bytes

    @property
    def status(self) -> int | None:
        return None if self.final is None else self.final.status_code

    def header(self, name: str) -> str | None:
        """
        A field of the final answer.
        """
        assert self.final is not None
        return _field(self.final.headers, name)

    def interimHeader(self, name: str, index: int = 0) -> str | None:
        return _field(self.interims[index].headers, name)


def _field(headers: Iterable[tuple[bytes, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key.decode("ascii").lower() == name.lower():
            return value.decode("latin-1")
    return None


class DraftClient:
    """
    Requests of the draft to one server, each on a connection of its own.

    @ivar version: the C{Upload-Draft-Interop-Version} sent (L{None}: none).
    """

    def __init__(self, port: int, version: int | None, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.version = version

    def _headers(self, extra: dict[str, str]) -> list[tuple[str, str]]:
        headers = [("Host", f"{self.host}:{self.port}")]
        if self.version is not None:
            headers.append(("Upload-Draft-Interop-Version", str(self.version)))
        return headers + list(extra.items())

    def request(
        self, method: str, target: str, headers: dict[str, str] | None = None,
        body: bytes = b"", cutAfter: int | None = None,
    ) -> Exchange:
        """
        Send a request with C{body} (its C{Content-Length} added) and read
        the answers. With C{cutAfter}, send only that many body bytes, wait
        for the 104, and close the connection (a dropped network).
        """
        fields = self._headers(headers or {})
        if method not in ("HEAD", "DELETE", "OPTIONS") or body:
            fields.append(("Content-Length", str(len(body))))
        conn = h11.Connection(h11.CLIENT)
        sock = socket.create_connection((self.host, self.port), timeout=TIMEOUT)
        try:
            sock.sendall(conn.send(h11.Request(method=method, target=target, headers=fields)))
            if cutAfter is not None:
                sock.sendall(body[:cutAfter])
                interims = self._read(conn, sock, untilInterim=True)[0]
                return Exchange(interims, None, b"")
            if body:
                sock.sendall(conn.send(h11.Data(data=body)))
            sock.sendall(conn.send(h11.EndOfMessage()))
            interims, final, data = self._read(conn, sock)
            return Exchange(interims, final, data)
        finally:
            sock.close()

    def hold(
        self, method: str, target: str, headers: dict[str, str], body: bytes, sent: int
    ) -> socket.socket:
        """
        Start a request whose body is C{body} but send only its first
        C{sent} bytes, and leave it open (a half-dead connection): the
        caller closes the socket.
        """
        fields = self._headers(headers) + [("Content-Length", str(len(body)))]
        conn = h11.Connection(h11.CLIENT)
        sock = socket.create_connection((self.host, self.port), timeout=TIMEOUT)
        sock.sendall(conn.send(h11.Request(method=method, target=target, headers=fields)))
        sock.sendall(body[:sent])
        return sock

    def _read(
        self, conn: h11.Connection, sock: socket.socket, untilInterim: bool = False
    ) -> tuple[list[h11.InformationalResponse], h11.Response | None, bytes]:
        interims: list[h11.InformationalResponse] = []
        final: h11.Response | None = None
        body = b""
        for _ in range(10_000):
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                conn.receive_data(data)
                if not data:
                    break
                continue
            if isinstance(event, h11.InformationalResponse):
                interims.append(event)
                if untilInterim and event.status_code == 104:
                    break
            elif isinstance(event, h11.Response):
                final = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        return interims, final, body
