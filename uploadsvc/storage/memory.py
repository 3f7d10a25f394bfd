"""
Uploads and complete files in memory: the second store of the storage
contract (L{IUploadStore}, L{ITakeover}).

It keeps the same rules as the file store, one writer per upload, status
queries that wait for no writer, metadata that a writer merges with what
queries recorded meanwhile, completion that refuses a folder or an existing
file, so that one conformance suite runs against both. Nothing survives
the process, and nothing is ever waited for: an upload held by another
writer is refused at once (L{Busy}), as in a file store, and a writer that
wants it asks with L{MemoryStore.askTakeover} and tries again on the
reactor's clock. Calls are
serialized by one mutex, so the store may be used from a thread pool.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import attrs
from zope.interface import implementer

from uploadsvc.errors import BadRequest, Busy, Conflict, NotFound, StorageFault
from uploadsvc.protocol.decisions import AlreadyComplete, Plan, Stored
from uploadsvc.protocol.digests import digestAll
from uploadsvc.protocol.paths import UploadPath, parseRelativePath
from uploadsvc.storage.hashing import newStreamHasher, usableHashState, verifyStaged
from uploadsvc.storage.interfaces import (
    INCOMING, KEY, ICompleteFile, Incomplete, IStagedUpload, ITakeover, IUploadStore, Target,
    UploadId, newUploadId, uploadKey,
)
from uploadsvc.storage.metadata import createdInfo, newGeneration, newInfo
from uploadsvc.storage.staged import mergeInfo


@attrs.define(eq=False)
class _Upload:
    """
    One incomplete upload.

    @ivar info: its recorded metadata; L{None} until a request ended or a
        query recorded something (like a data file without its C{.json}).
    @ivar touched: when it last received a byte (or was made, or started
        over); recording metadata does not count (see L{Incomplete}).
    """

    path: UploadPath
    uploadId: UploadId | None
    data: bytearray
    info: dict[str, Any] | None
    touched: float


@implementer(IStagedUpload)
class MemoryStaged:
    """
    An upload opened for writing by one request; it holds the upload's
    writer slot until L{close}.
    """

    def __init__(
        self,
        store: MemoryStore,
        key: str,
        upload: _Upload,
        hasher: Any,
        info: dict[str, Any],
        infoDirty: bool,
        infoBase: dict[str, Any],
    ) -> None:
        self.store = store
        self.key = key
        self.upload = upload
        self.path = upload.path
        self.offset = len(upload.data)
        self.hasher = hasher
        self.info = info
        self.infoDirty = infoDirty
        self.infoBase = infoBase
        self.closed = False
        self.digests: dict[str, bytes] | None = None

    def writeChunks(self, chunks: Sequence[bytes | memoryview]) -> None:
        data = b"".join(chunks)
        with self.store._mutex:
            self.upload.data[self.offset : self.offset + len(data)] = data
            self.upload.touched = self.store._now()
        self.offset += len(data)

    def hashChunks(self, chunks: Sequence[bytes | memoryview]) -> None:
        for chunk in chunks:
            self.hasher.update(chunk)

    def sync(self) -> int:
        """
        Record the metadata (merged with what queries recorded meanwhile).
        """
        with self.store._mutex:
            self.store._checkAlive(self)
            if self.infoDirty:
                self.info = mergeInfo(self.info, self.infoBase, self.upload.info, self.offset)
                self.upload.info = dict(self.info)
                self.infoBase = dict(self.info)
                self.infoDirty = False
        return self.offset

    def syncAndClose(self) -> int:
        try:
            return self.sync()
        finally:
            self.close()

    def close(self) -> None:
        with self.store._mutex:
            if not self.closed:
                self.closed = True
                if self.store._writers.get(self.key) is self:
                    del self.store._writers[self.key]


@implementer(ICompleteFile)
class MemoryFile:
    """
    A complete file of a L{MemoryStore}, opened for a download.
    """

    def __init__(self, data: bytes, placed: tuple[float, int]) -> None:
        self._data: bytes | None = data
        self.size = len(data)
        self.modified = int(placed[0])
        # Files put in place by hand (tests write MemoryStore.files) have
        # no placing: their content tells them apart.
        self.version = "%x-%x-%s" % (
            placed[1], len(data), hashlib.sha256(data).hexdigest()[:16]
        )

    def read(self, offset: int, length: int) -> bytes:
        if self._data is None:
            raise ValueError("read from a closed file")
        return self._data[offset : offset + length]

    def close(self) -> None:
        self._data = None


@implementer(IUploadStore, ITakeover)
class MemoryStore:
    """
    Staged uploads and complete files in dicts.

    @ivar files: complete files, relative path to bytes.
    """

    def __init__(
        self, capacity: int = 1 << 40, now: Callable[[], float] = time.time
    ) -> None:
        """
        @param capacity: bytes it may hold (what L{freeBytes} counts down).
        @param now: the clock that dates changes (a test's
            L{twisted.internet.task.Clock.seconds}).
        """
        self.capacity = capacity
        self._now = now
        self._mutex = threading.RLock()
        self._uploads: dict[str, _Upload] = {}
        self._writers: dict[str, MemoryStaged] = {}
        self._markers: set[str] = set()
        self.files: dict[str, bytes] = {}
        #: When each complete file was put in place, and a count that
        #: tells one placing from another (see L{openComplete}).
        self._placed: dict[str, tuple[float, int]] = {}
        self._placings = 0

    @staticmethod
    def keyFor(target: Target) -> str:
        return uploadKey(target)

    def close(self) -> None:
        pass

    def _resolve(self, target: Target) -> tuple[str, UploadPath]:
        key = uploadKey(target)
        if isinstance(target, UploadPath):
            return key, target
        upload = self._uploads.get(key)
        if upload is None:
            raise NotFound("no-upload", "there is no such upload")
        return key, upload.path

    def _destination(self, path: UploadPath) -> int | None:
        """
        The size of the complete file at C{path}, if any.

        @raise Conflict: a parent is a file, or C{path} is a folder.
        """
        for end in range(1, len(path.components)):
            name = "/".join(path.components[:end])
            if name in self.files:
                raise Conflict(
                    "parent-is-file", f"{path.components[end - 1]!r} is a file, not a folder"
                )
        inside = path.relative + "/"
        if any(other.startswith(inside) for other in self.files):
            raise Conflict("is-folder", f"{path.relative!r} is a folder")
        found = self.files.get(path.relative)
        return None if found is None else len(found)

    def _stored(self, key: str, path: UploadPath) -> Stored:
        completeSize = self._destination(path)
        upload = self._uploads.get(key)
        if upload is None:
            return Stored(completeSize=completeSize)
        info = upload.info or {}
        return Stored(
            offset=len(upload.data),
            total=info.get("total"),
            incomplete=True,
            digests=dict(info.get("digests", {})),
            completeSize=completeSize,
        )

    def _checkAlive(self, staged: MemoryStaged) -> None:
        if self._uploads.get(staged.key) is not staged.upload:
            raise StorageFault(
                "staged-gone", "the staged upload was removed from the server's disk",
                f"the upload {staged.key} was removed while being written",
            )

    def create(
        self,
        path: UploadPath | None,
        total: int | None = None,
        attributes: Mapping[str, str] | None = None,
        partial: bool = False,
        uploadId: UploadId | None = None,
    ) -> UploadId:
        with self._mutex:
            if uploadId is None:
                uploadId = newUploadId()
            if path is None:
                path = parseRelativePath(f"{INCOMING}/{uploadId.value}")
            self._destination(path)
            key = uploadKey(uploadId)
            if key in self._uploads:
                raise Conflict("id-taken", "an upload with this id exists")
            now = self._now()
            info = createdInfo(path, key, total, attributes, partial, now)
            self._uploads[key] = _Upload(path, uploadId, bytearray(), info, now)
            return uploadId

    def describe(self, target: UploadId) -> Incomplete:
        with self._mutex:
            key, path = self._resolve(target)
            return self._listed(key, self._uploads[key])

    def _listed(self, key: str, upload: _Upload) -> Incomplete:
        info = upload.info or {}
        return Incomplete(
            key=key,
            path=upload.path.relative,
            uploadId=upload.uploadId,
            offset=len(upload.data),
            total=info.get("total"),
            touched=upload.touched,
            attributes=dict(info.get("attributes", {})),
            partial=bool(info.get("partial")),
        )

    def concatenate(self, final: UploadId, parts: Sequence[UploadId]) -> int:
        with self._mutex:
            finalKey, _ = self._resolve(final)
            keys = [finalKey]
            for part in parts:
                key, _ = self._resolve(part)
                upload = self._uploads[key]
                info = upload.info or {}
                if not info.get("partial"):
                    raise BadRequest("bad-concat", "Upload-Concat names an upload that is not partial")
                if info.get("total") != len(upload.data):
                    raise BadRequest("bad-concat", "Upload-Concat names a partial upload not complete")
                keys.append(key)
            if any(key in self._writers for key in keys):
                raise Busy("locked", "the upload is being written by another request")
            target = self._uploads[finalKey]
            target.data = bytearray(b"".join(self._uploads[key].data for key in keys[1:]))
            target.info = {**(target.info or {}), "total": len(target.data)}
            target.touched = self._now()
            return len(target.data)

    def inspect(self, target: Target, durable: bool = True, strict: bool = False) -> Stored:
        with self._mutex:
            return self._stored(*self._resolve(target))

    def begin(
        self,
        target: Target,
        decide: Callable[[Stored], Plan | AlreadyComplete],
        digests: dict[str, str],
        hashState: tuple[str, int, Any] | None,
    ) -> tuple[Stored, Plan | AlreadyComplete, MemoryStaged | None]:
        """
        As L{IUploadStore.begin}: a held upload is refused at once.
        """
        with self._mutex:
            key, path = self._resolve(target)
            if key in self._writers:
                raise Busy("locked", "the upload is being written by another request")
            self._markers.discard(key)
            stored = self._stored(key, path)
            plan = decide(stored)
            if isinstance(plan, AlreadyComplete):
                return stored, plan, None
            staged = self._open(key, path, target, plan, digests, hashState)
            self._writers[key] = staged
            return stored, plan, staged

    def _open(
        self,
        key: str,
        path: UploadPath,
        target: Target,
        plan: Plan,
        digests: dict[str, str],
        hashState: tuple[str, int, Any] | None,
    ) -> MemoryStaged:
        upload = self._uploads.get(key)
        now = self._now()
        info = None
        if not plan.startOver and upload is not None and upload.info is not None:
            info = dict(upload.info)
        base = dict(info) if info is not None else {}
        dirty = info is None
        if info is None:
            info = newInfo(path, key, now)
        elif not isinstance(info.get("generation"), str):
            info["generation"] = newGeneration()
            dirty = True
        if plan.total is not None and info.get("total") != plan.total:
            info["total"] = plan.total
            dirty = True
        if digests:
            info["digests"] = {**info.get("digests", {}), **digests}
            dirty = True
        if upload is None:
            uploadId = target if isinstance(target, UploadId) else None
            upload = self._uploads[key] = _Upload(path, uploadId, bytearray(), None, now)
        if plan.startOver:
            upload.info = None
            del upload.data[:]
            upload.touched = now
        offset = len(upload.data)
        hasher = None
        if offset == 0:
            hasher = newStreamHasher()
        elif usableHashState(hashState, base, offset):
            assert hashState is not None
            hasher = hashState[2]
        return MemoryStaged(self, key, upload, hasher, info, dirty, base)

    def record(
        self,
        target: Target,
        total: int | None,
        digests: dict[str, str],
        decide: Callable[[Stored], Stored] | None = None,
    ) -> Stored:
        with self._mutex:
            key, path = self._resolve(target)
            stored = self._stored(key, path)
            if decide is not None:
                stored = decide(stored)
            if not stored.incomplete or (total is None and not digests):
                return stored
            upload = self._uploads[key]
            info = upload.info
            info = dict(info) if info is not None else newInfo(path, key, self._now())
            if total is not None:
                info["total"] = total
            if digests:
                info["digests"] = {**info.get("digests", {}), **digests}
            upload.info = info
            return attrs.evolve(
                stored, total=info.get("total"), digests=dict(info.get("digests", {}))
            )

    def rollback(self, staged: MemoryStaged, offset: int) -> None:
        with self._mutex:
            del staged.upload.data[offset:]
            staged.upload.touched = self._now()
        staged.offset = offset

    def complete(
        self,
        target: Target,
        staged: MemoryStaged,
        allowOverwrite: bool,
        expected: dict[str, bytes] | None = None,
        streamed: dict[str, bytes] | None = None,
    ) -> bool:
        try:
            if expected is not None:
                try:
                    staged.digests = verifyStaged(staged, expected, self.hashStaged, streamed)
                except BadRequest:
                    self.discard(staged)
                    raise
            with self._mutex:
                self._checkAlive(staged)
                path = staged.path if isinstance(target, UploadId) else target
                existing = self._destination(path)
                if existing is not None and not allowOverwrite:
                    raise Conflict("exists", f"{path.relative!r} already exists")
                self.files[path.relative] = bytes(staged.upload.data)
                self._placings += 1
                self._placed[path.relative] = (self._now(), self._placings)
                del self._uploads[staged.key]
                return existing is not None
        finally:
            staged.close()

    def discard(self, staged: MemoryStaged) -> None:
        try:
            with self._mutex:
                if self._uploads.get(staged.key) is staged.upload:
                    del self._uploads[staged.key]
        finally:
            staged.close()

    def cancel(self, target: Target) -> bool:
        """
        As L{IUploadStore.cancel}; a held upload is refused at once.
        """
        with self._mutex:
            key, path = self._resolve(target)
            self._destination(path)
            if key in self._writers:
                raise Busy("locked", "the upload is being written by another request")
            return self._uploads.pop(key, None) is not None

    def listIncomplete(self) -> list[Incomplete]:
        with self._mutex:
            return [self._listed(key, upload) for key, upload in sorted(self._uploads.items())]

    def expire(self, key: str, idleSeconds: float, now: float | None = None) -> bool:
        if KEY.fullmatch(key) is None:
            raise ValueError(f"not an upload key: {key!r}")
        with self._mutex:
            if now is None:
                now = self._now()
            upload = self._uploads.get(key)
            if upload is None or key in self._writers or now - upload.touched < idleSeconds:
                return False
            del self._uploads[key]
            return True

    def touchedAt(self, target: Target) -> float | None:
        with self._mutex:
            key, _ = self._resolve(target)
            upload = self._uploads.get(key)
            return None if upload is None else upload.touched

    def hashStaged(self, staged: MemoryStaged, algorithms: Iterable[str]) -> dict[str, bytes]:
        with self._mutex:
            data = bytes(staged.upload.data)
        return digestAll(algorithms, [data])

    def hashComplete(self, path: UploadPath, algorithms: Iterable[str]) -> dict[str, bytes]:
        with self._mutex:
            data = self.files.get(path.relative)
        if data is None:
            raise FileNotFoundError(path.relative)
        return digestAll(algorithms, [data])

    def openComplete(self, path: UploadPath) -> MemoryFile:
        """
        A snapshot of the complete file at C{path}: later replacements do
        not change what it reads, as with an open file on disk.
        """
        with self._mutex:
            self._destination(path)
            data = self.files.get(path.relative)
            placed = self._placed.get(path.relative, (0.0, 0))
        if data is None:
            raise FileNotFoundError(path.relative)
        return MemoryFile(data, placed)

    def deleteComplete(self, path: UploadPath) -> bool:
        with self._mutex:
            self._destination(path)
            self._placed.pop(path.relative, None)
            return self.files.pop(path.relative, None) is not None

    def freeBytes(self) -> int:
        with self._mutex:
            used = sum(map(len, self.files.values()))
            used += sum(len(upload.data) for upload in self._uploads.values())
        return max(0, self.capacity - used)

    def recover(self, allowOverwrite: bool) -> list[tuple[str, str]]:
        """
        Finish the uploads whose recorded total is their staged size and
        that nobody holds (as L{FileStore.recover} does after a restart).
        """
        done = []
        with self._mutex:
            candidates = [
                (key, upload) for key, upload in sorted(self._uploads.items())
                if key not in self._writers and upload.info is not None
                and upload.info.get("total") == len(upload.data)
                and not upload.info.get("partial")
            ]
            staged = []
            for key, upload in candidates:
                info = dict(upload.info or {})
                one = MemoryStaged(self, key, upload, None, info, False, dict(info))
                self._writers[key] = one
                staged.append(one)
        for one in staged:
            wanted = {
                alg: base64.b64decode(value)
                for alg, value in dict(one.info.get("digests", {})).items()
            }
            try:
                self.complete(one.path, one, allowOverwrite, wanted)
            except BadRequest:
                done.append((one.path.relative, "discarded: its Repr-Digest does not match"))
            except (Conflict, StorageFault) as e:
                done.append((one.path.relative, f"left staged: {e.reason}"))
            else:
                done.append((one.path.relative, "completed"))
        return done

    def askTakeover(self, key: str) -> None:
        with self._mutex:
            self._markers.add(key)

    def dropTakeover(self, key: str) -> None:
        with self._mutex:
            self._markers.discard(key)

    def pendingTakeovers(self) -> list[str]:
        with self._mutex:
            return sorted(self._markers)

    def holdsCurrentLock(self, staged: MemoryStaged) -> bool:
        return True
