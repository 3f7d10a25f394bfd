"""
What an outside attack on tus (C{/.tus/}) and the draft (C{/.uploads/})
found, against a real C{twistd uploadsvc} with raw requests: an upload
answers only the protocol that created it, a deferred length past the
maximum is refused from the headers, a completed final upload is never
patched and still described, a PATCH retried after its answer was lost is
answered as done, tus answers carry no draft header, and a final upload
whose part another request holds is C{409}.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Sequence

from twisted.trial.unittest import TestCase

from tests.support import rawhttp
from tests.support.server import ServerTestMixin

MAX = 1000
TUS = ("Tus-Resumable", "1.0.0")
STREAM = ("Content-Type", "application/offset+octet-stream")
DRAFT = ("Upload-Draft-Interop-Version", "8")
PARTIAL = ("Content-Type", "application/partial-upload")
#: Headers no tus answer carries.
FOREIGN = ("upload-complete", "range", "upload-limit", "upload-draft-interop-version")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class FrontEndAttackTests(ServerTestMixin, TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.startUploadServer("--max-upload-size", str(MAX))

    def send(
        self, method: str, path: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
    ) -> rawhttp.Answer:
        fields = list(headers)
        if body or method in ("PATCH", "POST"):
            fields.append(("Content-Length", str(len(body))))
        return rawhttp.exchange(self.server.port, method, path, fields, body, timeout=10)[1]

    def tus(
        self, method: str, path: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
    ) -> rawhttp.Answer:
        """
        A tus request; its answer, which carries no other protocol's header.
        """
        answer = self.send(method, path, [TUS, *headers], body)
        for name in FOREIGN:
            self.assertIsNone(answer.header(name), (method, path, answer.raw[:400]))
        return answer

    def create(self, length: int, *headers: tuple[str, str], body: bytes = b"") -> str:
        fields = [("Upload-Length", str(length)), *headers] + ([STREAM] if body else [])
        answer = self.tus("POST", "/.tus/", fields, body)
        self.assertEqual(answer.status, 201, answer.raw)
        location = answer.header("location")
        assert location is not None
        return location

    def refuse(
        self, method: str, path: str, headers: Sequence[tuple[str, str]], status: int,
        length: int = 10,
    ) -> rawhttp.Answer:
        return rawhttp.refusedFromHeaders(self, self.server.port, method, path, headers, status, length)

    def landed(self) -> list[str]:
        found = []
        for folder, dirs, names in os.walk(self.server.root):
            dirs[:] = [d for d in dirs if d != ".uploadsvc"]
            found += [os.path.relpath(os.path.join(folder, n), self.server.root) for n in names]
        return sorted(found)

    def staged(self) -> list[tuple[str, int]]:
        found = []
        for folder, _, names in os.walk(os.path.join(self.server.root, ".uploadsvc", "uploads")):
            found += [(n, os.path.getsize(os.path.join(folder, n))) for n in names if n.endswith(".data")]
        return sorted(found)

    def test_draftOnTusPartial(self) -> None:
        """A draft PATCH ?1 on a tus partial upload is 404 from its headers: nothing lands, the part stays tus's."""
        part = self.create(2, ("Upload-Concat", "partial"), body=b"C")
        uploadId = part.rsplit("/", 1)[1]
        before = self.staged()
        self.assertEqual(self.send("HEAD", "/.uploads/" + uploadId, [DRAFT]).status, 404)
        self.refuse(
            "PATCH", "/.uploads/" + uploadId,
            [DRAFT, PARTIAL, ("Upload-Offset", "1"), ("Upload-Complete", "?1")], 404, 1,
        )
        answer = self.send(
            "PATCH", "/.uploads/" + uploadId,
            [DRAFT, PARTIAL, ("Upload-Offset", "1"), ("Upload-Complete", "?1")], b"D",
        )
        self.assertEqual(answer.status, 404)
        self.assertEqual((self.staged(), self.landed()), (before, []))
        self.assertEqual(self.tus("PATCH", part, [STREAM, ("Upload-Offset", "1")], b"D").status, 204)
        answer = self.tus("POST", "/.tus/", [
            ("Upload-Concat", "final;" + part), ("Upload-Metadata", "filename " + b64(b"cd.bin")),
        ])
        self.assertEqual(answer.status, 201, answer.raw)
        self.assertEqual(self.landed(), ["cd.bin"])

    def test_draftEndsNoTusWriter(self) -> None:
        """The draft's HEAD and DELETE on a tus upload being written are 404 and do not end its PATCH, which completes."""
        url = self.create(1000, ("Upload-Metadata", "filename " + b64(b"w.bin")))
        uploadId = url.rsplit("/", 1)[1]
        body = bytes(range(250)) * 4
        with rawhttp.connect(self.server.port, timeout=10) as writer:
            writer.sendall(rawhttp.requestHead("PATCH", url, [
                TUS, STREAM, ("Upload-Offset", "0"), ("Content-Length", "1000"),
                ("Expect", "100-continue"),
            ]))
            reader = rawhttp.ResponseReader(writer)
            self.assertEqual(reader.readResponse("PATCH").status, 100)  # it holds the upload
            writer.sendall(body[:400])
            for method in ("HEAD", "DELETE"):
                self.assertEqual(self.send(method, "/.uploads/" + uploadId, [DRAFT]).status, 404)
            writer.sendall(body[400:])
            answer = reader.readResponse("PATCH")
            self.assertEqual((answer.status, answer.header("upload-offset")), (204, "1000"))
        with open(self.storedPath("w.bin"), "rb") as f:
            self.assertEqual(f.read(), body)

    def test_tusOnDraftUpload(self) -> None:
        """A tus PATCH with Upload-Length on a draft upload is 404 from its headers; the draft completes it later."""
        answer = self.send("POST", "/.uploads/", [
            DRAFT, ("Upload-Complete", "?0"), ("Content-Disposition", 'inline; filename="ie.txt"'),
        ], b"ie")
        self.assertEqual(answer.status, 201, answer.raw)
        location = answer.header("location") or ""
        url = "/.tus/" + location.rsplit("/", 1)[1]
        self.assertEqual(self.tus("HEAD", url).status, 404)
        self.refuse("PATCH", url, [TUS, STREAM, ("Upload-Offset", "2"), ("Upload-Length", "4")], 404, 2)
        self.assertEqual(self.landed(), [])
        answer = self.send(
            "PATCH", location, [DRAFT, PARTIAL, ("Upload-Offset", "2"), ("Upload-Complete", "?1")], b"!!"
        )
        self.assertEqual(answer.status, 201, answer.raw)
        with open(self.storedPath("ie.txt"), "rb") as f:
            self.assertEqual(f.read(), b"ie!!")

    def test_deferredLengthPastMaximum(self) -> None:
        """A PATCH telling a deferred upload a length past --max-upload-size is 413 from its headers."""
        url = self.tus("POST", "/.tus/", [
            ("Upload-Defer-Length", "1"), ("Upload-Metadata", "filename " + b64(b"t1.bin")),
        ]).header("location") or ""
        self.refuse("PATCH", url, [TUS, STREAM, ("Upload-Offset", "0"), ("Upload-Length", str(MAX + 1))], 413, 30)
        head = self.tus("HEAD", url)
        self.assertEqual((head.header("upload-offset"), head.header("upload-defer-length")), ("0", "1"))
        self.assertEqual(self.staged()[0][1], 0)

    def test_retryOfCompletingPatch(self) -> None:
        """The completing PATCH sent again (its answer lost) is 204 at the full offset; the file is unchanged."""
        url = self.create(8, ("Upload-Metadata", "filename " + b64(b"r.txt")))
        self.assertEqual(self.tus("PATCH", url, [STREAM, ("Upload-Offset", "0")], b"abcd").status, 204)
        self.assertEqual(self.tus("PATCH", url, [STREAM, ("Upload-Offset", "4")], b"efgh").status, 204)
        for body in (b"efgh", b"EFGH"):  # (its bytes are not compared: nothing is staged)
            answer = self.tus("PATCH", url, [STREAM, ("Upload-Offset", "4")], body)
            self.assertEqual((answer.status, answer.header("upload-offset")), (204, "8"), answer.raw)
        self.assertEqual(self.tus("PATCH", url, [STREAM, ("Upload-Offset", "4")], b"efg").status, 404)
        with open(self.storedPath("r.txt"), "rb") as f:
            self.assertEqual(f.read(), b"abcdefgh")

    def test_completedFinal(self) -> None:
        """A completed final upload is 403 to a PATCH (from its headers) and HEAD tells its Upload-Concat and Upload-Metadata."""
        parts = [self.create(2, ("Upload-Concat", "partial"), body=chunk) for chunk in (b"ab", b"cd")]
        meta = "filename " + b64(b"joined.bin")
        answer = self.tus("POST", "/.tus/", [
            ("Upload-Concat", "final;" + " ".join(parts)), ("Upload-Metadata", meta),
        ])
        self.assertEqual(answer.status, 201, answer.raw)
        final = answer.header("location") or ""
        for offset in ("4", "0"):
            self.refuse("PATCH", final, [TUS, STREAM, ("Upload-Offset", offset)], 403, 1)
        head = self.tus("HEAD", final)
        self.assertEqual(head.status, 200)
        self.assertEqual(head.header("upload-concat"), "final;" + " ".join(parts))
        self.assertEqual(head.header("upload-metadata"), meta)
        self.assertEqual((head.header("upload-offset"), head.header("upload-length")), ("4", "4"))
        with open(self.storedPath("joined.bin"), "rb") as f:
            self.assertEqual(f.read(), b"abcd")

    def test_checksumMismatchAnswer(self) -> None:
        """A 460 (on a PATCH or a creation with a body) tells Upload-Offset and carries no draft header."""
        url = self.create(6)
        bad = "sha1 " + b64(hashlib.sha1(b"other").digest())
        answer = self.tus("PATCH", url, [STREAM, ("Upload-Offset", "0"), ("Upload-Checksum", bad)], b"abc")
        self.assertEqual((answer.status, answer.header("upload-offset")), (460, "0"))
        answer = self.tus("POST", "/.tus/", [("Upload-Length", "6"), STREAM, ("Upload-Checksum", bad)], b"abc")
        self.assertEqual((answer.status, answer.header("upload-offset")), (460, "0"))

    def test_partHeldByAnotherRequest(self) -> None:
        """A final upload whose part another request holds is 409; no final is made, the parts stay and join once free."""
        parts = [self.create(2, ("Upload-Concat", "partial"), body=chunk) for chunk in (b"ab", b"cd")]
        meta = ("Upload-Metadata", "filename " + b64(b"joined.bin"))
        concat = ("Upload-Concat", "final;" + " ".join(parts))
        with rawhttp.connect(self.server.port, timeout=10) as holder:
            # A chunked PATCH at the part's full offset: accepted (100
            # Continue once it holds the part), its body never ends.
            holder.sendall(rawhttp.requestHead("PATCH", parts[1], [
                TUS, STREAM, ("Upload-Offset", "2"), ("Transfer-Encoding", "chunked"),
                ("Expect", "100-continue"),
            ]))
            reader = rawhttp.ResponseReader(holder)
            self.assertEqual(reader.readResponse("PATCH").status, 100)
            before = self.staged()
            answer = self.tus("POST", "/.tus/", [concat, meta])
            self.assertEqual(answer.status, 409, answer.raw)
            self.assertEqual(answer.body.count(b"\n"), 1)
            self.assertIsNone(answer.header("location"))  # no final upload was kept
            self.assertEqual((self.staged(), self.landed()), (before, []))
            holder.sendall(b"0\r\n\r\n")
            self.assertEqual(reader.readResponse("PATCH").status, 204)
        answer = self.tus("POST", "/.tus/", [concat, meta])
        self.assertEqual(answer.status, 201, answer.raw)
        with open(self.storedPath("joined.bin"), "rb") as f:
            self.assertEqual(f.read(), b"abcd")
