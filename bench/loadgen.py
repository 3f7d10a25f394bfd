"""
The load generator: many HTTP/1.1 uploads at once from one process, on
non-blocking raw sockets driven by one C{selectors} loop.

It is built to cost far less than any server it measures: each body goes from
the source file to the socket with C{os.sendfile} (no copy through Python),
one call per writable event; a request head is one small C{send}; a response
is parsed only as far as its status and length.  Bodies may be paced (slow
clients, trickling clients) by a token schedule, served from a timer heap, so
a paced connection costs nothing while it waits.

Every loop here is bounded: the run ends when every upload has an outcome or
when its time limit passes, whichever comes first.
"""

from __future__ import annotations

import errno
import heapq
import math
import os
import resource
import selectors
import socket
import time
from collections import deque
from typing import Callable, Sequence

import attr

_SUCCESS = frozenset({200, 201, 204})
_MAX_SENDFILE = 1 << 30
_RECV = 65536
_MAX_RESPONSE = 1 << 20


@attr.s(auto_attribs=True, frozen=True)
class Pacing:
    """
    How fast a body may go, like a client on a slow link: C{initial} bytes
    with the head, then one step of C{quantum} bytes every C{quantum / rate}
    seconds.  The next step is due one interval after the previous one; a
    step is taken only once the previous one has been sent, and when the
    server kept the client waiting longer than one interval, the lost time
    is not made up in a burst.

    @ivar initial: bytes sent with the head.
    @ivar rate: bytes per second after that; must be positive.
    @ivar quantum: the size of each later step.
    """

    initial: int
    rate: float
    quantum: int

    @property
    def interval(self) -> float:
        """
        Seconds between steps.
        """
        return self.quantum / self.rate

    def first(self, start: float, size: int) -> tuple[int, float]:
        """
        The allowance (bytes that may have been sent) and the time the next
        step is due, for a request that started at C{start}.
        """
        return min(size, self.initial), start + self.interval

    def step(self, allowance: int, due: float, now: float, size: int) -> tuple[int, float]:
        """
        The allowance and next due time at C{now}, for a client that has
        sent its whole C{allowance}: one more step when it is due (on the
        schedule if the client is late by less than one interval, else
        starting afresh from now).
        """
        if now < due or allowance >= size:
            return allowance, due
        following = due + self.interval
        if now - due >= self.interval:
            following = now + self.interval
        return min(size, allowance + self.quantum), following


@attr.s(auto_attribs=True, frozen=True)
class Upload:
    """
    One upload: a region of the source file sent to one URL path.

    @ivar path: the request target, e.g. C{/s2/07.bin}.
    @ivar offset: where the body starts in the source file.
    @ivar size: the body length (sent as C{Content-Length}).
    @ivar group: a label for reporting, e.g. C{slow} or C{heavy}.
    @ivar pacing: how fast to send, or L{None} for as fast as possible.
    """

    path: str
    offset: int
    size: int
    group: str = "all"
    pacing: Pacing | None = None


@attr.s(auto_attribs=True, frozen=True)
class Outcome:
    """
    What happened to one upload.

    @ivar start: when its connection attempt began (or, on a reused
        keep-alive connection, when its head was first sent), in
        C{time.monotonic} seconds.
    @ivar opened: when its head and its initial bytes were all sent, or NaN.
    @ivar end: when its response had been read whole, or when it failed.
    @ivar status: the response status, or 0 when there was none.
    @ivar error: why it failed, or the empty string.
    @ivar sentAll: when the last byte of its body was handed to the socket,
        or NaN: C{end - sentAll} is how long the server took to answer once
        it had everything (bench/profile.py prints it for paced uploads).
    """

    upload: Upload
    ok: bool
    status: int
    error: str
    start: float
    opened: float
    end: float
    sent: int
    sentAll: float = math.nan

    @property
    def latency(self) -> float:
        """
        Seconds from start to the end of the response.
        """
        return self.end - self.start


@attr.s(auto_attribs=True, frozen=True)
class Load:
    """
    A set of uploads and how to send them.

    @ivar uploads: every upload, in the order they start.
    @ivar connections: how many connections may be open at once.
    @ivar keepAlive: whether a connection carries one upload after another
        (then there are at most C{connections} connections in all) or is
        closed after each upload.
    @ivar timeLimit: seconds after which unfinished uploads fail.
    @ivar connectBurst: how many connection attempts may be pending at once,
        which spreads a thousand connects over a short ramp rather than
        overflowing the listen backlog.
    """

    uploads: Sequence[Upload]
    connections: int
    keepAlive: bool
    timeLimit: float
    connectBurst: int = 64


