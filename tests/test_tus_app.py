"""
The tus 1.0 front end (L{uploadsvc.web.tus}) through treq's StubTreq: every
status of docs/protocol-tus.md with what is stored before and after, fast
(a real file store on a temp folder, disk calls inline). Streaming, resume
after a cut and takeover are in test_e2e_tus*.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp
from tests.support.stubapp import StubRequests

BODY = bytes(range(256)) * 40  # 10240 bytes
TUS = {"Tus_Resumable": "1.0.0"}
STREAM = {"Content_Type": "application/offset+octet-stream"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def metadata(**pairs: str) -> str:
    return ",".join(f"{key} {b64(value.encode())}" for key, value in pairs.items())


class TusAppTests(StubRequests, SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.build(Config(maxUploadSize=1_000_000))

    def build(self, config: Config) -> None:
        self.buildFileApp(config)

    def create(self, length: int | None = len(BODY), **headers: Any) -> str:
        """
        Create an upload; its path (C{/.tus/<id>}).
        """
        fields = dict(TUS, **headers)
        if length is not None:
            fields["Upload_Length"] = str(length)
        response, _ = self.request("POST", "/.tus/", **fields)
        self.assertEqual(response.code, 201, _)
        location = self.header(response, "Location")
        assert location is not None
        self.assertRegex(location, r"^/\.tus/[0-9a-f]{32}$")
        return location

    def patch(self, url: str, offset: int, body: bytes, **headers: Any) -> tuple[Any, bytes]:
        fields = dict(TUS, **STREAM)
        fields["Upload_Offset"] = str(offset)
        fields.update(headers)
        return self.request("PATCH", url, body, **fields)

    def offset(self, url: str) -> int | None:
        response, _ = self.request("HEAD", url, **TUS)
        if response.code == 404:
            return None
        self.assertEqual(response.code, 200)
        return int(self.header(response, "Upload-Offset") or "-1")

    def test_options(self) -> None:
        """OPTIONS lists the version, every extension, the maximum size and the checksums."""
        response, _ = self.request("OPTIONS", "/.tus/")
        self.assertEqual(response.code, 204)
        self.assertEqual(self.header(response, "Tus-Version"), "1.0.0")
        self.assertEqual(
            self.header(response, "Tus-Extension"),
            "creation,creation-with-upload,creation-defer-length,termination,checksum,"
            "expiration,concatenation",
        )
        self.assertEqual(self.header(response, "Tus-Max-Size"), "1000000")
        self.assertEqual(self.header(response, "Tus-Checksum-Algorithm"), "sha1,sha256,md5")
        self.assertEqual(self.header(response, "Tus-Resumable"), "1.0.0")

    def test_uploadInChunks(self) -> None:
        """Creation, then PATCHes: offsets reported, the file lands at its filename."""
        url = self.create(Upload_Metadata=metadata(filename="docs/a.bin", filetype="x/y"))
        head, _ = self.request("HEAD", url, **TUS)
        self.assertEqual(head.code, 200)
        self.assertEqual(self.header(head, "Upload-Offset"), "0")
        self.assertEqual(self.header(head, "Upload-Length"), str(len(BODY)))
        self.assertEqual(self.header(head, "Cache-Control"), "no-store")
        self.assertEqual(
            self.header(head, "Upload-Metadata"), metadata(filename="docs/a.bin", filetype="x/y")
        )
        self.assertIsNotNone(self.header(head, "Upload-Expires"))
        response, _ = self.patch(url, 0, BODY[:4000])
        self.assertEqual(response.code, 204)
        self.assertEqual(self.header(response, "Upload-Offset"), "4000")
        self.assertEqual(self.offset(url), 4000)
        self.assertIsNone(self.stored("docs/a.bin"))
        response, _ = self.patch(url, 4000, BODY[4000:])
        self.assertEqual(response.code, 204)
        self.assertEqual(self.header(response, "Upload-Offset"), str(len(BODY)))
        self.assertEqual(self.stored("docs/a.bin"), BODY)
        # A client whose last answer was lost learns from HEAD that it is done.
        head, _ = self.request("HEAD", url, **TUS)
        self.assertEqual(head.code, 200)
        self.assertEqual(self.header(head, "Upload-Offset"), str(len(BODY)))
        self.assertEqual(self.header(head, "Upload-Length"), str(len(BODY)))
        self.assertEqual(
            [(e.kind, e.protocol, e.offset) for e in self.events],
            [("created", "tus", 0), ("resumed", "tus", 4000), ("completed", "tus", len(BODY))],
        )
        self.assertEqual(self.events[-1].path, "docs/a.bin")

    def test_relativePathWins(self) -> None:
        """relativePath is the destination when both it and filename are sent."""
        url = self.create(5, Upload_Metadata=metadata(filename="a.bin", relativePath="dir/a.bin"))
        self.patch(url, 0, b"12345")
        self.assertEqual(self.stored("dir/a.bin"), b"12345")
        self.assertIsNone(self.stored("a.bin"))

    def test_incoming(self) -> None:
        """Without a filename the upload lands at incoming/<id>."""
        url = self.create(3)
        self.patch(url, 0, b"abc")
        self.assertEqual(self.stored("incoming/" + url.rsplit("/", 1)[1]), b"abc")

    def test_creationWithUpload(self) -> None:
        """A creation with a body stores it and answers 201 with the offset reached."""
        response, _ = self.request(
            "POST", "/.tus/", BODY[:100], Upload_Length=str(len(BODY)), **TUS, **STREAM
        )
        self.assertEqual(response.code, 201)
        self.assertEqual(self.header(response, "Upload-Offset"), "100")
        url = self.header(response, "Location")
        assert url is not None
        self.assertEqual(self.offset(url), 100)

    def test_emptyFile(self) -> None:
        """An upload of length 0 lands at its creation (clients send no PATCH for it)."""
        response, _ = self.request(
            "POST", "/.tus/", Upload_Length="0", Upload_Metadata=metadata(filename="empty"), **TUS
        )
        self.assertEqual((response.code, self.header(response, "Upload-Offset")), (201, "0"))
        self.assertEqual(self.stored("empty"), b"")
        self.assertEqual(self.store.listIncomplete(), [])

    def test_creationBodyTooLong(self) -> None:
        """A creation whose body is longer than its Upload-Length is 413 and creates nothing."""
        response, _ = self.request("POST", "/.tus/", b"abcd", Upload_Length="3", **TUS, **STREAM)
        self.assertEqual(response.code, 413)
        self.assertEqual(self.store.listIncomplete(), [])

    def test_creationWithUploadNeedsType(self) -> None:
        """A creation whose body has another content type is 415 and creates nothing."""
        response, _ = self.request("POST", "/.tus/", b"abc", Upload_Length="3", **TUS)
        self.assertEqual(response.code, 415)
        self.assertEqual(self.store.listIncomplete(), [])

    def test_deferredLength(self) -> None:
        """A deferred length is reported as such until a PATCH tells it; then it completes."""
        url = self.create(None, Upload_Defer_Length="1", Upload_Metadata=metadata(filename="d"))
        head, _ = self.request("HEAD", url, **TUS)
        self.assertEqual(self.header(head, "Upload-Defer-Length"), "1")
        self.assertIsNone(self.header(head, "Upload-Length"))
        self.patch(url, 0, b"abc")
        self.assertIsNone(self.stored("d"))
        response, _ = self.patch(url, 3, b"de", Upload_Length="5")
        self.assertEqual(response.code, 204)
        self.assertEqual(self.stored("d"), b"abcde")

    def test_wrongVersion(self) -> None:
        """A wrong or missing Tus-Resumable is 412 naming the version served; nothing changes."""
        url = self.create()
        self.patch(url, 0, b"abc")
        for fields in ({"Tus_Resumable": "0.2.2"}, {}):
            response, body = self.request(
                "PATCH", url, b"def", Upload_Offset="3", **STREAM, **fields
            )
            self.assertEqual(response.code, 412)
            self.assertEqual(self.header(response, "Tus-Version"), "1.0.0")
            self.assertEqual(body.count(b"\n"), 1)
            response, _ = self.request("POST", "/.tus/", Upload_Length="3", **fields)
            self.assertEqual(response.code, 412)
        self.assertEqual(self.offset(url), 3)
        self.assertEqual(len(self.store.listIncomplete()), 1)

    def test_wrongContentType(self) -> None:
        """A PATCH without application/offset+octet-stream is 415; nothing appended."""
        url = self.create()
        response, _ = self.request(
            "PATCH", url, b"abc", Upload_Offset="0", Content_Type="text/plain", **TUS
        )
        self.assertEqual(response.code, 415)
        self.assertEqual(self.offset(url), 0)

    def test_wrongOffset(self) -> None:
        """A PATCH at another offset is 409 with the right one; nothing appended."""
        url = self.create()
        self.patch(url, 0, b"abc")
        response, _ = self.patch(url, 5, b"xyz")
        self.assertEqual(response.code, 409)
        self.assertEqual(self.header(response, "Upload-Offset"), "3")
        self.assertEqual(self.offset(url), 3)

    def test_pastLength(self) -> None:
        """A PATCH body past the upload's length is 413; nothing appended."""
        url = self.create(4)
        response, _ = self.patch(url, 0, b"abcde")
        self.assertEqual(response.code, 413)
        self.assertEqual(self.offset(url), 0)

    def test_checksum(self) -> None:
        """A chunk whose checksum matches is appended; one that does not is 460 and is not."""
        url = self.create(9, Upload_Metadata=metadata(filename="c"))
        for alg, chunk, offset in (("sha1", b"abc", 0), ("md5", b"def", 3), ("sha256", b"ghi", 6)):
            good = b64(hashlib.new(alg, chunk).digest())
            bad = b64(hashlib.new(alg, b"other").digest())
            response, body = self.patch(url, offset, chunk, Upload_Checksum=f"{alg} {bad}")
            self.assertEqual((response.code, response.phrase), (460, b"Checksum Mismatch"), body)
            self.assertEqual(self.offset(url), offset)
            response, _ = self.patch(url, offset, chunk, Upload_Checksum=f"{alg} {good}")
            self.assertIn(response.code, (204,))
        self.assertEqual(self.stored("c"), b"abcdefghi")

    def test_badChecksumHeader(self) -> None:
        """An unknown checksum algorithm or a malformed digest is 400; nothing appended."""
        url = self.create()
        for value in ("crc32 AAAAAA==", "sha1 nope", "sha1 " + b64(b"short")):
            response, _ = self.patch(url, 0, b"abc", Upload_Checksum=value)
            self.assertEqual(response.code, 400, value)
        self.assertEqual(self.offset(url), 0)

    def test_unknownUpload(self) -> None:
        """An id that names no upload, or a path that is no id, is 404."""
        for url in ("/.tus/" + "0" * 32, "/.tus/nope", "/.tus/" + "A" * 32):
            response, _ = self.request("HEAD", url, **TUS)
            self.assertEqual(response.code, 404, url)
            response, _ = self.patch(url, 0, b"abc")
            self.assertEqual(response.code, 404, url)

    def test_termination(self) -> None:
        """DELETE removes the upload and its staged bytes; it is then 404."""
        url = self.create()
        self.patch(url, 0, b"abc")
        response, _ = self.request("DELETE", url, **TUS)
        self.assertEqual(response.code, 204)
        self.assertIsNone(self.offset(url))
        self.assertEqual(self.store.listIncomplete(), [])
        response, _ = self.request("DELETE", url, **TUS)
        self.assertEqual(response.code, 404)
        self.assertEqual(self.events[-1].kind, "cancelled")

    def test_methodOverride(self) -> None:
        """X-HTTP-Method-Override on a POST is the method served."""
        url = self.create()
        response, _ = self.request(
            "POST", url, b"abc", X_HTTP_Method_Override="PATCH", Upload_Offset="0", **TUS, **STREAM
        )
        self.assertEqual(response.code, 204)
        self.assertEqual(self.offset(url), 3)
        response, _ = self.request("POST", url, X_HTTP_Method_Override="DELETE", **TUS)
        self.assertEqual(response.code, 204)
        self.assertIsNone(self.offset(url))

    def test_methodNotAllowed(self) -> None:
        """A method tus does not serve on a URL is 405 with Allow."""
        response, _ = self.request("PUT", "/.tus/", b"x", **TUS)
        self.assertEqual(response.code, 405)
        self.assertEqual(self.header(response, "Allow"), "POST, OPTIONS")
        url = self.create()
        response, _ = self.request("GET", url, **TUS)
        self.assertEqual(response.code, 405)

    def test_badCreation(self) -> None:
        """Bad lengths, metadata or destinations are 400 at creation; nothing is created."""
        for fields in (
            {},
            {"Upload_Length": "10", "Upload_Defer_Length": "1"},
            {"Upload_Length": "-1"},
            {"Upload_Defer_Length": "2"},
            {"Upload_Length": "3", "Upload_Metadata": "filename !!!"},
            {"Upload_Length": "3", "Upload_Metadata": "a,a"},
            {"Upload_Length": "3", "Upload_Metadata": metadata(filename="../x")},
            {"Upload_Length": "3", "Upload_Metadata": metadata(filename=".hidden")},
            {"Upload_Length": "3", "Upload_Metadata": "filename " + b64(b"\xff")},
            {"Upload_Length": "3", "Upload_Concat": "final;/elsewhere/" + "0" * 32},
            {"Upload_Length": "3", "Upload_Concat": "whole"},
        ):
            response, body = self.request("POST", "/.tus/", **TUS, **fields)
            self.assertEqual(response.code, 400, (fields, body))
            self.assertEqual(body.count(b"\n"), 1)
        self.assertEqual(self.store.listIncomplete(), [])

    def test_tooLarge(self) -> None:
        """An Upload-Length past the maximum is 413 at creation."""
        response, _ = self.request("POST", "/.tus/", Upload_Length="1000001", **TUS)
        self.assertEqual(response.code, 413)
        self.assertEqual(self.store.listIncomplete(), [])

    def test_existingDestination(self) -> None:
        """A destination holding a complete file is 409 at creation unless overwrite is on."""
        self.request("PUT", "/taken.bin", b"old")
        response, _ = self.request(
            "POST", "/.tus/", Upload_Length="3", Upload_Metadata=metadata(filename="taken.bin"), **TUS
        )
        self.assertEqual(response.code, 409)
        self.assertEqual(self.store.listIncomplete(), [])
        self.build(Config(allowOverwrite=True))
        url = self.create(3, Upload_Metadata=metadata(filename="taken.bin"))
        self.patch(url, 0, b"new")
        self.assertEqual(self.stored("taken.bin"), b"new")

    def test_pathUploadFirst(self) -> None:
        """A tus upload whose destination a path upload filled meanwhile is 409 at completion."""
        url = self.create(3, Upload_Metadata=metadata(filename="race.bin"))
        self.request("PUT", "/race.bin", b"put")
        response, _ = self.patch(url, 0, b"tus")
        self.assertEqual(response.code, 409)
        self.assertEqual(self.stored("race.bin"), b"put")
        # HEAD does not report a finished upload that never landed.
        head, _ = self.request("HEAD", url, **TUS)
        self.assertEqual(head.code, 409)
        # Once the destination is free again, the staged bytes land.
        os.unlink(os.path.join(self.root, "race.bin"))
        head, _ = self.request("HEAD", url, **TUS)
        self.assertEqual((head.code, self.header(head, "Upload-Offset")), (200, "3"))
        self.assertEqual(self.stored("race.bin"), b"tus")

    def test_concatenation(self) -> None:
        """Partial uploads land nowhere; the final one holds their bytes in order."""
        parts = []
        for chunk in (b"abc", b"defg"):
            url = self.create(len(chunk), Upload_Concat="partial")
            self.patch(url, 0, chunk)
            parts.append(url)
        head, _ = self.request("HEAD", parts[0], **TUS)
        self.assertEqual(self.header(head, "Upload-Concat"), "partial")
        self.assertEqual(os.listdir(self.root), [".uploadsvc"])
        response, _ = self.request(
            "POST", "/.tus/", Upload_Concat="final;" + " ".join(
                [parts[0], "http://example" + parts[1]]
            ), Upload_Metadata=metadata(filename="joined.bin"), **TUS,
        )
        self.assertEqual(response.code, 201)
        self.assertEqual(self.stored("joined.bin"), b"abcdefg")
        self.assertEqual(self.store.listIncomplete(), [])

    def test_concatenationRefused(self) -> None:
        """A final upload naming unknown, whole or incomplete uploads is 400; nothing changes."""
        whole = self.create(3)
        self.patch(whole, 0, b"abc")
        short = self.create(3, Upload_Concat="partial")
        self.patch(short, 0, b"ab")
        before = sorted((e.key, e.offset) for e in self.store.listIncomplete())
        for parts in (["/.tus/" + "0" * 32], [whole], [short]):
            response, body = self.request(
                "POST", "/.tus/", Upload_Concat="final;" + " ".join(parts), **TUS
            )
            self.assertEqual(response.code, 400, body)
        self.assertEqual(sorted((e.key, e.offset) for e in self.store.listIncomplete()), before)

    def test_partGoneMeanwhile(self) -> None:
        """A part that goes between the check and the copy is 400; the final upload is removed."""
        from uploadsvc.errors import NotFound

        part = self.create(1, Upload_Concat="partial")
        self.patch(part, 0, b"a")

        def gone(final: object, parts: object) -> int:
            raise NotFound("no-upload", "there is no such upload")

        original = self.store.concatenate
        self.store.concatenate = gone  # type: ignore[method-assign]
        self.addCleanup(setattr, self.store, "concatenate", original)
        response, _ = self.request("POST", "/.tus/", Upload_Concat="final;" + part, **TUS)
        self.assertEqual(response.code, 400)
        self.assertIsNone(self.header(response, "Location"))
        self.assertEqual([e.partial for e in self.store.listIncomplete()], [True])

    def test_finalIsComplete(self) -> None:
        """A final upload is complete at its creation: HEAD says so, a PATCH finds nothing to add."""
        part = self.create(1, Upload_Concat="partial")
        self.patch(part, 0, b"a")
        response, _ = self.request("POST", "/.tus/", Upload_Concat="final;" + part, **TUS)
        final = self.header(response, "Location")
        assert final is not None
        self.assertEqual(self.offset(final), 1)
        self.assertEqual(self.stored("incoming/" + final.rsplit("/", 1)[1]), b"a")
        response, _ = self.patch(final, 0, b"b")
        self.assertEqual(response.code, 403)
        self.assertEqual(self.stored("incoming/" + final.rsplit("/", 1)[1]), b"a")

    def completedFinal(self, **headers: Any) -> tuple[list[str], str]:
        """
        Two complete parts joined by a final upload; their URLs and its.
        """
        parts = []
        for chunk in (b"ab", b"cd"):
            url = self.create(2, Upload_Concat="partial")
            self.patch(url, 0, chunk)
            parts.append(url)
        response, body = self.request(
            "POST", "/.tus/", Upload_Concat="final;" + " ".join(parts), **TUS, **headers
        )
        self.assertEqual(response.code, 201, body)
        final = self.header(response, "Location")
        assert final is not None
        return parts, final

    def test_patchCompletedFinal(self) -> None:
        """A PATCH of a final upload completed here is 403 (never patched), even at its full offset; nothing changes."""
        _, final = self.completedFinal(Upload_Metadata=metadata(filename="joined.bin"))
        for offset, body in ((4, b""), (4, b"e"), (0, b"abcd"), (3, b"d")):
            response, reason = self.patch(final, offset, body)
            self.assertEqual(response.code, 403, (offset, body))
            self.assertEqual(reason, b"a final concatenation is not patched\n")
        self.assertEqual(self.stored("joined.bin"), b"abcd")

    def test_headCompletedFinal(self) -> None:
        """HEAD of a final upload completed here tells its Upload-Concat (the parts' URLs) and its Upload-Metadata."""
        meta = metadata(filename="joined.bin", filetype="a/b")
        parts, final = self.completedFinal(Upload_Metadata=meta)
        head, _ = self.request("HEAD", final, **TUS)
        self.assertEqual(head.code, 200)
        self.assertEqual(self.header(head, "Upload-Offset"), "4")
        self.assertEqual(self.header(head, "Upload-Length"), "4")
        self.assertEqual(
            self.header(head, "Upload-Concat"),
            "final;" + " ".join(parts),
        )
        self.assertEqual(self.header(head, "Upload-Metadata"), meta)

    def test_headCompletedKeepsMetadata(self) -> None:
        """HEAD of a plain upload completed here still tells its Upload-Metadata."""
        meta = metadata(filename="m.bin")
        url = self.create(3, Upload_Metadata=meta)
        self.assertEqual(self.patch(url, 0, b"abc")[0].code, 204)
        head, _ = self.request("HEAD", url, **TUS)
        self.assertEqual((head.code, self.header(head, "Upload-Metadata")), (200, meta))

    def test_rememberedBytesBounded(self) -> None:
        """Completed uploads are remembered within a bound of their attributes' bytes: the oldest are forgotten first."""
        self.app.tus.maxDoneBytes = 1000
        urls = []
        for name in ("a", "b", "c"):
            url = self.create(1, Upload_Metadata=metadata(filename=name, note="x" * 300))
            self.assertEqual(self.patch(url, 0, b"1")[0].code, 204)
            urls.append(url)
        heads = [self.request("HEAD", url, **TUS)[0].code for url in urls]
        self.assertEqual(heads, [404, 200, 200])

    def test_retriedLastPatch(self) -> None:
        """A PATCH retried after its answer was lost (it completed the upload) is 204 at the full offset; nothing changes."""
        url = self.create(8, Upload_Metadata=metadata(filename="r.txt"))
        self.assertEqual(self.patch(url, 0, b"abcd")[0].code, 204)
        self.assertEqual(self.patch(url, 4, b"efgh")[0].code, 204)
        events = len(self.events)
        response, _ = self.patch(url, 4, b"efgh")
        self.assertEqual((response.code, self.header(response, "Upload-Offset")), (204, "8"))
        # The same for a deferred length's last PATCH, which told the length.
        deferred = self.create(None, Upload_Defer_Length="1", Upload_Metadata=metadata(filename="d.txt"))
        self.assertEqual(self.patch(deferred, 0, b"xy", Upload_Length="2")[0].code, 204)
        response, _ = self.patch(deferred, 0, b"xy", Upload_Length="2")
        self.assertEqual((response.code, self.header(response, "Upload-Offset")), (204, "2"))
        self.assertEqual((self.stored("r.txt"), self.stored("d.txt")), (b"abcdefgh", b"xy"))
        self.assertEqual(len(self.events), events + 2)  # d.txt's created and completed only

    def test_notARetry(self) -> None:
        """A PATCH of an upload completed here that does not end at its size (or tells another length) is 404."""
        url = self.create(8, Upload_Metadata=metadata(filename="r.txt"))
        self.assertEqual(self.patch(url, 0, b"abcdefgh")[0].code, 204)
        for offset, body, fields in (
            (4, b"efg", {}), (4, b"efghi", {}), (8, b"x", {}), (0, b"abcdefgh", {"Upload_Length": "9"}),
        ):
            response, _ = self.patch(url, offset, body, **fields)
            self.assertEqual(response.code, 404, (offset, body, fields))
        self.assertEqual(self.stored("r.txt"), b"abcdefgh")

    def test_deferredLengthPastMaximum(self) -> None:
        """A PATCH telling a deferred length past the maximum is 413 from the headers; nothing appended or recorded."""
        url = self.create(None, Upload_Defer_Length="1", Upload_Metadata=metadata(filename="big"))
        for body in (b"x" * 30, b""):
            response, reason = self.patch(url, 0, body, Upload_Length="1000001")
            self.assertEqual(response.code, 413, reason)
            self.assertEqual(reason.count(b"\n"), 1)
        head, _ = self.request("HEAD", url, **TUS)
        self.assertEqual(self.header(head, "Upload-Offset"), "0")
        self.assertEqual(self.header(head, "Upload-Defer-Length"), "1")
        self.assertIsNone(self.header(head, "Upload-Length"))
        # At the maximum itself it is taken.
        response, _ = self.patch(url, 0, b"x" * 30, Upload_Length="1000000")
        self.assertEqual((response.code, self.header(response, "Upload-Offset")), (204, "30"))

    def test_checksumAnswerIsTus(self) -> None:
        """A 460 carries Upload-Offset and no header of another protocol (Upload-Complete, Range)."""
        url = self.create(6)
        self.patch(url, 0, b"abc")
        bad = "sha1 " + b64(hashlib.sha1(b"other").digest())
        response, _ = self.patch(url, 3, b"def", Upload_Checksum=bad)
        self.assertEqual(response.code, 460)
        self.assertEqual(self.header(response, "Upload-Offset"), "3")
        self.assertIsNone(self.header(response, "Upload-Complete"))
        self.assertIsNone(self.header(response, "Range"))
        response, _ = self.request(
            "POST", "/.tus/", b"abc", Upload_Length="6", Upload_Checksum=bad, **TUS, **STREAM
        )
        self.assertEqual((response.code, self.header(response, "Upload-Offset")), (460, "0"))
        self.assertIsNone(self.header(response, "Upload-Complete"))

    def test_partHeldElsewhere(self) -> None:
        """A final upload whose part another request holds (another final joining it) is 409; the parts stay, no final is made."""
        from uploadsvc.protocol.decisions import Plan
        from uploadsvc.storage.interfaces import UploadId

        parts = []
        for chunk in (b"ab", b"cd"):
            url = self.create(2, Upload_Concat="partial")
            self.patch(url, 0, chunk)
            parts.append(url)
        _, _, staged = self.store.begin(
            UploadId(parts[1].rsplit("/", 1)[1]),
            lambda stored: Plan(False, stored.offset, 0, 0, stored.total), {}, None,
        )
        response, reason = self.request(
            "POST", "/.tus/", Upload_Concat="final;" + " ".join(parts),
            Upload_Metadata=metadata(filename="joined.bin"), **TUS,
        )
        staged.close()
        self.assertEqual(response.code, 409, reason)
        self.assertIsNone(self.header(response, "Location"))
        self.assertEqual(reason.count(b"\n"), 1)
        self.assertEqual(
            sorted((e.partial, e.offset) for e in self.store.listIncomplete()), [(True, 2), (True, 2)]
        )
        self.assertIsNone(self.stored("joined.bin"))
        # Once it is free, the same final upload is made.
        response, _ = self.request(
            "POST", "/.tus/", Upload_Concat="final;" + " ".join(parts),
            Upload_Metadata=metadata(filename="joined.bin"), **TUS,
        )
        self.assertEqual(response.code, 201)
        self.assertEqual(self.stored("joined.bin"), b"abcd")

    def test_prefix(self) -> None:
        """Under a mount prefix tus lives at <prefix>/.tus/ and hands out URLs there."""
        self.build(Config(prefix=b"/up"))
        response, _ = self.request("POST", "/up/.tus/", Upload_Length="1", **TUS)
        self.assertEqual(response.code, 201)
        url = self.header(response, "Location")
        assert url is not None
        self.assertTrue(url.startswith("/up/.tus/"))
        response, _ = self.patch(url, 0, b"x")
        self.assertEqual(response.code, 204)
        response, _ = self.request("POST", "/.tus/", Upload_Length="1", **TUS)
        self.assertEqual(response.code, 404)

    def test_otherDotNamesStillRefused(self) -> None:
        """Only /.tus is routed: other dot-names keep section 1's 400."""
        response, _ = self.request("PUT", "/.tusx", b"x")
        self.assertEqual(response.code, 400)


