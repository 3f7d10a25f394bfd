"""
Routes and status codes of L{uploadsvc.web.app.UploadApp}, fast: treq's
StubTreq in memory, a real store on a temp folder, disk calls run inline.
Streaming and back-pressure are covered by test_streaming and the end-to-end
tests.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone

from uploadsvc.errors import BadRequest, Conflict, StorageFault
from uploadsvc.protocol.decisions import Plan
from uploadsvc.protocol.paths import parseRelativePath
from uploadsvc.storage.filestore import FileStore
from uploadsvc.storage.memory import MemoryStore
from uploadsvc.testing.runners import ImmediateRunner
from tests.support.staging import stageFully
from uploadsvc.web.app import SMALL_BODY, Config, UploadApp, _shield
from uploadsvc.web.receiver import Outcome, UploadReceiver
from tests.support.stubapp import StubRequests

BODY = bytes(range(256)) * 40  # 10240 bytes


def reprDigest(data: bytes) -> bytes:
    return b"sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()) + b":"


if TYPE_CHECKING:
    _MixinBase = SynchronousTestCase
else:
    _MixinBase = object


class AppTestsMixin(StubRequests, _MixinBase):
    """
    The app's core paths (PUT, resume, HEAD, DELETE, digests, refusals),
    run against each store of the storage contract: the app depends on
    L{IUploadStore} and L{ITakeover}, nothing more.
    """

    store: Any

    def setUp(self) -> None:
        self.build(Config(maxUploadSize=1_000_000))

    def makeStore(self) -> Any:
        """
        The store of the next app (the same uploads and files each time).
        """
        raise NotImplementedError

    # stored(rel): the complete file at rel, None when there is none; on
    # disk (StubRequests.stored) unless a store of another kind says.

    def build(self, config: Config) -> None:
        self.store = self.makeStore()
        self.app = UploadApp(self.store, ImmediateRunner(), config)
        self.treq = StubTreq(self.app.resource())

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

    def test_smallBodyHashedInHand(self) -> None:
        """
        A whole body of at most SMALL_BODY bytes is written, hashed and
        completed in one pool trip after the one that begins it (no lane
        jobs); a larger one is streamed through its write and digest
        lanes; both answer the right digest.
        """
        jobs: list[object] = []
        trips: list[object] = []
        inner = self.app.runner.callInThread
        innerRun = self.app.runner.run
        self.patch(self.app.runner, "callInThread", lambda f, *a: (jobs.append(f), inner(f, *a)))
        self.patch(self.app.runner, "run", lambda f, *a: (trips.append(f), innerRun(f, *a))[1])
        for size, lanes, runs in [(SMALL_BODY, 0, 2), (SMALL_BODY + 1, 2, 2)]:
            with self.subTest(size=size):
                jobs.clear()
                trips.clear()
                body = os.urandom(size)
                response, content = self.request("PUT", f"/s{size}.bin", body)
                self.assertEqual(response.code, 201)
                self.assertEqual((len(jobs), len(trips)), (lanes, runs))
                self.assertEqual(self.stored(f"s{size}.bin"), body)
                self.assertEqual(json.loads(content)["sha256"], hashlib.sha256(body).hexdigest())
                self.assertEqual(self.header(response, "Repr-Digest"), reprDigest(body).decode())

    def test_smallBodyLetGoOnceWritten(self) -> None:
        """
        The body taken in hand is let go of as soon as it is written and
        hashed, before the completion (its bytes are not kept meanwhile).
        """
        seen: list[tuple[list[bytes], int]] = []
        complete = self.store.complete

        def watch(path: object, staged: object, body: list[bytes], wanted: object) -> bool:
            seen.append((body, len(body)))
            self.patch(self.store, "complete", lambda *a: (seen.append((body, len(body))), complete(*a))[1])
            return writeAndComplete(path, staged, body, wanted)  # type: ignore[no-any-return]

        writeAndComplete = self.app._writeAndComplete
        self.patch(self.app, "_writeAndComplete", watch)
        response, _ = self.request("PUT", "/let-go.bin", BODY)
        self.assertEqual(response.code, 201)
        self.assertEqual(self.stored("let-go.bin"), BODY)
        [(before, held), (during, atCompletion)] = seen
        self.assertIs(before, during)
        self.assertEqual((held, atCompletion), (1, 0))

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
        self.assertIsNone(self.stored("d"))
        self.assertEqual(self.request("HEAD", "/d")[0].code, 404)
        r, _ = self.request("PUT", "/d", BODY, Repr_Digest=reprDigest(BODY).decode())
        self.assertEqual(r.code, 201)

    def test_digestsCheckedByTheStore(self) -> None:
        """
        Repr-Digests are checked once, by the store at completion: digests
        computed while the body streamed are not read back, and one that
        differs (here recorded by an earlier piece) is 400 digest-mismatch
        naming its algorithm, the upload discarded.
        """
        reads: list[list[str]] = []
        real = self.store.hashStaged

        def hashStaged(staged: Any, algs: Any) -> dict[str, bytes]:
            reads.append(sorted(algs))
            return real(staged, algs)  # type: ignore[no-any-return]

        self.patch(self.store, "hashStaged", hashStaged)
        sha512 = base64.b64encode(hashlib.sha512(BODY).digest()).decode()
        r, content = self.request("PUT", "/s", BODY, Repr_Digest=f"sha-512=:{sha512}:")
        self.assertEqual(r.code, 201)
        self.assertEqual(json.loads(content)["sha256"], hashlib.sha256(BODY).hexdigest())
        self.assertEqual(reads, [])
        wrong = base64.b64encode(hashlib.sha512(b"else").digest()).decode()
        total = len(BODY)
        self.request(
            "PUT", "/m", BODY[:100], Content_Range=f"bytes 0-99/{total}",
            Repr_Digest=f"sha-512=:{wrong}:",
        )
        r, content = self.request(
            "PUT", "/m", BODY[100:], Content_Range=f"bytes 100-{total - 1}/{total}"
        )
        self.assertEqual(r.code, 400)
        self.assertEqual(content, b"the file's sha-512 digest does not match Repr-Digest\n")
        self.assertEqual(reads, [["sha-512"]])  # the running sha-256 is not read back
        self.assertIsNone(self.stored("m"))
        self.assertEqual(self.request("HEAD", "/m")[0].code, 404)

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
        self.assertIsNone(self.stored("gone"))

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

    def test_busyAnswersRetriedFinalRequest(self) -> None:
        """
        Over --max-uploads, a retried final request (the file is complete,
        nothing to write) is answered as usual; a request that would write,
        or one that would be refused 409 otherwise, gets 503.
        """
        total = len(BODY)
        self.request("PUT", "/r", BODY)
        self.build(Config(maxUploads=1))
        self.app.writers.acquire("someone-else", lambda: None)
        r, _ = self.request(
            "PUT", "/r", BODY[10:], Content_Range=f"bytes 10-{total - 1}/{total}"
        )
        self.assertEqual(r.code, 200)
        self.assertEqual(self.header(r, "Upload-Complete"), "?1")
        r, _ = self.request("PUT", "/r", BODY)  # 409 exists when not busy
        self.assertEqual(r.code, 503)
        r, _ = self.request("PUT", "/n", BODY[5:], Content_Range=f"bytes 5-{total - 1}/{total}")
        self.assertEqual(r.code, 503)  # 409 offset mismatch when not busy

    def test_severalContentRanges(self) -> None:
        """Two Content-Range fields are 400, whatever they say, and nothing is stored."""
        r, content = self.request(
            "PUT", "/two", BODY[:10],
            Content_Range=["bytes 0-9/100", "bytes 0-9/100"],
        )
        self.assertEqual(r.code, 400)
        self.assertIn(b"Content-Range", content)
        self.assertEqual(self.request("HEAD", "/two")[0].code, 404)

    def test_floorRefusesWritesOnly(self) -> None:
        """Below the free-space floor writes are 507, even of unknown length; status queries are not."""
        self.build(Config(minFreeBytes=10**18))
        r, content = self.request("PUT", "/f", BODY)
        self.assertEqual(r.code, 507)
        self.assertEqual(content.count(b"\n"), 1)
        r, _ = self.request("PUT", "/f", Content_Range="bytes */100")
        self.assertEqual(r.code, 404)
        self.assertEqual(self.request("HEAD", "/f")[0].code, 404)

    def test_resumeNeedsRoomForTheRestOnly(self) -> None:
        """
        A resumed upload is refused for space only when what it still lacks
        does not fit: with 1000 of 1500 bytes staged and 600 free, the last
        500 are taken (they were refused while the free space was below the
        whole 1500).
        """
        self.build(Config())
        data = bytes(range(250)) * 6
        self.assertEqual(
            self.request("PUT", "/r", data[:1000], Content_Range="bytes 0-999/1500")[0].code, 204
        )
        self.patch(self.store, "freeBytes", lambda: 600)
        r, _ = self.request("PUT", "/r", data[1000:], Content_Range="bytes 1000-1499/1500")
        self.assertEqual(r.code, 201)
        self.assertEqual(self.stored("r"), data)
        self.patch(self.store, "freeBytes", lambda: 499)
        r, _ = self.request("PUT", "/s", data[:500], Content_Range="bytes 0-499/1000")
        self.assertEqual(r.code, 507)

    def fillDiskAfter(self, room: int, metadataFits: bool = True) -> None:
        """
        Let the next write request store C{room} more bytes, then fail as a
        full disk does (C{ENOSPC}), the bytes before the failure kept; and
        its metadata too unless C{metadataFits}.
        """
        begin = self.store.begin
        began = False

        def beginOnFullDisk(*args: Any) -> Any:
            nonlocal began
            stored, plan, staged = begin(*args)
            if staged is not None and not began:
                began = True
                write = staged.writeChunks

                def writeChunks(chunks: Any) -> None:
                    nonlocal room
                    data = b"".join(chunks)
                    write([data[:room]])
                    room -= min(room, len(data))
                    if not room:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                staged.writeChunks = writeChunks
                if not metadataFits:
                    staged.sync = lambda: writeChunks([b"x"])
            return stored, plan, staged

        self.patch(self.store, "begin", beginOnFullDisk)

    def test_diskFullKeepsTotal(self) -> None:
        """
        A write cut by a full disk (507) keeps the bytes written and the
        total its headers told, which HEAD then reports as Upload-Length:
        a Content-Range's T, a plain PUT's Content-Length (a small body
        written in one go, or a streamed one).
        """
        cases = [
            ("/range", {"Content_Range": f"bytes 0-{len(BODY) - 1}/30000"}, BODY, "30000"),
            ("/small", {}, BODY, str(len(BODY))),
            ("/large", {}, BODY * 30, str(len(BODY) * 30)),
        ]
        for path, headers, body, total in cases:
            with self.subTest(path=path):
                self.fillDiskAfter(1000)
                r, content = self.request("PUT", path, body, **headers)
                self.assertEqual((r.code, content), (507, b"the disk is full\n"))
                r, _ = self.request("HEAD", path)
                self.assertEqual(
                    (r.code, self.header(r, "Upload-Offset"), self.header(r, "Upload-Length")),
                    (204, "1000", total),
                )

    def test_diskFullNoRoomForTotal(self) -> None:
        """
        When even the metadata of a write cut by a full disk cannot be
        written, the answer is still 507, the bytes stay and the upload is
        let go; one warning says what was not recorded.
        """
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.fillDiskAfter(1000, metadataFits=False)
        r, _ = self.request("PUT", "/full", BODY, Content_Range=f"bytes 0-{len(BODY) - 1}/30000")
        self.assertEqual(r.code, 507)
        r, _ = self.request("HEAD", "/full")
        self.assertEqual((r.code, self.header(r, "Upload-Offset")), (204, "1000"))
        warnings = [formatEvent(e) for e in logged if "is not recorded" in formatEvent(e)]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertTrue(warnings[0].startswith("full: the disk is full;"), warnings)
        more = BODY[1000:2000]
        r, _ = self.request("PUT", "/full", more, Content_Range="bytes 1000-1999/30000")
        self.assertEqual((r.code, self.header(r, "Upload-Offset")), (204, "2000"))

    def test_unknownMethod(self) -> None:
        """A method no route names is 405 with Allow, not an internal error."""
        r, _ = self.request("BREW", "/x")
        self.assertEqual(r.code, 405)
        self.assertIn("PUT", self.header(r, "Allow") or "")


class AppTests(AppTestsMixin, SynchronousTestCase):
    """
    The app over a L{FileStore} on a temp folder, and what only files on a
    disk have (symbolic links).
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        super().setUp()

    def makeStore(self) -> FileStore:
        store = FileStore(self.root, fsync=False)
        self.addCleanup(store.close)
        return store

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

    def test_oneWalkPerWrite(self) -> None:
        """
        A write that nothing refuses walks its path on disk once (the
        store's begin does), not once more before it.
        """
        walks: list[object] = []
        # (_inspect: the walk that inspect and begin share)
        inspect = self.store._inspect
        self.patch(self.store, "_inspect", lambda *a, **kw: walks.append(a) or inspect(*a, **kw))
        r, _ = self.request("PUT", "/a/b", BODY)
        self.assertEqual(r.code, 201)
        self.assertEqual(len(walks), 1)

    def test_refusalOrderAcrossStages(self) -> None:
        """
        Refusals found at different stages (headers, disk, the decision
        under the lock) still come in docs/protocol.md's order: 413 before
        403, 403 before 507 and 503, 507 before 503, 503 before 400 and 409.
        """
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        os.symlink(outside, os.path.join(self.root, "link"))
        self.request("PUT", "/done", BODY)
        self.build(Config(maxUploadSize=1_000_000, maxUploads=1, minFreeBytes=1))
        self.app.writers.acquire("someone-else", lambda: None)
        cases = [
            ("/link/x", {"Content_Range": "bytes 0-9/2000000"}, 413),
            ("/link/x", {"Content_Range": "bytes 0-9/oops"}, 403),
            ("/x", {"Content_Range": "bytes 0-9/oops"}, 503),
            ("/done", {"Content_Range": "bytes 0-9/99"}, 503),
        ]
        for path, headers, code in cases:
            with self.subTest(path=path, headers=headers):
                self.assertEqual(self.request("PUT", path, BODY[:10], **headers)[0].code, code)
        self.patch(self.store, "freeBytes", lambda: 0)
        self.assertEqual(self.request("PUT", "/x", BODY[:10])[0].code, 507)
        self.assertEqual(self.request("PUT", "/link/x", BODY[:10])[0].code, 403)