@attr.s(auto_attribs=True, frozen=True)
class LoadResult:
    """
    The outcome of a L{Load}.

    @ivar start: when the first connection attempt began (monotonic).
    @ivar end: when the last outcome was known (monotonic).
    @ivar clientCpu: user+system CPU seconds this process spent in between.
    @ivar samples: C{(seconds since start, value)} pairs taken every sampling
        interval from the sampler (e.g. the server's RSS).
    """

    outcomes: Sequence[Outcome]
    start: float
    end: float
    clientCpu: float
    samples: Sequence[tuple[float, int]]


class ResponseParser:
    """
    Reads one HTTP/1.1 response at a time, as far as its status, headers and
    body; interim (1xx) responses are skipped.

    @ivar status: the final status, once the head is read.
    @ivar keepAlive: whether the connection may carry another request.
    @ivar done: whether the response is complete.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._bodyLeft: int | None = None
        self._chunked = False
        self._untilClose = False
        self.status = 0
        self.keepAlive = True
        self.done = False
        self.body = bytearray()

    def feed(self, data: bytes) -> None:
        """
        Take more bytes from the connection.

        @raise ValueError: on a malformed or oversized response.
        """
        self._buffer += data
        if len(self._buffer) > _MAX_RESPONSE:
            raise ValueError("response too large")
        self._advance()

    def eof(self) -> None:
        """
        The connection closed: a response delimited by the close ends here.

        @raise ValueError: when the response is incomplete.
        """
        if self._untilClose and self.status:
            self.body += self._buffer
            self._buffer.clear()
            self.done = True
            self.keepAlive = False
            return
        if not self.done:
            raise ValueError("connection closed mid-response")

    def _advance(self) -> None:
        # Bounded: each pass consumes a head, a body or a chunk, or returns.
        for _ in range(10000):
            if self.done:
                return
            if not self.status:
                if not self._readHead():
                    return
                continue
            if self._untilClose:
                self.body += self._buffer
                self._buffer.clear()
                return
            if self._chunked:
                if not self._readChunk():
                    return
                continue
            assert self._bodyLeft is not None
            take = min(self._bodyLeft, len(self._buffer))
            self.body += self._buffer[:take]
            del self._buffer[:take]
            self._bodyLeft -= take
            if self._bodyLeft == 0:
                self.done = True
            return

    def _readHead(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        version, _, rest = head[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"bad status line {head[0]!r}")
        status = int(rest[:3])
        if 100 <= status < 200:
            return True
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.status = status
        connection = headers.get("connection", "").lower()
        self.keepAlive = version == "HTTP/1.1" and "close" not in connection
        if status in (204, 304):
            self._bodyLeft = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in headers:
            self._bodyLeft = int(headers["content-length"])
        else:
            self._untilClose = True
            self.keepAlive = False
        if self._bodyLeft == 0:
            self.done = True
        return True

    def _readChunk(self) -> bool:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            return False
        size = int(bytes(self._buffer[:end]).split(b";")[0], 16)
        if size == 0:
            # Last chunk: skip any trailers up to the blank line.
            close = self._buffer.find(b"\r\n\r\n", end)
            if close < 0:
                return False
            del self._buffer[: close + 4]
            self.done = True
            return True
        if len(self._buffer) < end + 2 + size + 2:
            return False
        self.body += self._buffer[end + 2 : end + 2 + size]
        del self._buffer[: end + 2 + size + 2]
        return True


_CONNECTING, _SENDING, _WAITING = "connecting", "sending", "waiting"


class _Connection:
    """
    One client connection, carrying one upload at a time.
    """

    def __init__(self, engine: _Engine, sock: socket.socket) -> None:
        self.engine = engine
        self.sock = sock
        self.fd = sock.fileno()
        self.state = _CONNECTING
        self.events = selectors.EVENT_WRITE
        self.upload: Upload | None = None
        self.start = 0.0
        self.allowance = 0
        self.due = 0.0
        self.opened = math.nan
        self.sentAll = math.nan
        self.head = b""
        self.sent = 0
        self.parser = ResponseParser()

    def begin(self, upload: Upload, now: float) -> None:
        """
        Take C{upload} as the current one; its clock starts now.
        """
        self.upload = upload
        self.start = now
        if upload.pacing is None:
            self.allowance, self.due = upload.size, now
        else:
            self.allowance, self.due = upload.pacing.first(now, upload.size)
        self.opened = math.nan
        self.sentAll = math.nan
        self.sent = 0
        self.parser = ResponseParser()
        self.head = (
            f"PUT {upload.path} HTTP/1.1\r\n"
            f"Host: {self.engine.host}:{self.engine.port}\r\n"
            f"Content-Type: application/octet-stream\r\n"
            f"Content-Length: {upload.size}\r\n\r\n"
        ).encode("ascii")

    def setEvents(self, events: int) -> None:
        if events != self.events:
            self.engine.selector.modify(self.sock, events, self)
            self.events = events

    def onEvent(self, mask: int) -> None:
        if self.state == _CONNECTING:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self.engine.connecting -= 1
            self.state = _SENDING
            if err:
                self.fail(f"connect: {os.strerror(err)}")
                return
            self.setEvents(selectors.EVENT_READ)
            self.pump()
            return
        if mask & selectors.EVENT_READ:
            self.receive()
        if self.state == _SENDING and mask & selectors.EVENT_WRITE:
            self.pump()

    def pump(self) -> None:
        """
        Send as much of the head and body as the socket and the pacing allow.
        """
        assert self.upload is not None
        upload = self.upload
        now = time.monotonic()
        if self.head:
            try:
                n = self.sock.send(self.head)
            except BlockingIOError:
                self.setEvents(selectors.EVENT_READ | selectors.EVENT_WRITE)
                return
            except OSError as e:
                self.fail(f"send: {e.strerror}")
                return
            self.head = self.head[n:]
            if self.head:
                self.setEvents(selectors.EVENT_READ | selectors.EVENT_WRITE)
                return
        pacing = upload.pacing
        if pacing is not None and self.sent >= self.allowance:
            self.allowance, self.due = pacing.step(self.allowance, self.due, now, upload.size)
        allowed = self.allowance
        if self.sent < allowed:
            want = min(allowed - self.sent, _MAX_SENDFILE)
            try:
                n = os.sendfile(
                    self.fd, self.engine.sourceFd, upload.offset + self.sent, want
                )
            except BlockingIOError:
                n = -1
            except OSError as e:
                self.fail(f"sendfile: {e.strerror}")
                return
            if n == 0:
                self.fail("sendfile: source file too short")
                return
            if n > 0:
                self.sent += n
            if n < want:
                self.setEvents(selectors.EVENT_READ | selectors.EVENT_WRITE)
                return
        if math.isnan(self.opened) and (
            pacing is None or self.sent >= min(pacing.initial, upload.size)
        ):
            self.opened = now
            self.engine.noteOpened()
        self.setEvents(selectors.EVENT_READ)
        if self.sent >= upload.size:
            if math.isnan(self.sentAll):
                self.sentAll = now
            self.state = _WAITING
        else:
            assert pacing is not None
            self.engine.wakeAt(self.due, self)

    def receive(self) -> None:
        try:
            data = self.sock.recv(_RECV)
        except BlockingIOError:
            return
        except OSError as e:
            self.fail(f"recv: {e.strerror}")
            return
        try:
            if data:
                self.parser.feed(data)
            else:
                self.parser.eof()
        except ValueError as e:
            self.fail(str(e), self.parser.status)
            return
        if not self.parser.done:
            return
        if self.state == _SENDING:
            self.fail("answered before the body was sent", self.parser.status)
            return
        self.finish()

    def finish(self) -> None:
        assert self.upload is not None
        status = self.parser.status
        ok = status in _SUCCESS
        self.engine.record(
            Outcome(
                upload=self.upload,
                ok=ok,
                status=status,
                error="" if ok else f"status {status}: {bytes(self.parser.body[:200])!r}",
                start=self.start,
                opened=self.opened,
                end=time.monotonic(),
                sent=self.sent,
                sentAll=self.sentAll,
            )
        )
        self.upload = None
        if self.engine.load.keepAlive and self.parser.keepAlive:
            self.engine.reuse(self)
        else:
            self.close()

    def fail(self, error: str, status: int = 0) -> None:
        if self.upload is not None:
            self.engine.record(
                Outcome(
                    upload=self.upload,
                    ok=False,
                    status=status,
                    error=error,
                    start=self.start,
                    opened=self.opened,
                    end=time.monotonic(),
                    sent=self.sent,
                    sentAll=self.sentAll,
                )
            )
            self.upload = None
        self.close()

    def close(self) -> None:
        if self.state == "closed":
            return
        if self.state == _CONNECTING:
            self.engine.connecting -= 1
        self.state = "closed"
        self.engine.selector.unregister(self.sock)
        self.sock.close()
        self.engine.connectionClosed(self)


class _Engine:
    """
    The selector loop behind L{runLoad}.
    """

    def __init__(self, load: Load, host: str, port: int, sourceFd: int) -> None:
        self.load = load
        self.host = host
        self.port = port
        self.sourceFd = sourceFd
        self.selector = selectors.DefaultSelector()
        self.pending = deque(load.uploads)
        self.outcomes: list[Outcome] = []
        self.open: set[_Connection] = set()
        self.connecting = 0
        self.opened = 0
        self.timers: list[tuple[float, int, _Connection]] = []
        self._sequence = 0

    def wakeAt(self, when: float, connection: _Connection) -> None:
        self._sequence += 1
        heapq.heappush(self.timers, (when, self._sequence, connection))

    def noteOpened(self) -> None:
        self.opened += 1

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def reuse(self, connection: _Connection) -> None:
        if not self.pending:
            connection.close()
            return
        connection.begin(self.pending.popleft(), time.monotonic())
        connection.state = _SENDING
        connection.pump()

    def connectionClosed(self, connection: _Connection) -> None:
        self.open.discard(connection)

    def openConnections(self) -> None:
        """
        Start connection attempts while there are uploads waiting, open slots
        and room in the connect burst.
        """
        while (
            self.pending
            and len(self.open) < self.load.connections
            and self.connecting < self.load.connectBurst
        ):
            upload = self.pending.popleft()
            now = time.monotonic()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(self, sock)
            connection.begin(upload, now)
            err = sock.connect_ex((self.host, self.port))
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                self.record(
                    Outcome(upload, False, 0, f"connect: {os.strerror(err)}",
                            now, math.nan, now, 0)
                )
                continue
            self.selector.register(sock, selectors.EVENT_WRITE, connection)
            self.open.add(connection)
            self.connecting += 1

    def run(
        self, sampler: Callable[[], int] | None, sampleInterval: float
    ) -> LoadResult:
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        start = time.monotonic()
        deadline = start + self.load.timeLimit
        samples: list[tuple[float, int]] = []
        nextSample = start
        total = len(self.load.uploads)
        while len(self.outcomes) < total:
            now = time.monotonic()
            if now >= deadline:
                break
            if sampler is not None and now >= nextSample:
                samples.append((now - start, sampler()))
                nextSample = now + sampleInterval
            self.openConnections()
            timeout = min(deadline, nextSample if sampler else deadline) - now
            if self.timers:
                timeout = min(timeout, self.timers[0][0] - now)
            for key, mask in self.selector.select(max(0.0, min(timeout, 1.0))):
                connection = key.data
                if connection.state != "closed":
                    connection.onEvent(mask)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, connection = heapq.heappop(self.timers)
                if connection.state == _SENDING:
                    connection.pump()
        for connection in list(self.open):
            connection.fail("time limit")
        now = time.monotonic()
        for upload in self.pending:
            self.record(Outcome(upload, False, 0, "time limit", now, math.nan, now, 0))
        self.pending.clear()
        end = max((o.end for o in self.outcomes), default=now)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        self.selector.close()
        return LoadResult(
            outcomes=self.outcomes,
            start=start,
            end=end,
            clientCpu=(cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
            samples=samples,
        )


def runLoad(
    load: Load,
    host: str,
    port: int,
    sourceFd: int,
    sampler: Callable[[], int] | None = None,
    sampleInterval: float = 0.1,
) -> LoadResult:
    """
    Send every upload of C{load} to C{host:port} and read every answer.

    @param sourceFd: the open source file that bodies are sent from.
    @param sampler: called every C{sampleInterval} seconds during the load
        (e.g. to read the server's RSS).
    """
    return _Engine(load, host, port, sourceFd).run(sampler, sampleInterval)
