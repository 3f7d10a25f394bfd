"""
Tests for L{uploadsvc.storage.filestore}: staging in the
C{uploads/<xx>/<key>.data} and C{<key>.json} layout, metadata written only
when a request ends incomplete, restart, rollback, discard, completion, the
symbolic-link rules of docs/protocol.md section 1, and the cross-process lock (one
byte of C{.uploadsvc/lock} per upload). Real files in a temporary folder;
nothing else.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import threading
import time
import zlib
import stat
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import Busy, Conflict, Forbidden
from uploadsvc.protocol.decisions import AlreadyComplete, Plan, Stored
from uploadsvc.protocol.paths import UploadPath, parseRelativePath
from uploadsvc.storage.filestore import STATE_DIR, FileStore, StagedFile


def shardOf(key: str) -> str:
    """
    The staging folder of an upload: two hex digits of its key's CRC-32.
    """
    return "%02x" % (zlib.crc32(key.encode("utf-8")) & 0xFF)


def d256(label: str) -> str:
    """
    A well-formed base64 sha-256 value standing for C{label} (metadata of
    another shape is set aside as damaged).
    """
    return base64.b64encode(hashlib.sha256(label.encode()).digest()).decode()


def d512(label: str) -> str:
    return base64.b64encode(hashlib.sha512(label.encode()).digest()).decode()


class FileStoreTestsMixin:
    """
    A fresh root and helpers to open stores on it.
    """

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        os.makedirs(self.base)
        self.root = os.path.join(self.base, "root")
        self.outside = os.path.join(self.base, "outside")
        os.makedirs(self.outside)
        self.store = self.makeStore()

    def makeStore(self, **kw: object) -> FileStore:
        store = FileStore(self.root, **kw)  # type: ignore[arg-type]
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        return store

    def openUpload(
        self,
        path: UploadPath,
        store: FileStore | None = None,
        startOver: bool = False,
        total: int | None = None,
        digests: dict[str, str] | None = None,
    ) -> StagedFile:
        return self.beginUpload(path, store, startOver, total, digests)[2]

    def beginUpload(
        self,
        path: UploadPath,
        store: FileStore | None = None,
        startOver: bool = False,
        total: int | None = None,
        digests: dict[str, str] | None = None,
        hashState: tuple[str, int, Any] | None = None,
    ) -> tuple[Stored, Plan, StagedFile]:
        """
        C{begin} an upload of C{path} with a plan that appends at the stored
        offset (or starts over).
        """
        seen: list[Stored] = []

        def decide(stored: Stored) -> Plan:
            seen.append(stored)
            offset = 0 if startOver else stored.offset
            return Plan(startOver, offset, 0, None, total)

        stored, plan, staged = (store or self.store).begin(
            path, decide, digests or {}, hashState
        )
        assert staged is not None and isinstance(plan, Plan)
        self.assertEqual(seen, [stored])  # type: ignore[attr-defined]
        self.addCleanup(staged.close)  # type: ignore[attr-defined]
        return stored, plan, staged

    def uploadsDir(self) -> str:
        return os.path.join(self.root, STATE_DIR, "uploads")

    def shardDir(self, path: UploadPath) -> str:
        """
        The folder that holds the files of C{path}'s upload: named by the
        two hex digits of its key's CRC-32.
        """
        return os.path.join(self.uploadsDir(), shardOf(FileStore.keyFor(path)))

    def dataFile(self, path: UploadPath) -> str:
        return os.path.join(self.shardDir(path), FileStore.keyFor(path) + ".data")

    def infoFile(self, path: UploadPath) -> str:
        return os.path.join(self.shardDir(path), FileStore.keyFor(path) + ".json")

    def readInfo(self, path: UploadPath) -> dict[str, Any]:
        with open(self.infoFile(path)) as f:
            return json.load(f)  # type: ignore[no-any-return]

    def uploadsEntries(self) -> list[str]:
        """
        The names of all files (not folders) anywhere under the uploads
        folder.
        """
        return sorted(
            name for _, _, files in os.walk(self.uploadsDir()) for name in files
        )

    def readFile(self, *parts: str) -> bytes:
        with open(os.path.join(*parts), "rb") as f:
            return f.read()

    def outsideEntries(self) -> list[str]:
        return sorted(os.listdir(self.outside))


class StagingTests(FileStoreTestsMixin, SynchronousTestCase):
    """
    Writing incomplete uploads and finding them again.
    """

    def test_manyPiecesAtOnce(self) -> None:
        """
        More pieces than one pwritev takes (a body in tiny chunks behind a
        slow disk) are all written, in order.
        """
        path = parseRelativePath("many.bin")
        staged = self.openUpload(path)
        pieces = [bytes([i % 251]) * 3 for i in range(5000)]
        staged.writeChunks(pieces)
        staged.syncAndClose()
        self.assertEqual(self.store.inspect(path).offset, 15000)
        with open(self.dataFile(path), "rb") as f:
            self.assertEqual(f.read(), b"".join(pieces))

    def test_nothingStored(self) -> None:
        """
        C{inspect} of an unknown path reports nothing.
        """
        self.assertEqual(self.store.inspect(parseRelativePath("a/b.bin")), Stored())

    def test_writeAndOffset(self) -> None:
        """
        Chunks are appended in order and the offset is the staged file's size.
        """
        path = parseRelativePath("a/b.bin")
        staged = self.openUpload(path, total=10)
        self.assertEqual(staged.offset, 0)
        staged.writeChunks([b"abc", memoryview(b"de")])
        staged.writeChunks([b"fg"])
        self.assertEqual(staged.sync(), 7)
        staged.close()
        data = self.readFile(self.dataFile(path))
        self.assertEqual(data, b"abcdefg")
        self.assertEqual(os.path.getsize(self.dataFile(path)), staged.offset)
        self.assertEqual(
            self.store.inspect(path), Stored(offset=7, total=10, incomplete=True)
        )

    def test_destinationNotCreatedWhileStaging(self) -> None:
        """
        Nothing appears at the destination before completion.
        """
        path = parseRelativePath("a/b.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"xyz"])
        staged.sync()
        self.assertFalse(os.path.lexists(os.path.join(self.root, "a", "b.bin")))

    def test_restart(self) -> None:
        """
        After C{syncAndClose}, a new store on the same root finds the
        incomplete upload with its offset, total and digests, and resumes it
        at that offset.
        """
        path = parseRelativePath("x/y/z.bin")
        staged = self.openUpload(path, total=100, digests={"sha-256": d256("AAAA")})
        staged.writeChunks([b"0123456789"])
        self.assertEqual(staged.syncAndClose(), 10)
        self.assertTrue(staged.closed)
        again = self.makeStore()
        self.assertEqual(
            again.inspect(path),
            Stored(offset=10, total=100, incomplete=True, digests={"sha-256": d256("AAAA")}),
        )
        resumed = self.openUpload(path, store=again)
        self.assertEqual(resumed.offset, 10)
        self.assertIsNone(resumed.hasher)
        resumed.writeChunks([b"abc"])
        resumed.close()
        self.assertEqual(again.inspect(path).offset, 13)
        self.assertEqual(self.readFile(self.dataFile(path)), b"0123456789abc")

    def test_hashStateReused(self) -> None:
        """
        A hash state whose generation is the one in the C{.json} and whose
        offset matches the staged size is carried on.
        """
        path = parseRelativePath("h.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"hello "])
        staged.hashChunks([b"hello "])
        staged.syncAndClose()
        state = (self.readInfo(path)["generation"], staged.offset, staged.hasher)
        resumed = self.beginUpload(path, hashState=state)[2]
        self.assertIs(resumed.hasher, state[2])
        resumed.writeChunks([b"world"])
        resumed.hashChunks([b"world"])
        self.assertEqual(resumed.hasher.digest(), hashlib.sha256(b"hello world").digest())

    def test_hashStateStale(self) -> None:
        """
        A hash state for another offset is not used.
        """
        path = parseRelativePath("h.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"hello "])
        staged.syncAndClose()
        generation = self.readInfo(path)["generation"]
        resumed = self.beginUpload(path, hashState=(generation, 3, hashlib.sha256(b"hel")))[2]
        self.assertEqual(resumed.offset, 6)
        self.assertIsNone(resumed.hasher)

    def test_hashStateOtherGeneration(self) -> None:
        """
        A hash state remembered before another store (another process)
        cancelled the upload and wrote it again to the same size is not used:
        the new C{.json} names another generation.
        """
        path = parseRelativePath("g.bin")
        staged = self.openUpload(path, total=12)
        staged.writeChunks([b"version one "[:6]])
        staged.hashChunks([b"versio"])
        staged.syncAndClose()
        state = (self.readInfo(path)["generation"], staged.offset, staged.hasher)
        other = self.makeStore()
        self.assertTrue(other.cancel(path))
        again = self.openUpload(path, store=other, startOver=True, total=12)
        again.writeChunks([b"VERSIO"])
        again.syncAndClose()
        self.assertNotEqual(self.readInfo(path)["generation"], state[0])
        resumed = self.beginUpload(path, hashState=state)[2]
        self.assertEqual(resumed.offset, 6)
        self.assertIsNone(resumed.hasher)

    def test_hashStateNeedsInfo(self) -> None:
        """
        A hash state is not used when the upload has no C{.json} (another
        store started it over and has not synced, or crashed first).
        """
        path = parseRelativePath("n.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"abc"])
        staged.syncAndClose()
        state = (self.readInfo(path)["generation"], 3, staged.hasher)
        fresh = self.openUpload(path, store=self.makeStore(), startOver=True)
        fresh.writeChunks([b"xyz"])
        fresh.close()
        self.assertFalse(os.path.exists(self.infoFile(path)))
        self.assertIsNone(self.beginUpload(path, hashState=state)[2].hasher)

    def test_infoReplacedAtomically(self) -> None:
        """
        C{<key>.json} holds the path, total and merged digests, and no temp
        file is left behind by C{sync} or C{record}.
        """
        path = parseRelativePath("dir/f.bin")
        staged = self.openUpload(path, total=5, digests={"sha-256": d256("one")})
        staged.syncAndClose()
        self.openUpload(path, digests={"sha-512": d512("two")}).syncAndClose()
        self.store.record(path, 5, {"sha-256": d256("three")})
        key = FileStore.keyFor(path)
        self.assertEqual(self.uploadsEntries(), [key + ".data", key + ".json"])
        info = self.readInfo(path)
        self.assertEqual(info["path"], "dir/f.bin")
        self.assertEqual(info["total"], 5)
        self.assertEqual(info["digests"], {"sha-256": d256("three"), "sha-512": d512("two")})

    def test_recordWithoutUpload(self) -> None:
        """
        C{record} for a path with no upload creates nothing.
        """
        path = parseRelativePath("none.bin")
        self.store.record(path, 5, {"sha-256": d256("x")})
        self.assertEqual(self.uploadsEntries(), [])
        self.assertEqual(self.store.inspect(path), Stored())

    def test_startOverTruncates(self) -> None:
        """
        Starting over an upload that exists discards the staged bytes and
        removes its record at once, before any sync, so the old total and
        digests never describe the new bytes; the next sync records the new
        total.
        """
        path = parseRelativePath("s.bin")
        staged = self.openUpload(path, total=100, digests={"sha-256": d256("old")})
        staged.writeChunks([b"x" * 50])
        staged.syncAndClose()
        fresh = self.openUpload(path, startOver=True, total=7)
        self.assertEqual(fresh.offset, 0)
        self.assertIsNotNone(fresh.hasher)
        self.assertEqual(os.path.getsize(self.dataFile(path)), 0)
        self.assertFalse(os.path.exists(self.infoFile(path)))
        fresh.writeChunks([b"new"])
        self.assertEqual(self.makeStore().inspect(path), Stored(offset=3, incomplete=True))
        fresh.syncAndClose()
        self.assertEqual(self.store.inspect(path), Stored(offset=3, total=7, incomplete=True))

    def test_cancel(self) -> None:
        """
        C{cancel} removes the staged upload once; then nothing is there.
        """
        path = parseRelativePath("c.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"abc"])
        staged.syncAndClose()
        self.assertEqual(self.store.inspect(path).offset, 3)
        self.assertTrue(self.store.cancel(path))
        self.assertEqual(self.uploadsEntries(), [])
        self.assertEqual(self.store.inspect(path), Stored())
        self.assertFalse(self.store.cancel(path))

    def test_hashStaged(self) -> None:
        """
        C{hashStaged} digests the staged bytes from disk.
        """
        path = parseRelativePath("d.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"some ", b"bytes"])
        staged.sync()
        self.assertEqual(
            self.store.hashStaged(staged, ["sha-256", "sha-512"]),
            {
                "sha-256": hashlib.sha256(b"some bytes").digest(),
                "sha-512": hashlib.sha512(b"some bytes").digest(),
            },
        )

    def test_noFsyncStillWrites(self) -> None:
        """
        With fsync off, staging and completion work the same.
        """
        store = self.makeStore(fsync=False)
        path = parseRelativePath("nf/f.bin")
        staged = self.openUpload(path, store=store)
        staged.writeChunks([b"abc"])
        self.assertEqual(staged.sync(), 3)
        self.assertFalse(store.complete(path, staged, False))
        self.assertTrue(staged.closed)
        self.assertEqual(self.readFile(self.root, "nf", "f.bin"), b"abc")
        self.assertEqual(self.uploadsEntries(), [])


class StartOverTruncationTests(FileStoreTestsMixin, SynchronousTestCase):
    """
    A start over empties the staged file, but a new (empty) one is never
    truncated: on ext4 a truncation to size 0 makes the next close write the
    file's data out (C{auto_da_alloc}), a disk write per small upload.
    """

    def truncations(self) -> list[tuple[int, int]]:
        calls: list[tuple[int, int]] = []
        real = os.ftruncate

        def record(fd: int, length: int) -> None:
            calls.append((fd, length))
            real(fd, length)

        self.patch(os, "ftruncate", record)
        return calls

    def test_newUploadNotTruncated(self) -> None:
        """A new upload, started over or not, opens its empty file as it is."""
        calls = self.truncations()
        self.openUpload(parseRelativePath("new.bin"), startOver=True).writeChunks([b"abc"])
        self.openUpload(parseRelativePath("other.bin")).writeChunks([b"abc"])
        self.assertEqual(calls, [])

    def test_startOverEmpties(self) -> None:
        """A start over of staged bytes empties the file."""
        path = parseRelativePath("old.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"old bytes"])
        staged.close()
        calls = self.truncations()
        again = self.openUpload(path, startOver=True)
        self.assertEqual((again.offset, os.fstat(again.fd).st_size), (0, 0))
        self.assertEqual([length for _, length in calls], [0])

    def test_trailingHoleEmptied(self) -> None:
        """
        A file that is all hole (extended by a truncation: its data size 0,
        its size not) is emptied too, never written into at offset 0 with
        its old size kept.
        """
        path = parseRelativePath("holes.bin")
        staged = self.openUpload(path)
        os.truncate(self.dataFile(path), 4096)
        staged.close()
        again = self.openUpload(path, startOver=True)
        again.writeChunks([b"ab"])
        self.assertEqual(os.fstat(again.fd).st_size, 2)


class LockTests(FileStoreTestsMixin, SynchronousTestCase):
    """
    One writer per upload across processes (one locked byte per upload).
    """

    def test_busyWhileHeld(self) -> None:
        """
        A second store cannot open an upload another store holds open: it
        is refused at once (503), asking the holder for nothing (no
        takeover marker: the app's waiter asks); once released, it can.
        """
        path = parseRelativePath("l.bin")
        first = self.openUpload(path)
        first.writeChunks([b"abcd"])
        first.sync()
        other = self.makeStore()
        error = self.assertRaises(Busy, self.openUpload, path, store=other)
        self.assertEqual((error.status, error.code), (503, "locked"))
        self.assertEqual(self.store.pendingTakeovers(), [])
        first.close()
        second = self.openUpload(path, store=other)
        self.assertEqual(second.offset, 4)

    def test_refusalReleasesLock(self) -> None:
        """
        When the decision refuses, C{begin} raises it and holds no lock.
        """
        path = parseRelativePath("r.bin")

        def refuse(stored: Stored) -> Plan:
            raise Conflict("offset-mismatch", "no")

        self.assertRaises(Conflict, self.store.begin, path, refuse, {}, None)
        other = self.makeStore()
        self.assertEqual(self.openUpload(path, store=other).offset, 0)

    def test_alreadyCompleteReleasesLock(self) -> None:
        """
        An L{AlreadyComplete} decision opens nothing and holds no lock.
        """
        path = parseRelativePath("done.bin")
        with open(os.path.join(self.root, "done.bin"), "wb") as f:
            f.write(b"12345")
        stored, plan, staged = self.store.begin(
            path, lambda s: AlreadyComplete(s.completeSize or 0), {}, None
        )
        self.assertEqual((stored, plan, staged), (Stored(completeSize=5), AlreadyComplete(5), None))
        self.assertEqual(self.uploadsEntries(), [])
        other = self.makeStore()
        self.openUpload(path, store=other)

    def test_lockAfterCompletion(self) -> None:
        """
        Once an upload completed (which closes it), another store can start a
        new one at the same path, and then holds it against a third.
        """
        path = parseRelativePath("again.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"x"])
        self.store.complete(path, staged, False)
        self.assertTrue(staged.closed)
        other = self.makeStore()
        second = self.openUpload(path, store=other)
        self.assertEqual(second.offset, 0)
        third = self.makeStore()
        self.assertRaises(Busy, self.openUpload, path, store=third)

    def test_otherUploadsFree(self) -> None:
        """
        The lock covers one upload, not the store.
        """
        self.openUpload(parseRelativePath("one.bin"))
        other = self.makeStore()
        staged = self.openUpload(parseRelativePath("two.bin"), store=other)
        self.assertEqual(staged.offset, 0)


class CompleteTests(FileStoreTestsMixin, SynchronousTestCase):
    """
    Moving finished uploads into place.
    """

    def stage(
        self, path: UploadPath, data: bytes, store: FileStore | None = None, sync: bool = False
    ) -> StagedFile:
        staged = self.openUpload(path, store=store, total=len(data))
        staged.writeChunks([data])
        if sync:
            staged.sync()
        return staged

    def test_completeCreatesParents(self) -> None:
        """
        C{complete} renames the data into place, creating missing folders,
        removes the upload's files and closes it.
        """
        path = parseRelativePath("new/deep/file.bin")
        staged = self.stage(path, b"content", sync=True)
        self.assertTrue(os.path.exists(self.infoFile(path)))
        self.assertFalse(self.store.complete(path, staged, False))
        self.assertTrue(staged.closed)
        self.assertEqual(self.readFile(self.root, "new", "deep", "file.bin"), b"content")
        self.assertEqual(self.uploadsEntries(), [])
        self.assertEqual(self.store.inspect(path), Stored(completeSize=7))

    def test_completeRefusesExisting(self) -> None:
        """
        Without overwrite, an existing file is a 409 and stays as it was; the
        staged (synced) upload is kept and still reads as incomplete.
        """
        path = parseRelativePath("f.bin")
        with open(os.path.join(self.root, "f.bin"), "wb") as f:
            f.write(b"old")
        staged = self.stage(path, b"new data", sync=True)
        error = self.assertRaises(Conflict, self.store.complete, path, staged, False)
        self.assertEqual(error.status, 409)
        self.assertEqual(self.readFile(self.root, "f.bin"), b"old")
        self.assertEqual(self.readFile(self.dataFile(path)), b"new data")
        self.assertEqual(
            self.store.inspect(path),
            Stored(offset=8, total=8, incomplete=True, completeSize=3),
        )

    def test_completeReplaces(self) -> None:
        """
        With overwrite, an existing file is replaced and C{complete} says so.
        """
        path = parseRelativePath("f.bin")
        with open(os.path.join(self.root, "f.bin"), "wb") as f:
            f.write(b"old")
        staged = self.stage(path, b"new data")
        self.assertTrue(self.store.complete(path, staged, True))
        self.assertEqual(self.readFile(self.root, "f.bin"), b"new data")

    def test_completeOntoFolder(self) -> None:
        """
        A folder at the destination is a 409, with or without overwrite.
        """
        path = parseRelativePath("d")
        staged = self.stage(path, b"x")
        os.makedirs(os.path.join(self.root, "d"))
        self.assertRaises(Conflict, self.store.complete, path, staged, True)
        self.assertTrue(os.path.isdir(os.path.join(self.root, "d")))

    def test_hashComplete(self) -> None:
        """
        C{hashComplete} digests the file at the destination.
        """
        path = parseRelativePath("h/f.bin")
        staged = self.stage(path, b"complete bytes")
        self.store.complete(path, staged, False)
        self.assertEqual(
            self.store.hashComplete(path, ["sha-256"]),
            {"sha-256": hashlib.sha256(b"complete bytes").digest()},
        )

    def test_deleteComplete(self) -> None:
        """
        C{deleteComplete} removes a complete file once.
        """
        path = parseRelativePath("del/f.bin")
        staged = self.stage(path, b"x")
        self.store.complete(path, staged, False)
        self.assertTrue(self.store.deleteComplete(path))
        self.assertFalse(os.path.lexists(os.path.join(self.root, "del", "f.bin")))
        self.assertFalse(self.store.deleteComplete(path))
        self.assertFalse(self.store.deleteComplete(parseRelativePath("nowhere/f.bin")))

    def test_deleteFolderRefused(self) -> None:
        """
        C{deleteComplete} of a folder is a 409, and the folder stays.
        """
        os.makedirs(os.path.join(self.root, "d"))
        self.assertRaises(Conflict, self.store.deleteComplete, parseRelativePath("d"))
        self.assertTrue(os.path.isdir(os.path.join(self.root, "d")))

    def test_completeSyncsNewFolders(self) -> None:
        """
        Completion makes every folder entry it created durable: the folders
        holding new folders are fsync'd as well as the file's folder.
        """
        synced: set[int] = set()
        realFsync = self.store.system.fsync

        def recordingFsync(fd: int) -> None:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                synced.add(st.st_ino)
            realFsync(fd)

        path = parseRelativePath("n1/n2/f.bin")
        staged = self.stage(path, b"durable")
        self.patch(self.store.system, "fsync", recordingFsync)
        self.store.complete(path, staged, False)
        folders = ["", "n1", "n1/n2"]
        unsynced = [
            name for name in folders
            if os.stat(os.path.join(self.root, name)).st_ino not in synced
        ]
        self.assertEqual(unsynced, [], "folders not fsync'd after their entries changed")


class LinkTests(FileStoreTestsMixin, SynchronousTestCase):
    """
    The server never follows a symbolic link inside the root.
    """

    def test_inspectFolderLink(self) -> None:
        """
        C{inspect} of a path through a linked folder is a 403.
        """
        os.symlink(self.outside, os.path.join(self.root, "link"))
        with open(os.path.join(self.outside, "f.bin"), "wb") as f:
            f.write(b"secret")
        error = self.assertRaises(
            Forbidden, self.store.inspect, parseRelativePath("link/f.bin")
        )
        self.assertEqual(error.status, 403)

    def test_inspectDeepFolderLink(self) -> None:
        """
        A link deeper in the path is refused too.
        """
        os.makedirs(os.path.join(self.root, "a"))
        os.symlink(self.outside, os.path.join(self.root, "a", "b"))
        self.assertRaises(Forbidden, self.store.inspect, parseRelativePath("a/b/c/f.bin"))

    def test_inspectDanglingFolderLink(self) -> None:
        """
        A dangling link as a folder component is also a 403.
        """
        os.symlink(os.path.join(self.outside, "missing"), os.path.join(self.root, "dl"))
        self.assertRaises(Forbidden, self.store.inspect, parseRelativePath("dl/f.bin"))

    def test_inspectParentIsFile(self) -> None:
        """
        C{inspect} of a path whose parent is a file is a 409.
        """
        with open(os.path.join(self.root, "file"), "wb") as f:
            f.write(b"x")
        error = self.assertRaises(
            Conflict, self.store.inspect, parseRelativePath("file/f.bin")
        )
        self.assertEqual(error.status, 409)

    def test_completeParentIsFile(self) -> None:
        """
        C{complete} of a path whose parent became a file is a 409; the file
        stays and the staged data is kept.
        """
        path = parseRelativePath("p/f.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"data"])
        with open(os.path.join(self.root, "p"), "wb") as f:
            f.write(b"x")
        self.assertRaises(Conflict, self.store.complete, path, staged, True)
        self.assertTrue(staged.closed)
        self.assertEqual(self.readFile(self.root, "p"), b"x")
        self.assertEqual(self.readFile(self.dataFile(path)), b"data")

    def test_linkPlantedAfterOpen(self) -> None:
        """
        A folder link planted after the upload was opened makes C{complete}
        a 403, and nothing is written outside the root.
        """
        path = parseRelativePath("dir/f.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"payload"])
        os.symlink(self.outside, os.path.join(self.root, "dir"))
        error = self.assertRaises(Forbidden, self.store.complete, path, staged, True)
        self.assertEqual(error.status, 403)
        self.assertTrue(staged.closed)
        self.assertEqual(self.outsideEntries(), [])
        self.assertEqual(self.readFile(self.dataFile(path)), b"payload")

    def test_folderSwappedForLink(self) -> None:
        """
        A real folder swapped for a link after C{inspect} makes C{complete} a
        403, and nothing is written outside the root.
        """
        os.makedirs(os.path.join(self.root, "a", "b"))
        path = parseRelativePath("a/b/f.bin")
        self.assertEqual(self.store.inspect(path), Stored())
        staged = self.openUpload(path)
        staged.writeChunks([b"payload"])
        os.rmdir(os.path.join(self.root, "a", "b"))
        os.symlink(self.outside, os.path.join(self.root, "a", "b"))
        self.assertRaises(Forbidden, self.store.complete, path, staged, False)
        self.assertEqual(self.outsideEntries(), [])

    def test_destinationLinkRefused(self) -> None:
        """
        A link at the destination counts as an existing entry: 409 without
        overwrite, and its target is untouched.
        """
        target = os.path.join(self.outside, "target")
        with open(target, "wb") as f:
            f.write(b"target")
        os.symlink(target, os.path.join(self.root, "f.bin"))
        path = parseRelativePath("f.bin")
        self.assertIsNotNone(self.store.inspect(path).completeSize)
        staged = self.openUpload(path)
        staged.writeChunks([b"payload"])
        self.assertRaises(Conflict, self.store.complete, path, staged, False)
        self.assertTrue(os.path.islink(os.path.join(self.root, "f.bin")))
        self.assertEqual(self.readFile(target), b"target")

    def test_destinationLinkReplaced(self) -> None:
        """
        With overwrite on, a link at the destination is itself replaced by
        the file; its target is untouched.
        """
        target = os.path.join(self.outside, "target")
        with open(target, "wb") as f:
            f.write(b"target")
        dest = os.path.join(self.root, "f.bin")
        os.symlink(target, dest)
        path = parseRelativePath("f.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"payload"])
        self.assertTrue(self.store.complete(path, staged, True))
        self.assertFalse(os.path.islink(dest))
        self.assertEqual(self.readFile(dest), b"payload")
        self.assertEqual(self.readFile(target), b"target")
        self.assertEqual(self.outsideEntries(), ["target"])

    def test_hashCompleteRefusesLink(self) -> None:
        """
        C{hashComplete} does not follow a link at the destination: a 409.
        """
        target = os.path.join(self.outside, "target")
        with open(target, "wb") as f:
            f.write(b"target")
        os.symlink(target, os.path.join(self.root, "f.bin"))
        self.assertRaises(Conflict, self.store.hashComplete, parseRelativePath("f.bin"), ["sha-256"])

    def test_deleteThroughLinkRefused(self) -> None:
        """
        C{deleteComplete} through a linked folder is a 403 and removes
        nothing outside the root.
        """
        with open(os.path.join(self.outside, "f.bin"), "wb") as f:
            f.write(b"secret")
        os.symlink(self.outside, os.path.join(self.root, "link"))
        self.assertRaises(Forbidden, self.store.deleteComplete, parseRelativePath("link/f.bin"))
        self.assertEqual(self.outsideEntries(), ["f.bin"])


class LazyMetadataTests(FileStoreTestsMixin, SynchronousTestCase):
    """
    C{<key>.json} is written when a request ends without completing the
    upload, not when it begins; an upload exists as soon as its data file
    does.
    """

    def test_layout(self) -> None:
        """
        An upload's files are C{uploads/<last two hex digits of its
        key>/<key>.data} and C{.json}, its lock is a byte of the one
        C{.uploadsvc/lock} file, and no per-upload lock file is made.
        """
        path = parseRelativePath("lay/out.bin")
        key = FileStore.keyFor(path)
        staged = self.openUpload(path, total=3)
        staged.writeChunks([b"abc"])
        staged.sync()
        shard = os.path.join(self.uploadsDir(), shardOf(key))
        self.assertEqual(sorted(os.listdir(shard)), [key + ".data", key + ".json"])
        self.assertEqual(self.uploadsEntries(), [key + ".data", key + ".json"])
        state = os.path.join(self.root, STATE_DIR)
        self.assertTrue(os.path.isfile(os.path.join(state, "lock")))
        files = [
            os.path.relpath(os.path.join(d, name), state)
            for d, _, names in os.walk(state) for name in names
        ]
        self.assertEqual(
            sorted(files),
            sorted(["lock", os.path.join("uploads", shardOf(key), key + ".data"),
                    os.path.join("uploads", shardOf(key), key + ".json")]),
        )

    def recordReplaces(self) -> list[str]:
        """
        Record the destination of every C{os.replace} (how metadata is put
        in place) while calling through.
        """
        replaced: list[str] = []
        realReplace = self.store.system.replace

        def recordingReplace(src: str, dst: str, *a: Any, **kw: Any) -> None:
            replaced.append(os.path.basename(dst))
            realReplace(src, dst, *a, **kw)

        self.patch(self.store.system, "replace", recordingReplace)
        return replaced

    def test_freshCompleteWritesNoInfo(self) -> None:
        """
        An upload that begins, is written and completes without a sync never
        creates its C{.json}.
        """
        replaced = self.recordReplaces()
        path = parseRelativePath("once/f.bin")
        staged = self.openUpload(path, total=4, digests={"sha-256": d256("d")})
        key = FileStore.keyFor(path)
        self.assertEqual(self.uploadsEntries(), [key + ".data"])
        staged.writeChunks([b"once"])
        self.assertEqual(self.uploadsEntries(), [key + ".data"])
        self.assertFalse(self.store.complete(path, staged, False))
        self.assertEqual(self.readFile(self.root, "once", "f.bin"), b"once")
        self.assertEqual(self.uploadsEntries(), [])
        self.assertEqual(replaced, [])

    def test_syncWritesDurableInfo(self) -> None:
        """
        C{sync} of an incomplete upload fsyncs its data, writes its C{.json}
        (path and total), fsyncs that file and its folder; a second
        sync with nothing new does not rewrite it.
        """
        synced: set[int] = set()
        realFsync = self.store.system.fsync

        def recordingFsync(fd: int) -> None:
            synced.add(os.fstat(fd).st_ino)
            realFsync(fd)

        self.patch(self.store.system, "fsync", recordingFsync)
        replaced = self.recordReplaces()
        path = parseRelativePath("d/inc.bin")
        staged = self.openUpload(path, total=10)
        staged.writeChunks([b"12345"])
        self.assertFalse(os.path.exists(self.infoFile(path)))
        self.assertEqual(staged.sync(), 5)
        info = self.readInfo(path)
        self.assertEqual((info["path"], info["total"]), ("d/inc.bin", 10))
        missing = [
            name for name, p in [
                ("data", self.dataFile(path)),
                ("json", self.infoFile(path)),
                ("its folder", self.shardDir(path)),
            ]
            if os.stat(p).st_ino not in synced
        ]
        self.assertEqual(missing, [], "not fsync'd after sync()")
        self.assertEqual(replaced, [FileStore.keyFor(path) + ".json"])
        staged.writeChunks([b"67"])
        self.assertEqual(staged.sync(), 7)
        self.assertEqual(replaced, [FileStore.keyFor(path) + ".json"])
        self.assertEqual(
            self.makeStore().inspect(path), Stored(offset=7, total=10, incomplete=True)
        )

    def test_syncAndCloseIncomplete(self) -> None:
        """
        C{syncAndClose} returns the durable offset, writes the C{.json} and
        lets go of the upload.
        """
        path = parseRelativePath("sc.bin")
        staged = self.openUpload(path, digests={"sha-256": d256("AAAA")})
        staged.writeChunks([b"abc"])
        self.assertEqual(staged.syncAndClose(), 3)
        self.assertTrue(staged.closed)
        self.assertEqual(self.readInfo(path)["digests"], {"sha-256": d256("AAAA")})
        other = self.makeStore()
        self.assertEqual(self.openUpload(path, store=other).offset, 3)

    def test_dataWithoutInfo(self) -> None:
        """
        An upload closed without a sync (a crash during its first request)
        has no C{.json}: it reads as incomplete at its data file's size with
        the total not known, and the next writer resumes it there.
        """
        path = parseRelativePath("first.bin")
        staged = self.openUpload(path, total=9, digests={"sha-256": d256("d")})
        staged.writeChunks([b"unacked"])
        staged.close()
        self.assertEqual(self.readFile(self.dataFile(path)), b"unacked")
        self.assertFalse(os.path.exists(self.infoFile(path)))
        again = self.makeStore()
        self.assertEqual(again.inspect(path), Stored(offset=7, incomplete=True))
        stored, plan, nextWriter = self.beginUpload(path, store=again, total=9)
        self.assertEqual(stored, Stored(offset=7, incomplete=True))
        self.assertEqual(nextWriter.offset, 7)
        self.assertIsNone(nextWriter.hasher)
        nextWriter.writeChunks([b"ok"])
        self.assertEqual(nextWriter.syncAndClose(), 9)
        self.assertEqual(self.readFile(self.dataFile(path)), b"unackedok")
        self.assertEqual(again.inspect(path), Stored(offset=9, total=9, incomplete=True))

    def test_strayDataFile(self) -> None:
        """
        A data file on disk without metadata reads as an incomplete upload of
        unknown total to a new store.
        """
        path = parseRelativePath("stray.bin")
        os.makedirs(self.shardDir(path), exist_ok=True)
        with open(self.dataFile(path), "wb") as f:
            f.write(b"crashed")
        self.assertEqual(self.makeStore().inspect(path), Stored(offset=7, incomplete=True))

    def test_recordDataOnly(self) -> None:
        """
        C{record} for an upload that has a data file but no C{.json} yet
        writes one with the path, total and digests.
        """
        path = parseRelativePath("rec.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"abc"])
        staged.close()
        self.store.record(path, 10, {"sha-256": d256("r")})
        info = self.readInfo(path)
        self.assertEqual(
            (info["path"], info["total"], info["digests"]), ("rec.bin", 10, {"sha-256": d256("r")})
        )
        self.assertEqual(
            self.store.inspect(path),
            Stored(offset=3, total=10, incomplete=True, digests={"sha-256": d256("r")}),
        )

    def test_inspectDataOnlyDurable(self) -> None:
        """
        C{inspect} reporting the offset of an upload that has no C{.json}
        (its data file made by a request that crashed) makes that offset
        durable: the data file and the folder entry naming it are fsync'd.
        """
        path = parseRelativePath("dur.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"abc"])
        staged.close()
        synced: set[int] = set()
        realFsync = self.store.system.fsync

        def recordingFsync(fd: int) -> None:
            synced.add(os.fstat(fd).st_ino)
            realFsync(fd)

        self.patch(self.store.system, "fsync", recordingFsync)
        self.assertEqual(self.store.inspect(path, durable=True).offset, 3)
        missing = [
            name for name, p in [
                ("data", self.dataFile(path)), ("its folder", self.shardDir(path))
            ]
            if os.stat(p).st_ino not in synced
        ]
        self.assertEqual(missing, [], "not fsync'd before reporting the offset")

    def test_staleInfoAfterCompletionCrash(self) -> None:
        """
        A C{.json} left behind by a completion that crashed before removing
        it does not describe a new attempt at the path: an attempt that
        crashes before its first sync reads as an upload of unknown total
        with no digests, not the old ones.
        """
        path = parseRelativePath("crash.bin")
        staged = self.openUpload(path, total=100, digests={"sha-256": d256("OLD")})
        staged.writeChunks([b"x" * 10])
        staged.sync()
        # The crash: the data was renamed into place, the .json not removed.
        os.rename(self.dataFile(path), os.path.join(self.root, "crash.bin"))
        staged.close()
        self.assertEqual(self.store.inspect(path), Stored(completeSize=10))
        attempt = self.openUpload(path, startOver=True)
        attempt.writeChunks([b"new"])
        # Crash again before the attempt reports an offset.
        self.assertEqual(
            self.makeStore().inspect(path),
            Stored(offset=3, incomplete=True, completeSize=10),
        )


class RollbackDiscardTests(FileStoreTestsMixin, SynchronousTestCase):
    """
    Undoing a request's bytes (C{rollback}) or the whole upload
    (C{discard}).
    """

    def test_rollback(self) -> None:
        """
        C{rollback} cuts the staged file back to the offset and the next
        write continues from there.
        """
        path = parseRelativePath("rb.bin")
        staged = self.openUpload(path, total=5)
        staged.writeChunks([b"abc"])
        staged.sync()
        staged.writeChunks([b"WRONG"])
        self.store.rollback(staged, 3)
        self.assertEqual(staged.offset, 3)
        self.assertEqual(os.path.getsize(self.dataFile(path)), 3)
        self.assertFalse(staged.closed)
        staged.writeChunks([b"de"])
        self.assertEqual(staged.syncAndClose(), 5)
        self.assertEqual(self.readFile(self.dataFile(path)), b"abcde")
        self.assertEqual(self.store.inspect(path), Stored(offset=5, total=5, incomplete=True))

    def test_rollbackToZero(self) -> None:
        """
        C{rollback} to 0 empties a fresh upload, which stays held.
        """
        path = parseRelativePath("rb0.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"bad"])
        self.store.rollback(staged, 0)
        self.assertEqual((staged.offset, os.path.getsize(self.dataFile(path))), (0, 0))
        other = self.makeStore()
        self.assertRaises(Busy, self.openUpload, path, store=other)

    def test_discard(self) -> None:
        """
        C{discard} removes an existing upload's data and metadata, closes it
        and lets go of its lock.
        """
        path = parseRelativePath("dc.bin")
        self.openUpload(path, total=6).syncAndClose()
        staged = self.openUpload(path)
        staged.writeChunks([b"abcdef"])
        self.store.discard(staged)
        self.assertTrue(staged.closed)
        self.assertEqual(self.uploadsEntries(), [])
        self.assertEqual(self.store.inspect(path), Stored())
        other = self.makeStore()
        self.assertEqual(self.openUpload(path, store=other).offset, 0)

    def test_discardFresh(self) -> None:
        """
        C{discard} of an upload that never synced removes its data file.
        """
        path = parseRelativePath("dcf.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"x"])
        self.store.discard(staged)
        self.assertTrue(staged.closed)
        self.assertEqual(self.uploadsEntries(), [])


class CancelLockTests(FileStoreTestsMixin, SynchronousTestCase):
    """
    C{cancel} takes the upload's lock.
    """

    def test_cancelBusy(self) -> None:
        """
        C{cancel} from another store while an upload is held is a 503 and
        leaves the upload as it was; once released, the cancel works.
        """
        path = parseRelativePath("cb.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"abcd"])
        staged.sync()
        other = self.makeStore()
        error = self.assertRaises(Busy, other.cancel, path)
        self.assertEqual((error.status, error.code), (503, "locked"))
        self.assertEqual(self.store.pendingTakeovers(), [])
        self.assertEqual(self.readFile(self.dataFile(path)), b"abcd")
        self.assertEqual(other.inspect(path).offset, 4)
        staged.close()
        self.assertTrue(other.cancel(path))
        self.assertEqual(self.uploadsEntries(), [])

    def test_cancelReleasesLock(self) -> None:
        """
        After C{cancel} (whether or not there was an upload) another store
        can begin the upload at once.
        """
        path = parseRelativePath("cr.bin")
        self.assertFalse(self.store.cancel(path))
        self.openUpload(path).syncAndClose()
        self.assertTrue(self.store.cancel(path))
        other = self.makeStore()
        self.assertEqual(self.openUpload(path, store=other).offset, 0)


class CompleteClosesTests(FileStoreTestsMixin, SynchronousTestCase):
    """
    C{complete} closes the staged file whatever happens.
    """

    def test_closedOnConflict(self) -> None:
        """
        When C{complete} raises L{Conflict}, the staged file is closed (its
        descriptor too) and its lock is free for another store.
        """
        path = parseRelativePath("cc.bin")
        with open(os.path.join(self.root, "cc.bin"), "wb") as f:
            f.write(b"old")
        staged = self.openUpload(path)
        staged.writeChunks([b"new"])
        staged.sync()
        fd = staged.fd
        self.assertRaises(Conflict, self.store.complete, path, staged, False)
        self.assertTrue(staged.closed)
        error = self.assertRaises(OSError, os.fstat, fd)
        self.assertEqual(error.errno, errno.EBADF)
        other = self.makeStore()
        self.assertEqual(self.openUpload(path, store=other).offset, 3)

    def test_closedOnSuccess(self) -> None:
        """
        A successful C{complete} closes the staged file and lets go of its
        lock.
        """
        path = parseRelativePath("cs.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"ok"])
        self.store.complete(path, staged, False)
        self.assertTrue(staged.closed)
        other = self.makeStore()
        self.assertEqual(self.openUpload(path, store=other).offset, 0)


class QueryLockTests(FileStoreTestsMixin, SynchronousTestCase):
    """
    A status query (C{record}) takes only the upload's state lock: it never
    drops, waits for or ends the writer's lock, and it is serialized with
    other queries and with the writer's metadata.
    """

    def test_queryKeepsWriterLock(self) -> None:
        """
        A status query in the writer's own store leaves the writer's lock
        held: another store (another process) still cannot take the upload,
        and no takeover request is left for the writer.
        """
        path = parseRelativePath("q/held.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"x" * 1000])
        stored = self.store.record(path, 2000, {})
        self.assertEqual(self.store.pendingTakeovers(), [])
        other = self.makeStore()
        self.assertRaises(Busy, self.openUpload, path, store=other)
        self.assertEqual(stored, Stored(offset=1000, total=2000, incomplete=True))
        staged.close()
        self.assertEqual(self.openUpload(path, store=other).offset, 1000)

    def test_failedCloseReleasesLock(self) -> None:
        """
        A close of the data file that fails (NFS reports deferred write
        errors there) still lets go of the upload's lock.
        """
        path = parseRelativePath("q/close.bin")
        staged = self.openUpload(path)
        os.close(staged.fd)  # the close below fails with EBADF
        self.assertRaises(OSError, staged.close)
        other = self.makeStore()
        self.assertEqual(self.openUpload(path, store=other).offset, 0)

    def test_queryFromOtherProcess(self) -> None:
        """
        A status query in another store (another process) while a writer
        holds the upload is answered at once with the durable offset,
        records its total, asks the writer for nothing, and leaves it
        holding the upload.
        """
        path = parseRelativePath("q/elsewhere.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"x" * 10])
        other = self.makeStore()
        stored = other.record(path, 20, {})
        self.assertEqual(other.pendingTakeovers(), [])
        self.assertRaises(Busy, self.openUpload, path, store=other)
        self.assertEqual(stored, Stored(offset=10, total=20, incomplete=True))
        staged.writeChunks([b"y" * 10])
        staged.sync()
        self.assertEqual(self.readInfo(path)["total"], 20)

    def test_queryDecidesUnderLock(self) -> None:
        """
        C{record} hands the decision what is stored and records nothing when
        it refuses.
        """
        path = parseRelativePath("q/refused.bin")
        self.openUpload(path).writeChunks([b"abc"])
        seen: list[Stored] = []

        def refuse(stored: Stored) -> Stored:
            seen.append(stored)
            raise Conflict("length-below-offset", "no")

        self.assertRaises(Conflict, self.store.record, path, 2, {}, refuse)
        self.assertEqual(seen, [Stored(offset=3, incomplete=True)])
        self.assertFalse(os.path.exists(self.infoFile(path)))

    def test_concurrentQueriesSerialized(self) -> None:
        """
        Two status queries on one upload in one store, at once: the second
        waits for the first to write the C{.json}, so neither loses what the
        other recorded.
        """
        path = parseRelativePath("q/two.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"abc"])
        staged.syncAndClose()
        realRead = self.store._readInfo
        paused, go = threading.Event(), threading.Event()

        def pausingRead(key: str) -> dict[str, Any] | None:
            info = realRead(key)
            if not paused.is_set():
                paused.set()
                go.wait(10)
            return info

        self.store._readInfo = pausingRead  # type: ignore[method-assign]
        errors: list[BaseException] = []

        def run(total: int | None, digests: dict[str, str]) -> None:
            try:
                self.store.record(path, total, digests)
            except BaseException as e:
                errors.append(e)

        first = threading.Thread(target=run, args=(100, {}))
        first.start()
        self.assertTrue(paused.wait(10))
        second = threading.Thread(target=run, args=(None, {"sha-256": d256("late")}))
        second.start()
        second.join(0.5)  # without the lock it would be done by now
        go.set()
        first.join(10)
        second.join(10)
        self.assertFalse(first.is_alive() or second.is_alive())
        self.assertEqual(errors, [])
        info = self.readInfo(path)
        self.assertEqual((info["total"], info["digests"]), (100, {"sha-256": d256("late")}))

    def test_writerKeepsQueryRecord(self) -> None:
        """
        What a status query recorded while a writer of unknown total ran
        survives the writer's sync (which keeps its own generation).
        """
        path = parseRelativePath("q/merge.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"abc"])
        self.store.record(path, 10, {"sha-256": d256("q")})
        staged.writeChunks([b"de"])
        staged.sync()
        info = self.readInfo(path)
        self.assertEqual((info["total"], info["digests"]), (10, {"sha-256": d256("q")}))
        self.assertEqual(info["generation"], staged.info["generation"])
        self.assertEqual(
            self.makeStore().inspect(path),
            Stored(offset=5, total=10, incomplete=True, digests={"sha-256": d256("q")}),
        )

    def test_writerDigestsOlderThanQuery(self) -> None:
        """
        A C{Repr-Digest} recorded by a query while a writer ran is newer than
        the one in the writer's headers, and wins (the latest sent wins).
        """
        path = parseRelativePath("q/latest.bin")
        staged = self.openUpload(path, total=10, digests={"sha-256": d256("writer")})
        staged.writeChunks([b"abc"])
        self.store.record(path, None, {"sha-256": d256("query")})
        staged.sync()
        info = self.readInfo(path)
        self.assertEqual((info["total"], info["digests"]), (10, {"sha-256": d256("query")}))

    def test_writerDropsTotalBelowOffset(self) -> None:
        """
        A total recorded while a writer of unknown total ran, which the
        writer then passed, is not kept: the upload can still finish.
        """
        path = parseRelativePath("q/passed.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"abc"])
        self.store.record(path, 4, {})
        staged.writeChunks([b"defg"])
        staged.sync()
        self.assertIsNone(self.readInfo(path).get("total"))
        self.assertEqual(self.store.inspect(path), Stored(offset=7, incomplete=True))


class RecoverTests(FileStoreTestsMixin, SynchronousTestCase):
    """
    C{recover} at service start finishes uploads left fully staged.
    """

    def stageFull(
        self, relative: str, data: bytes, total: int | None, digests: dict[str, str] | None = None
    ) -> UploadPath:
        """
        Leave C{data} staged for C{relative} as a crash after its last write
        would: synced, with a C{.json} when C{total} is given.
        """
        path = parseRelativePath(relative)
        staged = self.openUpload(path, total=total, digests=digests)
        staged.writeChunks([data])
        if total is not None:
            staged.sync()
        staged.close()
        return path

    def test_completesFullyStaged(self) -> None:
        """
        An upload whose recorded total is its staged size is moved into
        place, its recorded digest checked; nothing stays staged.
        """
        data = b"0123456789"
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        self.stageFull("r/full.bin", data, 10, {"sha-256": digest})
        self.assertEqual(self.store.recover(False), [("r/full.bin", "completed")])
        self.assertEqual(self.readFile(self.root, "r", "full.bin"), data)
        self.assertEqual(self.uploadsEntries(), [])

    def test_metadataOfCompletedRemoved(self) -> None:
        """
        The C{.json} that a completion killed between its rename and the
        removal of the metadata left (no data file, a file at the
        destination) is removed at start; the file stays as it is.
        """
        path = self.stageFull("r/done.bin", b"0123456789", 10)
        key = FileStore.keyFor(path)
        folder = self.shardDir(path)
        with open(os.path.join(folder, key + ".json"), "rb") as f:
            metadata = f.read()
        self.assertEqual(self.store.recover(False), [("r/done.bin", "completed")])
        with open(os.path.join(folder, key + ".json"), "wb") as f:
            f.write(metadata)  # as the killed completion left it
        done = self.store.recover(False)
        self.assertEqual([p for p, _ in done], ["r/done.bin"])
        self.assertEqual(self.uploadsEntries(), [])
        self.assertEqual(self.readFile(self.root, "r", "done.bin"), b"0123456789")

    def test_metadataWithoutFileKept(self) -> None:
        """
        A C{.json} with no data file and nothing at its destination is left
        as it is (not a completion's leftover).
        """
        path = self.stageFull("r/none.bin", b"01234", 10)
        key = FileStore.keyFor(path)
        os.unlink(os.path.join(self.shardDir(path), key + ".data"))
        self.assertEqual(self.store.recover(False), [])
        self.assertEqual(self.uploadsEntries(), [key + ".json"])

    def test_oldTempFilesRemoved(self) -> None:
        """
        Metadata temp files that a killed process left are removed at start
        once they are an hour old; a fresh one (a writer of another process
        may be about to rename it) and other files stay.
        """
        path = self.stageFull("r/t.bin", b"abc", None)
        folder = self.shardDir(path)
        key = FileStore.keyFor(path)
        old, fresh = f"{key}.json.0011223344556677.tmp", f"{key}.json.8899aabbccddeeff.tmp"
        for name in (old, fresh):
            with open(os.path.join(folder, name), "wb") as f:
                f.write(b"{")
        hourAgo = time.time() - 3700
        os.utime(os.path.join(folder, old), (hourAgo, hourAgo))
        self.store.recover(False)
        self.assertEqual(sorted(os.listdir(folder)), sorted([key + ".data", fresh]))

    def test_oneFailureRecoversTheRest(self) -> None:
        """
        An upload whose recovery fails unexpectedly is logged and left
        staged; every other fully staged upload is still completed.
        """
        self.stageFull("r/a.bin", b"aaaa", 4)
        self.stageFull("r/b.bin", b"bbbb", 4)
        broken = FileStore.keyFor(parseRelativePath("r/a.bin"))
        recoverOne = self.store._recoverOne

        def failOnce(key: str, allowOverwrite: bool) -> tuple[str, str] | None:
            if key == broken:
                raise ValueError("unexpected")
            return recoverOne(key, allowOverwrite)

        self.store._recoverOne = failOnce  # type: ignore[method-assign]
        self.assertEqual(self.store.recover(False), [("r/b.bin", "completed")])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(self.readFile(self.root, "r", "b.bin"), b"bbbb")
        self.assertEqual(self.uploadsEntries(), [broken + ".data", broken + ".json"])

    def test_digestMismatchDiscards(self) -> None:
        """
        A fully staged upload whose recorded C{Repr-Digest} does not match
        is discarded, as at completion.
        """
        digest = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
        self.stageFull("r/bad.bin", b"0123456789", 10, {"sha-256": digest})
        done = self.store.recover(False)
        self.assertEqual([p for p, _ in done], ["r/bad.bin"])
        self.assertIn("discarded", done[0][1])
        self.assertEqual(self.uploadsEntries(), [])
        self.assertFalse(os.path.exists(os.path.join(self.root, "r", "bad.bin")))

    def test_leavesOthers(self) -> None:
        """
        Uploads that are not fully staged, or whose total is not recorded,
        stay as they are.
        """
        short = self.stageFull("r/short.bin", b"01234", 10)
        unknown = self.stageFull("r/unknown.bin", b"01234", None)
        self.assertEqual(self.store.recover(False), [])
        self.assertEqual(self.store.inspect(short), Stored(offset=5, total=10, incomplete=True))
        self.assertEqual(self.store.inspect(unknown), Stored(offset=5, incomplete=True))

    def test_destinationTakenKept(self) -> None:
        """
        With overwrite off and a file at the destination, the fully staged
        upload stays staged (and is reported); with overwrite on it replaces
        the file.
        """
        path = self.stageFull("r/taken.bin", b"new", 3)
        os.makedirs(os.path.join(self.root, "r"))
        with open(os.path.join(self.root, "r", "taken.bin"), "wb") as f:
            f.write(b"old")
        done = self.store.recover(False)
        self.assertEqual([p for p, _ in done], ["r/taken.bin"])
        self.assertIn("left staged", done[0][1])
        self.assertEqual(self.store.inspect(path).offset, 3)
        self.assertEqual(self.store.recover(True), [("r/taken.bin", "completed")])
        self.assertEqual(self.readFile(self.root, "r", "taken.bin"), b"new")

    def test_heldUploadLeftToWriter(self) -> None:
        """
        A fully staged upload that a writer (of another store) holds is left
        to that writer, at once (no waiting, no takeover request).
        """
        path = self.stageFull("r/held.bin", b"abc", 3)
        other = self.makeStore()
        holder = self.openUpload(path, store=other)
        self.assertEqual(self.store.recover(False), [])
        self.assertEqual(self.store.pendingTakeovers(), [])
        holder.close()
        self.assertEqual(self.store.recover(False), [("r/held.bin", "completed")])

    def test_foreignInfoIgnored(self) -> None:
        """
        A C{.json} whose path does not belong to its key (tampered, or
        damaged) does not move anything anywhere.
        """
        path = self.stageFull("r/mine.bin", b"abc", 3)
        info = self.readInfo(path)
        info["path"] = "r/elsewhere.bin"
        with open(self.infoFile(path), "w") as f:
            json.dump(info, f)
        self.assertEqual(self.store.recover(False), [])
        self.assertFalse(os.path.exists(os.path.join(self.root, "r", "elsewhere.bin")))
        self.assertEqual(self.store.inspect(path).offset, 3)
