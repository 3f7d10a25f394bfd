"""
Byte-exact HTTP/1.1 over blocking sockets, and deterministic bodies, for
end-to-end tests.

A real client library frames requests its own way; these helpers let a test
say exactly which bytes go out and when: headers without a body, a body cut
short, chunked framing split across TCP segments with pauses, pipelined
requests. Every socket has a timeout, so nothing waits forever. From a trial
test, run them directly (the server is another process) or through
L{twisted.internet.threads.deferToThread} when the reactor must keep
running meanwhile.

The deterministic bodies (L{patternBytes}, L{PatternProducer}) let a test send
and check gigabytes without holding them: any byte range of a body can be
regenerated from C{(seed, offset, length)}, and no two 64 KiB blocks of one
body, or of two seeds, are alike.
"""

from __future__ import annotations

import functools
import hashlib
import random
import socket
import struct
import time
from typing import Any, Iterable, Iterator, Mapping, Sequence

import attr
import h11
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import CooperativeTask, Cooperator, cooperate
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

Headers = Mapping[str, str] | Sequence[tuple[str, str]]

#: Default seconds a socket waits for the server before the helper gives up.
DEFAULT_TIMEOUT = 30.0


# -- sockets and requests ---------------------------------------------------


def connect(port: int, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT) -> socket.socket:
    """
    Open a connection with C{TCP_NODELAY} set, so that every C{send} leaves
    as its own segment.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)
    return sock


def requestHead(
    method: str,
    path: str,
    headers: Headers = (),
    host: str = "127.0.0.1",
) -> bytes:
    """
    The request line and header block of a request, ending with the blank
    line. C{Host} is added unless given.

    @param path: sent exactly as given (escapes included).
    """
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    if not any(k.lower() == "host" for k, _ in items):
        items.insert(0, ("Host", host))
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in items]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def sendPieces(sock: socket.socket, pieces: Iterable[bytes], pause: float = 0.0) -> None:
    """
    Send each piece with its own C{sendall}, sleeping C{pause} seconds after
    each one (with C{TCP_NODELAY}, each piece arrives as its own segment).
    """
    for piece in pieces:
        sock.sendall(piece)
        if pause:
            time.sleep(pause)


def chunkedPieces(data: bytes, chunkSizes: Sequence[int], extension: bytes = b"") -> list[bytes]:
    """
    Encode C{data} as a chunked body, cut into the smallest pieces that
    matter to a parser: each size line in two (in the middle of the hex
    digits where there are several, else before its CRLF), its CR apart from
    its LF, the chunk data in two, its trailing CR and LF one by one, and the
    last-chunk and the final CRLF apart.

    @param chunkSizes: the sizes of the chunks, repeated cyclically until
        C{data} is used up.
    @param extension: a chunk extension (e.g. C{b";x=1"}) put on every size
        line.
    @return: the pieces; C{b"".join} of them is the chunked body.
    """
    pieces: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(data):
        size = min(chunkSizes[i % len(chunkSizes)], len(data) - pos)
        i += 1
        digits = b"%x" % (size,)
        if len(digits) > 1:
            half = len(digits) // 2
            pieces += [digits[:half], digits[half:] + extension + b"\r", b"\n"]
        else:
            pieces += [digits, extension + b"\r", b"\n"]
        chunk = data[pos : pos + size]
        mid = max(1, size // 2)
        pieces += [chunk[:mid]] + ([chunk[mid:]] if chunk[mid:] else [])
        pieces += [b"\r", b"\n"]
        pos += size
    pieces += [b"0\r\n", b"\r\n"]
    return pieces


@attr.s(frozen=True, auto_attribs=True)
class Answer:
    """
    One complete HTTP response as a test sees it (interim C{1xx} ones
    included), whichever client read it: L{ResponseReader} here, or treq
    through L{tests.support.server.ServerRequests}.

    @ivar status: the status code.
    @ivar reason: the reason phrase.
    @ivar headers: C{(lowercased name, value)} pairs in the order received.
    @ivar body: the decoded body (de-chunked where chunked).
    @ivar raw: the response's bytes as received (empty when a client library
        read it).
    """

    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    raw: bytes = b""

    def header(self, name: str) -> str | None:
        """
        The value of header C{name} (the last one if repeated), or L{None}.
        """
        values = self.headerValues(name)
        return values[-1] if values else None

    def headerValues(self, name: str) -> list[str]:
        """
        All values of header C{name}, in order.
        """
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self.headers if k == key]


class ResponseReader:
    """
    Reads successive responses from one connection (for keep-alive and
    pipelining), keeping what it has read past the current one.

    Responses are parsed by h11, a strict HTTP/1.1 implementation of its
    own: an answer that a lenient reader would accept (bad framing, bad
    header syntax) fails the test that reads it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    def readResponse(self, method: str = "PUT") -> Answer:
        """
        Read the next response, interim or final.

        @param method: the request's method (a C{HEAD} answer has no body).
        @raise ConnectionError: the connection closed before the response
            ended.
        @raise ValueError: the bytes are not a valid HTTP/1.1 response.
        """
        # A fresh h11 connection per response, told only the method of the
        # request it answers: the test sends its requests as raw bytes, and
        # a connection-level state (pipelining, Connection: close) must not
        # stop us reading what the server actually sent.
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "rawhttp")]))
        conn.send(h11.EndOfMessage())
        fed = self._buffer
        if fed:
            conn.receive_data(fed)  # (an empty one would mean "closed")
        closed = False
        head: h11.Response | h11.InformationalResponse | None = None
        body: list[bytes] = []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as e:
                if closed:
                    raise ConnectionError(
                        f"connection closed ({e}); unparsed: {fed[:200]!r}"
                    ) from e
                raise ValueError(f"not a valid HTTP/1.1 response ({e}): {fed[:200]!r}") from e
            if event is h11.NEED_DATA:
                data = self.sock.recv(65536)
                closed = not data
                fed += data
                conn.receive_data(data)  # b"" tells h11 of the close
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError(f"connection closed; unparsed: {fed[:200]!r}")
            elif isinstance(event, (h11.Response, h11.InformationalResponse)):
                head = event
                if isinstance(event, h11.InformationalResponse):
                    break
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
        assert head is not None
        self._buffer = conn.trailing_data[0]
        raw = fed[: len(fed) - len(self._buffer)]
        headers = tuple((bytes(k), bytes(v)) for k, v in head.headers)
        return Answer(head.status_code, bytes(head.reason), headers, b"".join(body), raw)

    def readFinal(self, method: str = "PUT") -> tuple[list[Answer], Answer]:
        """
        Read interim responses up to and including the final one.

        @return: the interim responses (e.g. C{100 Continue}) and the final.
        """
        interim: list[Answer] = []
        while True:
            response = self.readResponse(method)
            if response.status >= 200:
                return interim, response
            interim.append(response)

    def waitClosed(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """
        Wait until the server closes (or resets) the connection.

        @return: any bytes that arrived before the close.
        @raise TimeoutError: when the connection is still open after
            C{timeout} seconds.
        """
        deadline = time.monotonic() + timeout
        data, self._buffer = self._buffer, b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"connection still open after {timeout} s")
            self.sock.settimeout(left)
            try:
                more = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"connection still open after {timeout} s")
            except (ConnectionResetError, BrokenPipeError):
                return data
            if not more:
                return data
            data += more


