"""
Limits of docs/protocol.md section 6 end to end, against a real C{twistd
uploadsvc}: connections per client, header size, the header deadline, the
body's idle timeout, the free-space floor (507), the size limit in the middle
of a chunked body (413) and uploads in progress (503). Each refusal is early
and leaves stored data intact. Waits are bounded and generous; nothing
asserts how fast anything was.
"""

from __future__ import annotations

import os
import socket
import time

from twisted.trial.unittest import TestCase

from tests.support import rawhttp
from tests.support.rawhttp import patternBytes
from tests.support.server import ReadByPython, ServerProcess, ServerTestMixin, bodyPathArgs

#: Seconds within which something that should happen soon must happen.
BOUND = 30.0


def connectFrom(port: int, source: str) -> socket.socket:
    """
    A connection to the server from the loopback address C{source} (any of
    127.0.0.0/8 is this host), so one test can be several clients.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def closedWithoutAnswer(sock: socket.socket, timeout: float = BOUND) -> bool:
    """
    Whether the server closes C{sock} (within C{timeout}) without sending a
    byte.
    """
    try:
        return rawhttp.ResponseReader(sock).waitClosed(timeout) == b""
    except TimeoutError:
        return False


class LimitsTestCase(ServerTestMixin, TestCase):
    timeout = 180

    def put(self, path: str, body: bytes, headers: list[tuple[str, str]] | None = None) -> rawhttp.Answer:
        headers = (headers or []) + [("Content-Length", str(len(body)))]
        return rawhttp.exchange(self.server.port, "PUT", path, headers, body, timeout=BOUND)[1]


class ConnectionLimitTests(LimitsTestCase):
    """
    C{--max-connections-per-client}.
    """

    def test_extraConnectionsClosed(self) -> None:
        """A client's connections past the limit are closed at once, unanswered; other clients and freed slots work."""
        self.startUploadServer("--max-connections-per-client", "3")
        # 127.0.0.3: a client of its own (the harness probed from 127.0.0.1).
        held = [connectFrom(self.server.port, "127.0.0.3") for _ in range(3)]
        try:
            # An answer on each proves the server has them; they stay open.
            for sock in held:
                sock.sendall(rawhttp.requestHead("HEAD", "/held.bin"))
                self.assertEqual(rawhttp.ResponseReader(sock).readResponse("HEAD").status, 404)
            try:
                extra = connectFrom(self.server.port, "127.0.0.3")
            except ConnectionResetError:
                pass  # refused so fast that connect() itself saw the reset
            else:
                with extra:
                    self.assertTrue(closedWithoutAnswer(extra))
            with connectFrom(self.server.port, "127.0.0.2") as other:
                other.sendall(rawhttp.requestHead("PUT", "/other.bin", [("Content-Length", "2")]) + b"ok")
                self.assertEqual(rawhttp.ResponseReader(other).readResponse().status, 201)
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + BOUND
        while True:
            try:
                with connectFrom(self.server.port, "127.0.0.3") as sock:
                    sock.sendall(rawhttp.requestHead("PUT", "/freed.bin", [("Content-Length", "4")]) + b"free")
                    answer: rawhttp.Answer | None = rawhttp.ResponseReader(sock).readResponse()
            except (ConnectionError, OSError):
                answer = None
            if answer is not None and answer.status == 201:
                break
            self.assertLess(time.monotonic(), deadline, "slots never freed")
            time.sleep(0.1)


