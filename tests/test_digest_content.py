"""
C{Content-Digest} per request and C{Repr-Digest} with sha-512 (docs/protocol.md
section 4), through L{uploadsvc.web.app.UploadApp} in memory (treq's
StubTreq, a real store on a temp folder, disk calls run inline).
"""

from __future__ import annotations

import base64
import hashlib
import os

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.storage.filestore import FileStore
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp
from tests.support.stubapp import StubRequests

BODY = bytes(range(256)) * 40  # 10240 bytes
TOTAL = len(BODY)


def field(data: bytes, *algs: str) -> str:
    """
    A digest field value for C{data} with each of C{algs}.
    """
    members = []
    for alg in algs:
        digest = hashlib.new(alg.replace("-", ""), data).digest()
        members.append(f"{alg}=:{base64.b64encode(digest).decode()}:")
    return ", ".join(members)


def rng(first: int, last: int, total: int | str = TOTAL) -> str:
    return f"bytes {first}-{last}/{total}"


class DigestTestCase(StubRequests, SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.store = FileStore(self.root, fsync=False)
        self.addCleanup(self.store.close)
        self.app = UploadApp(self.store, ImmediateRunner(), Config())
        self.treq = StubTreq(self.app.resource())

    def offset(self, path: str) -> str | None:
        response, _ = self.request("HEAD", path)
        return self.header(response, "Upload-Offset")

    def staged(self, path: str) -> bytes:
        key = self.store.keyFor(self.app._path(_Uri(path)))
        where = self.store._where(key, ".data")  # relative to the root
        with open(os.path.join(self.root, where), "rb") as f:
            return f.read()

    def stored(self, rel: str) -> bytes:
        with open(os.path.join(self.root, rel), "rb") as f:
            return f.read()


class _Uri:
    def __init__(self, path: str) -> None:
        self.uri = path.encode()


class ContentDigestTests(DigestTestCase):
    """
    A request's C{Content-Digest} is checked against its whole body.
    """

    def test_matchAppends(self) -> None:
        """A piece whose Content-Digest matches is appended, with either algorithm."""
        r, _ = self.request("PUT", "/c", BODY[:4000], Content_Range=rng(0, 3999),
                            Content_Digest=field(BODY[:4000], "sha-256"))
        self.assertEqual((r.code, self.header(r, "Upload-Offset")), (204, "4000"))
        r, _ = self.request("PUT", "/c", BODY[4000:], Content_Range=rng(4000, TOTAL - 1),
                            Content_Digest=field(BODY[4000:], "sha-512"))
        self.assertEqual(r.code, 201)
        self.assertEqual(self.stored("c"), BODY)

    def test_mismatchRollsBack(self) -> None:
        """A piece whose Content-Digest fails is not appended: 400, and the offset stays."""
        self.request("PUT", "/m", BODY[:4000], Content_Range=rng(0, 3999))
        r, body = self.request("PUT", "/m", BODY[4000:8000], Content_Range=rng(4000, 7999),
                               Content_Digest=field(b"other", "sha-256"))
        self.assertEqual(r.code, 400)
        self.assertIn(b"Content-Digest", body)
        self.assertEqual(self.header(r, "Upload-Offset"), "4000")
        self.assertEqual(self.offset("/m"), "4000")
        self.assertEqual(self.staged("/m"), BODY[:4000])

    def test_uploadFinishesAfterRollback(self) -> None:
        """After a rolled-back piece the upload resumes and completes with the right digest."""
        self.request("PUT", "/f", BODY[:4000], Content_Range=rng(0, 3999))
        corrupt = bytearray(BODY[4000:])
        corrupt[100] ^= 1
        r, _ = self.request("PUT", "/f", bytes(corrupt), Content_Range=rng(4000, TOTAL - 1),
                            Content_Digest=field(BODY[4000:], "sha-256"))
        self.assertEqual(r.code, 400)
        self.assertFalse(os.path.exists(os.path.join(self.root, "f")))
        r, _ = self.request("PUT", "/f", BODY[4000:], Content_Range=rng(4000, TOTAL - 1),
                            Content_Digest=field(BODY[4000:], "sha-256"),
                            Repr_Digest=field(BODY, "sha-256"))
        self.assertEqual(r.code, 201)
        self.assertEqual(self.header(r, "Repr-Digest"), field(BODY, "sha-256"))
        self.assertEqual(self.stored("f"), BODY)

    def test_allAlgorithmsChecked(self) -> None:
        """With two digests, one wrong is enough to refuse."""
        value = field(BODY[:100], "sha-256") + ", " + field(b"x", "sha-512")
        r, _ = self.request("PUT", "/two", BODY[:100], Content_Range=rng(0, 99), Content_Digest=value)
        self.assertEqual(r.code, 400)
        self.assertEqual(self.offset("/two"), "0")

    def test_overlapCounts(self) -> None:
        """The digest covers the whole body, the retried bytes that are skipped included."""
        self.request("PUT", "/o", BODY[:4000], Content_Range=rng(0, 3999))
        r, _ = self.request("PUT", "/o", BODY[3000:6000], Content_Range=rng(3000, 5999),
                            Content_Digest=field(BODY[4000:6000], "sha-256"))
        self.assertEqual(r.code, 400)
        self.assertEqual(self.offset("/o"), "4000")
        r, _ = self.request("PUT", "/o", BODY[3000:6000], Content_Range=rng(3000, 5999),
                            Content_Digest=field(BODY[3000:6000], "sha-256"))
        self.assertEqual((r.code, self.header(r, "Upload-Offset")), (204, "6000"))
        self.assertEqual(self.staged("/o"), BODY[:6000])

    def test_plainPut(self) -> None:
        """A plain PUT whose Content-Digest fails leaves no file at the destination."""
        r, _ = self.request("PUT", "/p", BODY, Content_Digest=field(BODY[1:], "sha-256"))
        self.assertEqual(r.code, 400)
        self.assertFalse(os.path.exists(os.path.join(self.root, "p")))
        r, _ = self.request("PUT", "/p", BODY, Content_Digest=field(BODY, "sha-256"))
        self.assertEqual(r.code, 201)

    def test_malformed(self) -> None:
        """A malformed Content-Digest is 400 from the headers and writes nothing."""
        for value in ["sha-256=abc", "sha-256=:AAAA:", "sha-256=:" + "A" * 44]:
            r, _ = self.request("PUT", "/bad", BODY, Content_Digest=value)
            self.assertEqual(r.code, 400, value)
        self.assertEqual(self.request("HEAD", "/bad")[0].code, 404)

    def test_unknownAlgorithmIgnored(self) -> None:
        """A Content-Digest with only algorithms the server does not know is not checked."""
        r, _ = self.request("PUT", "/u", BODY, Content_Digest="md5=:AAAAAAAAAAAAAAAAAAAAAA==:")
        self.assertEqual(r.code, 201)


class ReprDigestSha512Tests(DigestTestCase):
    """
    C{Repr-Digest: sha-512=...} is checked at completion.
    """

    def test_oneRequestStreamed(self) -> None:
        """A one-request upload's sha-512 is computed while streaming, never re-read from disk."""
        self.store.hashStaged = lambda *a: self.fail("re-read the staged file")  # type: ignore[method-assign]
        r, _ = self.request("PUT", "/s", BODY, Repr_Digest=field(BODY, "sha-512"))
        self.assertEqual(r.code, 201)
        self.assertEqual(self.stored("s"), BODY)

    def test_oneRequestMismatch(self) -> None:
        """A wrong sha-512 refuses completion and discards the staged data."""
        r, _ = self.request("PUT", "/w", BODY, Repr_Digest=field(b"else", "sha-512"))
        self.assertEqual(r.code, 400)
        self.assertFalse(os.path.exists(os.path.join(self.root, "w")))
        self.assertEqual(self.request("HEAD", "/w")[0].code, 404)

    def test_rememberedAcrossPieces(self) -> None:
        """A sha-512 sent on the first piece is checked when the last piece completes."""
        self.request("PUT", "/r", BODY[:5000], Content_Range=rng(0, 4999),
                     Repr_Digest=field(b"else", "sha-512"))
        r, _ = self.request("PUT", "/r", BODY[5000:], Content_Range=rng(5000, TOTAL - 1))
        self.assertEqual(r.code, 400)
        self.request("PUT", "/r", BODY[:5000], Content_Range=rng(0, 4999),
                     Repr_Digest=field(BODY, "sha-512"))
        r, _ = self.request("PUT", "/r", BODY[5000:], Content_Range=rng(5000, TOTAL - 1))
        self.assertEqual(r.code, 201)
        self.assertEqual(self.stored("r"), BODY)
