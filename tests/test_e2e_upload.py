"""
End-to-end tests of whole-file uploads (docs/protocol.md sections 1, 2 and 6),
against a real C{twistd uploadsvc} process on a loopback port, with treq,
curl and raw sockets as clients.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.support import rawhttp
from tests.support.rawhttp import PatternProducer, fileSha256, patternBytes, patternSha256
from tests.support.server import ReadByPython, ServerTestMixin, assertPumped

MiB = 1 << 20
GiB = 1 << 30


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _walkFiles(top: str) -> dict[str, int]:
    """
    Every regular file under C{top}, relative path to size.
    """
    found = {}
    for folder, _, files in os.walk(top):
        for name in files:
            full = os.path.join(folder, name)
            found[os.path.relpath(full, top)] = os.lstat(full).st_size
    return found


class BigUploadTests(ServerTestMixin, TestCase):
    """
    A 1 GiB body streams to disk with flat memory and no temporary file.
    """

    timeout = 120

    async def test_oneGibibyte(self) -> None:
        """
        A 1 GiB PUT is stored byte-identical, the server's peak RSS stays
        under 100 MB, no file is open or created in a temporary folder while
        it runs, and afterwards the root holds only the file and the state
        folder without staged data.
        """
        server = self.startUploadServer()
        seed, size = 11, GiB
        tempDirs = {server.tmpDir, tempfile.gettempdir(), "/tmp", "/var/tmp"}
        suspicious: set[str] = set()
        underRoot: set[str] = set()

        def sample() -> None:
            for target in server.openFiles():
                inRoot = target == server.root or target.startswith(server.root + "/")
                if inRoot and not target.endswith(" (deleted)"):
                    underRoot.add(target)  # the root may itself be in /tmp
                    continue
                if not target.startswith("/") or target.startswith(("/dev/", "/proc/")):
                    continue
                if target == server.logPath:
                    continue
                inTemp = any(target.startswith(d.rstrip("/") + "/") for d in tempDirs)
                if target.endswith(" (deleted)") or inTemp:
                    suspicious.add(target)

        sampler = LoopingCall(sample)
        sampler.start(0.2)
        try:
            answer = await self.http.request(
                "PUT", "/big/one.bin", data=PatternProducer(seed, size, chunkSize=4 * rawhttp.BLOCK)
            )
        finally:
            sampler.stop()
        peak = server.peakRSS()
        expected = await deferToThread(patternSha256, seed, size)
        stored = await deferToThread(fileSha256, self.storedPath("big/one.bin"))
        self.assertEqual(stored, expected)
        self.assertCompleted(answer, "big/one.bin", size, expected)
        self.assertLess(peak, 100 * 10**6, f"server peak RSS {peak} bytes")
        # The sampler did see the server's files (so it could have seen a
        # spool file), and saw nothing outside the root.
        self.assertNotEqual(underRoot, set())
        self.assertEqual(suspicious, set())
        self.assertEqual(os.listdir(server.tmpDir), [])
        files = _walkFiles(server.root)
        self.assertEqual(
            [p for p in files if not p.startswith(".uploadsvc" + os.sep)], ["big/one.bin"]
        )
        staged = {p: n for p, n in files.items() if p.startswith(".uploadsvc" + os.sep)}
        self.assertLess(sum(staged.values()), 64 * 1024, f"state folder holds {staged}")
        self.assertBodyPath()
        assertPumped(self, server)


class ConcurrentUploadTests(ServerTestMixin, TestCase):
    """
    Many uploads at once each get their own bytes.
    """

    timeout = 240

    async def test_twoHundredAtOnce(self) -> None:
        """
        200 concurrent PUTs of distinct 256 KiB bodies are all answered 201
        and all stored byte-identical.
        """
        # 200 connects at once overflow the default listen backlog (50);
        # with SYN cookies on, the kernel then resets some of them before
        # the server ever sees them. A deployment expecting such bursts sets
        # the backlog in its endpoint, as here.
        self.startUploadServer(maxPersistent=250, listenOptions="backlog=512")
        size = 256 * 1024
        bodies = {i: patternBytes(1000 + i, 0, size) for i in range(200)}
        answers = await gatherResults(
            [
                ensureDeferred(self.http.request("PUT", f"/many/{i:03d}.bin", data=body))
                for i, body in bodies.items()
            ],
            consumeErrors=True,
        )
        statuses = [a.status for a in answers]
        self.assertEqual(statuses, [201] * 200)
        for (i, body), answer in zip(bodies.items(), answers):
            self.assertCompleted(answer, f"many/{i:03d}.bin", size, sha(body))


class ChunkedTests(ServerTestMixin, TestCase):
    """
    Chunked request bodies are stored whole however their framing is split.
    """

    timeout = 120

    def test_framingInSeparateSegments(self) -> None:
        """
        A chunked body whose size lines, chunk data, CR and LF arrive in
        separate TCP segments with pauses between them is stored whole.
        """
        self.startUploadServer()
        data = patternBytes(21, 0, 150_000)
        pieces = rawhttp.chunkedPieces(data, [65536, 1, 4097, 10])
        with rawhttp.connect(self.server.port) as sock:
            sock.sendall(
                rawhttp.requestHead("PUT", "/chunked/a.bin", [("Transfer-Encoding", "chunked")])
            )
            rawhttp.sendPieces(sock, pieces, pause=0.05)
            _, answer = rawhttp.ResponseReader(sock).readFinal()
        self.assertCompleted(answer, "chunked/a.bin", len(data), sha(data))

    def test_chunkExtensionsAndOneByteChunks(self) -> None:
        """
        Chunk extensions and runs of one-byte chunks, each in its own
        segment, do not end or corrupt the body.
        """
        self.startUploadServer()
        data = patternBytes(22, 0, 300)
        pieces = rawhttp.chunkedPieces(data, [1, 2, 3, 200], extension=b";name=value")
        with rawhttp.connect(self.server.port) as sock:
            sock.sendall(
                rawhttp.requestHead("PUT", "/chunked/b.bin", [("Transfer-Encoding", "chunked")])
            )
            rawhttp.sendPieces(sock, pieces, pause=0.005)
            _, answer = rawhttp.ResponseReader(sock).readFinal()
        self.assertCompleted(answer, "chunked/b.bin", len(data), sha(data))

    async def test_bigChunkedFromTreq(self) -> None:
        """
        A 16 MiB body of unknown length, sent chunked by treq, is stored
        byte-identical.
        """
        self.startUploadServer()
        size = 16 * MiB
        answer = await self.http.request(
            "PUT", "/chunked/c.bin", data=PatternProducer(23, size, knownLength=False)
        )
        self.assertCompleted(answer, "chunked/c.bin", size, patternSha256(23, size))


class PipeliningTests(ServerTestMixin, TestCase):
    """
    Keep-alive and pipelined requests stay correct around streamed bodies.
    """

    timeout = 60

    def test_twoPipelinedPuts(self) -> None:
        """
        Two PUTs sent back to back on one connection are both answered, in
        order, and both stored correctly.
        """
        self.startUploadServer()
        one = patternBytes(31, 0, 300_000)
        two = patternBytes(32, 0, 70_001)
        with rawhttp.connect(self.server.port) as sock:
            sock.sendall(
                rawhttp.requestHead("PUT", "/p/1.bin", [("Content-Length", str(len(one)))])
                + one
                + rawhttp.requestHead("PUT", "/p/2.bin", [("Content-Length", str(len(two)))])
                + two
            )
            reader = rawhttp.ResponseReader(sock)
            _, first = reader.readFinal()
            _, second = reader.readFinal()
        self.assertCompleted(first, "p/1.bin", len(one), sha(one))
        self.assertCompleted(second, "p/2.bin", len(two), sha(two))

    def test_pipelinedChunkedPutAndHead(self) -> None:
        """
        A chunked PUT pipelined with a HEAD of the same path: the PUT
        completes and the HEAD, answered after it, sees the complete file.
        """
        self.startUploadServer()
        data = patternBytes(33, 0, 100_000)
        body = b"".join(rawhttp.chunkedPieces(data, [40_000]))
        with rawhttp.connect(self.server.port) as sock:
            sock.sendall(
                rawhttp.requestHead("PUT", "/p/3.bin", [("Transfer-Encoding", "chunked")])
                + body
                + rawhttp.requestHead("HEAD", "/p/3.bin")
            )
            reader = rawhttp.ResponseReader(sock)
            _, put = reader.readFinal()
            _, head = reader.readFinal("HEAD")
        self.assertCompleted(put, "p/3.bin", len(data), sha(data))
        self.assertEqual(head.status, 200)
        self.assertEqual(head.header("content-length"), str(len(data)))
        self.assertEqual(head.header("upload-complete"), "?1")

    def test_keepAliveSequence(self) -> None:
        """
        One connection carries a partial Content-Range PUT, a HEAD and the
        finishing PUT, one after the other.
        """
        self.startUploadServer()
        data = patternBytes(34, 0, 200_000)
        cut = 123_457
        with rawhttp.connect(self.server.port) as sock:
            reader = rawhttp.ResponseReader(sock)
            sock.sendall(
                rawhttp.requestHead(
                    "PUT",
                    "/p/4.bin",
                    [("Content-Range", f"bytes 0-{cut - 1}/{len(data)}"), ("Content-Length", str(cut))],
                )
                + data[:cut]
            )
            _, first = reader.readFinal()
            self.assertIncomplete(first, cut)
            sock.sendall(rawhttp.requestHead("HEAD", "/p/4.bin"))
            _, head = reader.readFinal("HEAD")
            self.assertIncomplete(head, cut, len(data), head=True)
            rest = data[cut:]
            sock.sendall(
                rawhttp.requestHead(
                    "PUT",
                    "/p/4.bin",
                    [
                        ("Content-Range", f"bytes {cut}-{len(data) - 1}/{len(data)}"),
                        ("Content-Length", str(len(rest))),
                    ],
                )
                + rest
            )
            _, last = reader.readFinal()
        self.assertCompleted(last, "p/4.bin", len(data), sha(data))


class CompletionTests(ServerTestMixin, TestCase):
    """
    The answer to a completed upload, and where the file lands.
    """

    timeout = 60

    async def test_createdAnswer(self) -> None:
        """
        A new file is answered 201 with Upload-Offset, Upload-Complete: ?1,
        Location, Repr-Digest and the JSON body, and lands in created
        folders.
        """
        self.startUploadServer()
        data = patternBytes(41, 0, MiB + 3)
        answer = await self.http.request("PUT", "/photos/2026/a.jpg", data=data)
        self.assertCompleted(answer, "photos/2026/a.jpg", len(data), sha(data))
        self.assertBodyPath()

    async def test_postIsPut(self) -> None:
        """
        POST stores a file like PUT.
        """
        self.startUploadServer()
        data = patternBytes(42, 0, 5000)
        answer = await self.http.request("POST", "/post.bin", data=data)
        self.assertCompleted(answer, "post.bin", len(data), sha(data))

    async def test_emptyFile(self) -> None:
        """
        A PUT with an empty body stores an empty file.
        """
        self.startUploadServer()
        answer = await self.http.request("PUT", "/empty.bin", data=b"")
        self.assertCompleted(answer, "empty.bin", 0, sha(b""))

    async def test_noOverwrite(self) -> None:
        """
        Without --allow-overwrite, a PUT on a complete file is refused 409
        and the file is unchanged.
        """
        self.startUploadServer()
        first = patternBytes(43, 0, 1000)
        await self.http.request("PUT", "/same.bin", data=first)
        answer = await self.http.request("PUT", "/same.bin", data=patternBytes(44, 0, 2000))
        self.assertEqual(answer.status, 409, answer.body)
        self.assertEqual(fileSha256(self.storedPath("same.bin")), sha(first))

    async def test_overwrite(self) -> None:
        """
        With --allow-overwrite, a new file is answered 201 and a replaced one
        200, and the file then holds the new content.
        """
        self.startUploadServer("--allow-overwrite")
        first = patternBytes(45, 0, 3000)
        second = patternBytes(46, 0, 2000)
        answer = await self.http.request("PUT", "/over.bin", data=first)
        self.assertCompleted(answer, "over.bin", len(first), sha(first), status=201)
        answer = await self.http.request("PUT", "/over.bin", data=second)
        self.assertCompleted(answer, "over.bin", len(second), sha(second), status=200)

    def test_escapedPath(self) -> None:
        """
        Each component is percent-decoded once: C{%252e%252e} names a folder
        literally called C{%2e%2e}, and UTF-8 escapes name UTF-8 files.
        """
        self.startUploadServer()
        for path, stored in [
            ("/%252e%252e/x.bin", ["%2e%2e", "x.bin"]),
            ("/caf%C3%A9/%E2%82%AC.txt", ["caf\u00e9", "\u20ac.txt"]),
        ]:
            _, answer = rawhttp.exchange(
                self.server.port, "PUT", path, [("Content-Length", "4")], b"data"
            )
            self.assertEqual(answer.status, 201, (path, answer.body))
            with open(os.path.join(self.server.root, *stored), "rb") as f:
                self.assertEqual(f.read(), b"data")

    async def test_parentIsFile(self) -> None:
        """
        A path whose parent is an existing file is refused 409.
        """
        self.startUploadServer()
        await self.http.request("PUT", "/file.bin", data=b"x")
        answer = await self.http.request("PUT", "/file.bin/child.bin", data=b"y")
        self.assertEqual(answer.status, 409, answer.body)
        with open(self.storedPath("file.bin"), "rb") as f:
            self.assertEqual(f.read(), b"x")


class CurlUploadTests(ServerTestMixin, TestCase):
    """
    Uploads with curl, as the README shows them.
    """

    timeout = 60

    async def test_uploadFile(self) -> None:
        """
        C{curl -T file URL} uploads a file (through C{Expect: 100-continue},
        which curl sends for bodies this size) and gets the completion
        answer.
        """
        self.startUploadServer()
        data = patternBytes(51, 0, 3 * MiB + 5)
        source = os.path.abspath(self.mktemp())
        with open(source, "wb") as f:
            f.write(data)
        result = await self.curl("-T", source, self.server.url("/curl/up.bin"))
        self.assertEqual(result.exitCode, 0, result.stderr)
        self.assertCompleted(result, "curl/up.bin", len(data), sha(data))
        self.assertBodyPath()

    async def test_uploadFromStdinChunked(self) -> None:
        """
        C{curl -T -} streams standard input chunked, and it is stored whole.
        """
        self.startUploadServer()
        data = patternBytes(52, 0, 2 * MiB + 7)
        source = os.path.abspath(self.mktemp())
        with open(source, "wb") as f:
            f.write(data)
        from twisted.internet.utils import getProcessOutputAndValue

        out, err, code = await getProcessOutputAndValue(
            "/bin/sh",
            [
                "-c",
                f"{self.curlPath} -sS --noproxy '*' -T - -o /dev/null -w '%{{http_code}}' "
                f"'{self.server.url('/curl/stdin.bin')}' < '{source}'",
            ],
            env={"PATH": "/usr/bin:/bin"},
            reactor=reactor,
        )
        self.assertEqual((code, out), (0, b"201"), err)
        self.assertEqual(fileSha256(self.storedPath("curl/stdin.bin")), sha(data))


# The same tests with every body read by Python (--zero-copy off), the path
# the zero-copy one falls back to (issue 13: every upload test on both paths).


class BigUploadReadByPythonTests(ReadByPython, BigUploadTests):
    """
    L{BigUploadTests} with C{--zero-copy off}.
    """


class ConcurrentUploadReadByPythonTests(ReadByPython, ConcurrentUploadTests):
    """
    L{ConcurrentUploadTests} with C{--zero-copy off}.
    """


class PipeliningReadByPythonTests(ReadByPython, PipeliningTests):
    """
    L{PipeliningTests} with C{--zero-copy off}.
    """


class CompletionReadByPythonTests(ReadByPython, CompletionTests):
    """
    L{CompletionTests} with C{--zero-copy off}.
    """


class CurlUploadReadByPythonTests(ReadByPython, CurlUploadTests):
    """
    L{CurlUploadTests} with C{--zero-copy off}.
    """
