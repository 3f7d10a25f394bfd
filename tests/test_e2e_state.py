"""
End-to-end reproductions of issue 8 items 1, 2 and 5 against real
C{twistd uploadsvc} processes on loopback ports.

Items 1 and 2 are about C{--workers 2}: two worker processes serving one
root, each with its own locks and memory. A test cannot choose which worker
the kernel hands a connection to, so these tests run two separate servers on
the same C{--root} and two ports instead: the same cross-process situation
(separate processes sharing the storage folder, its lock file and its
metadata), with each request landing on the process the test chooses, which
makes them deterministic.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time

from twisted.trial.unittest import TestCase

from tests.support import rawhttp
from tests.support.rawhttp import exchange, fileSha256, patternBytes
from tests.support.staging import stageFullyAt
from tests.support.server import ServerProcess, reprDigestSha256, startServer


def reprDigest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


class TwoServersTests(TestCase):
    """
    Two server processes on one root (standing for two workers).
    """

    timeout = 90

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.root = os.path.join(base, "root")
        self.first: ServerProcess = startServer(self, self.root, "--idle-timeout", "300")
        self.second: ServerProcess = startServer(self, self.root, "--idle-timeout", "300")

    def waitForOffset(self, port: int, path: str, offset: int) -> None:
        deadline = time.monotonic() + 15
        seen = None
        while time.monotonic() < deadline:
            seen = exchange(port, "HEAD", path, timeout=10)[1].header("upload-offset")
            if seen == str(offset):
                return
            time.sleep(0.05)
        self.fail(f"offset {seen}, not {offset}, after 15 s")

    def test_statusQueryKeepsWriterLock(self) -> None:
        """
        A status query (C{bytes */T}) served by the process whose request is
        writing the upload does not let go of that request's lock: a writer
        on the other process then takes the upload over (the first request
        is ended), and no byte of the first request lands in the completed
        file after its 201.
        """
        total = 2000
        data = patternBytes(81, 0, total)
        holder = rawhttp.connect(self.first.port)
        self.addCleanup(holder.close)
        holder.sendall(
            rawhttp.requestHead("PUT", "/dw/f.bin", [("Transfer-Encoding", "chunked")])
            + chunk(data[:1000])
        )
        self.waitForOffset(self.first.port, "/dw/f.bin", 1000)
        _, query = exchange(
            self.first.port, "PUT", "/dw/f.bin",
            [("Content-Range", f"bytes */{total}"), ("Content-Length", "0")], timeout=10,
        )
        self.assertEqual(query.status, 204, query.raw)
        self.assertEqual(query.header("upload-offset"), "1000")
        _, answer = exchange(
            self.second.port, "PUT", "/dw/f.bin",
            [("Content-Range", f"bytes 1000-{total - 1}/{total}"), ("Content-Length", "1000")],
            data[1000:], timeout=30,
        )
        self.assertEqual(answer.status, 201, answer.raw)
        # The first request must have been ended (taken over), not left
        # writing into the completed file.
        try:
            holder.sendall(chunk(b"\xee" * 500))
        except OSError:
            pass
        rawhttp.ResponseReader(holder).waitClosed(timeout=10)
        stored = os.path.join(self.root, "dw", "f.bin")
        self.assertEqual(fileSha256(stored), hashlib.sha256(data).hexdigest())
        self.assertEqual(reprDigestSha256(answer.header("repr-digest")), fileSha256(stored))

    def rewriteElsewhere(self, path: str, v1: bytes, v2: bytes, half: int) -> None:
        """
        The first server writes the first half of C{v1}; the second deletes
        the upload and writes the first half of C{v2}.
        """
        total = len(v1)
        head = [("Content-Range", f"bytes 0-{half - 1}/{total}"), ("Content-Length", str(half))]
        _, answer = exchange(self.first.port, "PUT", path, head, v1[:half])
        self.assertEqual(answer.status, 204, answer.raw)
        _, answer = exchange(self.second.port, "DELETE", path)
        self.assertEqual(answer.status, 204, answer.raw)
        _, answer = exchange(self.second.port, "PUT", path, head, v2[:half])
        self.assertEqual(answer.status, 204, answer.raw)

    def test_otherProcessRewriteDigestChecked(self) -> None:
        """
        After the other process deleted and rewrote the upload, the last
        piece sent to the first process with the new content's correct
        C{Repr-Digest} completes it (201), and the file is the new content.
        """
        total, half = 256 * 1024, 128 * 1024
        v1, v2 = patternBytes(1, 0, total), patternBytes(2, 0, total)
        self.rewriteElsewhere("/gen/a.bin", v1, v2, half)
        _, answer = exchange(
            self.first.port, "PUT", "/gen/a.bin",
            [
                ("Content-Range", f"bytes {half}-{total - 1}/{total}"),
                ("Content-Length", str(total - half)),
                ("Repr-Digest", reprDigest(v2)),
            ],
            v2[half:],
        )
        self.assertEqual(answer.status, 201, answer.raw)
        self.assertEqual(
            fileSha256(os.path.join(self.root, "gen", "a.bin")), hashlib.sha256(v2).hexdigest()
        )

    def test_otherProcessRewriteDigestReported(self) -> None:
        """
        After the other process deleted and rewrote the upload, the
        completion answer reports the digest of the bytes on disk.
        """
        total, half = 256 * 1024, 128 * 1024
        v1, v2 = patternBytes(3, 0, total), patternBytes(4, 0, total)
        self.rewriteElsewhere("/gen/b.bin", v1, v2, half)
        _, answer = exchange(
            self.first.port, "PUT", "/gen/b.bin",
            [("Content-Range", f"bytes {half}-{total - 1}/{total}"), ("Content-Length", str(total - half))],
            v2[half:],
        )
        self.assertEqual(answer.status, 201, answer.raw)
        self.assertEqual(reprDigestSha256(answer.header("repr-digest")), hashlib.sha256(v2).hexdigest())
        self.assertEqual(
            fileSha256(os.path.join(self.root, "gen", "b.bin")), hashlib.sha256(v2).hexdigest()
        )


class ConcurrentQueriesTests(TestCase):
    """
    Issue 8 item 3, the concurrency half: many status queries at once on one
    upload in one process.
    """

    timeout = 120

    def test_concurrentQueriesKeepState(self) -> None:
        """
        Concurrent C{bytes */T} queries carrying C{Repr-Digest}s on one
        upload are all answered 204 (none 500 or 503), and afterwards the
        upload's metadata is intact: HEAD and the last piece still work.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        root = os.path.join(base, "root")
        server = startServer(self, root)
        total = 1000
        data = patternBytes(12, 0, total)
        _, answer = exchange(
            server.port, "PUT", "/cq/a.bin",
            [("Content-Range", f"bytes 0-99/{total}"), ("Content-Length", "100")], data[:100],
        )
        self.assertEqual(answer.status, 204, answer.raw)
        statuses: list[int] = []
        failures: list[BaseException] = []

        def ask(rounds: int) -> None:
            try:
                with rawhttp.connect(server.port, timeout=30) as sock:
                    reader = rawhttp.ResponseReader(sock)
                    for _ in range(rounds):
                        sock.sendall(rawhttp.requestHead("PUT", "/cq/a.bin", [
                            ("Content-Range", f"bytes */{total}"), ("Content-Length", "0"),
                            ("Repr-Digest", reprDigest(data)),
                        ]))
                        statuses.append(reader.readFinal()[1].status)
            except BaseException as e:
                failures.append(e)

        threads = [threading.Thread(target=ask, args=(30,)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(failures, [])
        self.assertEqual(sorted(set(statuses)), [204])
        self.assertEqual(len(statuses), 180)
        uploads = os.path.join(root, ".uploadsvc", "uploads")
        infos = [
            os.path.join(folder, name)
            for folder, _, names in os.walk(uploads) for name in names if name.endswith(".json")
        ]
        self.assertEqual(len(infos), 1)
        with open(infos[0]) as f:
            self.assertEqual(json.load(f)["total"], total)
        head = exchange(server.port, "HEAD", "/cq/a.bin")[1]
        self.assertEqual((head.status, head.header("upload-length")), (204, str(total)))
        _, answer = exchange(
            server.port, "PUT", "/cq/a.bin",
            [("Content-Range", f"bytes 100-{total - 1}/{total}"), ("Content-Length", str(total - 100))],
            data[100:],
        )
        self.assertEqual(answer.status, 201, answer.raw)


class FullyStagedTests(TestCase):
    """
    Uploads fully staged but never moved into place (a C{kill -9} between the
    last write and the rename, or a failed rename), made by hand on disk
    before the server starts.
    """

    timeout = 90

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.root = os.path.join(base, "root")

    def stage(self, relative: str, data: bytes, total: int | None) -> None:
        stageFullyAt(self.root, relative, data, total)

    def test_recoveredAtStart(self) -> None:
        """
        With C{--workers 2}, an upload staged to its recorded total is moved
        into place when the service starts (once, by whichever worker takes
        its lock), with nothing left staged; one whose total is not known
        is left for the client.
        """
        data = patternBytes(9, 0, 300 * 1024)
        self.stage("rec/known.bin", data, len(data))
        self.stage("rec/unknown.bin", data, None)
        server = startServer(self, self.root, "--workers", "2")
        target = os.path.join(self.root, "rec", "known.bin")
        deadline = time.monotonic() + 20
        while not os.path.exists(target) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(fileSha256(target), hashlib.sha256(data).hexdigest())
        self.assertEqual(exchange(server.port, "HEAD", "/rec/known.bin")[1].status, 200)
        head = exchange(server.port, "HEAD", "/rec/unknown.bin")[1]
        self.assertEqual(head.status, 204)
        self.assertEqual(head.header("upload-offset"), str(len(data)))
        self.assertFalse(os.path.exists(os.path.join(self.root, "rec", "unknown.bin")))

    def test_statusQueryFinishes(self) -> None:
        """
        A plain PUT killed before its rename leaves offset = size and no
        total: HEAD says so, and the client's status query C{bytes */T}
        (no empty range needed) completes it: 201 with its C{Repr-Digest}.
        """
        data = patternBytes(10, 0, 200 * 1024)
        self.stage("q/plain.bin", data, None)
        server = startServer(self, self.root)
        head = exchange(server.port, "HEAD", "/q/plain.bin")[1]
        self.assertEqual(head.status, 204)
        self.assertEqual(head.header("upload-offset"), str(len(data)))
        self.assertIsNone(head.header("upload-length"))
        _, answer = exchange(
            server.port, "PUT", "/q/plain.bin",
            [("Content-Range", f"bytes */{len(data)}"), ("Content-Length", "0"),
             ("Repr-Digest", reprDigest(data))],
        )
        self.assertEqual(answer.status, 201, answer.raw)
        self.assertEqual(answer.header("upload-complete"), "?1")
        self.assertEqual(reprDigestSha256(answer.header("repr-digest")), hashlib.sha256(data).hexdigest())
        self.assertEqual(
            fileSha256(os.path.join(self.root, "q", "plain.bin")), hashlib.sha256(data).hexdigest()
        )
