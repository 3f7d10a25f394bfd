"""
End-to-end tests of interrupted and resumed uploads (docs/protocol.md sections 2,
3, 5 and 7), against a real C{twistd uploadsvc} process on a loopback port:
dropped connections, C{kill -9}, status queries, Content-Range appends,
DELETE and takeover.
"""

from __future__ import annotations

import hashlib
import os
import time

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.support import rawhttp
from tests.support.rawhttp import PatternProducer, patternBytes, patternSha256
from tests.support.server import ReadByPython, ServerTestMixin

MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rangeHeaders(start: int, end: int, total: int | str) -> dict[str, str]:
    """
    The headers of an append of bytes C{start}..C{end} (inclusive).
    """
    return {"Content-Range": f"bytes {start}-{end}/{total}"}


class StatusTests(ServerTestMixin, TestCase):
    """
    HEAD and the C{bytes */T} PUT report the state of a path.
    """

    timeout = 60

    async def test_headStates(self) -> None:
        """
        HEAD answers 404 for nothing, 204 with offset, length, Range and
        no-store for an incomplete upload, and 200 with the size for a
        complete file.
        """
        self.startUploadServer()
        data = patternBytes(61, 0, 1000)
        answer = await self.http.request("HEAD", "/s/a.bin")
        self.assertEqual(answer.status, 404)
        answer = await self.http.request("PUT", "/s/a.bin", rangeHeaders(0, 99, 1000), data[:100])
        self.assertIncomplete(answer, 100)
        answer = await self.http.request("HEAD", "/s/a.bin")
        self.assertIncomplete(answer, 100, 1000, head=True)
        self.assertEqual(answer.body, b"")
        self.assertFalse(os.path.exists(self.storedPath("s/a.bin")))
        answer = await self.http.request("PUT", "/s/a.bin", rangeHeaders(100, 999, 1000), data[100:])
        self.assertCompleted(answer, "s/a.bin", 1000, sha(data))
        answer = await self.http.request("HEAD", "/s/a.bin")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.header("content-length"), "1000")
        self.assertEqual(answer.header("upload-complete"), "?1")
        self.assertEqual(answer.header("upload-offset"), "1000")

    async def test_headOfEmptyIncomplete(self) -> None:
        """
        An upload that recorded its total but no bytes yet reports offset 0
        and no Range.
        """
        self.startUploadServer()
        with rawhttp.connect(self.server.port) as sock:
            sock.sendall(rawhttp.requestHead("PUT", "/s/zero.bin", [("Content-Length", "500")]))
        answer = self.waitForOffset("/s/zero.bin", 0)
        self.assertIncomplete(answer, 0, 500, head=True)

    async def test_statusPut(self) -> None:
        """
        A PUT with C{Content-Range: bytes */T} or C{bytes */*} and no body
        answers like HEAD without a body; a different T gets 409 with the
        recorded Upload-Length; nothing there is 404; a complete file is 200.
        """
        self.startUploadServer()
        answer = await self.http.request("PUT", "/s/b.bin", {"Content-Range": "bytes */1000"})
        self.assertEqual(answer.status, 404, answer.body)
        data = patternBytes(62, 0, 1000)
        await self.http.request("PUT", "/s/b.bin", rangeHeaders(0, 299, 1000), data[:300])
        for form in ("bytes */1000", "bytes */*"):
            answer = await self.http.request("PUT", "/s/b.bin", {"Content-Range": form})
            self.assertIncomplete(answer, 300, 1000, head=True)
            self.assertEqual(answer.body, b"", form)
            self.assertIn(answer.header("content-length"), (None, "0"), form)
        answer = await self.http.request("PUT", "/s/b.bin", {"Content-Range": "bytes */999"})
        self.assertEqual(answer.status, 409, answer.body)
        self.assertEqual(answer.header("upload-length"), "1000")
        answer = await self.http.request("HEAD", "/s/b.bin")
        self.assertIncomplete(answer, 300, 1000, head=True)
        await self.http.request("PUT", "/s/b.bin", rangeHeaders(300, 999, 1000), data[300:])
        answer = await self.http.request("PUT", "/s/b.bin", {"Content-Range": "bytes */1000"})
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(answer.header("upload-complete"), "?1")
        self.assertEqual(answer.header("upload-offset"), "1000")


