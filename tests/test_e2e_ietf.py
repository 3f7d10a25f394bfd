"""
End-to-end tests of the IETF resumable-upload draft (docs/protocol.md
section 9) against a real C{twistd uploadsvc} on a loopback port, with the
small client of L{tests.support.ietfclient} written from the draft's text:
interop versions 6, 8 and 10.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.support.ietfclient import DraftClient, Exchange
from tests.support.server import ServerTestMixin
from tests.test_e2e_tls import H2_ENABLED, BlockingH2Client, TLSServerMixin

if H2_ENABLED:
    import h2.events

BODY = bytes(range(256)) * 4096  # 1 MiB
VERSIONS = (6, 8, 10)


class DraftTests(ServerTestMixin, TestCase):
    """
    Creation, resumption after a cut, offset mismatch, cancel and unknown
    versions, each interop version in turn.
    """

    timeout = 120

    def setUp(self) -> None:
        self.startUploadServer()

    def client(self, version: int | None) -> DraftClient:
        return DraftClient(self.server.port, version)

    async def call(
        self, client: DraftClient, method: str, target: str,
        headers: dict[str, str] | None = None, body: bytes = b"", cutAfter: int | None = None,
    ) -> Exchange:
        """
        One request of C{client}, in a thread (its sockets block).
        """
        exchange: Exchange = await deferToThread(
            client.request, method, target, headers, body, cutAfter
        )
        return exchange

    async def waitForStagedBytes(self) -> None:
        """
        Wait until some staged file holds bytes (at most 10 s).
        """
        uploads = os.path.join(self.server.root, ".uploadsvc", "uploads")
        for _ in range(200):
            sizes = [
                os.stat(os.path.join(folder, name)).st_size
                for folder, _, names in os.walk(uploads) for name in names
                if not name.endswith(".json")
            ]
            if any(sizes):
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"no staged bytes in {uploads} after 10 s")

    def stored(self, relative: str) -> bytes:
        with open(self.storedPath(relative), "rb") as f:
            return f.read()

    async def test_createAndComplete(self) -> None:
        """POST /.uploads/ with ?1 gets a 104 (Location, version, Upload-Limit) then a 201 whose Location is the file's; the file is byte-identical."""
        for version in VERSIONS:
            name = f"one-{version}.bin"
            answer = await self.call(
                self.client(version), "POST", "/.uploads/",
                {"Upload-Complete": "?1", "Content-Disposition": f'inline; filename="{name}"'}, BODY,
            )
            self.assertEqual(answer.status, 201, answer.body)
            [interim] = answer.interims
            self.assertEqual(interim.status_code, 104)
            self.assertRegex(answer.interimHeader("Location") or "", r"^/\.uploads/[0-9a-f]{32}$")
            self.assertEqual(answer.interimHeader("Upload-Draft-Interop-Version"), str(version))
            limit = answer.interimHeader("Upload-Limit") or ""
            self.assertIn("expires=" if version == 6 else "max-age=", limit)
            self.assertEqual(answer.header("Location"), "/" + name)
            self.assertEqual(answer.header("Upload-Complete"), "?1")
            self.assertEqual(answer.header("Upload-Offset"), str(len(BODY)))
            self.assertEqual(self.stored(name), BODY)

    async def test_incomingWithoutName(self) -> None:
        """Without Content-Disposition the file lands under incoming/."""
        answer = await self.call(self.client(8), "POST", "/.uploads/", {"Upload-Complete": "?1"}, b"abc")
        self.assertEqual(answer.status, 201)
        location = answer.header("Location") or ""
        self.assertRegex(location, r"^/incoming/[0-9a-f]{32}$")
        self.assertEqual(self.stored(location[1:]), b"abc")

    async def waitForDraftOffset(self, client: DraftClient, location: str) -> Exchange:
        """
        HEAD the upload until it is there (bounded).
        """
        deadline = time.monotonic() + 15
        for _ in range(300):
            head = await self.call(client, "HEAD", location)
            # A HEAD ends the cut request if the server has not noticed the
            # cut yet (one writer at a time) and answers once it let go: the
            # offset is then final, and may be 0 on a loaded machine (the
            # bytes before the cut were never read when it came).
            if head.status == 204:
                return head
            if time.monotonic() > deadline:
                break
            await deferToThread(time.sleep, 0.05)
        self.fail(f"no offset reported for {location}")

    async def test_resumeAfterCut(self) -> None:
        """A creation on a file path cut after its 104 is resumed: HEAD reports the stored offset, a PATCH from there completes it byte-identical."""
        for version in VERSIONS:
            client = self.client(version)
            path = f"/cut/{version}.bin"
            cut = await self.call(
                client, "PUT", path, {"Upload-Complete": "?1"}, BODY, cutAfter=300_000,
            )
            self.assertEqual([i.status_code for i in cut.interims], [104])
            location = cut.interimHeader("Location") or ""
            head = await self.waitForDraftOffset(client, location)
            self.assertEqual(head.header("Upload-Complete"), "?0")
            self.assertEqual(head.header("Upload-Length"), str(len(BODY)))
            self.assertEqual(head.header("Cache-Control"), "no-store")
            self.assertIsNotNone(head.header("Upload-Limit"))
            offset = int(head.header("Upload-Offset") or 0)
            self.assertLessEqual(offset, 300_000)
            self.assertFalse(os.path.exists(self.storedPath(path[1:])))
            done = await self.call(
                client, "PATCH", location,
                {"Upload-Complete": "?1", "Upload-Offset": str(offset),
                 "Content-Type": "application/partial-upload"},
                BODY[offset:],
            )
            self.assertEqual(done.status, 201, done.body)
            self.assertEqual(done.header("Location"), path)
            self.assertEqual(self.stored(path[1:]), BODY)
            gone = await self.call(client, "HEAD", location)
            self.assertEqual(gone.status, 404)

    async def test_incrementalAndMismatch(self) -> None:
        """?0 creates and answers 201 with Location; a PATCH at a wrong offset gets 409 with a problem document and changes nothing; the right one appends."""
        for version in VERSIONS:
            client = self.client(version)
            created = await self.call(
                client, "POST", "/.uploads/",
                {"Upload-Complete": "?0", "Upload-Length": "10",
                 "Content-Disposition": f"inline; filename*=UTF-8''parts%20{version}.bin"},
                b"01234",
            )
            self.assertEqual(created.status, 201, created.body)
            location = created.header("Location") or ""
            self.assertRegex(location, r"^/\.uploads/[0-9a-f]{32}$")
            self.assertEqual(created.header("Upload-Offset"), "5")
            self.assertEqual(created.header("Upload-Complete"), "?0")
            self.assertIsNotNone(created.header("Upload-Limit"))
            patch = {"Upload-Complete": "?1", "Content-Type": "application/partial-upload"}
            wrong = await self.call(client, "PATCH", location, {**patch, "Upload-Offset": "3"}, b"3456789")
            self.assertEqual(wrong.status, 409)
            self.assertEqual(wrong.header("Content-Type"), "application/problem+json")
            self.assertEqual(wrong.header("Upload-Offset"), "5")
            problem = json.loads(wrong.body)
            self.assertEqual(
                problem["type"], "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
            )
            self.assertEqual((problem["expected-offset"], problem["provided-offset"]), (5, 3))
            past = await self.call(client, "PATCH", location, {**patch, "Upload-Offset": "5"}, b"56789X")
            self.assertEqual(past.status, 400)
            head = await self.call(client, "HEAD", location)
            self.assertEqual(head.header("Upload-Offset"), "5")
            done = await self.call(client, "PATCH", location, {**patch, "Upload-Offset": "5"}, b"56789")
            self.assertEqual(done.status, 201, done.body)
            self.assertEqual(self.stored(f"parts {version}.bin"), b"0123456789")

    async def test_newestWriterWins(self) -> None:
        """A HEAD ends an older PATCH still open on the upload (its connection closed, its bytes kept); a PATCH from the reported offset completes the file."""
        client = self.client(10)
        created = await self.call(
            client, "POST", "/.uploads/",
            {"Upload-Complete": "?0", "Content-Disposition": "inline; filename=taken.bin",
             "Upload-Length": str(len(BODY))},
        )
        location = created.header("Location") or ""
        patch = {"Upload-Complete": "?1", "Content-Type": "application/partial-upload"}
        old = client.hold("PATCH", location, {**patch, "Upload-Offset": "0"}, BODY, 200_000)
        self.addCleanup(old.close)
        # The PATCH holds the upload once its bytes reach the staged file; a
        # HEAD read before that would be the older request, and the PATCH
        # would end it instead.
        await self.waitForStagedBytes()
        head = await self.call(client, "HEAD", location)
        self.assertEqual(head.status, 204)
        offset = int(head.header("Upload-Offset") or -1)
        self.assertTrue(0 <= offset <= 200_000, offset)

        def ended() -> bytes:
            try:
                return old.recv(65536)
            except ConnectionResetError:
                return b""

        self.assertEqual(await deferToThread(ended), b"")  # closed, no answer owed
        done = await self.call(client, "PATCH", location, {**patch, "Upload-Offset": str(offset)}, BODY[offset:])
        self.assertEqual(done.status, 201, done.body)
        self.assertEqual(self.stored("taken.bin"), BODY)

    async def test_cancel(self) -> None:
        """DELETE removes an incomplete upload (204); its URL then answers 404."""
        client = self.client(8)
        created = await self.call(client, "POST", "/.uploads/", {"Upload-Complete": "?0"}, b"abc")
        location = created.header("Location") or ""
        deleted = await self.call(client, "DELETE", location)
        self.assertEqual(deleted.status, 204)
        self.assertEqual((await self.call(client, "HEAD", location)).status, 404)
        self.assertEqual((await self.call(client, "DELETE", location)).status, 404)

    async def test_unknownVersion(self) -> None:
        """An unknown version with ?1 is a plain upload (no 104); with ?0 it is refused 400 naming the versions served."""
        client = self.client(99)
        plain = await self.call(client, "PUT", "/plain.bin", {"Upload-Complete": "?1"}, b"abc")
        self.assertEqual(plain.status, 201)
        self.assertEqual(plain.interims, [])
        self.assertEqual(self.stored("plain.bin"), b"abc")
        refused = await self.call(client, "PUT", "/other.bin", {"Upload-Complete": "?0"}, b"abc")
        self.assertEqual(refused.status, 400)
        self.assertIn(b"this server speaks 6, 8, 10", refused.body)
        self.assertFalse(os.path.exists(self.storedPath("other.bin")))

    async def test_noVersionNoInterim(self) -> None:
        """Without a version header the newest is followed, without a 104."""
        answer = await self.call(self.client(None), "PUT", "/nv.bin", {"Upload-Complete": "?1"}, b"abc")
        self.assertEqual(answer.status, 201)
        self.assertEqual(answer.interims, [])
        self.assertEqual(answer.header("Upload-Draft-Interop-Version"), "10")

    async def test_options(self) -> None:
        """OPTIONS on /.uploads/ and on a file path answers Upload-Limit and Accept-Patch."""
        for target in ["/.uploads/", "/some/file.bin"]:
            answer = await self.call(self.client(8), "OPTIONS", target)
            self.assertEqual(answer.status, 204, answer.body)
            limit = answer.header("Upload-Limit") or ""
            self.assertIn("min-size=0", limit)
            self.assertIn("max-age=", limit)
            self.assertEqual(answer.header("Accept-Patch"), "application/partial-upload")