def exchange(
    port: int,
    method: str,
    path: str,
    headers: Headers = (),
    body: bytes = b"",
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[list[Answer], Answer]:
    """
    Send one request on a new connection and read its answer.

    @return: interim responses and the final one.
    """
    with connect(port, timeout=timeout) as sock:
        sock.sendall(requestHead(method, path, headers) + body)
        return ResponseReader(sock).readFinal(method)


# -- deterministic bodies ---------------------------------------------------

BLOCK = 65536


def refusedFromHeaders(
    test: Any, port: int, method: str, path: str, headers: Sequence[tuple[str, str]],
    status: int, length: int = 100,
) -> Answer:
    """
    Send the headers of a request announcing a C{length}-byte body, with
    C{Expect: 100-continue}, and never the body; assert on C{test} that
    the refusal C{status} comes at once (no interim answer: no C{100}, no
    C{104}) with a one-line reason, and that the connection is closed.
    """
    sent = [*headers, ("Content-Length", str(length)), ("Expect", "100-continue")]
    with connect(port, timeout=10) as sock:
        sock.sendall(requestHead(method, path, sent))
        reader = ResponseReader(sock)
        interim, answer = reader.readFinal(method)
        where = f"{method} {path} {sent}: {answer.raw[:400]!r}"
        test.assertEqual([r.status for r in interim], [], where)
        test.assertEqual(answer.status, status, where)
        if method != "HEAD":
            reason = answer.body.rstrip(b"\r\n")
            test.assertTrue(reason, where)
            test.assertNotIn(b"\n", reason, where)
        test.assertIn("close", (answer.header("connection") or "").lower(), where)
        test.assertEqual(reader.waitClosed(10), b"", where)
    return answer


@functools.lru_cache(maxsize=1024)
def _baseBlock(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOCK)


def _block(seed: int, index: int) -> bytes:
    # Each block starts with (seed, index), so no block repeats anywhere.
    return struct.pack(">QQ", seed % 2**64, index) + _baseBlock(seed)[16:]


def patternBytes(seed: int, offset: int, length: int) -> bytes:
    """
    Bytes C{offset} to C{offset + length} of the endless body named by
    C{seed}.
    """
    out = []
    pos = offset
    end = offset + length
    while pos < end:
        index, start = divmod(pos, BLOCK)
        take = min(BLOCK - start, end - pos)
        out.append(_block(seed, index)[start : start + take])
        pos += take
    return b"".join(out)


def patternChunks(
    seed: int, length: int, offset: int = 0, chunkSize: int = BLOCK
) -> Iterator[bytes]:
    """
    Bytes C{offset} to C{offset + length} of the body named by C{seed}, as
    pieces of at most C{chunkSize} bytes.
    """
    pos = offset
    end = offset + length
    while pos < end:
        take = min(chunkSize, end - pos)
        yield patternBytes(seed, pos, take)
        pos += take


def patternSha256(seed: int, length: int, offset: int = 0) -> str:
    """
    The lowercase hex SHA-256 of C{patternBytes(seed, offset, length)},
    computed piecewise.
    """
    h = hashlib.sha256()
    for chunk in patternChunks(seed, length, offset, 16 * BLOCK):
        h.update(chunk)
    return h.hexdigest()


def fileSha256(path: str) -> str:
    """
    The lowercase hex SHA-256 of a file's content, read piecewise.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            data = f.read(1 << 20)
            if not data:
                return h.hexdigest()
            h.update(data)


@implementer(IBodyProducer)
class PatternProducer:
    """
    An L{IBodyProducer} of a deterministic body, generated as it is sent and
    honouring pause and resume, for streaming big uploads with treq.

    @ivar sent: how many bytes were written to the consumer so far.
    """

    def __init__(
        self,
        seed: int,
        length: int,
        offset: int = 0,
        chunkSize: int = BLOCK,
        knownLength: bool = True,
        cooperator: Cooperator | None = None,
    ) -> None:
        """
        @param knownLength: when false, the length is declared unknown, so
            treq sends the body chunked.
        """
        self._seed = seed
        self._total = length
        self._offset = offset
        self._chunkSize = chunkSize
        self._cooperate = cooperate if cooperator is None else cooperator.cooperate
        self.length = length if knownLength else UNKNOWN_LENGTH
        self.sent = 0
        self._task: CooperativeTask | None = None

    def _writeLoop(self, consumer: IConsumer) -> Iterator[None]:
        for chunk in patternChunks(self._seed, self._total, self._offset, self._chunkSize):
            consumer.write(chunk)
            self.sent += len(chunk)
            yield None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._task = self._cooperate(self._writeLoop(consumer))
        d = self._task.whenDone()
        return d.addCallback(lambda _: None)

    def pauseProducing(self) -> None:
        assert self._task is not None
        self._task.pause()

    def resumeProducing(self) -> None:
        assert self._task is not None
        self._task.resume()

    def stopProducing(self) -> None:
        if self._task is not None:
            try:
                self._task.stop()
            except Exception:
                pass
