"""
docs/protocol.md section 5 across processes: a writer on one server takes an upload
over from a stalled request held by another server process sharing the same
storage folder, through the byte-range lock and the takeover marker.
"""

from __future__ import annotations

import hashlib
import os
import time

from twisted.trial.unittest import TestCase

from tests.support import rawhttp
from tests.support.rawhttp import exchange, patternBytes
from tests.support.server import ReadByPython, ServerProcess, assertBodyPath, startServer

MiB = 1024 * 1024


def takeOver(
    test: TestCase, holderPort: int, takerPort: int, path: str, limit: float
) -> tuple[float, bytes, bytes]:
    """
    Stall a PUT on C{holderPort}, then resume it on C{takerPort} from the
    offset HEAD reports there; assert the resume is let in within C{limit}
    seconds of its headers.

    @return: the seconds it waited, the final answer's raw bytes, the data.
    """
    size = 4 * MiB
    data = patternBytes(77, 0, size)
    stalled = rawhttp.connect(holderPort)
    test.addCleanup(stalled.close)
    stalled.sendall(rawhttp.requestHead("PUT", path, [("Content-Length", str(size))]))
    stalled.sendall(data[:MiB])
    deadline = time.monotonic() + 10
    offset = 0
    while time.monotonic() < deadline:
        head = exchange(takerPort, "HEAD", path, timeout=10)[1]
        offset = int(head.header("upload-offset") or 0)
        if offset == MiB:
            break
        time.sleep(0.05)
    test.assertEqual(offset, MiB)
    with rawhttp.connect(takerPort) as sock:
        reader = rawhttp.ResponseReader(sock)
        sock.sendall(
            rawhttp.requestHead(
                "PUT",
                path,
                [
                    ("Content-Range", f"bytes {offset}-{size - 1}/{size}"),
                    ("Content-Length", str(size - offset)),
                    ("Expect", "100-continue"),
                ],
            )
        )
        started = time.monotonic()
        sock.settimeout(limit)
        try:
            first = reader.readResponse()
        except TimeoutError:
            test.fail(f"the new writer was not let in within {limit} s of its headers")
        waited = time.monotonic() - started
        sock.settimeout(30)
        test.assertEqual(first.status, 100, first.raw)
        sock.sendall(data[offset:])
        _, answer = reader.readFinal()
    test.assertEqual(answer.status, 201, answer.raw)
    # The stalled request's connection was ended by its server (reset or
    # closed; no answer is owed).
    stalled.settimeout(10)
    try:
        test.assertEqual(stalled.recv(1024), b"")
    except ConnectionResetError:
        pass
    return waited, answer.raw, data


class CrossProcessTakeoverTests(TestCase):
    """
    Two server processes on one root.
    """

    timeout = 90

    def test_otherServerTakesOver(self) -> None:
        """A resume on a second server is served within 5 s while the first server holds a stalled request."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        root = os.path.join(base, "root")
        first = startServer(self, root, "--idle-timeout", "300")
        second = startServer(self, root, "--idle-timeout", "300")
        waited, raw, data = takeOver(self, first.port, second.port, "/x/shared.bin", 5.0)
        with open(os.path.join(root, "x", "shared.bin"), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).digest(), hashlib.sha256(data).digest())
        self.assertFalse(os.listdir(os.path.join(root, ".uploadsvc", "takeover")))
        assertBodyPath(self, first)

    def test_staleMarkerHarmless(self) -> None:
        """A takeover marker left by a writer that went away does not disturb later uploads."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        root = os.path.join(base, "root")
        server: ServerProcess = startServer(self, root)
        key = "p-" + hashlib.sha256(b"solo.bin").hexdigest()
        with open(os.path.join(root, ".uploadsvc", "takeover", key), "w"):
            pass
        size = 256 * 1024
        data = patternBytes(5, 0, size)
        with rawhttp.connect(server.port) as sock:
            sock.sendall(rawhttp.requestHead("PUT", "/solo.bin", [("Content-Length", str(size))]))
            sock.sendall(data[: size // 2])
            time.sleep(1.5)  # three looks for takeover markers go by
            sock.sendall(data[size // 2 :])
            _, answer = rawhttp.ResponseReader(sock).readFinal()
        self.assertEqual(answer.status, 201, answer.raw)


# The same tests with every body read by Python (--zero-copy off), the path
# the zero-copy one falls back to (issue 13: every upload test on both paths).


class CrossProcessTakeoverReadByPythonTests(ReadByPython, CrossProcessTakeoverTests):
    """
    L{CrossProcessTakeoverTests} with C{--zero-copy off}.
    """
