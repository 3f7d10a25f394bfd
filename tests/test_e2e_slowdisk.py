"""
A disk slower than the network slows the sender instead of growing the
server's memory: a real twistd uploadsvc whose writes are throttled
(--bench-write-rate) receives a fast upload far larger than its buffers.
"""

from __future__ import annotations

import hashlib

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.support import rawhttp
from tests.support.rawhttp import PatternProducer, fileSha256, patternBytes, patternSha256
from tests.support.server import ReadByPython, ServerTestMixin, reprDigestSha256

MiB = 1024 * 1024


class SlowDiskTests(ServerTestMixin, TestCase):
    timeout = 120

    async def test_memoryStaysFlat(self) -> None:
        """128 MiB sent as fast as possible to a 32 MiB/s disk: the server's peak RSS grows by far less than the upload, and the file is whole."""
        server = self.startUploadServer("--no-fsync", "--bench-write-rate", str(32 * MiB))
        # A small upload first, so that the idle peak includes the code paths.
        await self.http.request("PUT", "/warm.bin", data=b"x" * 1024)
        before = server.peakRSS()
        size = 128 * MiB
        seed = 31
        answer = await self.http.request(
            "PUT", "/slow/big.bin", data=PatternProducer(seed, size, chunkSize=4 * rawhttp.BLOCK)
        )
        growth = server.peakRSS() - before
        expected = await deferToThread(patternSha256, seed, size)
        self.assertCompleted(answer, "slow/big.bin", size, expected)
        self.assertEqual(await deferToThread(fileSha256, self.storedPath("slow/big.bin")), expected)
        # One upload holds at most the 4 MiB high-water mark plus a socket
        # read; the rest is interpreter noise. Without back-pressure the
        # whole 128 MiB would pile up in memory.
        self.assertLess(growth, 32 * MiB, f"peak RSS grew by {growth} bytes")
        self.assertBodyPath()

    def test_manySmallChunks(self) -> None:
        """
        A body in thousands of 100-byte chunks, arriving faster than a slow
        disk writes, queues more pieces than one write call takes; they are
        all written (201, the right digest), never an internal error.
        """
        server = self.startUploadServer("--no-fsync", "--bench-write-rate", str(2 * MiB))
        data = patternBytes(77, 0, 3 * MiB)
        body = b"".join(rawhttp.chunkedPieces(data, [100]))
        _, answer = rawhttp.exchange(
            server.port, "PUT", "/small/chunks.bin", [("Transfer-Encoding", "chunked")], body,
            timeout=60,
        )
        self.assertEqual(answer.status, 201, answer.raw[:300])
        self.assertEqual(reprDigestSha256(answer.header("repr-digest")), hashlib.sha256(data).hexdigest())


# The same tests with every body read by Python (--zero-copy off), the path
# the zero-copy one falls back to (issue 13: every upload test on both paths).


class SlowDiskReadByPythonTests(ReadByPython, SlowDiskTests):
    """
    L{SlowDiskTests} with C{--zero-copy off}.
    """
