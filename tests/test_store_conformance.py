"""
The storage contract (L{uploadsvc.storage.interfaces}): one set of
behaviour tests, L{StoreConformanceMixin}, run against every store, as tusd
runs one suite per data store. A store that passes may stand behind the
web layer.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import zlib
from typing import TYPE_CHECKING, Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from uploadsvc.errors import BadRequest, Busy, Conflict, Forbidden, NotFound
from uploadsvc.protocol.decisions import AlreadyComplete, Plan, Stored, checkQuery, planWrite
from uploadsvc.protocol.paths import UploadPath, parseRelativePath
from uploadsvc.protocol.ranges import ContentRange
from uploadsvc.storage.filestore import FileStore
from uploadsvc.storage.interfaces import (
    ICompleteFile, IStagedUpload, ITakeover, IUploadStore, UploadId, parseUploadId, uploadKey,
)
from uploadsvc.storage.memory import MemoryStore


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ranged(first: int, last: int, total: int | None, allowOverwrite: bool = False) -> Any:
    """
    The decision of a C{PUT} with C{Content-Range: bytes first-last/total}.
    """
    return functools.partial(
        planWrite, contentRange=ContentRange(first, last, total),
        contentLength=last - first + 1, allowOverwrite=allowOverwrite,
    )


def whole(length: int, allowOverwrite: bool = False) -> Any:
    """
    The decision of a plain C{PUT} of C{length} bytes (it starts over).
    """
    return functools.partial(
        planWrite, contentRange=None, contentLength=length, allowOverwrite=allowOverwrite
    )


def append(stored: Stored) -> Plan:
    """
    A decision that appends at whatever offset is stored.
    """
    return Plan(False, stored.offset, 0, None, None)


if TYPE_CHECKING:
    _MixinBase = SynchronousTestCase
else:
    _MixinBase = object


class StoreConformanceMixin(_MixinBase):
    """
    Behaviour every L{IUploadStore} has. A subclass makes the store and
    reads a complete file back.
    """

    store: Any

    def makeStore(self) -> Any:
        raise NotImplementedError

    def readComplete(self, path: UploadPath) -> bytes | None:
        """
        The bytes of the complete file at C{path}, L{None} when none.
        """
        raise NotImplementedError

    def backdate(self, key: str, seconds: float) -> None:
        """
        Make the upload C{key} look as if everything that happened to it
        happened C{seconds} earlier (its bytes and its metadata).
        """
        raise NotImplementedError

    def setUp(self) -> None:
        self.store = self.makeStore()
        self.path = parseRelativePath("d/f.bin")

    def stage(
        self,
        target: Any,
        data: bytes,
        decide: Any = append,
        digests: dict[str, str] | None = None,
        hashState: Any = None,
    ) -> Any:
        """
        Begin, write C{data} as the plan says, and return the open staged
        upload.
        """
        _, plan, staged = self.store.begin(target, decide, digests or {}, hashState)
        assert isinstance(plan, Plan) and staged is not None
        self.addCleanup(staged.close)
        body = data[plan.skip :]
        if plan.take is not None:
            body = body[: plan.take]
        if body:
            staged.writeChunks([body])
            if staged.hasher is not None:
                staged.hashChunks([body])
        return staged

    def write(self, target: Any, data: bytes, decide: Any = append, **kw: Any) -> int:
        """
        One request that ends without completing: its durable offset.
        """
        return int(self.stage(target, data, decide, **kw).syncAndClose())

    def test_provides(self) -> None:
        """The store and its staged uploads provide the interfaces they declare."""
        self.assertTrue(verifyObject(IUploadStore, self.store))
        self.assertTrue(verifyObject(ITakeover, self.store))
        staged = self.stage(self.path, b"")
        self.assertTrue(verifyObject(IStagedUpload, staged))

    def test_nothingStored(self) -> None:
        """An unknown path has no upload and no file."""
        self.assertEqual(self.store.inspect(self.path), Stored())

    def test_offsetIsStagedSize(self) -> None:
        """Bytes written and synced are the offset; the total comes from the plan."""
        self.assertEqual(self.write(self.path, b"hello", ranged(0, 4, 10)), 5)
        self.assertEqual(
            self.store.inspect(self.path), Stored(offset=5, total=10, incomplete=True)
        )
        self.assertIsNone(self.readComplete(self.path))

    def test_resumeAppends(self) -> None:
        """A second request appends at the stored offset."""
        self.write(self.path, b"hello", ranged(0, 4, 10))
        staged = self.stage(self.path, b" worl", ranged(5, 9, 10))
        self.assertEqual(staged.offset, 10)
        staged.close()
        self.assertEqual(self.store.inspect(self.path).offset, 10)

    def test_overlapSkipped(self) -> None:
        """A retry that overlaps stored bytes has them skipped, not written twice."""
        self.write(self.path, b"hello", ranged(0, 4, 8))
        staged = self.stage(self.path, b"lo!!!", ranged(3, 7, 8))
        self.assertEqual(staged.offset, 8)
        self.store.complete(self.path, staged, False, {"sha-256": sha256(b"hello!!!")})
        self.assertEqual(self.readComplete(self.path), b"hello!!!")

    def test_gapRefusedUnderTheLock(self) -> None:
        """A range past the stored offset is refused by the decision and leaves the bytes."""
        self.write(self.path, b"hello", ranged(0, 4, 10))
        error = self.assertRaises(
            Conflict, self.store.begin, self.path, ranged(7, 9, 10), {}, None
        )
        self.assertEqual(error.code, "offset-mismatch")
        self.assertEqual(self.store.inspect(self.path).offset, 5)
        self.stage(self.path, b"", ranged(0, 0, 10))  # the lock was let go

    def test_startOver(self) -> None:
        """A plan that starts over drops the staged bytes and what was recorded."""
        self.write(self.path, b"hello", ranged(0, 4, 10), digests={"sha-256": b64(sha256(b"x"))})
        self.write(self.path, b"ab", whole(2))
        self.assertEqual(
            self.store.inspect(self.path), Stored(offset=2, total=2, incomplete=True)
        )

    def test_rollback(self) -> None:
        """A rollback cuts the staged bytes back to the request's start."""
        self.write(self.path, b"hello")
        staged = self.stage(self.path, b"junk")
        self.store.rollback(staged, 5)
        self.assertEqual(staged.syncAndClose(), 5)
        self.assertEqual(self.store.inspect(self.path).offset, 5)

    def test_record(self) -> None:
        """A status query records the total and digests; the latest digest wins."""
        self.write(self.path, b"hel")
        first, second = b64(sha256(b"1")), b64(sha256(b"2"))
        self.store.record(self.path, 10, {"sha-256": first})
        stored = self.store.record(self.path, None, {"sha-256": second})
        self.assertEqual(
            stored, Stored(offset=3, total=10, incomplete=True, digests={"sha-256": second})
        )
        self.assertEqual(self.store.inspect(self.path), stored)

    def test_recordDecides(self) -> None:
        """The query's decision sees what is stored and its refusal records nothing."""
        self.write(self.path, b"hel", ranged(0, 2, 10))
        self.assertRaises(
            Conflict, self.store.record, self.path, 11, {},
            functools.partial(checkQuery, total=11),
        )
        self.assertEqual(self.store.inspect(self.path).total, 10)
        self.assertRaises(
            NotFound, self.store.record, parseRelativePath("none"), 3, {},
            functools.partial(checkQuery, total=3),
        )

    def test_recordBesideWriter(self) -> None:
        """A query waits for no writer, and the writer's end keeps what it recorded."""
        staged = self.stage(self.path, b"abc")
        digest = b64(sha256(b"abcdef"))
        self.store.record(self.path, 6, {"sha-256": digest})
        staged.syncAndClose()
        self.assertEqual(
            self.store.inspect(self.path),
            Stored(offset=3, total=6, incomplete=True, digests={"sha-256": digest}),
        )

    def test_complete(self) -> None:
        """Completion moves the whole upload into place and ends the incomplete one."""
        staged = self.stage(self.path, b"0123456789", whole(10))
        expected = {"sha-256": sha256(b"0123456789")}
        replaced = self.store.complete(self.path, staged, False, expected)
        self.assertFalse(replaced)
        self.assertTrue(staged.closed)
        self.assertEqual(self.readComplete(self.path), b"0123456789")
        self.assertEqual(self.store.inspect(self.path), Stored(completeSize=10))
        self.assertEqual(self.store.listIncomplete(), [])

    def test_completeOverwrites(self) -> None:
        """With overwrite on, completion replaces a file and says so."""
        self.store.complete(self.path, self.stage(self.path, b"old", whole(3)), False)
        staged = self.stage(self.path, b"new!", whole(4, allowOverwrite=True))
        self.assertTrue(self.store.complete(self.path, staged, True))
        self.assertEqual(self.readComplete(self.path), b"new!")

    def test_completeRefusesExisting(self) -> None:
        """With overwrite off, a file that appeared meanwhile is kept, and so is the upload."""
        staged = self.stage(self.path, b"mine", ranged(0, 3, 4))
        uploadId = self.store.create(self.path)  # another upload, same destination
        self.store.complete(uploadId, self.stage(uploadId, b"g"), False)
        error = self.assertRaises(
            Conflict, self.store.complete, self.path, staged, False
        )
        self.assertEqual(error.code, "exists")
        self.assertTrue(staged.closed)
        self.assertEqual(self.readComplete(self.path), b"g")
        self.assertEqual(self.store.inspect(self.path).offset, 4)

    def test_completeDigestMismatch(self) -> None:
        """A whole-file digest that differs discards the upload and places nothing."""
        staged = self.stage(self.path, b"data", whole(4))
        error = self.assertRaises(
            BadRequest, self.store.complete, self.path, staged, False,
            {"sha-256": sha256(b"other")},
        )
        self.assertEqual(error.code, "digest-mismatch")
        self.assertTrue(staged.closed)
        self.assertIsNone(self.readComplete(self.path))
        self.assertEqual(self.store.inspect(self.path), Stored())

    def test_completeDigestReadBack(self) -> None:
        """Digests not kept while streaming (sha-512; earlier bytes) are read back."""
        data = b"resumed upload"
        self.write(self.path, data[:5], ranged(0, 4, len(data)))
        staged = self.stage(self.path, data[5:], ranged(5, len(data) - 1, len(data)))
        self.assertIsNone(staged.hasher)
        expected = {"sha-256": sha256(data), "sha-512": hashlib.sha512(data).digest()}
        self.store.complete(self.path, staged, False, expected)
        self.assertEqual(self.readComplete(self.path), data)
        self.assertEqual(staged.digests, expected)

    def test_completeDigestsStreamed(self) -> None:
        """
        Digests the caller computed while the upload streamed are used as
        they are (not read back); every digest checked is left on the
        staged upload, sha-256 always among them (the answer's).
        """
        staged = self.stage(self.path, b"data", whole(4))
        self.assertIsNone(staged.digests)
        streamed = {"sha-512": b"as streamed"}
        self.store.complete(self.path, staged, False, {"sha-512": b"as streamed"}, streamed)
        self.assertEqual(staged.digests, {"sha-256": sha256(b"data"), **streamed})
        self.assertEqual(self.readComplete(self.path), b"data")

    def test_hashStateReused(self) -> None:
        """A hash state remembered for the same bytes carries on; a stale one does not."""
        staged = self.stage(self.path, b"abc")
        staged.syncAndClose()
        state = (staged.info["generation"], staged.offset, staged.hasher)
        again = self.stage(self.path, b"def", hashState=state)
        self.assertIs(again.hasher, state[2])
        again.close()
        stale = ("0" * 32, 6, hashlib.sha256())
        self.assertIsNone(self.stage(self.path, b"", hashState=stale).hasher)

    def test_alreadyComplete(self) -> None:
        """A retried last request of a complete file stages nothing and holds nothing."""
        self.store.complete(self.path, self.stage(self.path, b"abc", whole(3)), False)
        stored, plan, staged = self.store.begin(self.path, ranged(0, 2, 3), {}, None)
        self.assertEqual(
            (stored, plan, staged), (Stored(completeSize=3), AlreadyComplete(3), None)
        )
        self.assertEqual(
            self.store.hashComplete(self.path, ["sha-256"]), {"sha-256": sha256(b"abc")}
        )
        self.stage(self.path, b"", ranged(0, 2, 3, allowOverwrite=True))  # not locked

    def test_deleteComplete(self) -> None:
        """A complete file can be removed once."""
        self.store.complete(self.path, self.stage(self.path, b"abc", whole(3)), False)
        self.assertTrue(self.store.deleteComplete(self.path))
        self.assertFalse(self.store.deleteComplete(self.path))
        self.assertRaises(FileNotFoundError, self.store.hashComplete, self.path, ["sha-256"])

    def test_openComplete(self) -> None:
        """A complete file opens for reading: its size, bytes by position, and a version."""
        self.store.complete(self.path, self.stage(self.path, b"0123456789", whole(10)), False)
        opened = self.store.openComplete(self.path)
        self.addCleanup(opened.close)
        verifyObject(ICompleteFile, opened)
        self.assertEqual(opened.size, 10)
        self.assertEqual(
            (opened.read(0, 4), opened.read(4, 100), opened.read(10, 5)),
            (b"0123", b"456789", b""),
        )
        self.assertIsInstance(opened.version, str)
        self.assertIsInstance(opened.modified, int)

    def test_openCompleteNothing(self) -> None:
        """Nothing at the path, or only an incomplete upload, opens nothing; a folder is a conflict."""
        self.assertRaises(FileNotFoundError, self.store.openComplete, self.path)
        self.write(self.path, b"part", ranged(0, 3, 10))
        self.assertRaises(FileNotFoundError, self.store.openComplete, self.path)
        self.store.complete(
            parseRelativePath("e/f"), self.stage(parseRelativePath("e/f"), b"x", whole(1)), False
        )
        folder = self.assertRaises(Conflict, self.store.openComplete, parseRelativePath("e"))
        self.assertEqual(folder.code, "is-folder")

    def test_openCompleteKeepsWhatItOpened(self) -> None:
        """A file replaced while open reads as it was; the new one has another version."""
        self.store.complete(self.path, self.stage(self.path, b"old!", whole(4)), False)
        before = self.store.openComplete(self.path)
        self.addCleanup(before.close)
        staged = self.stage(self.path, b"new!", whole(4, allowOverwrite=True))
        self.store.complete(self.path, staged, True)
        after = self.store.openComplete(self.path)
        self.addCleanup(after.close)
        self.assertEqual((before.read(0, 4), after.read(0, 4)), (b"old!", b"new!"))
        self.assertNotEqual(before.version, after.version)

    def test_folderRefused(self) -> None:
        """A destination that is a folder, or under a file, is a conflict."""
        self.store.complete(self.path, self.stage(self.path, b"abc", whole(3)), False)
        folder = self.assertRaises(Conflict, self.store.inspect, parseRelativePath("d"))
        self.assertEqual(folder.code, "is-folder")
        under = self.assertRaises(
            Conflict, self.store.inspect, parseRelativePath("d/f.bin/x")
        )
        self.assertEqual(under.code, "parent-is-file")
        self.assertRaises(Conflict, self.store.create, parseRelativePath("d"))

    def test_cancel(self) -> None:
        """Cancel discards an incomplete upload once and leaves complete files alone."""
        self.write(self.path, b"abc")
        self.assertTrue(self.store.cancel(self.path))
        self.assertFalse(self.store.cancel(self.path))
        self.assertEqual(self.store.inspect(self.path), Stored())

    def test_cancelHeld(self) -> None:
        """An upload being written is not cancelled under its writer."""
        staged = self.stage(self.path, b"abc")
        self.assertRaises(Busy, self.store.cancel, self.path)
        self.assertEqual(self.store.pendingTakeovers(), [])
        self.assertEqual(staged.syncAndClose(), 3)
        self.assertEqual(self.store.inspect(self.path).offset, 3)

    def test_oneWriter(self) -> None:
        """While one request holds an upload another is refused; then the next gets it."""
        staged = self.stage(self.path, b"abc")
        error = self.assertRaises(
            Busy, self.store.begin, self.path, append, {}, None
        )
        self.assertEqual(error.code, "locked")
        other = self.stage(parseRelativePath("other.bin"), b"x")  # other uploads are free
        other.close()
        staged.syncAndClose()
        self.assertEqual(self.stage(self.path, b"d").offset, 4)

    def test_discardReleases(self) -> None:
        """A discarded upload is gone and no longer held."""
        staged = self.stage(self.path, b"abc")
        self.store.discard(staged)
        self.assertEqual(self.store.inspect(self.path), Stored())
        self.assertEqual(self.stage(self.path, b"").offset, 0)

    def test_takeoverMarkers(self) -> None:
        """A takeover request is pending until withdrawn, or until its asker gets the upload."""
        key = self.store.keyFor(self.path)
        self.assertEqual(self.store.pendingTakeovers(), [])
        staged = self.stage(self.path, b"abc")
        self.store.askTakeover(key)
        self.assertEqual(self.store.pendingTakeovers(), [key])
        self.assertTrue(self.store.holdsCurrentLock(staged))
        self.store.dropTakeover(key)
        self.assertEqual(self.store.pendingTakeovers(), [])
        self.store.askTakeover(key)
        staged.syncAndClose()
        self.stage(self.path, b"d")
        self.assertEqual(self.store.pendingTakeovers(), [])

    def test_ids(self) -> None:
        """An upload made with an id is found by it, not by its path, and completes to its path."""
        uploadId = self.store.create(self.path)
        self.assertIsInstance(uploadId, UploadId)
        self.assertNotEqual(self.store.create(self.path), uploadId)
        self.assertEqual(
            self.store.inspect(uploadId), Stored(offset=0, incomplete=True)
        )
        self.assertEqual(self.store.inspect(self.path), Stored())
        self.store.record(uploadId, 6, {})
        self.assertEqual(self.write(uploadId, b"abc"), 3)
        staged = self.stage(uploadId, b"def")
        self.assertEqual(staged.key, uploadKey(uploadId))
        self.store.complete(uploadId, staged, False, {"sha-256": sha256(b"abcdef")})
        self.assertEqual(self.readComplete(self.path), b"abcdef")
        self.assertRaises(NotFound, self.store.inspect, uploadId)

    def test_startOverById(self) -> None:
        """An upload made with an id keeps its id while its bytes start over."""
        uploadId = self.store.create(self.path)
        self.write(uploadId, b"abc", ranged(0, 2, 9))
        staged = self.stage(uploadId, b"", whole(2))
        self.assertEqual(self.store.inspect(uploadId).offset, 0)
        staged.writeChunks([b"xy"])
        staged.hashChunks([b"xy"])
        self.assertEqual(staged.syncAndClose(), 2)
        self.assertEqual(self.store.inspect(uploadId), Stored(offset=2, total=2, incomplete=True))
        [entry] = self.store.listIncomplete()
        self.assertEqual((entry.uploadId, entry.path), (uploadId, "d/f.bin"))

    def test_unknownId(self) -> None:
        """An id that names no upload is not found by any operation."""
        unknown = UploadId("0" * 32)
        for call in (
            lambda: self.store.inspect(unknown),
            lambda: self.store.begin(unknown, append, {}, None),
            lambda: self.store.record(unknown, 3, {}),
            lambda: self.store.cancel(unknown),
        ):
            self.assertRaises(NotFound, call)

    def test_cancelById(self) -> None:
        """Cancelling by id ends the upload; the id is then unknown."""
        uploadId = self.store.create(self.path)
        self.assertTrue(self.store.cancel(uploadId))
        self.assertRaises(NotFound, self.store.inspect, uploadId)

    def test_listIncomplete(self) -> None:
        """Every incomplete upload is listed with its key, destination, id, offset and total."""
        self.write(self.path, b"abc", ranged(0, 2, 9))
        uploadId = self.store.create(parseRelativePath("by/id.bin"))
        self.store.complete(
            parseRelativePath("done.bin"),
            self.stage(parseRelativePath("done.bin"), b"x", whole(1)),
            False,
        )
        found = {entry.key: entry for entry in self.store.listIncomplete()}
        self.assertEqual(
            sorted(found), sorted([uploadKey(self.path), uploadKey(uploadId)])
        )
        byPath, byId = found[uploadKey(self.path)], found[uploadKey(uploadId)]
        self.assertEqual(
            (byPath.path, byPath.uploadId, byPath.offset, byPath.total), ("d/f.bin", None, 3, 9)
        )
        self.assertEqual(
            (byId.path, byId.uploadId, byId.offset, byId.total), ("by/id.bin", uploadId, 0, None)
        )

    def test_expire(self) -> None:
        """An upload untouched for the given time is discarded; one touched since is kept."""
        self.write(self.path, b"abc")
        [entry] = self.store.listIncomplete()
        self.assertFalse(self.store.expire(entry.key, 60, now=entry.touched + 59))
        self.assertEqual(self.store.inspect(self.path).offset, 3)
        self.assertTrue(self.store.expire(entry.key, 60, now=entry.touched + 60))
        self.assertEqual(self.store.inspect(self.path), Stored())
        self.assertEqual(self.store.listIncomplete(), [])
        self.assertFalse(self.store.expire(entry.key, 60, now=entry.touched + 60))

    def test_expireHeld(self) -> None:
        """An upload a writer holds is never expired, however old."""
        uploadId = self.store.create(self.path)
        staged = self.stage(uploadId, b"abc")
        [entry] = self.store.listIncomplete()
        self.assertFalse(self.store.expire(entry.key, 0, now=entry.touched + 10**9))
        staged.syncAndClose()
        self.assertTrue(self.store.expire(entry.key, 0, now=entry.touched + 10**9))
        self.assertRaises(NotFound, self.store.inspect, uploadId)

    def test_queryDoesNotKeepAlive(self) -> None:
        """A status query that records a total and digests does not count as activity for expiry."""
        self.write(self.path, b"abc")
        key = uploadKey(self.path)
        self.backdate(key, 1000)
        stored = self.store.record(self.path, 9, {"sha-256": b64(sha256(b"abcdefghi"))})
        self.assertEqual(stored.total, 9)
        [entry] = self.store.listIncomplete()
        self.assertEqual(entry.total, 9)
        self.assertTrue(self.store.expire(key, 600))  # measured from now, on the store's clock
        self.assertEqual(self.store.inspect(self.path), Stored())

    def test_queryAgeUnchanged(self) -> None:
        """The time an upload last received a byte stays put across a recording status query."""
        self.write(self.path, b"abc")
        key = uploadKey(self.path)
        self.backdate(key, 1000)
        [before] = self.store.listIncomplete()
        self.store.record(self.path, 9, {})
        [after] = self.store.listIncomplete()
        self.assertEqual(after.touched, before.touched)
        self.assertFalse(self.store.expire(key, 1001, now=after.touched + 1000))

    def test_bytesKeepAlive(self) -> None:
        """Bytes received reset an upload's age: an old upload that gets more is not expired."""
        self.write(self.path, b"abc")
        key = uploadKey(self.path)
        self.backdate(key, 1000)
        [old] = self.store.listIncomplete()
        self.write(self.path, b"de")
        [entry] = self.store.listIncomplete()
        self.assertGreaterEqual(entry.touched, old.touched + 999)
        self.assertFalse(self.store.expire(key, 600, now=old.touched + 1000))
        self.assertEqual(self.store.inspect(self.path).offset, 5)

    def test_creationCounts(self) -> None:
        """An upload made with no byte yet ages from its creation, then expires; its id is then unknown."""
        uploadId = self.store.create(self.path)
        [entry] = self.store.listIncomplete()
        key = entry.key
        self.assertFalse(self.store.expire(key, 600, now=entry.touched + 599))
        self.backdate(key, 1000)
        [entry] = self.store.listIncomplete()
        self.assertTrue(self.store.expire(key, 600, now=entry.touched + 1000))
        self.assertRaises(NotFound, self.store.inspect, uploadId)

    def test_expireOnce(self) -> None:
        """Of two expiries of one upload, only the first is told it removed it."""
        self.write(self.path, b"abc")
        [entry] = self.store.listIncomplete()
        now = entry.touched + 10
        self.assertEqual(
            [self.store.expire(entry.key, 5, now=now), self.store.expire(entry.key, 5, now=now)],
            [True, False],
        )

    def test_touchedAt(self) -> None:
        """The time an upload last received a byte is what listIncomplete reports; none when nothing is staged."""
        self.assertIsNone(self.store.touchedAt(self.path))
        self.write(self.path, b"abc")
        uploadId = self.store.create(parseRelativePath("by/id.bin"))
        self.backdate(uploadKey(self.path), 1000)
        self.store.record(self.path, 9, {})
        found = {entry.key: entry.touched for entry in self.store.listIncomplete()}
        self.assertEqual(self.store.touchedAt(self.path), found[uploadKey(self.path)])
        self.assertEqual(self.store.touchedAt(uploadId), found[uploadKey(uploadId)])
        self.assertLess(self.store.touchedAt(self.path), self.store.touchedAt(uploadId) - 999)
        self.assertRaises(NotFound, self.store.touchedAt, UploadId("0" * 32))

    def test_expireRefusesOtherKeys(self) -> None:
        """Expire acts only on keys the store makes (never a name built elsewhere)."""
        for key in ("../x", "p-abc", "i-" + "0" * 31, "q-" + "0" * 64, "p-" + "0" * 64 + ".json"):
            self.assertRaises(ValueError, self.store.expire, key, 0)

    def test_recover(self) -> None:
        """Fully staged uploads are completed; one whose digest differs is discarded."""
        good, bad = parseRelativePath("good.bin"), parseRelativePath("bad.bin")
        self.write(good, b"abc", ranged(0, 2, 3), digests={"sha-256": b64(sha256(b"abc"))})
        self.write(bad, b"abc", ranged(0, 2, 3), digests={"sha-256": b64(sha256(b"xyz"))})
        self.write(self.path, b"ab", ranged(0, 1, 3))  # not fully staged: left
        uploadId = self.store.create(parseRelativePath("id.bin"))
        self.write(uploadId, b"xy", ranged(0, 1, 2))
        self.assertEqual(
            sorted(self.store.recover(False)),
            [
                ("bad.bin", "discarded: its Repr-Digest does not match"),
                ("good.bin", "completed"),
                ("id.bin", "completed"),
            ],
        )
        self.assertEqual(self.readComplete(parseRelativePath("id.bin")), b"xy")
        self.assertEqual(self.readComplete(good), b"abc")
        self.assertEqual(self.store.inspect(bad), Stored())
        self.assertEqual(self.store.inspect(self.path).offset, 2)

    def test_createIncoming(self) -> None:
        """An upload made without a destination lands at incoming/<its id>."""
        uploadId = self.store.create(None)
        staged = self.stage(uploadId, b"abc", ranged(0, 2, 3))
        self.store.complete(uploadId, staged, False)
        self.assertEqual(
            self.readComplete(parseRelativePath(f"incoming/{uploadId.value}")), b"abc"
        )

    def test_describe(self) -> None:
        """An id's upload is described with its total, attributes, partial flag and touch time."""
        uploadId = self.store.create(
            self.path, total=5, attributes={"tus-metadata": "a Yg=="}, partial=True
        )
        self.write(uploadId, b"ab")
        entry = self.store.describe(uploadId)
        self.assertEqual(
            (entry.uploadId, entry.path, entry.offset, entry.total, entry.attributes,
             entry.partial),
            (uploadId, "d/f.bin", 2, 5, {"tus-metadata": "a Yg=="}, True),
        )
        self.assertIsInstance(entry.touched, float)
        [listed] = self.store.listIncomplete()
        self.assertEqual(listed.attributes, {"tus-metadata": "a Yg=="})
        self.assertRaises(NotFound, self.store.describe, UploadId("0" * 32))

    def test_partialNeverRecovered(self) -> None:
        """A fully staged partial upload is never moved into place by recovery."""
        uploadId = self.store.create(None, total=2, partial=True)
        self.write(uploadId, b"xy")
        self.assertEqual(self.store.recover(True), [])
        self.assertEqual(self.store.inspect(uploadId).offset, 2)

    def test_concatenate(self) -> None:
        """A final upload holds its parts' bytes in order, fully staged, the parts left alone."""
        parts = [self.store.create(None, total=n, partial=True) for n in (3, 0, 4)]
        for part, data in zip(parts, (b"abc", b"", b"defg")):
            if data:
                self.write(part, data)
        final = self.store.create(self.path)
        self.assertEqual(self.store.concatenate(final, parts), 7)
        self.assertEqual(self.store.inspect(final), Stored(offset=7, total=7, incomplete=True))
        staged = self.stage(final, b"", lambda stored: Plan(False, 7, 0, 0, 7))
        self.store.complete(final, staged, False, {"sha-256": sha256(b"abcdefg")})
        self.assertEqual(self.readComplete(self.path), b"abcdefg")
        self.assertEqual(self.store.inspect(parts[2]).offset, 4)

    def test_concatenateRefused(self) -> None:
        """Parts that are unknown, not partial, incomplete or being written are refused."""
        final = self.store.create(self.path)
        whole_ = self.store.create(None, total=1)
        self.write(whole_, b"x")
        short = self.store.create(None, total=2, partial=True)
        self.write(short, b"x")
        self.assertRaises(NotFound, self.store.concatenate, final, [UploadId("0" * 32)])
        self.assertRaises(BadRequest, self.store.concatenate, final, [whole_])
        self.assertRaises(BadRequest, self.store.concatenate, final, [short])
        held = self.store.create(None, total=1, partial=True)
        staged = self.stage(held, b"x")
        self.assertRaises(Busy, self.store.concatenate, final, [held])
        staged.syncAndClose()
        self.assertEqual(self.store.concatenate(final, [held]), 1)

    def test_freeBytes(self) -> None:
        """Free space is a count of bytes."""
        self.assertIsInstance(self.store.freeBytes(), int)