class HeaderLimitTests(LimitsTestCase):
    """
    The header block's size and the time to send it.
    """

    def test_headerTooLarge(self) -> None:
        """A header block over 16 KiB is refused 431 and the connection closed; nothing is stored."""
        self.startUploadServer()
        pad = [(f"X-Pad-{i}", "a" * 1000) for i in range(20)]
        with rawhttp.connect(self.server.port, timeout=BOUND) as sock:
            sock.sendall(rawhttp.requestHead("PUT", "/big-head.bin", pad + [("Content-Length", "4")]))
            reader = rawhttp.ResponseReader(sock)
            self.assertEqual(reader.readResponse().status, 431)
            reader.waitClosed(BOUND)
        self.assertEqual(self.headRaw("/big-head.bin").status, 404)

    def test_tooManyHeaderFields(self) -> None:
        """More than 100 header fields are refused 431."""
        self.startUploadServer()
        fields = [(f"X-{i}", "1") for i in range(501)]
        with rawhttp.connect(self.server.port, timeout=BOUND) as sock:
            sock.sendall(rawhttp.requestHead("PUT", "/many.bin", fields + [("Content-Length", "4")]))
            self.assertEqual(rawhttp.ResponseReader(sock).readResponse().status, 431)

    def test_tricklingHeadersCut(self) -> None:
        """Header bytes trickled faster than the idle timeout are cut at the header deadline, unanswered."""
        self.startUploadServer("--header-timeout", "2", "--idle-timeout", "60")
        head = rawhttp.requestHead("PUT", "/slow.bin", [("Content-Length", "4")] + [("X-Pad", "a" * 200)])
        start = time.monotonic()
        with rawhttp.connect(self.server.port, timeout=BOUND) as sock:
            sock.setblocking(False)
            closed = False
            for byte in head:
                try:
                    sock.send(bytes([byte]))
                    if sock.recv(1) == b"":
                        closed = True
                        break
                except BlockingIOError:
                    pass
                except OSError:
                    closed = True
                    break
                if time.monotonic() - start > BOUND:
                    break
                time.sleep(0.05)
        self.assertTrue(closed, "the trickling client was never cut off")
        self.assertEqual(self.headRaw("/slow.bin").status, 404)

    def test_slowBodyNotCut(self) -> None:
        """Once the header block is in, only the idle timeout applies: a slow body outlives the header deadline."""
        self.startUploadServer("--header-timeout", "1", "--idle-timeout", "60")
        body = b"0123456789"
        with rawhttp.connect(self.server.port, timeout=BOUND) as sock:
            sock.sendall(rawhttp.requestHead("PUT", "/slowbody.bin", [("Content-Length", str(len(body)))]))
            rawhttp.sendPieces(sock, [bytes([b]) for b in body], pause=0.3)
            answer = rawhttp.ResponseReader(sock).readResponse()
        self.assertEqual(answer.status, 201, answer.raw[:300])

    def test_idleKeepAliveClosed(self) -> None:
        """An idle kept-alive connection is closed at the header deadline, after its answer."""
        self.startUploadServer("--header-timeout", "1")
        with rawhttp.connect(self.server.port, timeout=BOUND) as sock:
            sock.sendall(rawhttp.requestHead("PUT", "/ka.bin", [("Content-Length", "2")]) + b"ka")
            reader = rawhttp.ResponseReader(sock)
            self.assertEqual(reader.readResponse().status, 201)
            self.assertEqual(reader.waitClosed(BOUND), b"")