class AppendTests(ServerTestMixin, TestCase):
    """
    Content-Range appends, overlapping retries, restarts from zero and
    DELETE.
    """

    timeout = 60

    async def test_overlappingRetries(self) -> None:
        """
        A retry that overlaps stored bytes appends only the new ones, a
        retry of stored bytes only writes nothing, and the file ends up
        byte-identical.
        """
        self.startUploadServer()
        data = patternBytes(63, 0, 300)
        answer = await self.http.request("PUT", "/r/a.bin", rangeHeaders(0, 99, 300), data[:100])
        self.assertIncomplete(answer, 100)
        answer = await self.http.request("PUT", "/r/a.bin", rangeHeaders(50, 149, 300), data[50:150])
        self.assertIncomplete(answer, 150)
        answer = await self.http.request("PUT", "/r/a.bin", rangeHeaders(0, 99, 300), data[:100])
        self.assertIncomplete(answer, 150)
        answer = await self.http.request("PUT", "/r/a.bin", rangeHeaders(0, 149, "*"), data[:150])
        self.assertIncomplete(answer, 150)
        answer = await self.http.request("PUT", "/r/a.bin", rangeHeaders(150, 299, 300), data[150:])
        self.assertCompleted(answer, "r/a.bin", 300, sha(data))

    async def test_retryAfterCompletion(self) -> None:
        """
        A Content-Range request repeated after the upload completed (a lost
        final answer) is answered 200 with the completion headers, and the
        file is unchanged.
        """
        self.startUploadServer()
        data = patternBytes(64, 0, 300)
        await self.http.request("PUT", "/r/b.bin", rangeHeaders(0, 99, 300), data[:100])
        answer = await self.http.request("PUT", "/r/b.bin", rangeHeaders(100, 299, 300), data[100:])
        self.assertCompleted(answer, "r/b.bin", 300, sha(data))
        answer = await self.http.request("PUT", "/r/b.bin", rangeHeaders(100, 299, 300), data[100:])
        self.assertCompleted(answer, "r/b.bin", 300, sha(data), status=200, jsonBody=False)

    async def test_unknownTotalThenKnown(self) -> None:
        """
        Appends with an unknown total (C{/*}) carry on until a piece names
        the total, which completes the upload.
        """
        self.startUploadServer()
        data = patternBytes(65, 0, 5000)
        answer = await self.http.request("PUT", "/r/c.bin", rangeHeaders(0, 1999, "*"), data[:2000])
        self.assertIncomplete(answer, 2000)
        answer = await self.http.request("HEAD", "/r/c.bin")
        self.assertIncomplete(answer, 2000, head=True)
        self.assertIsNone(answer.header("upload-length"))
        answer = await self.http.request("PUT", "/r/c.bin", rangeHeaders(2000, 4999, 5000), data[2000:])
        self.assertCompleted(answer, "r/c.bin", 5000, sha(data))

    async def test_chunkedAppendFromZero(self) -> None:
        """
        The first request may carry a Content-Range from 0 with a chunked
        body; later pieces complete the upload.
        """
        self.startUploadServer()
        size = 3 * MiB
        answer = await self.http.request(
            "PUT",
            "/r/d.bin",
            rangeHeaders(0, MiB - 1, size),
            PatternProducer(66, MiB, knownLength=False),
        )
        self.assertIncomplete(answer, MiB)
        answer = await self.http.request(
            "PUT", "/r/d.bin", rangeHeaders(MiB, size - 1, size), PatternProducer(66, size - MiB, MiB)
        )
        self.assertCompleted(answer, "r/d.bin", size, patternSha256(66, size))
        self.assertBodyPath()

    async def test_plainPutStartsOver(self) -> None:
        """
        A plain PUT on a path with an incomplete upload starts it over from
        zero.
        """
        self.startUploadServer()
        await self.http.request("PUT", "/r/e.bin", rangeHeaders(0, 99, 1000), patternBytes(1, 0, 100))
        data = patternBytes(67, 0, 700)
        answer = await self.http.request("PUT", "/r/e.bin", data=data)
        self.assertCompleted(answer, "r/e.bin", 700, sha(data))

    async def test_deleteIncomplete(self) -> None:
        """
        DELETE of an incomplete upload answers 204 and leaves nothing (HEAD
        404, no staged bytes); DELETE of nothing is 404; DELETE of a
        complete file without --allow-delete is 405 and keeps it.
        """
        self.startUploadServer()
        await self.http.request("PUT", "/d/a.bin", rangeHeaders(0, 99_999, 200_000), patternBytes(68, 0, 100_000))
        answer = await self.http.request("DELETE", "/d/a.bin")
        self.assertEqual(answer.status, 204, answer.body)
        answer = await self.http.request("HEAD", "/d/a.bin")
        self.assertEqual(answer.status, 404)
        staged = 0
        for folder, _, files in os.walk(os.path.join(self.server.root, ".uploadsvc")):
            staged += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
        self.assertLess(staged, 100_000)
        answer = await self.http.request("DELETE", "/d/a.bin")
        self.assertEqual(answer.status, 404, answer.body)
        await self.http.request("PUT", "/d/b.bin", data=b"keep")
        answer = await self.http.request("DELETE", "/d/b.bin")
        self.assertEqual(answer.status, 405, answer.body)
        with open(self.storedPath("d/b.bin"), "rb") as f:
            self.assertEqual(f.read(), b"keep")

    async def test_deleteCompleteAllowed(self) -> None:
        """
        With --allow-delete, DELETE removes a complete file.
        """
        self.startUploadServer("--allow-delete")
        await self.http.request("PUT", "/d/c.bin", data=b"gone")
        answer = await self.http.request("DELETE", "/d/c.bin")
        self.assertIn(answer.status, (200, 204), answer.body)
        self.assertFalse(os.path.exists(self.storedPath("d/c.bin")))
        answer = await self.http.request("HEAD", "/d/c.bin")
        self.assertEqual(answer.status, 404)