class FileStoreConformanceTests(StoreConformanceMixin, SynchronousTestCase):
    """
    L{FileStore} keeps the storage contract.
    """

    def makeStore(self) -> FileStore:
        self.root = os.path.abspath(self.mktemp())
        store = FileStore(self.root, fsync=False)
        self.addCleanup(store.close)
        return store

    def readComplete(self, path: UploadPath) -> bytes | None:
        try:
            with open(os.path.join(self.root, path.relative), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def backdate(self, key: str, seconds: float) -> None:
        shard = "%02x" % (zlib.crc32(key.encode()) & 0xFF)
        folder = os.path.join(self.root, ".uploadsvc", "uploads", shard)
        for suffix in (".data", ".json"):
            name = os.path.join(folder, key + suffix)
            if os.path.exists(name):
                st = os.stat(name)
                os.utime(name, (st.st_atime - seconds, st.st_mtime - seconds))


class FileStoreContractTests(SynchronousTestCase):
    """
    What the contract means for files on disk: ids and expiry across
    processes and restarts, and never through a planted link.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.store = self.open()
        self.path = parseRelativePath("f.bin")

    def open(self) -> FileStore:
        store = FileStore(self.root, fsync=False)
        self.addCleanup(store.close)
        return store

    def test_idSurvivesRestart(self) -> None:
        """An id made by one process names the same upload for the next one."""
        first = FileStore(self.root, fsync=False)
        uploadId = first.create(self.path)
        first.close()
        self.assertEqual(self.open().inspect(uploadId), Stored(offset=0, incomplete=True))

    def test_idOfAnotherUpload(self) -> None:
        """Metadata under an id's key that names another id is not that upload."""
        uploadId = self.store.create(self.path)
        key = uploadKey(uploadId)
        self.store._writeInfo(key, {"path": "f.bin", "uploadId": "f" * 32})
        self.assertRaises(NotFound, self.store.inspect, uploadId)

    def test_expireHeldElsewhere(self) -> None:
        """An upload another process writes is not expired (its lock is tried, not waited for)."""
        other = self.open()
        _, _, staged = other.begin(self.path, append, {}, None)
        assert staged is not None
        self.addCleanup(staged.close)
        [entry] = self.store.listIncomplete()
        self.assertFalse(self.store.expire(entry.key, 0, now=entry.touched + 10**9))
        self.assertEqual(self.store.pendingTakeovers(), [])

    def test_plantedLinkIgnored(self) -> None:
        """A link planted as an upload's data is neither listed, expired nor followed."""
        outside = os.path.abspath(self.mktemp())
        with open(outside, "wb") as f:
            f.write(b"keep")
        key = uploadKey(self.path)
        self.assertEqual(self.store.listIncomplete(), [])  # the state folder exists
        shard = "%02x" % (zlib.crc32(key.encode()) & 0xFF)
        folder = os.path.join(self.root, ".uploadsvc", "uploads", shard)
        os.makedirs(folder, exist_ok=True)
        os.symlink(outside, os.path.join(folder, key + ".data"))
        self.assertEqual(self.store.listIncomplete(), [])
        self.assertFalse(self.store.expire(key, 0, now=10**12))
        with open(outside, "rb") as f:
            self.assertEqual(f.read(), b"keep")


    def test_openCompleteNoLinks(self) -> None:
        """A download never follows a link: at the path (409) or on the way (403)."""
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        with open(os.path.join(outside, "secret"), "wb") as f:
            f.write(b"secret")
        os.symlink(os.path.join(outside, "secret"), os.path.join(self.root, "link"))
        os.symlink(outside, os.path.join(self.root, "dir"))
        atPath = self.assertRaises(
            Conflict, self.store.openComplete, parseRelativePath("link")
        )
        self.assertEqual(atPath.code, "is-link")
        onTheWay = self.assertRaises(
            Forbidden, self.store.openComplete, parseRelativePath("dir/secret")
        )
        self.assertEqual(onTheWay.code, "symlink")

    def test_openCompleteNotAFile(self) -> None:
        """A FIFO at the path is no file to serve (and opening it does not block)."""
        os.mkfifo(os.path.join(self.root, "fifo"))
        error = self.assertRaises(Conflict, self.store.openComplete, parseRelativePath("fifo"))
        self.assertEqual(error.code, "not-a-file")


class MemoryStoreConformanceTests(StoreConformanceMixin, SynchronousTestCase):
    """
    L{MemoryStore} keeps the storage contract.
    """

    def makeStore(self) -> MemoryStore:
        return MemoryStore()

    def readComplete(self, path: UploadPath) -> bytes | None:
        return self.store.files.get(path.relative)  # type: ignore[no-any-return]

    def backdate(self, key: str, seconds: float) -> None:
        self.store._uploads[key].touched -= seconds


class UploadIdTests(SynchronousTestCase):
    """
    Upload ids that clients name are checked before any store sees them.
    """

    def test_refused(self) -> None:
        """Anything but 32 lowercase hex digits names no upload (404)."""
        bad = ("", "0" * 31, "0" * 33, "A" * 32, "../" + "0" * 29, "0" * 31 + "\n", "g" * 32)
        for text in bad:
            error = self.assertRaises(NotFound, parseUploadId, text)
            self.assertEqual(error.code, "no-upload")

    def test_accepted(self) -> None:
        """A well-formed id is taken as it is."""
        self.assertEqual(parseUploadId("0123456789abcdef" * 2).value, "0123456789abcdef" * 2)


class DataLockTests(SynchronousTestCase):
    def test_expireDataLocked(self) -> None:
        """An upload whose data file a writer locks (through another lock file) is not expired."""
        from uploadsvc.storage.locks import lockData
        root = os.path.abspath(self.mktemp())
        store = FileStore(root, fsync=False)
        self.addCleanup(store.close)
        path = parseRelativePath("f.bin")
        _, _, staged = store.begin(path, append, {}, None)
        assert staged is not None
        staged.syncAndClose()
        key = uploadKey(path)
        fd = store._openData(key, create=True)
        assert fd is not None
        self.addCleanup(os.close, fd)
        self.assertTrue(lockData(fd))
        [entry] = store.listIncomplete()
        self.assertFalse(store.expire(key, 0, now=entry.touched + 10))
