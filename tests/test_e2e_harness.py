"""
Tests for the end-to-end harness itself (L{tests.support.server} and
L{tests.support.rawhttp}), run against C{twistd web} and canned bytes so
that they do not depend on the upload server.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sys

from twisted.internet.task import Cooperator
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import _ChunkedTransferDecoder

from tests.support import rawhttp
from tests.support.server import TWISTD, ServerFailed, ServerProcess, startServer


class PatternTests(SynchronousTestCase):
    """
    Tests for the deterministic bodies.
    """

    def test_rangeIsSliceOfWhole(self) -> None:
        """
        Any range of a body equals the same slice of the body generated from
        zero.
        """
        whole = rawhttp.patternBytes(7, 0, 300_000)
        self.assertEqual(len(whole), 300_000)
        for offset, length in [(0, 1), (65535, 2), (100_000, 70_000), (131_072, 65536), (299_999, 1)]:
            self.assertEqual(
                rawhttp.patternBytes(7, offset, length), whole[offset : offset + length]
            )

    def test_blocksAndSeedsDiffer(self) -> None:
        """
        No two blocks of one body are equal, and two seeds give different
        bodies.
        """
        blocks = {rawhttp.patternBytes(1, i * rawhttp.BLOCK, rawhttp.BLOCK) for i in range(20)}
        self.assertEqual(len(blocks), 20)
        self.assertNotEqual(rawhttp.patternBytes(1, 0, 4096), rawhttp.patternBytes(2, 0, 4096))

    def test_chunksAndDigest(self) -> None:
        """
        The pieces of L{patternChunks} make up the range, and
        L{patternSha256} is the SHA-256 of it.
        """
        pieces = list(rawhttp.patternChunks(3, 200_000, offset=10, chunkSize=30_000))
        self.assertEqual([len(p) for p in pieces], [30_000] * 6 + [20_000])
        data = b"".join(pieces)
        self.assertEqual(data, rawhttp.patternBytes(3, 10, 200_000))
        self.assertEqual(
            rawhttp.patternSha256(3, 200_000, offset=10), hashlib.sha256(data).hexdigest()
        )

    def test_fileSha256(self) -> None:
        """
        L{fileSha256} hashes a file's content.
        """
        path = self.mktemp()
        data = rawhttp.patternBytes(4, 0, 3_000_000)
        with open(path, "wb") as f:
            f.write(data)
        self.assertEqual(rawhttp.fileSha256(path), hashlib.sha256(data).hexdigest())

    def test_producer(self) -> None:
        """
        L{PatternProducer} writes the body, stops while paused, and declares
        its length (or an unknown one).
        """
        work: list[object] = []
        coop = Cooperator(scheduler=lambda f: work.append(f), started=True)  # type: ignore[arg-type,return-value]
        producer = rawhttp.PatternProducer(5, 200_000, offset=3, cooperator=coop)
        self.assertEqual(producer.length, 200_000)
        written: list[bytes] = []

        class Consumer:
            def write(self, data: bytes) -> None:
                written.append(data)

        d = producer.startProducing(Consumer())  # type: ignore[arg-type]
        producer.pauseProducing()
        while work:
            work.pop(0)()  # type: ignore[operator]
        self.assertEqual(written, [])
        producer.resumeProducing()
        for _ in range(100):
            if not work:
                break
            work.pop(0)()  # type: ignore[operator]
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(b"".join(written), rawhttp.patternBytes(5, 3, 200_000))
        self.assertEqual(producer.sent, 200_000)
        unknown = rawhttp.PatternProducer(5, 10, knownLength=False)
        from twisted.web.iweb import UNKNOWN_LENGTH

        self.assertEqual(unknown.length, UNKNOWN_LENGTH)


class FramingTests(SynchronousTestCase):
    """
    Tests for request building and chunked framing.
    """

    def test_requestHead(self) -> None:
        """
        L{requestHead} builds the request line and headers, with C{Host}
        first, and keeps the path as given.
        """
        self.assertEqual(
            rawhttp.requestHead("PUT", "/a%2Fb", [("Content-Length", "3")]),
            b"PUT /a%2Fb HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\n",
        )

    def test_chunkedPieces(self) -> None:
        """
        The pieces join to a chunked body that Twisted's decoder turns back
        into the data, and CR and LF travel apart.
        """
        data = rawhttp.patternBytes(9, 0, 10_000)
        pieces = rawhttp.chunkedPieces(data, [4096, 1, 17], extension=b";x=1")
        self.assertIn(b"\r", pieces)
        self.assertIn(b"\n", pieces)
        self.assertEqual(pieces[-2:], [b"0\r\n", b"\r\n"])
        out: list[bytes] = []
        done: list[bytes] = []
        decoder = _ChunkedTransferDecoder(out.append, done.append)
        for piece in pieces:
            decoder.dataReceived(piece)
        self.assertEqual(b"".join(out), data)
        self.assertEqual(done, [b""])


class ReaderTests(SynchronousTestCase):
    """
    Tests for L{rawhttp.ResponseReader} over a socket pair.
    """

    def setUp(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.ours.settimeout(5)
        self.addCleanup(self.ours.close)
        self.addCleanup(self.theirs.close)
        self.reader = rawhttp.ResponseReader(self.ours)

    def test_interimAndFinal(self) -> None:
        """
        A C{100 Continue} followed by a final answer is read as one interim
        and one final response, with headers lowercased.
        """
        self.theirs.sendall(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\nok"
        )
        interim, final = self.reader.readFinal()
        self.assertEqual([r.status for r in interim], [100])
        self.assertEqual(final.status, 201)
        self.assertEqual(final.reason, b"Created")
        self.assertEqual(final.body, b"ok")
        self.assertEqual(final.header("X-a"), "2")
        self.assertEqual(final.headerValues("x-A"), ["1", "2"])
        self.assertIsNone(final.header("nope"))

    def test_pipelinedChunkedHeadNoContent(self) -> None:
        """
        Successive responses on one connection are split correctly: chunked
        with a trailer, a HEAD answer with a Content-Length but no body, and
        a 204.
        """
        self.theirs.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;e=1\r\nde\r\n0\r\nT: 1\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
            b"HTTP/1.1 204 No Content\r\nUpload-Offset: 5\r\n\r\n"
        )
        self.assertEqual(self.reader.readResponse().body, b"abcde")
        self.assertEqual(self.reader.readResponse("HEAD").body, b"")
        last = self.reader.readResponse()
        self.assertEqual((last.status, last.header("upload-offset")), (204, "5"))

    def test_rawPerResponse(self) -> None:
        """
        Each pipelined response keeps exactly its own bytes as C{raw}.
        """
        first = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab"
        second = b"HTTP/1.1 204 No Content\r\n\r\n"
        self.theirs.sendall(first + second)
        self.assertEqual(self.reader.readResponse().raw, first)
        self.assertEqual(self.reader.readResponse().raw, second)

    def test_strict(self) -> None:
        """
        Answers that a lenient reader would take are refused with
        L{ValueError}: whitespace before a header's colon, two different
        C{Content-Length}s, a bad chunk size, a header line without a colon.
        """
        bad = [
            b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\nContent-Length: 2\r\n\r\nok",
        ]
        for answer in bad:
            ours, theirs = socket.socketpair()
            with ours, theirs:
                ours.settimeout(5)
                theirs.sendall(answer)
                self.assertRaises(ValueError, rawhttp.ResponseReader(ours).readResponse)

    def test_bodyToClose(self) -> None:
        """
        Without a length, the body runs to the close of the connection.
        """
        self.theirs.sendall(b"HTTP/1.1 400 Bad\r\nConnection: close\r\n\r\nbad path\n")
        self.theirs.shutdown(socket.SHUT_WR)
        response = self.reader.readResponse()
        self.assertEqual((response.status, response.body), (400, b"bad path\n"))

    def test_waitClosed(self) -> None:
        """
        L{ResponseReader.waitClosed} returns what arrived before the close,
        and raises L{TimeoutError} while the connection stays open.
        """
        self.assertRaises(TimeoutError, self.reader.waitClosed, 0.1)
        self.theirs.sendall(b"bye")
        self.theirs.close()
        self.assertEqual(self.reader.waitClosed(5), b"bye")

    def test_closedEarly(self) -> None:
        """
        A connection closed in the middle of a response is an error.
        """
        self.theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        self.theirs.close()
        self.assertRaises(ConnectionError, self.reader.readResponse)


def _twistdWeb(server: ServerProcess) -> list[str]:
    return [
        *TWISTD,
        "-n",
        "--pidfile=",
        "web",
        "--listen",
        f"tcp:{server.port}:interface=127.0.0.1",
        "--path",
        server.root,
    ]


class ServerProcessTests(SynchronousTestCase):
    """
    Tests for L{ServerProcess}, driving C{twistd web} instead of the upload
    server.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        with open(os.path.join(self.root, "hello.txt"), "wb") as f:
            f.write(b"hello")

    def get(self, server: ServerProcess) -> bytes:
        _, response = rawhttp.exchange(server.port, "GET", "/hello.txt", timeout=10)
        return response.body

    def test_lifecycle(self) -> None:
        """
        The server serves on its port, reports memory, survives C{kill -9}
        plus restart on the same port, and stops on C{SIGTERM}; its output
        lands in the log file.
        """
        server = ServerProcess(self.root, command=_twistdWeb)
        self.addCleanup(server.stop)
        server.start()
        self.assertEqual(self.get(server), b"hello")
        self.assertEqual(server.url("x"), f"http://127.0.0.1:{server.port}/x")
        self.assertGreater(server.rss(), 1 << 20)
        self.assertGreaterEqual(server.peakRSS(), server.rss())
        self.assertTrue(any(t.startswith("socket:") for t in server.openFiles()))
        firstPid = server.pid
        port = server.port
        server.kill9()
        self.assertFalse(server.running())
        self.assertRaises(OSError, rawhttp.connect, port, timeout=2)
        server.restart()
        self.assertNotEqual(server.pid, firstPid)
        self.assertEqual(server.port, port)
        self.assertEqual(self.get(server), b"hello")
        # twistd exits by re-raising the signal that stopped it.
        self.assertIn(server.terminate(), (0, -signal.SIGTERM))
        self.assertFalse(server.running())
        self.assertIn("Site starting on", server.logText())
        self.assertTrue(os.path.isdir(server.tmpDir))

    def test_environment(self) -> None:
        """
        The child runs with the repository first on C{PYTHONPATH} and
        C{TMPDIR} set to the server's own folder.
        """
        server = ServerProcess(self.root)
        env = server.environment()
        import uploadsvc

        repo = os.path.dirname(os.path.dirname(os.path.abspath(uploadsvc.__file__)))
        self.assertEqual(env["PYTHONPATH"].split(os.pathsep)[0], repo)
        self.assertEqual(env["TMPDIR"], server.tmpDir)
        self.assertEqual(server.argv()[: len(TWISTD) + 3], [*TWISTD, "-n", "--pidfile=", "uploadsvc"])
        self.assertIn(f"tcp:{server.port}:interface=127.0.0.1", server.argv())

    def test_failedStart(self) -> None:
        """
        A server that exits at once is reported with its output.
        """
        server = ServerProcess(
            self.root, command=lambda s: [sys.executable, "-c", "print('boom'); raise SystemExit(3)"]
        )
        self.addCleanup(server.stop)
        e = self.assertRaises(ServerFailed, server.start)
        self.assertIn("exited with 3", str(e))
        self.assertIn("boom", str(e))

    def test_startServerCleanup(self) -> None:
        """
        L{startServer} starts the server and registers its stop as a cleanup.
        """
        cleanups: list[object] = []

        class FakeCase:
            def addCleanup(self, f: object) -> None:
                cleanups.append(f)

        server = startServer(FakeCase(), self.root, command=_twistdWeb)
        self.addCleanup(server.stop)
        self.assertEqual(self.get(server), b"hello")
        self.assertEqual(cleanups, [server.stop])
        server.stop()
        self.assertFalse(server.running())