class DropTests(ServerTestMixin, TestCase):
    """
    A client that goes away mid-body leaves a resumable upload.
    """

    timeout = 60

    async def test_dropMidBody(self) -> None:
        """
        After a client sends half of a Content-Length body and closes, HEAD
        reports every byte sent (204, Upload-Offset, Upload-Complete: ?0,
        Upload-Length), and curl resumes from there to a byte-identical
        file.
        """
        self.startUploadServer()
        size = 2 * MiB + 11
        half = size // 2
        data = patternBytes(71, 0, size)
        with rawhttp.connect(self.server.port) as sock:
            sock.sendall(rawhttp.requestHead("PUT", "/drop/a.bin", [("Content-Length", str(size))]))
            sock.sendall(data[:half])
        answer = await deferToThread(self.waitForOffset, "/drop/a.bin", half)
        self.assertIncomplete(answer, half, size, head=True)
        self.assertFalse(os.path.exists(self.storedPath("drop/a.bin")))

        head = await self.curl("-I", self.server.url("/drop/a.bin"))
        self.assertEqual((head.status, head.header("upload-offset")), (204, str(half)))
        rest = os.path.abspath(self.mktemp())
        with open(rest, "wb") as f:
            f.write(data[half:])
        result = await self.curl(
            "-T",
            rest,
            "-H",
            f"Content-Range: bytes {half}-{size - 1}/{size}",
            self.server.url("/drop/a.bin"),
        )
        self.assertEqual(result.exitCode, 0, result.stderr)
        self.assertCompleted(result, "drop/a.bin", size, sha(data))

    async def test_dropMidChunkedBody(self) -> None:
        """
        After a client sends two chunks and half of a third of a chunked
        body and closes, HEAD reports every data byte sent, with no
        Upload-Length (the total was never known), and a Content-Range
        append completes the file.
        """
        self.startUploadServer()
        data = patternBytes(73, 0, 400_000)
        size = b"%x\r\n" % (100_000,)
        with rawhttp.connect(self.server.port) as sock:
            sock.sendall(rawhttp.requestHead("PUT", "/drop/c.bin", [("Transfer-Encoding", "chunked")]))
            sock.sendall(size + data[:100_000] + b"\r\n")
            sock.sendall(size + data[100_000:200_000] + b"\r\n")
            sock.sendall(size + data[200_000:250_000])
        sent = 250_000
        answer = await deferToThread(self.waitForOffset, "/drop/c.bin", sent)
        self.assertIncomplete(answer, sent, head=True)
        self.assertIsNone(answer.header("upload-length"))
        answer = await self.http.request(
            "PUT", "/drop/c.bin", rangeHeaders(sent, len(data) - 1, len(data)), data[sent:]
        )
        self.assertCompleted(answer, "drop/c.bin", len(data), sha(data))

    def test_idleTimeoutKeepsBytes(self) -> None:
        """
        A client that stops sending mid-body is disconnected after the idle
        timeout, and what it sent is kept and reported by HEAD.
        """
        self.startUploadServer("--idle-timeout", "1")
        data = patternBytes(74, 0, 500_000)
        with rawhttp.connect(self.server.port) as sock:
            sock.sendall(rawhttp.requestHead("PUT", "/drop/i.bin", [("Content-Length", "500000")]))
            sock.sendall(data[:123_456])
            rawhttp.ResponseReader(sock).waitClosed(20)
        self.assertIncomplete(self.headRaw("/drop/i.bin"), 123_456, 500_000, head=True)

    async def test_curlInterruptAndResume(self) -> None:
        """
        The README's curl flow: upload a first part with Content-Range, ask
        the offset with HEAD, upload the rest; the file is byte-identical.
        """
        self.startUploadServer()
        size = 3 * MiB + 1
        cut = MiB + 17
        data = patternBytes(72, 0, size)
        parts = []
        for piece in (data[:cut], data[cut:]):
            parts.append(os.path.abspath(self.mktemp()))
            with open(parts[-1], "wb") as f:
                f.write(piece)
        url = self.server.url("/curl/r.bin")
        first = await self.curl("-T", parts[0], "-H", f"Content-Range: bytes 0-{cut - 1}/{size}", url)
        self.assertIncomplete(first, cut)
        head = await self.curl("-I", url)
        self.assertIncomplete(head, cut, size, head=True)
        second = await self.curl(
            "-T", parts[1], "-H", f"Content-Range: bytes {cut}-{size - 1}/{size}", url
        )
        self.assertCompleted(second, "curl/r.bin", size, sha(data))


