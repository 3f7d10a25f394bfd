"""
C{uploadsvc-upload --protocol ietf}: the draft decisions of the client
(L{uploadsvc.client.ietf}) on tables, its options, and the client against
a real C{twistd uploadsvc}: the script through the cutting fault proxy (on
file paths and at C{/.uploads/}), and a completing PATCH whose answer is
lost.
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any

from twisted.internet import reactor
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Cooperator
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.server import startServer
from tests.support.programs import runUploadCLI
from tests.test_e2e_client import sha256File, writeRandomFile
from uploadsvc.client.backoff import RetryPolicy
from uploadsvc.client.cli import Options
from uploadsvc.client.decisions import Answer, Completed, Piece
from uploadsvc.client.errors import Fatal, OffsetConflict, Retryable
from uploadsvc.client.http import makeHTTPClient
from uploadsvc.client.ietf import (
    DraftTarget,
    appendHeaders,
    creationHeaders,
    draftTarget,
    nextAppend,
    readAppend,
    readCreation,
    readOffset,
)
from uploadsvc.client.jobs import UploadJob
from uploadsvc.client.uploader import Uploader
from uploadsvc.testing.faultproxy import FaultPlan, FaultProxy

KiB = 1024
MiB = 1024 * KiB
EMPTY = hashlib.sha256(b"").digest()


class DecisionTests(SynchronousTestCase):
    def test_target(self) -> None:
        """A /.uploads/ URL creates at the endpoint with the rest, decoded once, as destination; any other URL is the file's own."""
        self.assertEqual(
            draftTarget("https://h:1/up/.uploads/photos/b%20%C3%A9.jpg"),
            DraftTarget("https://h:1/up/.uploads/", "photos/b é.jpg", "https://h:1/up/photos/b%20%C3%A9.jpg"),
        )
        self.assertEqual(draftTarget("http://h/.uploads/"), DraftTarget("http://h/.uploads/", None, None))
        self.assertEqual(draftTarget("http://h/in/a.bin"), DraftTarget("http://h/in/a.bin", None, "http://h/in/a.bin"))
        self.assertRaises(UnicodeDecodeError, draftTarget, "http://h/.uploads/%ff")

    def test_creation(self) -> None:
        """A creation is ?0 without a body, naming version 6, the length and the destination; an empty file is created complete."""
        headers = creationHeaders(5, "a/é b.bin")
        self.assertEqual(headers[b"Upload-Complete"], b"?0")
        self.assertEqual(headers[b"Upload-Draft-Interop-Version"], b"6")
        self.assertEqual(headers[b"Upload-Length"], b"5")
        self.assertEqual(headers[b"Content-Disposition"], b"attachment; filename*=UTF-8''a%2F%C3%A9%20b.bin")
        self.assertNotIn(b"Content-Disposition", creationHeaders(5, None))
        empty = creationHeaders(0, None, EMPTY)
        self.assertEqual((empty[b"Upload-Complete"], empty[b"Repr-Digest"][:8]), (b"?1", b"sha-256="))
        self.assertEqual(
            readCreation(Answer(201, {b"Location": b"/.uploads/abc"}), "http://h/in/a.bin", 5, False),
            "http://h/.uploads/abc",
        )
        self.assertRaises(Fatal, readCreation, Answer(201), "http://h/.uploads/", 5, False)
        self.assertRaises(Fatal, readCreation, Answer(409, {}, b"exists\n"), "http://h/.uploads/", 5, False)
        self.assertRaises(Retryable, readCreation, Answer(503), "http://h/.uploads/", 5, False)

    def test_offset(self) -> None:
        """HEAD: the offset; gone (404/410) is None; another length or more bytes than the file is fatal."""
        self.assertEqual(readOffset(Answer(204, {b"Upload-Offset": b"3", b"Upload-Length": b"5"}), 5, False), 3)
        self.assertIsNone(readOffset(Answer(404), 5, False))
        self.assertIsNone(readOffset(Answer(410), 5, False))
        self.assertRaises(Fatal, readOffset, Answer(204, {b"Upload-Offset": b"3", b"Upload-Length": b"6"}), 5, False)
        self.assertRaises(Fatal, readOffset, Answer(204, {b"Upload-Offset": b"6"}), 5, False)
        self.assertRaises(Fatal, readOffset, Answer(204), 5, False)
        self.assertRaises(Retryable, readOffset, Answer(503), 5, False)

    def test_append(self) -> None:
        """PATCH: ?0 answers the new offset, a completion is checked later, 409 moves to the server's offset."""
        headers = appendHeaders(7, True, EMPTY)
        self.assertEqual(headers[b"Content-Type"], b"application/partial-upload")
        self.assertEqual((headers[b"Upload-Offset"], headers[b"Upload-Complete"]), (b"7", b"?1"))
        self.assertIn(b"Repr-Digest", headers)
        self.assertNotIn(b"Repr-Digest", appendHeaders(0, False))
        self.assertEqual(readAppend(Answer(204, {b"Upload-Offset": b"4"}), 0, 5, False), 4)
        self.assertEqual(
            readAppend(Answer(201, {b"Upload-Offset": b"5", b"Repr-Digest": b"x"}), 0, 5, False), Completed(b"x")
        )
        for server in (b"2", b"4"):
            e = self.assertRaises(
                OffsetConflict, readAppend,
                Answer(409, {b"Upload-Offset": server, b"Content-Type": b"application/problem+json"}), 3, 5, False,
            )
            self.assertEqual(e.offset, int(server))
        self.assertRaises(Fatal, readAppend, Answer(409, {b"Upload-Offset": b"9"}), 3, 5, False)
        self.assertRaises(Fatal, readAppend, Answer(400, {}, b"past the length\n"), 0, 5, False)
        self.assertRaises(Fatal, readAppend, Answer(204, {b"Upload-Offset": b"6"}), 0, 5, False)
        self.assertRaises(Fatal, readAppend, Answer(201, {b"Upload-Offset": b"4"}), 0, 5, False)
        self.assertRaises(Retryable, readAppend, Answer(503), 0, 5, False)


    def test_nextAppend(self) -> None:
        """
        PATCHes run up to the closing piece (in chunks when asked), which
        completes the upload; a server holding every byte without having
        completed is sent an empty closing PATCH, and a file shorter than
        the closing piece is one.
        """
        self.assertEqual(nextAppend(0, 100, None, 10), Piece(0, 90, 100, False))
        self.assertEqual(nextAppend(0, 100, 40, 10), Piece(0, 40, 100, False))
        self.assertEqual(nextAppend(80, 100, 40, 10), Piece(80, 90, 100, False))
        self.assertEqual(nextAppend(90, 100, 40, 10), Piece(90, 100, 100, True))
        self.assertEqual(nextAppend(95, 100, 40, 10), Piece(95, 100, 100, True))
        self.assertEqual(nextAppend(100, 100, 40, 10), Piece(100, 100, 100, True))
        self.assertEqual(nextAppend(2, 5, 40, 10), Piece(2, 5, 5, True))


