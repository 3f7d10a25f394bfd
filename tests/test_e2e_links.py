"""
End-to-end tests against a real C{twistd uploadsvc}: links planted in the
server's own folder and at destinations, concurrent status queries, and the
storage faults that must be refusals rather than 500s (issue 8 items 3, 6, 7
and 15; docs/protocol.md sections 1, 6 and 7).

The tests that need a file system with few inodes or one that fails mount
one (as root) and unmount it in their cleanup.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import zlib
from typing import Any, Sequence

from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from tests.test_filestore_links import failingDisk, fillInodes, smallTmpfs
from uploadsvc.storage.filestore import STATE_DIR, FileStore
from uploadsvc.protocol.paths import parseRelativePath
from tests.support import rawhttp
from tests.support.server import ServerRequests, ServerTestMixin, startServer


def stagedFiles(root: str, rel: str) -> tuple[str, str]:
    """
    The data and metadata files of the upload of C{rel} under C{root}.
    """
    key = FileStore.keyFor(parseRelativePath(rel))
    shard = "%02x" % (zlib.crc32(key.encode("utf-8")) & 0xFF)
    folder = os.path.join(root, STATE_DIR, "uploads", shard)
    return os.path.join(folder, key + ".data"), os.path.join(folder, key + ".json")


class LinkServerTestCase(ServerTestMixin, TestCase):
    """
    A server, and a file outside its root that planted links point at.
    """

    timeout = 120

    def setUp(self) -> None:
        self.startUploadServer(*self.serverArgs())
        self.base = os.path.dirname(self.server.root)
        self.outside = os.path.join(self.base, "outside")
        os.makedirs(self.outside)
        self.secret = os.path.join(self.outside, "secret")
        with open(self.secret, "wb") as f:
            f.write(b"outside-secret")

    def serverArgs(self) -> list[str]:
        return []

    def put(
        self, path: str, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()
    ) -> rawhttp.Answer:
        return rawhttp.exchange(
            self.server.port, "PUT", path,
            [("Content-Length", str(len(body))), *headers], body, timeout=15,
        )[1]

    def request(self, method: str, path: str) -> rawhttp.Answer:
        return rawhttp.exchange(self.server.port, method, path, timeout=15)[1]

    def assertRefusal(self, answer: rawhttp.Answer, status: int) -> None:
        """
        C{answer} is C{status} with a one-line plain-text reason.
        """
        where = answer.raw[:300]
        self.assertEqual(answer.status, status, where)
        self.assertEqual(answer.header("content-type"), "text/plain; charset=utf-8", where)
        self.assertEqual(answer.body.count(b"\n"), 1, where)

    def assertOutsideUntouched(self) -> None:
        self.assertEqual(os.listdir(self.outside), ["secret"])
        with open(self.secret, "rb") as f:
            self.assertEqual(f.read(), b"outside-secret")

    def assertNoTraceback(self) -> None:
        self.assertNotIn("Traceback", self.server.logText())

    def stageSome(self, rel: str, data: bytes, total: int) -> None:
        answer = self.put(
            "/" + rel, data, [("Content-Range", f"bytes 0-{len(data) - 1}/{total}")]
        )
        self.assertIncomplete(answer, len(data))


class StateLinkTests(LinkServerTestCase):
    """
    Links planted in C{.uploadsvc} are refused, never followed (item 6).
    """

    def test_plantedDataLink(self) -> None:
        """
        With the staged file of an upload swapped for a link to a file
        outside the root, HEAD, an append, a start-over and a completion are
        all refused (500, one line, logged), and the outside file is neither
        read, written nor made the destination.
        """
        self.stageSome("f.bin", b"abc", 20)
        data, _ = stagedFiles(self.server.root, "f.bin")
        os.unlink(data)
        os.symlink(self.secret, data)
        head = self.request("HEAD", "/f.bin")
        self.assertEqual(head.status, 500)
        self.assertNotEqual(head.header("upload-offset"), str(len(b"outside-secret")))
        for body, headers in [
            (b"x" * 6, [("Content-Range", "bytes 14-19/20")]),
            (b"y" * 3, [("Content-Range", "bytes 3-5/20")]),
            (b"z" * 20, []),
        ]:
            self.assertRefusal(self.put("/f.bin", body, headers), 500)
        self.assertOutsideUntouched()
        self.assertFalse(os.path.lexists(self.storedPath("f.bin")))
        self.assertIn("unsafe-state", self.server.logText())
        self.assertNoTraceback()

    def test_hardLinkedData(self) -> None:
        """
        A staged file that is a hard link of a file outside is refused: its
        content never becomes the upload, and it is not truncated.
        """
        self.stageSome("h.bin", b"abc", 20)
        data, _ = stagedFiles(self.server.root, "h.bin")
        os.unlink(data)
        os.link(self.secret, data)
        self.assertRefusal(
            self.put("/h.bin", b"x" * 6, [("Content-Range", "bytes 14-19/20")]), 500
        )
        self.assertRefusal(self.put("/h.bin", b"new"), 500)
        self.assertFalse(os.path.lexists(self.storedPath("h.bin")))
        self.assertOutsideUntouched()
        self.assertNoTraceback()

    def test_linkedShardFolder(self) -> None:
        """
        An C{uploads/<xx>} folder that is a link is refused: nothing is
        staged where it points.
        """
        data, _ = stagedFiles(self.server.root, "s.bin")
        shard = os.path.dirname(data)
        shutil.rmtree(shard, ignore_errors=True)
        os.makedirs(os.path.dirname(shard), exist_ok=True)
        os.symlink(self.outside, shard)
        self.assertRefusal(self.put("/s.bin", b"abc"), 500)
        self.assertOutsideUntouched()


class DestinationLinkTests(LinkServerTestCase):
    """
    Every method follows the same link rules (item 7).
    """

    def test_deleteThroughLinkedParent(self) -> None:
        """
        DELETE of a staged upload whose folder became a link is a 403, like
        HEAD and PUT, and the staged bytes stay.
        """
        os.makedirs(self.storedPath("dir"))
        self.stageSome("dir/f.bin", b"abc", 10)
        os.rename(self.storedPath("dir"), self.storedPath("dir-moved"))
        os.symlink(self.outside, self.storedPath("dir"))
        for method in ("DELETE", "HEAD"):
            self.assertEqual(self.request(method, "/dir/f.bin").status, 403, method)
        self.assertRefusal(
            self.put("/dir/f.bin", b"d", [("Content-Range", "bytes 3-3/10")]), 403
        )
        data, _ = stagedFiles(self.server.root, "dir/f.bin")
        with open(data, "rb") as f:
            self.assertEqual(f.read(), b"abc")

    def test_headOnLink(self) -> None:
        """
        HEAD on a path that is a symbolic link is a 409 (it is no complete
        upload), and so is a status query; the link stays.
        """
        os.symlink(self.secret, self.storedPath("l.bin"))
        head = self.request("HEAD", "/l.bin")
        self.assertEqual(head.status, 409)
        self.assertIsNone(head.header("upload-complete"))
        self.assertRefusal(self.put("/l.bin", b"", [("Content-Range", "bytes */14")]), 409)
        self.assertTrue(os.path.islink(self.storedPath("l.bin")))

    def test_finalRetryOnLink(self) -> None:
        """
        A retried final range on a path that is now a link is a 409 with a
        reason, not a 500 with a traceback.
        """
        target = os.path.join(self.outside, "t" * 30)
        os.symlink(target, self.storedPath("l.bin"))
        total = len(target)
        answer = self.put(
            "/l.bin", b"x" * total, [("Content-Range", f"bytes 0-{total - 1}/{total}")]
        )
        self.assertRefusal(answer, 409)
        self.assertNoTraceback()


class StatusQueryTests(LinkServerTestCase):
    """
    Many status queries at once on one upload never corrupt its metadata
    (item 3, the file half).
    """

    async def test_concurrentQueries(self) -> None:
        """
        200 status queries with a C{Repr-Digest}, sent at once, are all
        answered 204; the upload's C{.json} is whole afterwards, and after a
        restart the upload still resumes and completes.
        """
        body = rawhttp.patternBytes(7, 0, 1000)
        self.stageSome("q.bin", body[:100], 1000)
        digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
        http = ServerRequests(self, self.server, maxPersistent=64)
        answers = await gatherResults([
            Deferred.fromCoroutine(http.request(
                "PUT", "/q.bin",
                {"Content-Range": "bytes */1000", "Repr-Digest": digest},
            ))
            for _ in range(200)
        ])
        self.assertEqual(sorted({a.status for a in answers}), [204], answers[0])
        _, info = stagedFiles(self.server.root, "q.bin")
        with open(info) as f:
            self.assertEqual(json.load(f)["total"], 1000)
        self.server.restart()
        self.assertIncomplete(self.headRaw("/q.bin"), 100, 1000, head=True)
        answer = self.put("/q.bin", body[100:], [("Content-Range", "bytes 100-999/1000")])
        self.assertCompleted(answer, "q.bin", 1000, hashlib.sha256(body).hexdigest())
        self.assertNoTraceback()


class StorageFaultTests(ServerTestMixin, TestCase):
    """
    Faults of the disk are refusals with one log line (item 15).
    """

    timeout = 120

    def start(self, root: str) -> None:
        self.server = startServer(self, root)

    def put(self, path: str, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> Any:
        return rawhttp.exchange(
            self.server.port, "PUT", path,
            [("Content-Length", str(len(body))), *headers], body, timeout=15,
        )[1]

    def assertRefusal(self, answer: Any, status: int) -> None:
        where = answer.raw[:300]
        self.assertEqual(answer.status, status, where)
        self.assertEqual(answer.header("content-type"), "text/plain; charset=utf-8", where)
        self.assertEqual(answer.body.count(b"\n"), 1, where)

    def test_noInodes(self) -> None:
        """
        With the inodes of the file system used up, a new upload is a 507
        with a reason, logged in one line without a traceback.
        """
        base = os.path.abspath(self.mktemp())
        root = os.path.join(base, "small")
        smallTmpfs(self, root, 64)
        self.start(root)
        fillInodes(root)
        self.assertRefusal(self.put("/new/f.bin", b"data"), 507)
        self.assertRefusal(self.put("/f.bin", b"data"), 507)
        log = self.server.logText()
        self.assertNotIn("Traceback", log)
        self.assertIn("507 no-space", log)

    def test_diskTurnsReadOnly(self) -> None:
        """
        When the disk turns read-only under the server, writes are a 503
        with Retry-After, the staged bytes stay and HEAD still reports them,
        and the log has one line per refusal, no traceback.
        """
        base = os.path.abspath(self.mktemp())
        root = os.path.join(base, "disk")
        fail = failingDisk(self, root)
        self.start(root)
        self.assertIncomplete(
            self.put("/r.bin", b"abc", [("Content-Range", "bytes 0-2/6")]), 3
        )
        fail()
        answer = self.put("/r.bin", b"def", [("Content-Range", "bytes 3-5/6")])
        self.assertRefusal(answer, 503)
        self.assertEqual(answer.header("retry-after"), "60")
        self.assertRefusal(self.put("/n.bin", b"new"), 503)
        # The stored offset can no longer be made durable (fsync fails on
        # a disk that failed): a status query is refused too.
        head = rawhttp.exchange(self.server.port, "HEAD", "/r.bin", timeout=15)[1]
        self.assertEqual((head.status, head.header("retry-after")), (503, "60"))
        log = self.server.logText()
        self.assertNotIn("Traceback", log)
        self.assertEqual(log.count("503 read-only"), 3)
        data, _ = stagedFiles(root, "r.bin")
        with open(data, "rb") as f:
            self.assertEqual(f.read(), b"abc")

    def test_rootRemovedAndMadeAgain(self) -> None:
        """
        A root removed while the server runs is a 503 while it is missing;
        once made again, uploads land in the new root, without a restart.
        """
        self.startUploadServer()
        answer = self.put("/a/one.bin", b"one")
        self.assertEqual(answer.status, 201)
        shutil.rmtree(self.server.root)
        self.assertRefusal(self.put("/a/two.bin", b"two"), 503)
        self.assertFalse(os.path.exists(self.server.root))
        os.makedirs(self.server.root)
        answer = self.put("/a/two.bin", b"two")
        self.assertCompleted(answer, "a/two.bin", 3, hashlib.sha256(b"two").hexdigest())
        self.assertEqual(self.headRaw("/a/two.bin").status, 200)
        self.assertNotIn("Traceback", self.server.logText())

    def test_diskFailsDuringBody(self) -> None:
        """
        A disk that turns read-only while a body streams in ends the request
        with a 503 and one log line, no traceback; the bytes stored before
        stay on disk.
        """
        base = os.path.abspath(self.mktemp())
        root = os.path.join(base, "disk")
        fail = failingDisk(self, root)
        self.start(root)
        body = rawhttp.patternBytes(9, 0, 200_000)
        with rawhttp.connect(self.server.port, timeout=15) as sock:
            sock.sendall(rawhttp.requestHead("PUT", "/m.bin", [("Content-Length", str(len(body)))]))
            sock.sendall(body[:100_000])
            self.assertEqual(
                self.waitForOffset("/m.bin", 100_000).header("upload-offset"), "100000"
            )
            fail()
            try:
                sock.sendall(body[100_000:])
            except OSError:
                pass  # the server may answer and close first
            answer = rawhttp.ResponseReader(sock).readResponse()
        self.assertRefusal(answer, 503)
        log = self.server.logText()
        self.assertNotIn("Traceback", log)
        self.assertEqual(log.count("503 read-only"), 1)
        data, _ = stagedFiles(root, "m.bin")
        with open(data, "rb") as f:
            self.assertEqual(f.read(100_000), body[:100_000])
