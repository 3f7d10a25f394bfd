"""
Routes and status codes of L{uploadsvc.web.app.UploadApp}, fast: treq's
StubTreq in memory, a real store on a temp folder, disk calls run inline.
Streaming and back-pressure are covered by test_streaming and the end-to-end
tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.storage.filestore import FileStore
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp

BODY = bytes(range(256)) * 40  # 10240 bytes


def reprDigest(data: bytes) -> bytes:
    return b"sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()) + b":"


class AppTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.build(Config(maxUploadSize=1_000_000))

    def build(self, config: Config) -> None:
        self.store = FileStore(self.root, fsync=False)
        self.addCleanup(self.store.close)
        self.app = UploadApp(self.store, ImmediateRunner(), config)
        self.treq = StubTreq(self.app.resource())

    def request(self, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[Any, bytes]:
        hdrs = {k.replace("_", "-"): [v] for k, v in headers.items()}
        response = self.successResultOf(
            self.treq.request(method, "http://example" + path, data=body or None, headers=hdrs)
        )
        content = self.successResultOf(self.treq.content(response))
        return response, content

    def header(self, response: Any, name: str) -> str | None:
        values = response.headers.getRawHeaders(name)
        if not values:
            return None
        value = values[0]
        return value.decode() if isinstance(value, bytes) else value

    def stored(self, rel: str) -> bytes:
        with open(os.path.join(self.root, rel), "rb") as f:
            return f.read()

    def test_putCreates(self) -> None:
        """A PUT stores the file and answers 201 with size, digest and location."""
        response, content = self.request("PUT", "/a/b.bin", BODY)
        self.assertEqual(response.code, 201)
        self.assertEqual(self.stored("a/b.bin"), BODY)
        self.assertEqual(
            json.loads(content),
            {"path": "a/b.bin", "size": len(BODY), "sha256": hashlib.sha256(BODY).hexdigest()},
        )
        self.assertEqual(self.header(response, "Repr-Digest"), reprDigest(BODY).decode())
        self.assertEqual(self.header(response, "Location"), "/a/b.bin")
        self.assertEqual(self.header(response, "Upload-Complete"), "?1")

    def test_postIsSynonym(self) -> None:
        """POST stores like PUT."""
        response, _ = self.request("POST", "/p.bin", BODY)
        self.assertEqual(response.code, 201)
        self.assertEqual(self.stored("p.bin"), BODY)

    def test_existingConflicts(self) -> None:
        """A second PUT on a complete file is 409 without overwrite, and changes nothing."""
        self.request("PUT", "/x", BODY)
        response, content = self.request("PUT", "/x", b"other")
        self.assertEqual(response.code, 409)
        self.assertEqual(self.header(response, "Content-Type"), "text/plain; charset=utf-8")
        self.assertEqual(content.count(b"\n"), 1)
        self.assertEqual(self.stored("x"), BODY)

    def test_overwriteAnswers200(self) -> None:
        """With overwrite on, replacing a file answers 200."""
        self.build(Config(allowOverwrite=True))
        self.request("PUT", "/x", BODY)
        response, _ = self.request("PUT", "/x", b"other")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.stored("x"), b"other")

    def test_rangeResume(self) -> None:
        """Pieces with Content-Range append, report offsets, and complete at the total."""
        total = len(BODY)
        r, _ = self.request("PUT", "/r", BODY[:4000], Content_Range=f"bytes 0-3999/{total}")
        self.assertEqual(r.code, 204)
        self.assertEqual(self.header(r, "Upload-Offset"), "4000")
        self.assertEqual(self.header(r, "Range"), "bytes=0-3999")
        head, _ = self.request("HEAD", "/r")
        self.assertEqual(head.code, 204)
        self.assertEqual(self.header(head, "Upload-Offset"), "4000")
        self.assertEqual(self.header(head, "Upload-Length"), str(total))
        self.assertEqual(self.header(head, "Upload-Complete"), "?0")
        self.assertEqual(self.header(head, "Cache-Control"), "no-store")
        # An overlapping retry: the first 1000 bytes are skipped.
        r, _ = self.request("PUT", "/r", BODY[3000:], Content_Range=f"bytes 3000-{total - 1}/{total}")
        self.assertEqual(r.code, 201)
        self.assertEqual(self.stored("r"), BODY)

    def test_gapConflicts(self) -> None:
        """A range starting past the offset is 409 with the offset."""
        self.request("PUT", "/g", BODY[:100], Content_Range=f"bytes 0-99/{len(BODY)}")
        r, _ = self.request("PUT", "/g", BODY[200:300], Content_Range=f"bytes 200-299/{len(BODY)}")
        self.assertEqual(r.code, 409)
        self.assertEqual(self.header(r, "Upload-Offset"), "100")

    def test_totalMismatch(self) -> None:
        """A total differing from the recorded one is 409 with Upload-Length."""
        self.request("PUT", "/t", BODY[:100], Content_Range="bytes 0-99/5000")
        r, _ = self.request("PUT", "/t", BODY[100:200], Content_Range="bytes 100-199/6000")
        self.assertEqual(r.code, 409)
        self.assertEqual(self.header(r, "Upload-Length"), "5000")

    def test_query(self) -> None:
        """PUT bytes */T answers like HEAD, without a body."""
        self.request("PUT", "/q", BODY[:10], Content_Range="bytes 0-9/100")
        r, content = self.request("PUT", "/q", Content_Range="bytes */100")
        self.assertEqual((r.code, content), (204, b""))
        self.assertEqual(self.header(r, "Upload-Offset"), "10")
        r, _ = self.request("PUT", "/q", Content_Range="bytes */99")
        self.assertEqual(r.code, 409)

    def test_headStates(self) -> None:
        """HEAD: 404 for nothing, 200 with size for a complete file."""
        self.assertEqual(self.request("HEAD", "/none")[0].code, 404)
        self.request("PUT", "/c", BODY)
        r, _ = self.request("HEAD", "/c")
        self.assertEqual(r.code, 200)
        self.assertEqual(self.header(r, "Upload-Offset"), str(len(BODY)))

    def test_lostAnswerRetry(self) -> None:
        """Retrying the last piece of a completed upload answers 200 and writes nothing."""
        total = len(BODY)
        self.request("PUT", "/l", BODY, Content_Range=f"bytes 0-{total - 1}/{total}")
        r, _ = self.request("PUT", "/l", BODY[5000:], Content_Range=f"bytes 5000-{total - 1}/{total}")
        self.assertEqual(r.code, 200)
        self.assertEqual(self.header(r, "Repr-Digest"), reprDigest(BODY).decode())
        r, _ = self.request(
            "PUT", "/l", BODY[5000:], Content_Range=f"bytes 5000-{total - 1}/{total}",
            Repr_Digest=reprDigest(b"else").decode(),
        )
        self.assertEqual(r.code, 409)

    def test_reprDigestChecked(self) -> None:
        """A wrong Repr-Digest refuses completion and discards the staged data."""
        r, _ = self.request("PUT", "/d", BODY, Repr_Digest=reprDigest(b"else").decode())
        self.assertEqual(r.code, 400)
        self.assertFalse(os.path.exists(os.path.join(self.root, "d")))
        self.assertEqual(self.request("HEAD", "/d")[0].code, 404)
        r, _ = self.request("PUT", "/d", BODY, Repr_Digest=reprDigest(BODY).decode())
        self.assertEqual(r.code, 201)

    def test_deleteIncomplete(self) -> None:
        """DELETE cancels an incomplete upload; a complete file needs the option."""
        self.request("PUT", "/del", BODY[:10], Content_Range="bytes 0-9/100")
        self.assertEqual(self.request("DELETE", "/del")[0].code, 204)
        self.assertEqual(self.request("HEAD", "/del")[0].code, 404)
        self.assertEqual(self.request("DELETE", "/del")[0].code, 404)
        self.request("PUT", "/keep", BODY)
        self.assertEqual(self.request("DELETE", "/keep")[0].code, 405)
        self.assertEqual(self.stored("keep"), BODY)

    def test_deleteCompleteWhenAllowed(self) -> None:
        """With deletes allowed, DELETE removes a complete file."""
        self.build(Config(allowDelete=True))
        self.request("PUT", "/gone", BODY)
        self.assertEqual(self.request("DELETE", "/gone")[0].code, 204)
        self.assertFalse(os.path.exists(os.path.join(self.root, "gone")))

    def test_badPath(self) -> None:
        """A hostile path is 400 with a reason and writes nothing."""
        r, content = self.request("PUT", "/a/%2e%2e/b", BODY)
        self.assertEqual(r.code, 400)
        self.assertTrue(content.strip())
        self.assertEqual(sorted(os.listdir(self.root)), [".uploadsvc"])

    def test_symlinkForbidden(self) -> None:
        """A path through a symbolic link is 403 and nothing lands behind it."""
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        os.symlink(outside, os.path.join(self.root, "link"))
        r, _ = self.request("PUT", "/link/x", BODY)
        self.assertEqual(r.code, 403)
        self.assertEqual(os.listdir(outside), [])

    def test_tooLarge(self) -> None:
        """A declared size over the maximum is 413."""
        r, _ = self.request("PUT", "/big", Content_Range="bytes 0-9/2000000")
        self.assertEqual(r.code, 413)

    def test_otherMethods(self) -> None:
        """GET is 405 with Allow."""
        r, _ = self.request("GET", "/x")
        self.assertEqual(r.code, 405)
        self.assertIn("PUT", self.header(r, "Allow") or "")

    def test_busy(self) -> None:
        """Over --max-uploads, a write is 503 with Retry-After; a status query is not."""
        self.build(Config(maxUploads=1))
        self.app.writers.acquire("someone-else", lambda: None)
        r, _ = self.request("PUT", "/b", BODY)
        self.assertEqual(r.code, 503)
        self.assertEqual(self.header(r, "Retry-After"), "1")
        self.assertEqual(self.request("HEAD", "/b")[0].code, 404)

    def test_floorRefusesWritesOnly(self) -> None:
        """Below the free-space floor writes are 507, even of unknown length; status queries are not."""
        self.build(Config(minFreeBytes=10**18))
        r, content = self.request("PUT", "/f", BODY)
        self.assertEqual(r.code, 507)
        self.assertEqual(content.count(b"\n"), 1)
        r, _ = self.request("PUT", "/f", Content_Range="bytes */100")
        self.assertEqual(r.code, 404)
        self.assertEqual(self.request("HEAD", "/f")[0].code, 404)

    def test_unknownMethod(self) -> None:
        """A method no route names is 405 with Allow, not an internal error."""
        r, _ = self.request("BREW", "/x")
        self.assertEqual(r.code, 405)
        self.assertIn("PUT", self.header(r, "Allow") or "")
