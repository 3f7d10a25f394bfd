"""
Graceful shutdown end to end (issue 11, item 3): SIGTERM to a real
C{twistd uploadsvc} (and to a C{--workers 2} parent) while uploads are in
flight.

The clients are raw sockets; every wait is a loop bounded in rounds and
time, and no duration is asserted: a test only checks what happened (the
answer, the exit status, the bytes on disk).
"""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import rawhttp
from tests.support.rawhttp import ResponseReader, patternBytes, requestHead
from tests.support.server import ReadByPython, ServerProcess, assertBodyPath, startServer

#: Bytes of each upload, and how many are sent before SIGTERM.
SIZE = 400_000
FIRST = 150_000
#: Upper bound on every wait (seconds).
BOUND = 60.0


def stagedSizes(root: str) -> list[int]:
    """
    The sizes of the staged data files under C{root}.
    """
    return [
        os.path.getsize(p)
        for p in glob.glob(os.path.join(root, ".uploadsvc", "uploads", "*", "*.data"))
    ]


def waitFor(predicate: object, what: str) -> None:
    """
    Poll C{predicate} every 20 ms for at most L{BOUND} seconds.
    """
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting until {what}")


def waitRefused(server: ServerProcess) -> None:
    """
    Connect until the server refuses (its listening sockets are closed);
    a connection accepted before that is closed again at once.
    """
    for _ in range(int(BOUND / 0.02)):
        try:
            with socket.create_connection((server.host, server.port), timeout=5):
                pass
        except ConnectionRefusedError:
            return
        time.sleep(0.02)
    raise AssertionError("the server still accepts connections after SIGTERM")


def waitExit(server: ServerProcess) -> int:
    """
    Wait (bounded) for the server to exit on its own; its exit status.
    """
    assert server.process is not None
    try:
        code = server.process.wait(timeout=BOUND)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the server did not exit; log:\n{server.logTail()}")
    server.process = None
    return code


def children(pid: int) -> list[int]:
    """
    The process ids of C{pid}'s children.
    """
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


class Upload:
    """
    A PUT of L{SIZE} pattern bytes on a raw connection, sent in steps.
    """

    def __init__(self, server: ServerProcess, path: str, seed: int) -> None:
        self.data = patternBytes(seed, 0, SIZE)
        self.sock = rawhttp.connect(server.port, timeout=BOUND)
        self.sock.sendall(
            requestHead("PUT", path, {"Content-Length": str(SIZE)}) + self.data[:FIRST]
        )

    def finish(self) -> rawhttp.Answer:
        """
        Send the rest, slowly (ten pieces), and read the answer.
        """
        rest = self.data[FIRST:]
        step = len(rest) // 10 + 1
        rawhttp.sendPieces(
            self.sock, [rest[i : i + step] for i in range(0, len(rest), step)], pause=0.05
        )
        _, answer = ResponseReader(self.sock).readFinal()
        return answer

    def close(self) -> None:
        self.sock.close()


