"""
tus 1.0 (docs/protocol-tus.md) against a real C{twistd uploadsvc}, with
raw requests: every refusal of the section decided from the headers (no
C{100 Continue}, a one-line reason, the connection closed, nothing stored
changed), the checksum refusal (C{460}) that needs the body, the
destination rules at creation, and the takeover rule (a new PATCH ends an
older one still open).
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from typing import Sequence

from twisted.trial.unittest import TestCase

from tests.support import rawhttp
from tests.support.server import ServerTestMixin

MAX = 1_000_000
TOKEN = "tus-token-0123456789abcdef"
AUTH = ("Authorization", "Bearer " + TOKEN)
TUS = ("Tus-Resumable", "1.0.0")
STREAM = ("Content-Type", "application/offset+octet-stream")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class TusE2ETests(ServerTestMixin, TestCase):
    timeout = 120

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        tokens = os.path.join(base, "tokens")
        with open(tokens, "w") as f:
            f.write(TOKEN + "\n")
        self.startUploadServer("--max-upload-size", str(MAX), "--auth-tokens", tokens)

    def send(
        self, method: str, path: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
    ) -> rawhttp.Answer:
        fields = [AUTH, TUS, *headers]
        if body or method in ("PATCH", "POST"):
            fields.append(("Content-Length", str(len(body))))
        return rawhttp.exchange(self.server.port, method, path, fields, body, timeout=10)[1]

    def create(self, length: int, *headers: tuple[str, str]) -> str:
        answer = self.send("POST", "/.tus/", [("Upload-Length", str(length)), *headers])
        self.assertEqual(answer.status, 201, answer.raw)
        location = answer.header("location")
        assert location is not None
        return location

    def offset(self, url: str) -> int | None:
        answer = self.send("HEAD", url)
        if answer.status == 404:
            return None
        self.assertEqual(answer.status, 200, answer.raw)
        return int(answer.header("upload-offset") or "-1")

    def staged(self) -> list[str]:
        found = []
        for _, _, names in os.walk(os.path.join(self.server.root, ".uploadsvc", "uploads")):
            found += sorted(names)
        return sorted(found)

    def refuse(
        self, method: str, path: str, headers: Sequence[tuple[str, str]], status: int,
        length: int = 100,
    ) -> rawhttp.Answer:
        return rawhttp.refusedFromHeaders(self, self.server.port, method, path, headers, status, length)

    def test_headerRefusals(self) -> None:
        """Every refusal of a PATCH or a creation comes from the headers and changes nothing."""
        url = self.create(500, ("Upload-Metadata", "filename " + b64(b"r.bin")))
        self.assertEqual(self.send("PATCH", url, [STREAM, ("Upload-Offset", "0")], b"abc").status, 204)
        before = self.staged()
        patch = [AUTH, STREAM, ("Upload-Offset", "3")]
        answer = self.refuse("PATCH", url, [AUTH, STREAM, ("Tus-Resumable", "0.2.2"), ("Upload-Offset", "3")], 412)
        self.assertEqual(answer.header("tus-version"), "1.0.0")
        self.refuse("PATCH", url, [STREAM, TUS, ("Upload-Offset", "3")], 401)
        self.refuse("PATCH", url, [AUTH, TUS, ("Content-Type", "text/plain"), ("Upload-Offset", "3")], 415)
        answer = self.refuse("PATCH", url, [*patch[:2], TUS, ("Upload-Offset", "7")], 409)
        self.assertEqual(answer.header("upload-offset"), "3")
        self.refuse("PATCH", url, [*patch[:2], TUS, ("Upload-Offset", "3x")], 400)
        self.refuse("PATCH", url, [*patch, TUS, ("Upload-Checksum", "crc32 AAAAAA==")], 400)
        self.refuse("PATCH", url, [*patch, TUS], 413, length=498)
        self.refuse("PATCH", "/.tus/" + "0" * 32, [*patch, TUS], 404)
        self.refuse("PATCH", "/.tus/not-an-id", [*patch, TUS], 404)
        for fields in (
            [("Upload-Length", "10"), ("Upload-Metadata", "filename !!")],
            [("Upload-Length", "10"), ("Upload-Metadata", "filename " + b64(b"../up.bin"))],
            [("Upload-Length", "10"), ("Upload-Concat", "final;/.tus/" + "0" * 32)],
            [("Upload-Length", "10"), ("Upload-Concat", "final;/files/" + "0" * 32)],
            [("Upload-Defer-Length", "2")],
        ):
            self.refuse("POST", "/.tus/", [AUTH, TUS, STREAM, *fields], 400)
        self.refuse("POST", "/.tus/", [AUTH, TUS, STREAM, ("Upload-Length", str(MAX + 1))], 413)
        self.refuse("POST", "/.tus/", [AUTH, TUS, ("Upload-Length", "10")], 415)
        self.assertEqual(self.offset(url), 3)
        self.assertEqual(self.staged(), before)

    def test_checksumMismatch(self) -> None:
        """A chunk whose Upload-Checksum differs is 460 and not appended; a matching one is."""
        url = self.create(6, ("Upload-Metadata", "filename " + b64(b"sum.bin")))
        wrong = "sha256 " + b64(hashlib.sha256(b"other").digest())
        answer = self.send(
            "PATCH", url, [STREAM, ("Upload-Offset", "0"), ("Upload-Checksum", wrong)], b"abcdef"
        )
        self.assertEqual((answer.status, answer.reason), (460, b"Checksum Mismatch"))
        self.assertEqual(self.offset(url), 0)
        right = "md5 " + b64(hashlib.md5(b"abcdef").digest())
        answer = self.send(
            "PATCH", url, [STREAM, ("Upload-Offset", "0"), ("Upload-Checksum", right)], b"abcdef"
        )
        self.assertEqual(answer.status, 204)
        with open(self.storedPath("sum.bin"), "rb") as f:
            self.assertEqual(f.read(), b"abcdef")

    def test_destinationAtCreation(self) -> None:
        """A destination through a link is 403, one holding a file 409, both at creation."""
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        os.symlink(outside, os.path.join(self.server.root, "link"))
        with open(self.storedPath("taken.bin"), "wb") as f:
            f.write(b"kept")
        before = self.staged()
        for name, status in ((b"link/x.bin", 403), (b"taken.bin", 409), (b"taken.bin/x", 409)):
            answer = self.send(
                "POST", "/.tus/", [("Upload-Length", "3"), ("Upload-Metadata", "filename " + b64(name))]
            )
            self.assertEqual(answer.status, status, name)
        self.assertEqual(os.listdir(outside), [])
        self.assertEqual(self.staged(), before)
        with open(self.storedPath("taken.bin"), "rb") as f:
            self.assertEqual(f.read(), b"kept")

    def test_terminationEndsWriter(self) -> None:
        """DELETE ends a PATCH still writing the upload and removes it: 204, then 404."""
        url = self.create(1000)
        with rawhttp.connect(self.server.port, timeout=10) as writer:
            writer.sendall(rawhttp.requestHead(
                "PATCH", url, [AUTH, TUS, STREAM, ("Upload-Offset", "0"), ("Content-Length", "1000")]
            ) + b"x" * 400)
            self.waitOffset(url, 400)
            self.assertEqual(self.send("DELETE", url).status, 204)
            self.assertEqual(rawhttp.ResponseReader(writer).waitClosed(10), b"")
        self.assertIsNone(self.offset(url))
        self.assertEqual(self.staged(), [])

    def test_takeover(self) -> None:
        """A new PATCH ends an older one still open on the same upload and is served."""
        url = self.create(1000, ("Upload-Metadata", "filename " + b64(b"t.bin")))
        body = bytes(range(250)) * 4
        with rawhttp.connect(self.server.port, timeout=10) as old:
            old.sendall(rawhttp.requestHead(
                "PATCH", url, [AUTH, TUS, STREAM, ("Upload-Offset", "0"), ("Content-Length", "1000")]
            ) + body[:600])
            self.waitOffset(url, 600)
            answer = self.send("PATCH", url, [STREAM, ("Upload-Offset", "600")], body[600:])
            self.assertEqual((answer.status, answer.header("upload-offset")), (204, "1000"))
            self.assertEqual(rawhttp.ResponseReader(old).waitClosed(10), b"")
        with open(self.storedPath("t.bin"), "rb") as f:
            self.assertEqual(f.read(), body)

    def waitOffset(self, url: str, offset: int) -> None:
        """
        Poll HEAD (bounded: 300 tries, 50 ms apart) until the upload has
        C{offset} bytes.
        """
        for _ in range(300):
            if self.offset(url) == offset:
                return
            time.sleep(0.05)
        self.fail(f"{url} never reached {offset} bytes")

    def test_optionsWithoutVersion(self) -> None:
        """OPTIONS needs no Tus-Resumable and tells what the server speaks."""
        answer = rawhttp.exchange(self.server.port, "OPTIONS", "/.tus/", [AUTH], timeout=10)[1]
        self.assertEqual(answer.status, 204)
        self.assertEqual(answer.header("tus-version"), "1.0.0")
        self.assertEqual(answer.header("tus-max-size"), str(MAX))
        self.assertIn("concatenation", answer.header("tus-extension") or "")