class DraftHTTP2Tests(TLSServerMixin, TestCase):
    """
    Over HTTP/2 (TLS, ALPN h2) the 104 is an informational HEADERS frame
    on the creation's stream, before its final answer.
    """

    timeout = 120

    if not H2_ENABLED:
        skip = "the h2 package is not installed"

    async def test_interimOnHTTP2(self) -> None:
        """A creation on HTTP/2 gets a 104 with Location and version, then a 201; the file is byte-identical."""
        self.startTLSServer()

        def run() -> tuple[list[Any], Any, str | None]:
            client = BlockingH2Client(self.server.port, self.pki.caPath)
            self.addCleanup(client.close)
            informational: list[Any] = []
            receive = client.conn.receive_data

            def recording(data: bytes) -> list[Any]:
                events = receive(data)
                informational.extend(
                    e for e in events if isinstance(e, h2.events.InformationalResponseReceived)
                )
                return events  # type: ignore[no-any-return]

            client.conn.receive_data = recording  # type: ignore[method-assign,assignment]
            sid = client.start(
                "POST", "/.uploads/",
                {"upload-complete": "?1", "upload-draft-interop-version": "10",
                 "content-disposition": 'inline; filename="h2.bin"',
                 "content-length": str(len(BODY))},
            )
            client.send({sid: BODY})
            return informational, client.wait(sid), client.alpn

        informational, response, alpn = await deferToThread(run)
        self.assertEqual(alpn, "h2")
        [interim] = informational
        fields = dict(interim.headers)
        self.assertEqual(fields[b":status"], b"104")
        self.assertRegex(fields[b"location"], rb"^/\.uploads/[0-9a-f]{32}$")
        self.assertEqual(fields[b"upload-draft-interop-version"], b"10")
        self.assertEqual(response.status, 201, response.body)
        with open(self.storedPath("h2.bin"), "rb") as f:
            self.assertEqual(f.read(), BODY)