class OptionTests(SynchronousTestCase):
    def test_protocol(self) -> None:
        """--protocol ietf takes path URLs and /.uploads/ URLs."""
        for url in ("http://h/in/", "http://h/up/.uploads/in/"):
            options = Options()
            options.parseOptions(["--protocol", "ietf", "a", url])
            self.assertEqual(options["protocol"], "ietf")


class _LosesCompletingAnswer:
    """
    A treq client whose first completing PATCH reaches the server whole but
    whose answer is lost on the way back (the link failed after the
    server's last byte was read).
    """

    def __init__(self, http: Any) -> None:
        self._http = http
        self.lost = 0

    async def _lose(self, d: Any) -> Any:
        response = await d
        from treq import content

        await content(response)
        self.lost += 1
        raise ConnectionLost("the answer was lost")

    def request(self, method: str, url: str, **kw: Any) -> Any:
        from twisted.internet.defer import Deferred

        d = self._http.request(method, url, **kw)
        complete = kw["headers"].getRawHeaders(b"Upload-Complete") or []
        if method == "PATCH" and complete == [b"?1"] and not self.lost:
            return Deferred.fromCoroutine(self._lose(d))
        return d


class DraftClientTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.server = startServer(self, os.path.join(self.base, "root"))

    async def runCLI(self, *args: str) -> tuple[str, str, int]:
        return await runUploadCLI(self.base, *args)

    def proxy(self) -> FaultProxy:
        proxy = FaultProxy(reactor, ("127.0.0.1", self.server.port), FaultPlan(cutAfter=(200 * KiB, MiB)), seed=5)
        proxy.listen()
        self.addCleanup(proxy.stop)
        return proxy

    def tree(self) -> str:
        tree = os.path.join(self.base, "photos")
        os.makedirs(os.path.join(tree, "2026"))
        writeRandomFile(os.path.join(tree, "2026", "a.jpg"), 3 * MiB, 1)
        writeRandomFile(os.path.join(tree, "b é.jpg"), 2 * MiB, 2)
        writeRandomFile(os.path.join(tree, "empty"), 0, 3)
        return tree

    def assertTree(self, tree: str, folder: str) -> None:
        for rel in ("2026/a.jpg", "b é.jpg", "empty"):
            self.assertEqual(
                sha256File(os.path.join(self.server.root, folder, "photos", rel)),
                sha256File(os.path.join(tree, rel)), rel,
            )
        self.assertNotIn("Traceback", self.server.logText())

    async def test_pathsThroughCuts(self) -> None:
        """Files go up over the draft, created on their own paths, through a link that cuts every connection, byte-identical."""
        tree = self.tree()
        proxy = self.proxy()
        out, err, code = await self.runCLI(
            "--quiet", "--protocol", "ietf", "--chunk-size", "512K", "--retry-delay", "0.05",
            "--max-attempts", "50", tree, proxy.url("/in/"),
        )
        self.assertEqual(code, 0, out + err)
        self.assertIn("3 of 3 files uploaded", out)
        self.assertTree(tree, "in")
        self.assertGreater(sum(c.faulted for c in proxy.connections), 0)
        self.assertIn('"PATCH /.uploads/', self.server.logText())

    async def test_endpointThroughCuts(self) -> None:
        """At /.uploads/ the destination goes in Content-Disposition; one long PATCH per attempt, resumed from HEAD."""
        tree = self.tree()
        proxy = self.proxy()
        out, err, code = await self.runCLI(
            "--quiet", "--protocol", "ietf", "--retry-delay", "0.05", "--max-attempts", "50",
            tree, proxy.url("/.uploads/drop/"),
        )
        self.assertEqual(code, 0, out + err)
        self.assertIn("3 of 3 files uploaded", out)
        self.assertTree(tree, "drop")
        self.assertGreater(sum(c.faulted for c in proxy.connections), 0)

    async def test_completingAnswerLost(self) -> None:
        """
        When the answer to the completing PATCH is lost, the upload's URL
        answers 404 (it completed); the client finds the complete file at
        its place and reports success instead of creating it again.
        """
        source = os.path.join(self.base, "lost.bin")
        with open(source, "wb") as f:
            f.write(random.Random(4).randbytes(300 * KiB + 5))
        connection = makeHTTPClient(reactor)
        self.addCleanup(connection.close)
        cooperator = Cooperator(scheduler=lambda f: reactor.callLater(0, f))
        self.addCleanup(cooperator.stop)
        http = _LosesCompletingAnswer(connection.http)
        uploader = Uploader(
            http, reactor, cooperator, retry=RetryPolicy(initialDelay=0.05, maxAttempts=5),
            rng=random.Random(1), protocol="ietf",
        )
        for url in (self.server.url("/.uploads/x/lost.bin"), self.server.url("/y/lost.bin")):
            http.lost = 0
            result = await uploader.upload(UploadJob(source, url))
            self.assertTrue(result.ok, result.error)
            self.assertEqual(http.lost, 1)
            self.assertEqual(result.sha256, sha256File(source))
        for folder in ("x", "y"):
            self.assertEqual(sha256File(os.path.join(self.server.root, folder, "lost.bin")), sha256File(source))