class ShutdownTests(SynchronousTestCase):
    """
    SIGTERM to one C{twistd uploadsvc} process.
    """

    def start(self, *args: str) -> ServerProcess:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        return startServer(self, os.path.join(base, "root"), *args)

    def upload(self, server: ServerProcess, path: str, seed: int) -> Upload:
        upload = Upload(server, path, seed)
        self.addCleanup(upload.close)
        return upload

    def stored(self, server: ServerProcess, path: str) -> bytes:
        with open(os.path.join(server.root, *path.strip("/").split("/")), "rb") as f:
            return f.read()

    def test_inFlightFinishes(self) -> None:
        """
        An upload in progress at SIGTERM goes on while new connections are
        refused, completes (201), and the server then exits 0.
        """
        server = self.start("--shutdown-timeout", "30")
        upload = self.upload(server, "/s/slow.bin", 1)
        waitFor(lambda: stagedSizes(server.root) == [FIRST], "the first bytes are staged")
        os.kill(server.pid, signal.SIGTERM)
        waitRefused(server)
        self.assertTrue(server.running())  # still draining
        answer = upload.finish()
        self.assertEqual(answer.status, 201, answer)
        self.assertEqual(answer.header("connection"), "close")
        self.assertEqual(waitExit(server), 0)
        self.assertEqual(self.stored(server, "/s/slow.bin"), upload.data)
        self.assertEqual(stagedSizes(server.root), [])
        assertBodyPath(self, server)

    def test_idleKeepAliveClosed(self) -> None:
        """A kept-alive connection with no request is closed at SIGTERM, and the server exits 0 at once."""
        server = self.start("--shutdown-timeout", "300")
        sock = rawhttp.connect(server.port, timeout=BOUND)
        self.addCleanup(sock.close)
        sock.sendall(requestHead("HEAD", "/nothing"))
        answer = ResponseReader(sock).readResponse("HEAD")
        self.assertEqual(answer.status, 404)
        os.kill(server.pid, signal.SIGTERM)
        ResponseReader(sock).waitClosed(BOUND)
        self.assertEqual(waitExit(server), 0)

    def test_stalledClientKeepsBytes(self) -> None:
        """
        A client that stalls past --shutdown-timeout is ended, the server
        exits 0, and what it sent is durable: after a restart a status query
        reports it and a resume completes the file byte for byte.
        """
        server = self.start("--shutdown-timeout", "1")
        upload = self.upload(server, "/s/stalled.bin", 2)
        waitFor(lambda: stagedSizes(server.root) == [FIRST], "the first bytes are staged")
        os.kill(server.pid, signal.SIGTERM)
        self.assertEqual(waitExit(server), 0)
        self.assertIn("ending 1 requests still in flight after 1.0 s", server.logText())
        self.assertEqual(stagedSizes(server.root), [FIRST])
        metadata = glob.glob(os.path.join(server.root, ".uploadsvc", "uploads", "*", "*.json"))
        self.assertEqual(len(metadata), 1)  # the request's end path recorded it
        server.start()
        _, head = rawhttp.exchange(server.port, "HEAD", "/s/stalled.bin")
        self.assertEqual((head.status, head.header("upload-offset")), (204, str(FIRST)))
        _, done = rawhttp.exchange(
            server.port, "PUT", "/s/stalled.bin",
            {"Content-Range": f"bytes {FIRST}-{SIZE - 1}/{SIZE}", "Content-Length": str(SIZE - FIRST)},
            upload.data[FIRST:],
        )
        self.assertEqual(done.status, 201, done)
        self.assertEqual(self.stored(server, "/s/stalled.bin"), upload.data)


class WorkersShutdownTests(ShutdownTests):
    """
    SIGTERM to the parent of C{--workers 2}: the same, in each worker.
    """

    def start(self, *args: str) -> ServerProcess:
        server = super().start("--workers", "2", *args)
        waitFor(lambda: len(children(server.pid)) == 2, "both workers run")
        return server

    def test_inFlightFinishes(self) -> None:
        """
        Uploads in progress on both workers at SIGTERM go on while new
        connections are refused, complete, and every process exits (the
        parent with 0).
        """
        server = self.start("--shutdown-timeout", "30")
        workers = children(server.pid)
        uploads = [self.upload(server, f"/w/{n}.bin", 10 + n) for n in range(4)]
        waitFor(lambda: stagedSizes(server.root) == [FIRST] * 4, "the first bytes are staged")
        os.kill(server.pid, signal.SIGTERM)
        waitRefused(server)
        self.assertTrue(server.running())
        for n, upload in enumerate(uploads):
            answer = upload.finish()
            self.assertEqual(answer.status, 201, answer)
            self.assertEqual(self.stored(server, f"/w/{n}.bin"), upload.data)
        self.assertEqual(waitExit(server), 0)
        self.assertEqual([p for p in workers if os.path.exists(f"/proc/{p}")], [])
        self.assertNotIn("killing them", server.logText())


# The same tests with every body read by Python (--zero-copy off), the path
# the zero-copy one falls back to (issue 13: every upload test on both paths).


class ShutdownReadByPythonTests(ReadByPython, ShutdownTests):
    """
    L{ShutdownTests} with C{--zero-copy off}.
    """


class WorkersShutdownReadByPythonTests(ReadByPython, WorkersShutdownTests):
    """
    L{WorkersShutdownTests} with C{--zero-copy off}.
    """