class BodyLimitTests(LimitsTestCase):
    """
    Limits met in the middle of a body.
    """

    def test_largestUpload(self) -> None:
        """A body of exactly --max-upload-size bytes is stored whole (on the zero-copy path by default); one byte more is 413 from its headers."""
        size = 300_000
        self.startUploadServer("--max-upload-size", str(size))
        data = patternBytes(13, 0, size)
        _, answer = rawhttp.exchange(
            self.server.port, "PUT", "/max.bin", [("Content-Length", str(size))], data, timeout=BOUND
        )
        self.assertEqual(answer.status, 201, answer.raw[:300])
        with open(os.path.join(self.server.root, "max.bin"), "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertBodyPath()
        _, answer = rawhttp.exchange(
            self.server.port, "PUT", "/over.bin", [("Content-Length", str(size + 1))], data + b"x",
            timeout=BOUND,
        )
        self.assertEqual(answer.status, 413, answer.raw[:300])

    def test_idleTimeoutChunked(self) -> None:
        """A chunked body that stalls is cut after the idle timeout and what arrived is kept."""
        self.startUploadServer("--idle-timeout", "1")
        data = patternBytes(61, 0, 70_000)
        with rawhttp.connect(self.server.port, timeout=BOUND) as sock:
            sock.sendall(rawhttp.requestHead(
                "PUT", "/stall.bin",
                [("Transfer-Encoding", "chunked"), ("Content-Range", "bytes 0-99999/100000")],
            ))
            for start in range(0, len(data), 10_000):
                sock.sendall(b"%x\r\n%s\r\n" % (10_000, data[start:start + 10_000]))
            rawhttp.ResponseReader(sock).waitClosed(BOUND)
        # The server records the total as the cut request ends, just after
        # the connection closed: wait for it (bounded).
        deadline = time.monotonic() + BOUND
        head = self.headRaw("/stall.bin")
        while head.header("upload-length") is None and time.monotonic() < deadline:
            time.sleep(0.05)
            head = self.headRaw("/stall.bin")
        self.assertIncomplete(head, 70_000, 100_000, head=True)

    def test_tooLargeMidStream(self) -> None:
        """A chunked body that passes the size limit is refused 413 in the middle; the destination stays absent."""
        self.startUploadServer("--max-upload-size", "100000")
        data = patternBytes(62, 0, 300_000)
        with rawhttp.connect(self.server.port, timeout=BOUND) as sock:
            sock.sendall(rawhttp.requestHead("PUT", "/huge.bin", [("Transfer-Encoding", "chunked")]))
            reader = rawhttp.ResponseReader(sock)
            sent = 0
            try:
                for start in range(0, len(data), 20_000):
                    sock.sendall(b"%x\r\n%s\r\n" % (20_000, data[start:start + 20_000]))
                    sent += 20_000
            except OSError:
                pass  # the server may stop reading, then close
            answer = reader.readResponse()
        self.assertEqual(answer.status, 413, answer.raw[:300])
        self.assertGreater(sent, 100_000)
        self.assertIn(b"100000", answer.body)
        self.assertFalse(os.path.exists(self.storedPath("huge.bin")))
        self.assertEqual(self.headRaw("/huge.bin").header("upload-offset"), "100000")

    def test_busy503(self) -> None:
        """Over --max-uploads a write is 503 with Retry-After before its body; status queries still work."""
        self.startUploadServer("--max-uploads", "1")
        with rawhttp.connect(self.server.port, timeout=BOUND) as holder:
            holder.sendall(rawhttp.requestHead(
                "PUT", "/one.bin", [("Content-Length", "1000"), ("Expect", "100-continue")]
            ))
            # 100 Continue: the upload is accepted and counts as in progress.
            self.assertEqual(rawhttp.ResponseReader(holder).readResponse().status, 100)
            holder.sendall(b"x" * 10)
            _, answer = rawhttp.exchange(
                self.server.port, "PUT", "/two.bin",
                [("Content-Length", "1000"), ("Expect", "100-continue")], timeout=BOUND,
            )
            self.assertEqual(answer.status, 503, answer.raw[:300])
            self.assertEqual(answer.header("retry-after"), "1")
            self.assertEqual(self.headRaw("/two.bin").status, 404)
            self.assertEqual(self.headRaw("/one.bin").status, 204)


class FreeSpaceTests(LimitsTestCase):
    """
    C{--min-free}: data that would leave less free space is refused 507.
    """

    def test_floor507(self) -> None:
        """Below the floor writes are 507 from the headers, status queries are not refused, stored data stays."""
        self.startUploadServer()
        self.assertEqual(self.put("/kept.bin", b"kept").status, 201)
        partial = self.put("/part.bin", b"part", [("Content-Range", "bytes 0-3/10")])
        self.assertIncomplete(partial, 4)
        self.server.stop()
        server = ServerProcess(
            self.server.root, "--min-free", str(10**18), *bodyPathArgs(self), port=self.server.port
        )
        self.addCleanup(server.stop)
        self.server = server.start()
        for headers in (
            [("Content-Length", "10")],
            [("Transfer-Encoding", "chunked")],
            [("Content-Range", "bytes 4-9/10"), ("Content-Length", "6")],
        ):
            _, answer = rawhttp.exchange(
                self.server.port, "PUT", "/part.bin", headers + [("Expect", "100-continue")],
                timeout=BOUND,
            )
            self.assertEqual(answer.status, 507, (headers, answer.raw[:300]))
            self.assertEqual(answer.header("content-type"), "text/plain; charset=utf-8")
        self.assertIncomplete(self.headRaw("/part.bin"), 4, 10, head=True)
        _, query = rawhttp.exchange(
            self.server.port, "PUT", "/part.bin",
            [("Content-Range", "bytes */10"), ("Content-Length", "0")], timeout=BOUND,
        )
        self.assertIncomplete(query, 4, 10, head=True)
        self.assertEqual(self.headRaw("/kept.bin").status, 200)
        with open(self.storedPath("kept.bin"), "rb") as f:
            self.assertEqual(f.read(), b"kept")

    def test_declaredSizeOverFree(self) -> None:
        """A declared size larger than the disk's free space is 507 without any floor."""
        self.startUploadServer("--max-upload-size", str(10**16))
        free = os.statvfs(self.server.root).f_bavail * os.statvfs(self.server.root).f_frsize
        huge = str(free + 10**12)
        _, answer = rawhttp.exchange(
            self.server.port, "PUT", "/big.bin",
            [("Content-Range", f"bytes 0-9/{huge}"), ("Content-Length", "10"), ("Expect", "100-continue")],
            timeout=BOUND,
        )
        self.assertEqual(answer.status, 507, answer.raw[:300])
        self.assertEqual(self.headRaw("/big.bin").status, 404)


# The same tests with every body read by Python (--zero-copy off), the path
# the zero-copy one falls back to (issue 13: every upload test on both paths).


class BodyLimitReadByPythonTests(ReadByPython, BodyLimitTests):
    """
    L{BodyLimitTests} with C{--zero-copy off}.
    """


class FreeSpaceReadByPythonTests(ReadByPython, FreeSpaceTests):
    """
    L{FreeSpaceTests} with C{--zero-copy off}.
    """