class MemoryStoreAppTests(AppTestsMixin, SynchronousTestCase):
    """
    The app over a L{MemoryStore}.
    """

    def setUp(self) -> None:
        self.memory = MemoryStore()
        super().setUp()

    def makeStore(self) -> MemoryStore:
        return self.memory

    def stored(self, rel: str) -> bytes | None:
        return self.memory.files.get(rel)


V2 = bytes(reversed(BODY))  # same length as BODY, other bytes


class StateTests(SynchronousTestCase):
    """
    Issue 8 items 2, 4 and 5 through the app: two apps on one root stand for
    two worker processes (each has its own writer registry and remembered
    hash states).
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.build(Config(maxUploadSize=1_000_000))

    makeStore = AppTests.makeStore
    build = AppTests.build
    request = AppTests.request
    header = AppTests.header
    stored = AppTests.stored

    def otherProcess(self) -> UploadApp:
        store = FileStore(self.root, fsync=False)
        self.addCleanup(store.close)
        return UploadApp(store, ImmediateRunner(), Config(maxUploadSize=1_000_000))

    def requestTo(self, app: UploadApp, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[Any, bytes]:
        mine = self.treq
        self.treq = StubTreq(app.resource())
        try:
            return self.request(method, path, body, **headers)
        finally:
            self.treq = mine

    def stageFull(self, relative: str, data: bytes, total: int | None, digests: dict[str, str] | None = None) -> None:
        stageFully(self.store, relative, data, total, digests)

    def rewrittenElsewhere(self, path: str, half: int) -> UploadApp:
        """
        This app writes the first half of BODY; another process deletes the
        upload and writes the first half of V2.
        """
        total = len(BODY)
        r, _ = self.request("PUT", path, BODY[:half], Content_Range=f"bytes 0-{half - 1}/{total}")
        self.assertEqual(r.code, 204)
        other = self.otherProcess()
        self.assertEqual(self.requestTo(other, "DELETE", path)[0].code, 204)
        r, _ = self.requestTo(other, "PUT", path, V2[:half], Content_Range=f"bytes 0-{half - 1}/{total}")
        self.assertEqual(r.code, 204)
        return other

    def test_rewrittenByOtherProcessDigestChecked(self) -> None:
        """After another process deleted and rewrote the upload, its last piece with V2's correct Repr-Digest completes it (no remembered hash of the old bytes is used)."""
        total, half = len(BODY), len(BODY) // 2
        self.rewrittenElsewhere("/gen/a.bin", half)
        r, _ = self.request(
            "PUT", "/gen/a.bin", V2[half:], Content_Range=f"bytes {half}-{total - 1}/{total}",
            Repr_Digest=reprDigest(V2).decode(),
        )
        self.assertEqual(r.code, 201)
        self.assertEqual(self.header(r, "Repr-Digest"), reprDigest(V2).decode())
        self.assertEqual(self.stored("gen/a.bin"), V2)

    def test_rewrittenByOtherProcessDigestReported(self) -> None:
        """After another process deleted and rewrote the upload, the completion reports the digest of what is on disk."""
        total, half = len(BODY), len(BODY) // 2
        self.rewrittenElsewhere("/gen/b.bin", half)
        r, _ = self.request("PUT", "/gen/b.bin", V2[half:], Content_Range=f"bytes {half}-{total - 1}/{total}")
        self.assertEqual(r.code, 201)
        self.assertEqual(self.header(r, "Repr-Digest"), reprDigest(V2).decode())

    def test_hashStateStillUsed(self) -> None:
        """Without another process in between, the remembered hash state carries on (the file is not re-read)."""
        total, half = len(BODY), len(BODY) // 2
        self.request("PUT", "/gen/c.bin", BODY[:half], Content_Range=f"bytes 0-{half - 1}/{total}")
        reads: list[object] = []
        self.patch(self.store, "hashStaged", lambda *a: reads.append(a) or {})
        r, _ = self.request("PUT", "/gen/c.bin", BODY[half:], Content_Range=f"bytes {half}-{total - 1}/{total}")
        self.assertEqual((r.code, reads), (201, []))
        self.assertEqual(self.header(r, "Repr-Digest"), reprDigest(BODY).decode())

    def test_rangePastTotalRefused(self) -> None:
        """bytes 50-149/* after bytes 0-49/100 is 400, and the upload stays at 50 of 100."""
        r, _ = self.request("PUT", "/past.bin", BODY[:50], Content_Range="bytes 0-49/100")
        self.assertEqual(r.code, 204)
        r, content = self.request("PUT", "/past.bin", BODY[50:150], Content_Range="bytes 50-149/*")
        self.assertEqual(r.code, 400)
        self.assertEqual(content.count(b"\n"), 1)
        head, _ = self.request("HEAD", "/past.bin")
        self.assertEqual(self.header(head, "Upload-Offset"), "50")
        self.assertEqual(self.header(head, "Upload-Length"), "100")
        r, _ = self.request("PUT", "/past.bin", BODY[50:100], Content_Range="bytes 50-99/*")
        self.assertEqual(r.code, 201)
        self.assertEqual(self.stored("past.bin"), BODY[:100])

    def test_queryTotalBelowOffsetRefused(self) -> None:
        """bytes */500 on 1000 bytes of unknown total is 409 with the offset, and records nothing."""
        r, _ = self.request("PUT", "/below.bin", BODY[:1000], Content_Range="bytes 0-999/*")
        self.assertEqual(r.code, 204)
        r, _ = self.request("PUT", "/below.bin", Content_Range="bytes */500")
        self.assertEqual(r.code, 409)
        self.assertEqual(self.header(r, "Upload-Offset"), "1000")
        head, _ = self.request("HEAD", "/below.bin")
        self.assertEqual(self.header(head, "Upload-Offset"), "1000")
        self.assertIsNone(self.header(head, "Upload-Length"))
        r, _ = self.request("PUT", "/below.bin", BODY[:100], Content_Range="bytes 0-99/500")
        self.assertEqual(r.code, 409)
        self.assertEqual(self.header(r, "Upload-Offset"), "1000")

    def test_queryCompletesFullyStaged(self) -> None:
        """bytes */T on an upload fully staged with its total recorded completes it: 201 with Repr-Digest."""
        self.stageFull("full/a.bin", BODY, len(BODY))
        r, content = self.request("PUT", "/full/a.bin", Content_Range=f"bytes */{len(BODY)}")
        self.assertEqual(r.code, 201)
        self.assertEqual(self.header(r, "Repr-Digest"), reprDigest(BODY).decode())
        self.assertEqual(json.loads(content)["size"], len(BODY))
        self.assertEqual(self.stored("full/a.bin"), BODY)
        self.assertEqual(self.request("HEAD", "/full/a.bin")[0].code, 200)

    def test_queryCompletesUnknownTotal(self) -> None:
        """With no .json (a plain PUT killed before its rename), HEAD shows offset = size and no length; bytes */size with the right Repr-Digest completes it."""
        self.stageFull("full/b.bin", BODY, None)
        head, _ = self.request("HEAD", "/full/b.bin")
        self.assertEqual(head.code, 204)
        self.assertEqual(self.header(head, "Upload-Offset"), str(len(BODY)))
        self.assertIsNone(self.header(head, "Upload-Length"))
        r, _ = self.request(
            "PUT", "/full/b.bin", Content_Range=f"bytes */{len(BODY)}",
            Repr_Digest=reprDigest(BODY).decode(),
        )
        self.assertEqual(r.code, 201)
        self.assertEqual(self.stored("full/b.bin"), BODY)

    def test_queryStarCompletesRecordedTotal(self) -> None:
        """bytes */* completes an upload whose recorded total equals its size."""
        self.stageFull("full/c.bin", BODY, len(BODY))
        r, _ = self.request("PUT", "/full/c.bin", Content_Range="bytes */*")
        self.assertEqual(r.code, 201)

    def test_queryCompletionChecksDigest(self) -> None:
        """A fully staged upload whose recorded Repr-Digest does not match is refused 400 and discarded, as at any completion."""
        wrong = base64.b64encode(hashlib.sha256(b"else").digest()).decode()
        self.stageFull("full/d.bin", BODY, len(BODY), {"sha-256": wrong})
        r, _ = self.request("PUT", "/full/d.bin", Content_Range=f"bytes */{len(BODY)}")
        self.assertEqual(r.code, 400)
        self.assertEqual(self.request("HEAD", "/full/d.bin")[0].code, 404)

    def test_headDoesNotComplete(self) -> None:
        """HEAD only reports a fully staged upload."""
        self.stageFull("full/e.bin", BODY, len(BODY))
        head, _ = self.request("HEAD", "/full/e.bin")
        self.assertEqual(head.code, 204)
        self.assertEqual(self.header(head, "Upload-Length"), str(len(BODY)))
        self.assertEqual(self.request("HEAD", "/full/e.bin")[0].code, 204)

    def test_queryLeavesLiveWriter(self) -> None:
        """A status query on an upload that a request of this process writes neither completes it nor ends that request."""
        self.stageFull("full/f.bin", BODY, len(BODY))
        ended: list[bool] = []
        key = FileStore.keyFor(parseRelativePath("full/f.bin"))
        self.app.writers.acquire(key, lambda: ended.append(True))
        r, _ = self.request("PUT", "/full/f.bin", Content_Range=f"bytes */{len(BODY)}")
        self.assertEqual(r.code, 204)
        self.assertEqual(ended, [])
        self.assertFalse(os.path.exists(os.path.join(self.root, "full", "f.bin")))

    def test_queryLeavesOtherProcessWriter(self) -> None:
        """A status query that finds another process writing a fully staged upload answers its status at once, and that writer keeps it."""
        self.stageFull("full/g.bin", BODY, len(BODY))
        other = FileStore(self.root, fsync=False)
        self.addCleanup(other.close)
        _, _, staged = other.begin(
            parseRelativePath("full/g.bin"), lambda s: Plan(False, s.offset, 0, 0, s.total), {}, None
        )
        assert staged is not None
        self.addCleanup(staged.close)
        r, _ = self.request("PUT", "/full/g.bin", Content_Range=f"bytes */{len(BODY)}")
        self.assertEqual(r.code, 204)
        self.assertEqual(self.store.pendingTakeovers(), [])


