"""
Scoped tokens on tus and the IETF draft against a real C{twistd uploadsvc}:
a token limited to a folder is refused (403 out-of-scope) from the headers
of a creation elsewhere and of every request on another's upload id, before
any body byte (no C{100 Continue}, no C{104}, the connection closed), and
nothing stored changes; inside its folder it uploads as usual.
"""

from __future__ import annotations

import base64
import os
from typing import Any, Sequence

from twisted.trial.unittest import TestCase

from twisted.internet.threads import deferToThread

from tests.support import rawhttp
from tests.support.server import ServerTestMixin
from tests.test_e2e_hooks import TOKEN as HOOK_TOKEN, HookTestMixin

ADMIN = "admin-token-0123456789abcdef"
ALICE = "alice-token-0123456789abcdef"
TUS = ("Tus-Resumable", "1.0.0")
STREAM = ("Content-Type", "application/offset+octet-stream")
PARTIAL = ("Content-Type", "application/partial-upload")
DRAFT = ("Upload-Draft-Interop-Version", "8")


def bearer(token: str) -> tuple[str, str]:
    return ("Authorization", "Bearer " + token)


def filename(name: str) -> tuple[str, str]:
    return ("Upload-Metadata", "filename " + base64.b64encode(name.encode()).decode())


class ScopedFrontEndsE2ETests(ServerTestMixin, TestCase):
    timeout = 120

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        tokens = os.path.join(base, "tokens")
        with open(tokens, "w") as f:
            f.write(f"{ADMIN} name=admin\n{ALICE} name=alice prefix=alice/ ops=upload\n")
        self.startUploadServer("--auth-tokens", tokens)

    def send(
        self, method: str, path: str, headers: Sequence[tuple[str, str]], body: bytes = b""
    ) -> rawhttp.Answer:
        fields = [*headers, ("Content-Length", str(len(body)))]
        return rawhttp.exchange(self.server.port, method, path, fields, body, timeout=10)[1]

    def refused(self, method: str, path: str, headers: Sequence[tuple[str, str]]) -> None:
        rawhttp.refusedFromHeaders(self, self.server.port, method, path, headers, 403, 100000)

    def staged(self) -> list[tuple[str, int]]:
        """
        The sizes of the staged data files, by name.
        """
        found = []
        for folder, _, names in os.walk(os.path.join(self.server.root, ".uploadsvc", "uploads")):
            found += [(n, os.path.getsize(os.path.join(folder, n))) for n in names if n.endswith(".data")]
        return sorted(found)

    def files(self) -> list[str]:
        found = []
        for folder, dirs, names in os.walk(self.server.root):
            dirs[:] = [d for d in dirs if d != ".uploadsvc"]
            found += [os.path.relpath(os.path.join(folder, n), self.server.root) for n in names]
        return sorted(found)

    def test_tus(self) -> None:
        """alice's tus creation outside alice/ and her requests on bob's upload are 403 before the body; inside alice/ she uploads."""
        self.refused("POST", "/.tus/", [bearer(ALICE), TUS, STREAM, ("Upload-Length", "100000"), filename("bob/x")])
        created = self.send("POST", "/.tus/", [bearer(ADMIN), TUS, ("Upload-Length", "10"), filename("bob/x")])
        self.assertEqual(created.status, 201, created.raw)
        url = created.header("location") or ""
        self.assertEqual(self.send("PATCH", url, [bearer(ADMIN), TUS, STREAM, ("Upload-Offset", "0")], b"01234").status, 204)
        before = self.staged()
        self.refused("PATCH", url, [bearer(ALICE), TUS, STREAM, ("Upload-Offset", "5")])
        self.refused("POST", url, [bearer(ALICE), TUS, STREAM, ("X-HTTP-Method-Override", "PATCH"), ("Upload-Offset", "5")])
        self.refused("DELETE", url, [bearer(ALICE), TUS])
        self.assertEqual(self.send("HEAD", url, [bearer(ALICE), TUS]).status, 403)
        self.assertEqual(self.staged(), before)
        head = self.send("HEAD", url, [bearer(ADMIN), TUS])
        self.assertEqual((head.status, head.header("upload-offset")), (200, "5"))
        mine = self.send("POST", "/.tus/", [bearer(ALICE), TUS, STREAM, ("Upload-Length", "3"), filename("alice/a")], b"abc")
        self.assertEqual(mine.status, 201, mine.raw)
        self.assertEqual(self.files(), ["alice/a"])

    def test_draft(self) -> None:
        """alice's draft creation outside alice/ gets neither 104 nor 100 but a 403; her requests on bob's upload are 403 before the body."""
        self.refused("POST", "/.uploads/", [bearer(ALICE), DRAFT, ("Upload-Complete", "?0"),
                                            ("Content-Disposition", 'attachment; filename="bob/x"')])
        self.refused("PUT", "/bob/y", [bearer(ALICE), DRAFT, ("Upload-Complete", "?0")])
        self.assertEqual(self.staged(), [])
        created = self.send("POST", "/.uploads/", [bearer(ADMIN), DRAFT, ("Upload-Complete", "?0"),
                                                   ("Content-Disposition", 'attachment; filename="bob/x"')], b"01234")
        self.assertEqual(created.status, 201, created.raw)
        url = created.header("location") or ""
        before = self.staged()
        self.refused("PATCH", url, [bearer(ALICE), DRAFT, PARTIAL, ("Upload-Offset", "5"), ("Upload-Complete", "?1")])
        self.refused("DELETE", url, [bearer(ALICE), DRAFT])
        self.assertEqual(self.send("HEAD", url, [bearer(ALICE), DRAFT]).status, 403)
        self.assertEqual(self.staged(), before)
        done = self.send("PATCH", url, [bearer(ADMIN), DRAFT, PARTIAL, ("Upload-Offset", "5"), ("Upload-Complete", "?1")], b"56789")
        self.assertEqual(done.status, 201, done.raw)
        self.assertEqual(self.files(), ["bob/x"])