class CrashTests(ServerTestMixin, TestCase):
    """
    Nothing acknowledged is lost across restarts, C{kill -9} included.
    """

    timeout = 120

    async def test_kill9MidUpload(self) -> None:
        """
        With one acknowledged piece stored and a second one half sent, the
        server is killed with SIGKILL and restarted: HEAD reports at least
        the acknowledged offset (and no more than was sent), and resuming
        from it gives a byte-identical file.
        """
        server = self.startUploadServer()
        seed, size = 81, 16 * MiB
        part1 = 5 * MiB + 3
        answer = await self.http.request(
            "PUT", "/k/a.bin", rangeHeaders(0, part1 - 1, size), PatternProducer(seed, part1)
        )
        self.assertIncomplete(answer, part1)

        sent = (size - part1) // 2
        sock = rawhttp.connect(server.port)
        self.addCleanup(sock.close)
        sock.sendall(
            rawhttp.requestHead(
                "PUT",
                "/k/a.bin",
                [
                    ("Content-Range", f"bytes {part1}-{size - 1}/{size}"),
                    ("Content-Length", str(size - part1)),
                ],
            )
        )
        for chunk in rawhttp.patternChunks(seed, sent, part1):
            sock.sendall(chunk)
        # Let the server take some of it in before it dies.
        await deferToThread(self.waitForOffset, "/k/a.bin", part1 + sent, 3.0)
        server.kill9()
        self.assertEqual(rawhttp.ResponseReader(sock).waitClosed(10), b"")
        await self.http.pool.closeCachedConnections()
        server.start()

        answer = await self.http.request("HEAD", "/k/a.bin")
        self.assertEqual(answer.status, 204, answer.body)
        offset = int(answer.header("upload-offset") or -1)
        self.assertGreaterEqual(offset, part1)
        self.assertLessEqual(offset, part1 + sent)
        self.assertIncomplete(answer, offset, size, head=True)
        answer = await self.http.request(
            "PUT",
            "/k/a.bin",
            rangeHeaders(offset, size - 1, size),
            PatternProducer(seed, size - offset, offset),
        )
        self.assertCompleted(answer, "k/a.bin", size, patternSha256(seed, size))

    async def test_gracefulRestartKeepsOffset(self) -> None:
        """
        After a SIGTERM restart, an incomplete upload reports exactly its
        acknowledged offset and completes.
        """
        server = self.startUploadServer()
        data = patternBytes(82, 0, 1_000_000)
        await self.http.request("PUT", "/k/b.bin", rangeHeaders(0, 399_999, 1_000_000), data[:400_000])
        await self.http.pool.closeCachedConnections()
        server.restart()
        answer = await self.http.request("HEAD", "/k/b.bin")
        self.assertIncomplete(answer, 400_000, 1_000_000, head=True)
        answer = await self.http.request(
            "PUT", "/k/b.bin", rangeHeaders(400_000, 999_999, 1_000_000), data[400_000:]
        )
        self.assertCompleted(answer, "k/b.bin", 1_000_000, sha(data))