class _Producer:
    paused = False

    def pauseProducing(self) -> None:
        self.paused = True


class _Sink:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.onFailure: Any = None

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))


class ReceiverTests(SynchronousTestCase):
    """
    How an L{UploadReceiver}'s body ends: an L{Outcome}, or an error
    through the errback.
    """

    def receiver(self, skip: int = 0, take: int | None = None) -> tuple[UploadReceiver, _Sink, _Producer]:
        sink, producer = _Sink(), _Producer()
        receiver = UploadReceiver(
            lambda _: sink, skip, take, lambda: BadRequest("body-too-long", "too long")  # type: ignore[arg-type,return-value]
        )
        receiver.makeConnection(producer)  # type: ignore[arg-type]
        return receiver, sink, producer

    def test_complete(self) -> None:
        """A whole body ends with Outcome.COMPLETE, its bytes after the skipped ones written."""
        receiver, sink, _ = self.receiver(skip=2)
        receiver.dataReceived(b"abcdef")
        receiver.connectionLost(Failure(ResponseDone()))
        self.assertIs(self.successResultOf(receiver.ended), Outcome.COMPLETE)
        self.assertEqual(sink.written, [b"cdef"])

    def test_lost(self) -> None:
        """A connection that goes first ends with Outcome.LOST."""
        receiver, _, _ = self.receiver()
        receiver.connectionLost(Failure(ConnectionDone()))
        self.assertIs(self.successResultOf(receiver.ended), Outcome.LOST)

    def test_overflowErrback(self) -> None:
        """
        A body longer than allowed fails C{ended} with the refusal, after
        the bytes within the limit, and stops reading.
        """
        receiver, sink, producer = self.receiver(take=3)
        receiver.dataReceived(b"abcdef")
        error = self.failureResultOf(receiver.ended, BadRequest).value
        self.assertEqual(error.code, "body-too-long")
        self.assertEqual(sink.written, [b"abc"])
        self.assertTrue(producer.paused)
        receiver.connectionLost(Failure(ResponseDone()))  # ends nothing twice

    def test_sinkFailureErrback(self) -> None:
        """A failed write fails C{ended} with the sink's error and stops reading."""
        receiver, sink, producer = self.receiver()
        sink.onFailure(Failure(OSError(28, "No space left on device")))
        self.failureResultOf(receiver.ended, OSError)
        self.assertTrue(producer.paused)


