"""
Downloads and scoped credentials end to end against a real C{twistd
uploadsvc}: Range downloads compared byte for byte (curl and treq), 304, 416,
HEAD, an incomplete upload never served, GET 405 with downloads off, flat
memory with a reader that stops reading; scope refusals answered from the
headers, before the body; a bad scope line at start-up.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from typing import Sequence

from twisted.trial.unittest import TestCase
from twisted.web.http import H2_ENABLED

from tests.support import rawhttp
from tests.support.rawhttp import patternBytes
from tests.support.server import ServerTestMixin
from tests.test_e2e_startup import StartupTestCase
from tests.test_e2e_tls import TLSServerMixin

SIZE = 3 * 1024 * 1024 + 17
DATA = patternBytes(11, 0, SIZE)


def _procIO(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name == field:
                return int(value)
    raise KeyError(field)


class DownloadTests(ServerTestMixin, TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.startUploadServer("--allow-download")
        _, answer = rawhttp.exchange(
            self.server.port, "PUT", "/files/data.bin", [("Content-Length", str(SIZE))], DATA,
            timeout=30,
        )
        self.assertEqual(answer.status, 201)

    async def test_curlRanges(self) -> None:
        """curl gets the whole file and each form of range, byte for byte."""
        url = self.server.url("/files/data.bin")
        whole = await self.curl(url)
        self.assertEqual((whole.exitCode, whole.status), (0, 200))
        self.assertEqual(whole.body, DATA)
        for rng, start, end in (
            ("1000-1999", 1000, 1999), ("3000000-", 3000000, SIZE - 1), ("-4096", SIZE - 4096, SIZE - 1),
            ("0-0", 0, 0), (f"{SIZE - 1}-{SIZE + 500}", SIZE - 1, SIZE - 1),
        ):
            with self.subTest(range=rng):
                part = await self.curl("-r", rng, url)
                self.assertEqual(part.status, 206)
                self.assertEqual(part.body, DATA[start : end + 1])
                self.assertEqual(part.header("content-range"), f"bytes {start}-{end}/{SIZE}")

    def test_curlResumesADownload(self) -> None:
        """curl -C - finishes a partial download (a 206 from its offset) into the same bytes."""
        out = os.path.abspath(self.mktemp())
        with open(out, "wb") as f:
            f.write(DATA[:123457])
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        result = subprocess.run(
            [self.curlPath, "-sS", "--noproxy", "*", "--max-time", "60", "-w", "%{http_code}",
             "-C", "-", "-o", out, self.server.url("/files/data.bin")],
            capture_output=True, env=env, timeout=90,
        )
        self.assertEqual((result.returncode, result.stdout), (0, b"206"), result.stderr)
        with open(out, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).digest(), hashlib.sha256(DATA).digest())

    async def test_treqConditionals(self) -> None:
        """treq: a range, 304 for the ETag and the date, If-Range, 416, several ranges."""
        first = await self.http.request("GET", "/files/data.bin", {"Range": "bytes=65536-131071"})
        self.assertEqual(first.status, 206)
        self.assertEqual(first.body, DATA[65536:131072])
        etag, modified = first.header("etag"), first.header("last-modified")
        assert etag is not None and modified is not None
        for headers in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
            same = await self.http.request("GET", "/files/data.bin", headers)
            self.assertEqual((same.status, same.body), (304, b""))
        ranged = await self.http.request(
            "GET", "/files/data.bin", {"Range": "bytes=10-19", "If-Range": etag}
        )
        self.assertEqual((ranged.status, ranged.body), (206, DATA[10:20]))
        stale = await self.http.request(
            "GET", "/files/data.bin", {"Range": "bytes=10-19", "If-Range": '"stale"'}
        )
        self.assertEqual((stale.status, stale.body), (200, DATA))
        past = await self.http.request("GET", "/files/data.bin", {"Range": f"bytes={SIZE}-"})
        self.assertEqual((past.status, past.header("content-range")), (416, f"bytes */{SIZE}"))
        several = await self.http.request("GET", "/files/data.bin", {"Range": "bytes=0-1,4-5"})
        self.assertEqual((several.status, several.body), (200, DATA))

    def test_head(self) -> None:
        """HEAD of a complete file: GET's headers and the upload headers, no body."""
        _, answer = rawhttp.exchange(self.server.port, "HEAD", "/files/data.bin", timeout=10)
        self.assertEqual((answer.status, answer.body), (200, b""))
        self.assertEqual(answer.header("content-length"), str(SIZE))
        self.assertEqual(answer.header("upload-offset"), str(SIZE))
        self.assertEqual(answer.header("upload-complete"), "?1")
        self.assertEqual(answer.header("accept-ranges"), "bytes")
        self.assertIsNotNone(answer.header("etag"))
        self.assertIsNotNone(answer.header("last-modified"))

    def test_incompleteNeverServed(self) -> None:
        """An incomplete upload: GET 404, HEAD 204 with its offset."""
        _, part = rawhttp.exchange(
            self.server.port, "PUT", "/part.bin",
            [("Content-Length", "1000"), ("Content-Range", "bytes 0-999/5000")],
            DATA[:1000], timeout=10,
        )
        self.assertEqual(part.status, 204)
        _, got = rawhttp.exchange(self.server.port, "GET", "/part.bin", timeout=10)
        self.assertEqual((got.status, got.body), (404, b"no file at this path\n"))
        _, head = rawhttp.exchange(self.server.port, "HEAD", "/part.bin", timeout=10)
        self.assertEqual((head.status, head.header("upload-offset")), (204, "1000"))

    def test_flatMemoryWhileTheReaderStops(self) -> None:
        """
        A reader that stops reading stops the disk reads too: the server
        reads a bounded amount ahead, not the file, and its memory stays
        flat; the rest then arrives intact.
        """
        size = 96 * 1024 * 1024
        path = self.storedPath("big.bin")
        block = os.urandom(1 << 20)
        digest = hashlib.sha256()
        with open(path, "wb") as f:
            for i in range(size >> 20):
                chunk = block[i:] + block[:i]
                f.write(chunk)
                digest.update(chunk)
        pid = self.server.pid
        rssBefore = self.server.rss()
        readBefore = _procIO(pid, "rchar")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.connect(("127.0.0.1", self.server.port))
        with sock:
            sock.sendall(rawhttp.requestHead("GET", "/big.bin", []))
            sock.settimeout(30)
            got = sock.recv(65536)
            self.assertTrue(got.startswith(b"HTTP/1.1 200 "), got[:100])
            # Now read nothing, until the server's reads settle (bounded).
            last, steady, deadline = -1, 0, time.monotonic() + 60
            while steady < 10 and time.monotonic() < deadline:
                now = _procIO(pid, "rchar")
                steady = steady + 1 if now == last else 0
                last = now
                time.sleep(0.1)
            readAhead = last - readBefore
            self.assertLess(readAhead, size // 4, f"read {readAhead} bytes ahead of the reader")
            self.assertLess(self.server.rss() - rssBefore, 32 * 1024 * 1024)
            received = bytearray(got)
            while True:
                more = sock.recv(1 << 20)
                if not more:
                    break
                received += more
                head, sep, body = bytes(received[:4096]).partition(b"\r\n\r\n")
                if sep and len(received) - len(head) - 4 >= size:
                    break
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: %d" % size, head)
        self.assertEqual(hashlib.sha256(body).digest(), digest.digest())


class HTTP2DownloadTests(TLSServerMixin, TestCase):
    timeout = 120

    if not H2_ENABLED:
        skip = "the h2 package is not installed"

    def test_curlHTTP2(self) -> None:
        """Over HTTP/2 (ALPN), curl gets the whole file and a range, byte for byte."""
        self.startTLSServer("--allow-download")
        data = patternBytes(12, 0, 5 * 1024 * 1024 + 3)
        with open(self.storedPath("h2.bin"), "wb") as f:
            f.write(data)
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        out = os.path.abspath(self.mktemp())
        for extra, expected, code in (([], data, "200"), (["-r", "1000-2000000"], data[1000:2000001], "206")):
            result = subprocess.run(
                [self.curlPath, "-sS", "--noproxy", "*", "--max-time", "60", "--http2",
                 "--cacert", self.pki.caPath, *extra, "-o", out,
                 "-w", "%{http_version} %{http_code}",
                 f"https://localhost:{self.server.port}/h2.bin"],
                capture_output=True, env=env, timeout=90,
            )
            self.assertEqual((result.returncode, result.stdout.decode()), (0, f"2 {code}"),
                             result.stderr)
            with open(out, "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).digest(), hashlib.sha256(expected).digest())

    async def test_resetStreamsLeaveNoOpenFile(self) -> None:
        """
        GET streams reset (RST_STREAM) right after their headers leave no
        file open and log no error: each is logged as lost.
        """
        from tests.support.polling import waitUntil
        from tests.test_e2e_tls import BlockingH2Client

        self.startTLSServer("--allow-download")
        os.makedirs(self.storedPath("rst"))
        with open(self.storedPath("rst/f.bin"), "wb") as f:
            f.write(patternBytes(13, 0, 1024 * 1024))
        folder = self.storedPath("rst") + os.sep
        streams = 40
        client = BlockingH2Client(self.server.port, self.pki.caPath)
        self.addCleanup(client.close)
        for _ in range(streams):
            sid = client.start("GET", "/rst/f.bin", end=True)
            client.conn.reset_stream(sid)
        client._flush()

        def lost() -> int:
            return self.server.logText().count('"GET /rst/f.bin" lost')

        await waitUntil(lambda: lost() == streams, f"{streams} lost lines in the log", limit=3000)
        await waitUntil(
            lambda: not [t for t in self.server.openFiles() if t.startswith(folder)],
            "no file under rst/ open", limit=500,
        )
        self.assertNotIn("Traceback", self.server.logText())


class DownloadsOffTests(ServerTestMixin, TestCase):
    timeout = 60

    def test_getIs405(self) -> None:
        """Without --allow-download GET is 405 with Allow, and HEAD is today's status answer."""
        self.startUploadServer()
        rawhttp.exchange(self.server.port, "PUT", "/f", [("Content-Length", "3")], b"abc", timeout=10)
        _, got = rawhttp.exchange(self.server.port, "GET", "/f", timeout=10)
        self.assertEqual(got.status, 405)
        self.assertEqual(got.header("allow"), "PUT, POST, HEAD, DELETE, OPTIONS")
        _, head = rawhttp.exchange(self.server.port, "HEAD", "/f", timeout=10)
        self.assertEqual((head.status, head.header("cache-control")), (200, "no-store"))
        self.assertIsNone(head.header("etag"))


ALICE = "alice-token-0123456789abc"
READER = "reader-token-0123456789abc"


class ScopeTests(ServerTestMixin, TestCase):
    timeout = 120

    def setUp(self) -> None:
        tokens = os.path.abspath(self.mktemp())
        with open(tokens, "w") as f:
            f.write(
                f"{ALICE} name=alice prefix=alice/ ops=upload,download\n"
                f"{READER} name=reader ops=download\n"
            )
        self.startUploadServer("--auth-tokens", tokens, "--allow-download", "--allow-delete")

    def refusedBeforeBody(
        self, method: str, target: str, token: str, reason: bytes,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        """
        Send only the headers of a request announcing a body (with C{Expect:
        100-continue}); the answer must be a 403 C{out-of-scope} with no
        C{100 Continue}, and the connection must close.
        """
        headers = [
            ("Authorization", f"Bearer {token}"), ("Content-Length", "100000"),
            ("Expect", "100-continue"), *extra,
        ]
        with rawhttp.connect(self.server.port, timeout=10) as sock:
            sock.sendall(rawhttp.requestHead(method, target, headers))
            reader = rawhttp.ResponseReader(sock)
            interim, answer = reader.readFinal(method)
            self.assertEqual(interim, [])
            self.assertEqual((answer.status, answer.body), (403, reason))
            self.assertIn("close", answer.header("connection") or "")
            self.assertEqual(reader.waitClosed(10), b"")

    def test_outOfScopeBeforeBody(self) -> None:
        """Outside the prefix, or an operation not allowed: 403 from the headers, nothing stored."""
        outside = b"this path is outside this credential's folder\n"
        self.refusedBeforeBody("PUT", "/bob/a.bin", ALICE, outside)
        self.refusedBeforeBody("PUT", "/alice2/a.bin", ALICE, outside)
        self.refusedBeforeBody("POST", "/%61lice2/a.bin", ALICE, outside)
        self.refusedBeforeBody("PUT", "/x.bin", READER, b"this credential may not upload\n")
        self.assertEqual(os.listdir(self.server.root), [".uploadsvc"])

    def test_insideScope(self) -> None:
        """alice uploads into alice/ and downloads it; the reader downloads it; alice may not delete."""
        bearer = ("Authorization", f"Bearer {ALICE}")
        _, put = rawhttp.exchange(
            self.server.port, "PUT", "/alice/a.bin", [bearer, ("Content-Length", "5")], b"hello",
            timeout=10,
        )
        self.assertEqual(put.status, 201)
        for token in (ALICE, READER):
            _, got = rawhttp.exchange(
                self.server.port, "GET", "/alice/a.bin",
                [("Authorization", f"Bearer {token}"), ("Range", "bytes=1-3")], timeout=10,
            )
            self.assertEqual((got.status, got.body), (206, b"ell"))
        _, deleted = rawhttp.exchange(self.server.port, "DELETE", "/alice/a.bin", [bearer], timeout=10)
        self.assertEqual(deleted.status, 403)
        self.assertNotIn(ALICE, self.server.logText())


class BadScopeLineTests(StartupTestCase):
    def test_badScopeLine(self) -> None:
        """A token file with a bad scope line stops the start with one clear line."""
        tokens = os.path.join(self.base, "tokens")
        with open(tokens, "w") as f:
            f.write(f"{ALICE} name=alice prefix=alice/ ops=upload,browse\n")
        result = self.twistd("--root", os.path.join(self.base, "root"), "--auth-tokens", tokens)
        self.assertOneLine(
            result,
            f"--auth-tokens: {tokens} line 1: unknown operation 'browse' in ops= "
            "(use upload, download, delete)",
        )
        self.assertNotIn(ALICE, result.err + result.out)