class TakeoverTests(ServerTestMixin, TestCase):
    """
    docs/protocol.md section 5: a new writer takes an upload over from a stalled
    one.
    """

    timeout = 60

    def stalledWriter(self, path: str, data: bytes, sent: int) -> rawhttp.ResponseReader:
        """
        Start a PUT of C{data} on a raw connection, send C{sent} bytes of
        its body, and leave it open.
        """
        sock = rawhttp.connect(self.server.port)
        self.addCleanup(sock.close)
        sock.sendall(rawhttp.requestHead("PUT", path, [("Content-Length", str(len(data)))]))
        sock.sendall(data[:sent])
        return rawhttp.ResponseReader(sock)

    def test_takeoverWithContentRange(self) -> None:
        """
        While a first PUT stalls mid-body, a second request resuming from
        HEAD's offset is let in (100 Continue) within 2 seconds of its
        headers and completes the file; the first connection is closed by
        the server.
        """
        self.startUploadServer("--idle-timeout", "300")
        size = 4 * MiB
        data = patternBytes(91, 0, size)
        stalled = self.stalledWriter("/t/a.bin", data, MiB)
        head = self.waitForOffset("/t/a.bin", MiB, 5.0)
        self.assertEqual(head.status, 204, head.body)
        offset = int(head.header("upload-offset") or 0)

        with rawhttp.connect(self.server.port) as sock:
            reader = rawhttp.ResponseReader(sock)
            sock.sendall(
                rawhttp.requestHead(
                    "PUT",
                    "/t/a.bin",
                    [
                        ("Content-Range", f"bytes {offset}-{size - 1}/{size}"),
                        ("Content-Length", str(size - offset)),
                        ("Expect", "100-continue"),
                    ],
                )
            )
            started = time.monotonic()
            sock.settimeout(2.0)
            try:
                first = reader.readResponse()
            except TimeoutError:
                self.fail("the second writer was not let in within 2 s of its headers")
            waited = time.monotonic() - started
            sock.settimeout(30)
            self.assertEqual(first.status, 100, f"{first.raw!r} after {waited:.2f} s")
            sock.sendall(data[offset:])
            _, answer = reader.readFinal()
        self.assertCompleted(answer, "t/a.bin", size, sha(data))
        self.assertEqual(stalled.waitClosed(10), b"")

    async def test_takeoverWithPlainPut(self) -> None:
        """
        While a first PUT stalls mid-body, a plain PUT of the whole file on
        the same path is served and completes, and the first connection is
        closed by the server.
        """
        self.startUploadServer("--idle-timeout", "300")
        size = 2 * MiB
        data = patternBytes(92, 0, size)
        stalled = self.stalledWriter("/t/b.bin", data, MiB // 2)
        await deferToThread(self.waitForOffset, "/t/b.bin", MiB // 2, 5.0)
        answer = await self.http.request("PUT", "/t/b.bin", data=data)
        self.assertCompleted(answer, "t/b.bin", size, sha(data))
        closed = await deferToThread(stalled.waitClosed, 10)
        self.assertEqual(closed, b"")


# The same tests with every body read by Python (--zero-copy off), the path
# the zero-copy one falls back to (issue 13: every upload test on both paths).


class AppendReadByPythonTests(ReadByPython, AppendTests):
    """
    L{AppendTests} with C{--zero-copy off}.
    """


class DropReadByPythonTests(ReadByPython, DropTests):
    """
    L{DropTests} with C{--zero-copy off}.
    """


class CrashReadByPythonTests(ReadByPython, CrashTests):
    """
    L{CrashTests} with C{--zero-copy off}.
    """


class TakeoverReadByPythonTests(ReadByPython, TakeoverTests):
    """
    L{TakeoverTests} with C{--zero-copy off}.
    """