class PreCreateE2ETests(HookTestMixin, TestCase):
    """
    A real hook endpoint refuses tus and draft creations from their headers.
    """

    timeout = 180

    def setUp(self) -> None:
        port = self.startEndpoint()
        self.startUploadServer(
            "--auth-tokens", self.tokenFile(),
            "--hook-url", f"http://127.0.0.1:{port}/hooks",
            "--hook-secret-file", self.secretFile(),
        )
        self.endpoint.policy = lambda hook, doc: (
            (403, b'{"reason": "no uploads into archive/"}') if hook == "pre-create" else (204, b"")
        )

    def creationHeaders(self, method: str, path: str, headers: Sequence[tuple[str, str]]) -> Any:
        """
        Send only the headers of a creation announcing a body, with C{Expect:
        100-continue}, in a thread (the reactor serves the hook meanwhile).
        """

        def run() -> tuple[list[Any], Any, bytes]:
            sent = [bearer(HOOK_TOKEN), *headers, ("Content-Length", "100000"), ("Expect", "100-continue")]
            with rawhttp.connect(self.server.port, timeout=60) as sock:
                sock.sendall(rawhttp.requestHead(method, path, sent))
                reader = rawhttp.ResponseReader(sock)
                interim, answer = reader.readFinal(method)
                return interim, answer, reader.waitClosed(30)

        return deferToThread(run)

    async def test_refused(self) -> None:
        """tus and draft creations are refused by pre-create with its status and reason before the body (no 100, no 104), with the protocol and the id the upload would have had; nothing is made."""
        creations = [
            ("POST", "/.tus/", [TUS, STREAM, ("Upload-Length", "100000"), filename("archive/t.bin")], "tus"),
            ("POST", "/.uploads/", [DRAFT, ("Upload-Complete", "?0"),
                                    ("Content-Disposition", 'attachment; filename="archive/d.bin"')], "ietf"),
            ("PUT", "/archive/p.bin", [DRAFT, ("Upload-Complete", "?1")], "ietf"),
        ]
        for method, path, headers, protocol in creations:
            interim, answer, rest = await self.creationHeaders(method, path, headers)
            where = f"{method} {path}: {answer.raw[:300]!r}"
            self.assertEqual(interim, [], where)
            self.assertEqual((answer.status, answer.body), (403, b"no uploads into archive/\n"), where)
            self.assertEqual(rest, b"", where)
            document = self.endpoint.documents("pre-create")[-1]
            self.assertEqual(document["upload"]["protocol"], protocol, where)
            self.assertRegex(document["upload"]["id"], "^[0-9a-f]{32}$")
        self.assertEqual(len(self.endpoint.documents("pre-create")), 3)
        staged = os.path.join(self.server.root, ".uploadsvc", "uploads")
        self.assertEqual(
            [n for _, _, names in os.walk(staged) for n in names if n.endswith(".data")], []
        )
        self.assertFalse(os.path.exists(os.path.join(self.server.root, "archive")))