class ExpirationTests(StubRequests, SynchronousTestCase):
    """
    Upload-Expires (expiration extension) from the store's touch time and
    Config.expireAfter, on a clock the test moves.
    """

    def build(self, expireAfter: float) -> None:
        from twisted.internet.task import Clock

        from uploadsvc.storage.memory import MemoryStore

        self.clock = Clock()
        self.clock.advance(1_000_000)
        store = MemoryStore(now=self.clock.seconds)
        self.app = UploadApp(
            store, ImmediateRunner(), Config(expireAfter=expireAfter),  # type: ignore[arg-type]
            clock=self.clock,
        )
        self.treq = StubTreq(self.app.resource())

    def test_expires(self) -> None:
        """Creation, HEAD and PATCH tell when an incomplete upload expires; a later byte moves it."""
        from uploadsvc.protocol.expiry import httpDate

        self.build(3600)
        response, _ = self.request("POST", "/.tus/", Upload_Length="10", **TUS)
        url = self.header(response, "Location")
        assert url is not None
        self.assertEqual(self.header(response, "Upload-Expires"), httpDate(1_000_000 + 3600))
        self.clock.advance(100)
        head, _ = self.request("HEAD", url, **TUS)
        self.assertEqual(self.header(head, "Upload-Expires"), httpDate(1_000_000 + 3600))
        response, _ = self.request(
            "PATCH", url, b"abc", Upload_Offset="0", **TUS, **STREAM
        )
        self.assertEqual(self.header(response, "Upload-Expires"), httpDate(1_000_100 + 3600))
        head, _ = self.request("HEAD", url, **TUS)
        self.assertEqual(self.header(head, "Upload-Expires"), httpDate(1_000_100 + 3600))

    def test_noExpiry(self) -> None:
        """With expiry off no Upload-Expires is sent."""
        self.build(0)
        response, _ = self.request("POST", "/.tus/", Upload_Length="10", **TUS)
        self.assertIsNone(self.header(response, "Upload-Expires"))