class ShieldTests(SynchronousTestCase):
    """
    A handler's storage work runs to its end after Klein cancels the
    request's Deferred.
    """

    def test_lateFailureLogged(self) -> None:
        """A failure after the client went away is logged, not swallowed."""
        work: Deferred = Deferred()
        answer = _shield(work)
        answer.cancel()
        self.failureResultOf(answer, CancelledError)
        work.errback(RuntimeError("the disk failed after the client left"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_lateCancelNotLogged(self) -> None:
        """A late cancellation is no news: nothing is logged."""
        work: Deferred = Deferred()
        answer = _shield(work)
        answer.cancel()
        self.failureResultOf(answer, CancelledError)
        work.errback(CancelledError())
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_lateRefusalNotLogged(self) -> None:
        """A 4xx refusal after the client went away is nobody's news; a 5xx one is logged."""
        for error, logged in [(Conflict("offset-mismatch", "upload offset is 5, not 0"), 0),
                              (StorageFault("disk", "the disk failed"), 1)]:
            work: Deferred = Deferred()
            answer = _shield(work)
            answer.cancel()
            self.failureResultOf(answer, CancelledError)
            work.errback(error)
            self.assertEqual(len(self.flushLoggedErrors(type(error))), logged, error)

    def test_resultForwarded(self) -> None:
        """Without a cancel, the work's result is the answer."""
        work: Deferred = Deferred()
        answer = _shield(work)
        work.callback(b"done")
        self.assertEqual(self.successResultOf(answer), b"done")


class CodecLoadedTests(SynchronousTestCase):
    def test_idnaCodecImportedWithTheApp(self) -> None:
        """
        Every request's Host is encoded with the C{idna} codec, which Python
        imports on first use: out of file descriptors (the import opens
        its file), every request was a 500 (seen under C{ulimit -n 40}).
        The server imports it with the app.
        """
        import subprocess
        import sys

        out = subprocess.run(
            [sys.executable, "-c",
             "import sys, uploadsvc.tap; print('encodings.idna' in sys.modules)"],
            capture_output=True, check=True,
        )
        self.assertEqual(out.stdout.strip(), b"True")
