"""
Tests for L{uploadsvc.web.ietf} through StubTreq: the draft's routes,
refusals, answers and lifecycle events, with a real store on a temporary
folder and disk calls inline (streaming and the 104 are tested in
tests/test_streaming_interim and tests/test_e2e_ietf).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support.stubapp import StubRequests
from uploadsvc.ops.events import UploadEvent
from uploadsvc.storage.filestore import FileStore
from uploadsvc.storage.memory import MemoryStore
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp

PARTIAL = "application/partial-upload"


class DraftAppTests(StubRequests, SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.build(Config(maxUploadSize=1000, expireAfter=3600))

    def build(self, config: Config, memory: bool = False) -> None:
        """
        @param memory: a L{MemoryStore} on the test's clock (whose record of
            an upload's last byte then follows that clock) instead of files.
        """
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = MemoryStore(now=self.clock.seconds) if memory else FileStore(self.root, fsync=False)  # type: ignore[assignment]
        self.addCleanup(self.store.close)
        self.app = UploadApp(self.store, ImmediateRunner(), config, clock=self.clock)
        self.events: list[UploadEvent] = []
        self.app.events.subscribe(self.events.append)
        self.treq = StubTreq(self.app.resource())

    def create(self, body: bytes = b"01234", **headers: Any) -> str:
        response, content = self.request(
            "POST", "/.uploads/", body, Upload_Complete="?0",
            Upload_Draft_Interop_Version="8", **headers,
        )
        self.assertEqual(response.code, 201, content)
        location = self.header(response, "Location")
        assert location is not None
        return location

    def test_createdAnswer(self) -> None:
        """?0 answers 201 with Location, offset, Upload-Limit (max-age from the expiry) and the version; a created event is told."""
        self.build(Config(maxUploadSize=1000, expireAfter=3600), memory=True)
        response, _ = self.request(
            "POST", "/.uploads/", b"01234", Upload_Complete="?0", Upload_Draft_Interop_Version="6",
            Upload_Length="10", Content_Disposition='attachment; filename="d/x.bin"',
        )
        self.assertEqual(response.code, 201)
        self.assertEqual(self.header(response, "Upload-Offset"), "5")
        self.assertEqual(self.header(response, "Upload-Length"), "10")
        self.assertEqual(self.header(response, "Upload-Limit"), "max-size=1000, min-size=0, expires=3600")
        self.assertEqual(self.header(response, "Upload-Draft-Interop-Version"), "6")
        [event] = self.events
        self.assertEqual((event.kind, event.protocol, event.path), ("created", "ietf", "d/x.bin"))
        self.assertEqual(event.uploadId, (self.header(response, "Location") or "").rsplit("/", 1)[1])

    def test_completeEvent(self) -> None:
        """A PATCH that completes answers like a path upload and tells resumed and completed events."""
        location = self.create(Content_Disposition="inline; filename=c.bin")
        response, content = self.request(
            "PATCH", location, b"56789", Content_Type=PARTIAL, Upload_Offset="5", Upload_Complete="?1",
        )
        self.assertEqual(response.code, 201, content)
        self.assertEqual(json.loads(content)["path"], "c.bin")
        self.assertEqual(self.header(response, "Location"), "/c.bin")
        self.assertEqual([e.kind for e in self.events], ["created", "resumed", "completed"])
        self.assertEqual((self.events[1].offset, self.events[1].path), (5, "c.bin"))
        self.assertEqual((self.events[-1].offset, self.events[-1].path), (10, "c.bin"))

    def test_emptyCompletingPatch(self) -> None:
        """A PATCH without a body and ?1 completes an upload whose bytes are all in."""
        location = self.create(Content_Disposition="inline; filename=e.bin")
        response, _ = self.request(
            "PATCH", location, Content_Type=PARTIAL, Upload_Offset="5", Upload_Complete="?1",
        )
        self.assertEqual(response.code, 201)
        with open(os.path.join(self.root, "e.bin"), "rb") as f:
            self.assertEqual(f.read(), b"01234")

    def test_patchRefusals(self) -> None:
        """A PATCH without the media type is 415 with Accept-Patch, without Upload-Offset 400; nothing changes."""
        location = self.create()
        response, _ = self.request("PATCH", location, b"5", Upload_Offset="5", Upload_Complete="?0")
        self.assertEqual(response.code, 415)
        self.assertEqual(self.header(response, "Accept-Patch"), PARTIAL)
        response, _ = self.request("PATCH", location, b"5", Content_Type=PARTIAL, Upload_Complete="?0")
        self.assertEqual(response.code, 400)
        response, _ = self.request("HEAD", location)
        self.assertEqual(self.header(response, "Upload-Offset"), "5")

    def test_tooLarge(self) -> None:
        """An Upload-Length above the maximum is refused 413 with Upload-Limit before anything is made."""
        response, _ = self.request(
            "POST", "/.uploads/", b"x", Upload_Complete="?0", Upload_Length="5000",
        )
        self.assertEqual(response.code, 413)
        self.assertEqual(self.header(response, "Upload-Limit"), "max-size=1000, min-size=0, max-age=3600")
        self.assertEqual(self.events, [])

    def test_refusedPatchTellsNothing(self) -> None:
        """A PATCH refused for its offset tells no resumed event."""
        location = self.create()
        response, _ = self.request(
            "PATCH", location, b"x", Content_Type=PARTIAL, Upload_Offset="2", Upload_Complete="?0",
        )
        self.assertEqual(response.code, 409)
        self.assertEqual([e.kind for e in self.events], ["created"])

    def test_contentDigest(self) -> None:
        """A PATCH whose Content-Digest does not match is refused 400 and not appended."""
        location = self.create()
        response, _ = self.request(
            "PATCH", location, b"56789", Content_Type=PARTIAL, Upload_Offset="5", Upload_Complete="?0",
            Content_Digest="sha-256=:" + base64.b64encode(hashlib.sha256(b"other").digest()).decode() + ":",
        )
        self.assertEqual(response.code, 400)
        response, _ = self.request("HEAD", location)
        self.assertEqual(self.header(response, "Upload-Offset"), "5")

    def test_reprDigest(self) -> None:
        """A creation whose Repr-Digest does not match the whole file is refused 400 and the file is not stored; a matching one is answered with it."""
        good = "sha-256=:" + base64.b64encode(hashlib.sha256(b"abc").digest()).decode() + ":"
        bad = "sha-256=:" + base64.b64encode(hashlib.sha256(b"abd").digest()).decode() + ":"
        response, _ = self.request(
            "PUT", "/r.bin", b"abc", Upload_Complete="?1", Repr_Digest=bad,
        )
        self.assertEqual(response.code, 400)
        self.assertFalse(os.path.exists(os.path.join(self.root, "r.bin")))
        response, _ = self.request(
            "PUT", "/r.bin", b"abc", Upload_Complete="?1", Repr_Digest=good,
        )
        self.assertEqual((response.code, self.header(response, "Repr-Digest")), (201, good))

    def test_unknownId(self) -> None:
        """An id that names no upload, or is not an id, is 404 for HEAD, PATCH and DELETE."""
        for target in ["/.uploads/" + "0" * 32, "/.uploads/nope", "/.uploads/%00"]:
            for method in ["HEAD", "DELETE"]:
                self.assertEqual(self.request(method, target)[0].code, 404, (method, target))
            response, _ = self.request(
                "PATCH", target, b"x", Content_Type=PARTIAL, Upload_Offset="0", Upload_Complete="?1",
            )
            self.assertEqual(response.code, 404, target)

    def test_methods(self) -> None:
        """Other methods at /.uploads/ and on an upload resource are 405 with Allow."""
        response, _ = self.request("GET", "/.uploads/")
        self.assertEqual((response.code, self.header(response, "Allow")), (405, "POST, OPTIONS"))
        response, _ = self.request("PUT", "/.uploads/" + "0" * 32, b"x")
        self.assertEqual((response.code, self.header(response, "Allow")), (405, "HEAD, PATCH, DELETE, OPTIONS"))

    def test_rootNeedsComplete(self) -> None:
        """A POST /.uploads/ without Upload-Complete is 400, not a file called .uploads."""
        response, content = self.request("POST", "/.uploads/", b"x")
        self.assertEqual(response.code, 400)
        self.assertIn(b"Upload-Complete", content)

    def test_rootUnknownVersion(self) -> None:
        """At /.uploads/, an unknown version with ?1 is a plain upload to the destination; with ?0 it is refused 400."""
        response, _ = self.request(
            "POST", "/.uploads/", b"abc", Upload_Complete="?1", Upload_Draft_Interop_Version="99",
            Content_Disposition="inline; filename=u.bin",
        )
        self.assertEqual((response.code, self.header(response, "Location")), (201, "/u.bin"))
        response, content = self.request(
            "POST", "/.uploads/", b"abc", Upload_Complete="?0", Upload_Draft_Interop_Version="99",
        )
        self.assertEqual(response.code, 400)
        self.assertIn(b"this server speaks 6, 8, 10", content)

    def test_badDestination(self) -> None:
        """A Content-Disposition file name that breaks the path rules is refused 400 at creation."""
        for name in ['"../x"', '".hidden"', '"a//b"']:
            response, _ = self.request(
                "POST", "/.uploads/", b"x", Upload_Complete="?1", Content_Disposition="inline; filename=" + name,
            )
            self.assertEqual(response.code, 400, name)
        self.assertEqual(self.events, [])

    def test_metadataDestination(self) -> None:
        """
        At /.uploads/ without Content-Disposition, tus-style Upload-Metadata
        (tus-js-client's ietf-draft-05) names the destination: relativePath
        wins over filename, relativePath "null" is not sent, and
        Content-Disposition wins over both.
        """
        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()

        for metadata, disposition, expected in [
            (f"filename {b64('m/a.bin')}", None, "m/a.bin"),
            (f"filename {b64('b.bin')},relativePath {b64('/album/b.bin')}", None, "album/b.bin"),
            (f"relativePath {b64('null')},filename {b64('c.bin')}", None, "c.bin"),
            (f"filename {b64('no.bin')}", "inline; filename=d.bin", "d.bin"),
        ]:
            headers = {"Upload_Metadata": metadata}
            if disposition is not None:
                headers["Content_Disposition"] = disposition
            response, _ = self.request(
                "POST", "/.uploads/", b"abc", Upload_Complete="?1",
                Upload_Draft_Interop_Version="6", **headers,
            )
            self.assertEqual((response.code, self.header(response, "Location")), (201, "/" + expected))
            with open(os.path.join(self.root, *expected.split("/")), "rb") as f:
                self.assertEqual(f.read(), b"abc")

    def test_badMetadataRefused(self) -> None:
        """Upload-Metadata at /.uploads/ that is malformed or names a path section 1 refuses is 400 at creation; nothing is made."""
        for metadata in ["filename !!notbase64", "filename " + base64.b64encode(b"../x").decode(),
                         "relativePath " + base64.b64encode(b"/a//b").decode()]:
            response, content = self.request(
                "POST", "/.uploads/", b"x", Upload_Complete="?0", Upload_Draft_Interop_Version="6",
                Upload_Metadata=metadata,
            )
            self.assertEqual(response.code, 400, metadata)
            self.assertIn(b"Upload-Metadata", content)
        self.assertEqual(self.events, [])

    def test_existingFile(self) -> None:
        """A creation on a path that holds a complete file is 409 (overwrite off)."""
        self.assertEqual(self.request("PUT", "/f.bin", b"abc")[0].code, 201)
        response, _ = self.request("PUT", "/f.bin", b"xyz", Upload_Complete="?0")
        self.assertEqual(response.code, 409)

    def test_prefix(self) -> None:
        """Behind --prefix the upload resources live under it, and Location says so."""
        self.build(Config(prefix=b"/up"))
        response, _ = self.request("POST", "/up/.uploads/", b"x", Upload_Complete="?0")
        self.assertRegex(self.header(response, "Location") or "", r"^/up/\.uploads/[0-9a-f]{32}$")

    def test_off(self) -> None:
        """With the draft off, /.uploads/ is just a reserved path (400) and Upload-Complete is ignored."""
        self.build(Config(ietfVersions=()))
        self.assertEqual(self.request("POST", "/.uploads/", b"x", Upload_Complete="?0")[0].code, 400)
        response, _ = self.request("PUT", "/g.bin", b"x", Upload_Complete="?0")
        self.assertEqual(response.code, 201)
        self.assertEqual(self.request("OPTIONS", "/g.bin")[0].code, 405)

    def test_headAfterAppend(self) -> None:
        """HEAD reports the offset, length, no-store and max-age from the store's record of the last byte."""
        self.build(Config(maxUploadSize=1000, expireAfter=3600), memory=True)
        location = self.create(Upload_Length="10")
        self.clock.advance(100)
        response, _ = self.request("HEAD", location, Upload_Draft_Interop_Version="10")
        self.assertEqual(response.code, 204)
        self.assertEqual(self.header(response, "Upload-Offset"), "5")
        self.assertEqual(self.header(response, "Upload-Length"), "10")
        self.assertEqual(self.header(response, "Cache-Control"), "no-store")
        self.assertEqual(self.header(response, "Upload-Limit"), "max-size=1000, min-size=0, max-age=3500")
