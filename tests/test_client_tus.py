"""
C{uploadsvc-upload --protocol tus}: the tus decisions of the client
(L{uploadsvc.client.tus}) on tables, its options, and the script against a
real C{twistd uploadsvc} through the cutting fault proxy.
"""

from __future__ import annotations

import base64
import os

from twisted.internet import reactor
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from uploadsvc.client.cli import Options
from uploadsvc.client.decisions import Answer, Piece
from uploadsvc.client.errors import Fatal, OffsetConflict, Retryable
from uploadsvc.client.tus import (
    NoTusEndpoint, creationHeaders, nextPatch, readCreation, readOffset, readPatch, splitTusURL,
)
from uploadsvc.testing.faultproxy import FaultPlan, FaultProxy
from tests.support.server import startServer
from tests.support.programs import runUploadCLI
from tests.test_e2e_client import sha256File, writeRandomFile

MiB = 1024 * 1024


class DecisionTests(SynchronousTestCase):
    def test_split(self) -> None:
        """The endpoint ends at /.tus/; what follows is the destination, decoded once."""
        self.assertEqual(
            splitTusURL("https://h:1/up/.tus/photos/b%20%C3%A9.jpg"),
            ("https://h:1/up/.tus/", "photos/b é.jpg"),
        )
        self.assertEqual(splitTusURL("http://h/.tus/"), ("http://h/.tus/", None))
        self.assertRaises(NoTusEndpoint, splitTusURL, "http://h/files/a.bin")

    def test_creation(self) -> None:
        """A creation names the length and the destination as filename metadata."""
        headers = creationHeaders(5, "a/é.bin")
        self.assertEqual(headers[b"Upload-Length"], b"5")
        self.assertEqual(headers[b"Tus-Resumable"], b"1.0.0")
        self.assertEqual(
            headers[b"Upload-Metadata"], b"filename " + base64.b64encode("a/é.bin".encode())
        )
        self.assertNotIn(b"Upload-Metadata", creationHeaders(5, None))
        self.assertEqual(
            readCreation(Answer(201, {b"Location": b"/.tus/abc"}), "http://h/.tus/", 5, False),
            "http://h/.tus/abc",
        )
        self.assertRaises(Fatal, readCreation, Answer(409, {}, b"exists\n"), "http://h/.tus/", 5, False)
        self.assertRaises(Retryable, readCreation, Answer(503), "http://h/.tus/", 5, False)

    def test_offset(self) -> None:
        """HEAD: the offset; gone (404/410) is None; a length that differs is fatal."""
        self.assertEqual(readOffset(Answer(200, {b"Upload-Offset": b"3", b"Upload-Length": b"5"}), 5, False), 3)
        self.assertIsNone(readOffset(Answer(404), 5, False))
        self.assertIsNone(readOffset(Answer(410), 5, False))
        self.assertRaises(Fatal, readOffset, Answer(200, {b"Upload-Offset": b"3", b"Upload-Length": b"6"}), 5, False)
        self.assertRaises(Fatal, readOffset, Answer(200, {}), 5, False)

    def test_patch(self) -> None:
        """PATCH: the new offset; 409 moves to the server's; 460 is retried."""
        self.assertEqual(readPatch(Answer(204, {b"Upload-Offset": b"4"}), 0, 5, False), 4)
        e = self.assertRaises(OffsetConflict, readPatch, Answer(409, {b"Upload-Offset": b"2"}), 3, 5, False)
        self.assertEqual(e.offset, 2)
        self.assertRaises(Retryable, readPatch, Answer(460), 0, 5, False)
        self.assertRaises(Fatal, readPatch, Answer(415), 0, 5, False)
        self.assertRaises(Fatal, readPatch, Answer(204, {b"Upload-Offset": b"6"}), 0, 5, False)


    def test_nextPatch(self) -> None:
        """A PATCH runs to the end, or a chunk when that is less; none is a closing piece."""
        self.assertEqual(nextPatch(0, 10, None), Piece(0, 10, 10, False))
        self.assertEqual(nextPatch(3, 10, 4), Piece(3, 7, 10, False))
        self.assertEqual(nextPatch(8, 10, 4), Piece(8, 10, 10, False))


class OptionTests(SynchronousTestCase):
    def test_protocol(self) -> None:
        """--protocol is put (the default) or tus, whose URL must name the tus endpoint."""
        options = Options()
        options.parseOptions(["a", "http://h/"])
        self.assertEqual(options["protocol"], "put")
        options = Options()
        options.parseOptions(["--protocol", "tus", "a", "http://h/up/.tus/in/"])
        self.assertEqual(options["protocol"], "tus")
        for argv in (["--protocol", "ftp", "a", "http://h/"], ["--protocol", "tus", "a", "http://h/in/"]):
            self.assertRaises(UsageError, Options().parseOptions, argv)


class TusCommandLineTests(TestCase):
    timeout = 120

    async def runCLI(self, *args: str) -> tuple[str, str, int]:
        return await runUploadCLI(self.base, *args)

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.server = startServer(self, os.path.join(self.base, "root"))

    async def test_throughCuts(self) -> None:
        """Files go up over tus through a link that cuts every connection, byte-identical."""
        proxy = FaultProxy(reactor, ("127.0.0.1", self.server.port), FaultPlan(cutAfter=(200 * 1024, MiB)), seed=5)
        proxy.listen()
        self.addCleanup(proxy.stop)
        tree = os.path.join(self.base, "photos")
        os.makedirs(os.path.join(tree, "2026"))
        writeRandomFile(os.path.join(tree, "2026", "a.jpg"), 3 * MiB, 1)
        writeRandomFile(os.path.join(tree, "b é.jpg"), 2 * MiB, 2)
        out, err, code = await self.runCLI(
            "--quiet", "--protocol", "tus", "--chunk-size", "512K", "--retry-delay", "0.05",
            "--max-attempts", "50", tree, proxy.url("/.tus/in/"),
        )
        self.assertEqual(code, 0, out + err)
        self.assertIn("2 of 2 files uploaded", out)
        for rel in ("2026/a.jpg", "b é.jpg"):
            self.assertEqual(
                sha256File(os.path.join(self.server.root, "in", "photos", rel)),
                sha256File(os.path.join(tree, rel)), rel,
            )
        self.assertGreater(sum(c.faulted for c in proxy.connections), 0)

    async def test_badURL(self) -> None:
        """A tus URL without /.tus/ is a usage error: exit 2 with the reason."""
        out, err, code = await self.runCLI("--protocol", "tus", "x", "http://127.0.0.1:1/in/")
        self.assertEqual(code, 2)
        self.assertIn("tus endpoint", err.splitlines()[0])
