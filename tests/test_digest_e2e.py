"""
Integrity end to end (docs/protocol.md section 4) against a real C{twistd
uploadsvc}: C{Content-Digest} per request, checked while the body streams
(a failed piece is cut off the staged file, the offset stays), and
C{Repr-Digest} with sha-512 for the whole file.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Iterable

from twisted.trial.unittest import TestCase

from tests.support import rawhttp
from tests.support.rawhttp import patternBytes, patternChunks
from tests.support.server import ReadByPython, ServerTestMixin

MiB = 1024 * 1024


def field(alg: str, chunks: Iterable[bytes]) -> str:
    hasher = hashlib.new(alg.replace("-", ""))
    for chunk in chunks:
        hasher.update(chunk)
    return f"{alg}=:{base64.b64encode(hasher.digest()).decode()}:"


class DigestEndToEndTests(ServerTestMixin, TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.startUploadServer()

    def put(self, path: str, headers: list[tuple[str, str]], body: bytes) -> rawhttp.Answer:
        headers = headers + [("Content-Length", str(len(body)))]
        return rawhttp.exchange(self.server.port, "PUT", path, headers, body, timeout=60)[1]

    def test_contentDigestPerPiece(self) -> None:
        """A piece with a wrong Content-Digest is 400 and not appended; right pieces append and complete."""
        total = 3 * MiB
        data = patternBytes(81, 0, total)
        a, b = data[:MiB], data[MiB:]
        first = self.put("/d/p.bin", [("Content-Range", f"bytes 0-{MiB - 1}/{total}"),
                                      ("Content-Digest", field("sha-256", [a]))], a)
        self.assertIncomplete(first, MiB)
        corrupt = bytearray(b)
        corrupt[len(b) // 2] ^= 0xFF
        bad = self.put("/d/p.bin", [("Content-Range", f"bytes {MiB}-{total - 1}/{total}"),
                                    ("Content-Digest", field("sha-512", [b]))], bytes(corrupt))
        self.assertEqual(bad.status, 400, bad.raw[:300])
        self.assertIn(b"Content-Digest", bad.body)
        self.assertEqual(bad.header("upload-offset"), str(MiB))
        self.assertIncomplete(self.headRaw("/d/p.bin"), MiB, total, head=True)
        good = self.put("/d/p.bin", [("Content-Range", f"bytes {MiB}-{total - 1}/{total}"),
                                     ("Content-Digest", field("sha-512", [b])),
                                     ("Repr-Digest", field("sha-512", [data]))], b)
        self.assertCompleted(good, "d/p.bin", total, hashlib.sha256(data).hexdigest())

    def test_contentDigestChunked(self) -> None:
        """A chunked one-request upload whose Content-Digest fails leaves no file."""
        data = patternBytes(82, 0, 500_000)
        with rawhttp.connect(self.server.port, timeout=60) as sock:
            sock.sendall(rawhttp.requestHead("PUT", "/d/c.bin", [
                ("Transfer-Encoding", "chunked"), ("Content-Digest", field("sha-256", [data[1:]])),
            ]))
            rawhttp.sendPieces(sock, rawhttp.chunkedPieces(data, [65536, 1000, 77]))
            answer = rawhttp.ResponseReader(sock).readResponse()
        self.assertEqual(answer.status, 400, answer.raw[:300])
        self.assertEqual(self.headRaw("/d/c.bin").header("upload-offset"), "0")

    def test_reprDigestSha512(self) -> None:
        """A whole-file sha-512 is checked: right, the file lands; wrong, it is discarded."""
        data = patternBytes(83, 0, 2 * MiB)
        wrong = self.put("/d/w.bin", [("Repr-Digest", field("sha-512", [data[:-1]]))], data)
        self.assertEqual(wrong.status, 400, wrong.raw[:300])
        self.assertEqual(self.headRaw("/d/w.bin").status, 404)
        right = self.put("/d/w.bin", [("Repr-Digest", field("sha-512", [data]))], data)
        self.assertCompleted(right, "d/w.bin", 2 * MiB, hashlib.sha256(data).hexdigest())
        self.assertBodyPath()

    def test_reprDigestSha512AcrossPieces(self) -> None:
        """A sha-512 sent with the first piece is checked when the last piece completes the file."""
        total = 2 * MiB
        data = patternBytes(84, 0, total)
        first = self.put("/d/a.bin", [("Content-Range", f"bytes 0-{MiB - 1}/{total}"),
                                      ("Repr-Digest", field("sha-512", [data]))], data[:MiB])
        self.assertIncomplete(first, MiB)
        last = self.put("/d/a.bin", [("Content-Range", f"bytes {MiB}-{total - 1}/{total}")], data[MiB:])
        self.assertCompleted(last, "d/a.bin", total, hashlib.sha256(data).hexdigest())

    def test_notBuffered(self) -> None:
        """A 128 MiB piece with a Content-Digest is checked without holding it: the server's peak memory stays far below it."""
        size = 128 * MiB
        digest = field("sha-256", patternChunks(85, size, chunkSize=4 * MiB))
        before = self.server.peakRSS()
        with rawhttp.connect(self.server.port, timeout=120) as sock:
            sock.sendall(rawhttp.requestHead("PUT", "/d/big.bin", [
                ("Content-Length", str(size)), ("Content-Digest", digest),
            ]))
            for chunk in patternChunks(85, size, chunkSize=MiB):
                sock.sendall(chunk)
            answer = rawhttp.ResponseReader(sock).readResponse()
        self.assertEqual(answer.status, 201, answer.raw[:300])
        growth = self.server.peakRSS() - before
        self.assertLess(growth, 48 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB")


# The same tests with every body read by Python (--zero-copy off), the path
# the zero-copy one falls back to (issue 13: every upload test on both paths).


class DigestEndToEndReadByPythonTests(ReadByPython, DigestEndToEndTests):
    """
    L{DigestEndToEndTests} with C{--zero-copy off}.
    """
