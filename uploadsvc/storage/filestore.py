"""
Uploads staged on disk under the root's reserved C{.uploadsvc} folder: the
file store of the storage contract (L{uploadsvc.storage.interfaces}).

Layout (C{<key>} names one upload: C{p-<sha256 of the path>} for
path-addressed uploads, C{i-<id>} for those made by L{FileStore.create}
with a server-assigned id, whose C{.json} names the destination from the
start; C{<xx>} is two hex digits of the key's CRC-32, which spreads the
files over 256 folders (made as needed) so that concurrent uploads do not
queue on one folder's lock)::

    <root>/.uploadsvc/uploads/<xx>/<key>.data   the bytes received so far
    <root>/.uploadsvc/uploads/<xx>/<key>.json   total, digests, path, generation
    <root>/.uploadsvc/lock                      a writer and a state lock byte per upload
    <root>/.uploadsvc/takeover/<key>            a writer elsewhere asks the holder to let go

The offset of an upload is the size of its data file (as in tusd), so there
is nothing to rewrite per chunk, and an upload exists as soon as its data file
does. Its C{.json} holds what the headers told (total, C{Repr-Digest}s); it is
written only when a request ends without completing the upload, atomically
(temp file, fsync, rename, folder fsync) and before the offset is reported,
so an upload that completes in one request never writes it. A data file
without one (a crash during the first request) is an upload whose total is
not known yet. Completion renames the data file onto the destination, walked
without following links, then fsyncs the folder. After a restart, C{kill -9}
included, the folder is the whole state. Every file and folder under
C{.uploadsvc} is reached through L{uploadsvc.storage.statedir}, never through
a link planted there.

Two locks per upload (L{uploadsvc.storage.locks}, taken in
L{uploadsvc.storage.takeover}; the writer lock is never waited for here,
the state lock only briefly): its writer holds the writer lock for the
whole request; everything that reads and rewrites the C{.json}, or starts
over, cancels or renames the data file, holds the state lock for that
moment. Status queries take only the state lock. The
generation in the C{.json} is random, new whenever the bytes start over; it
tells whether a hash state kept in memory still describes the bytes (see
L{uploadsvc.storage.hashing.usableHashState}).

The staged file a request writes is L{uploadsvc.storage.staged}; digests
of staged and complete files come from L{uploadsvc.storage.hashing}.
Everything here blocks: the web layer calls it through the disk thread pool.
"""

from __future__ import annotations

import base64
import errno
import functools
import os
import stat
import threading
import time
import zlib
from contextlib import AbstractContextManager
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from uploadsvc.errors import (
    BadRequest, Busy, Conflict, NotFound, StorageFault, StorageUnavailable, UnsafeState,
    UploadError,
)
from uploadsvc.protocol.decisions import AlreadyComplete, Plan, Stored
from uploadsvc.protocol.paths import UploadPath, parseRelativePath
from uploadsvc.storage import destination, statedir
from uploadsvc.storage.hashing import hashFD, newStreamHasher, usableHashState, verifyStaged
from uploadsvc.storage.concat import copyAll
from uploadsvc.storage.freshness import (
    GONE, closeReader, dataSize, emptyFile, isLocalType, onFuse, rootMountType,
)
from uploadsvc.storage.interfaces import (
    INCOMING, KEY, Incomplete, ITakeover, IUploadStore, Target, UploadId, newUploadId,
    uploadKey,
)
from uploadsvc.storage.metadata import checkInfo, createdInfo, newGeneration, newInfo
from uploadsvc.storage.locks import HeldLock, RegionLocks, lockData
from uploadsvc.storage.staged import StagedFile, neverSplice
from uploadsvc.storage.takeover import stateLocked, takeWriterLock
from uploadsvc.storage.throttle import WriteThrottle
from uploadsvc.storage.safepath import (
    folderRemoved,
    fsyncFolder,
    lstatAt,
    openParent,
    openRoot,
    renameNoReplace,
)
from uploadsvc.storage.statedir import STATE_DIR, CorruptState, StateDir
from uploadsvc.storage.syscalls import SystemCalls

__all__ = ["STATE_DIR", "FileStore", "StagedFile", "isNoSpace"]

log = Logger()
#: Seconds between updates of the lock file's modification time while
#: uploads are written (see L{FileStore.pendingTakeovers}).
LOCK_TOUCH_INTERVAL = 60.0


@implementer(IUploadStore, ITakeover)
class FileStore:
    """
    Staged uploads and completed files under one root folder.

    @ivar fsync: when false, nothing is fsync'd (faster, not crash-safe).
    @ivar shared: state files are opened only when their folder lists them
        (a shared file system: see C{__init__}).
    @ivar system: makes the fsyncs and renames that durability rests on,
        and the pauses of a wait for a state lock.
    """

    def __init__(
        self,
        root: str,
        fsync: bool = True,
        throttle: WriteThrottle | None = None,
        system: SystemCalls | None = None,
        shared: bool | None = None,
    ) -> None:
        """
        @param throttle: slows every write down (benchmarks only).
        @param system: the system calls (a store's own by default).
        @param shared: whether other hosts may write the root (a shared
            file system): state files are then opened only when their
            folder lists them (see L{statedir.openFile}). L{None}: unless
            the root's mount type is a local file system's
            (L{isLocalType}), read once here.
        """
        self.system = system if system is not None else SystemCalls()
        self.root = os.path.abspath(root)
        self.fsync = fsync
        self.throttle = throttle
        self._state = os.path.join(self.root, STATE_DIR)
        os.makedirs(self.root, exist_ok=True)
        self._reopening = threading.Lock()
        self._retired: list[tuple[int, StateDir, RegionLocks]] = []
        self._lockTouched = float("-inf")
        #: Uploads whose state a sweep found unsafe (said once each).
        self._unsafeSeen: set[str] = set()
        #: Whether C{shared} was given, or is read from the root's mount
        #: type each time the root is opened (see L{_openRoot}).
        self._sharedGiven = shared is not None
        self.shared = bool(shared)
        self._openRoot()

    def _openRoot(self) -> None:
        """
        Open the root, its state folder (never through a link: see
        L{statedir}) and the lock file.
        """
        rootFD = openRoot(self.root)
        try:
            state = StateDir(rootFD, self.system)
            try:
                locks = RegionLocks(state.lockPath(os.path.join(self._state, "lock")))
            except BaseException:
                state.close()
                raise
        except BaseException:
            os.close(rootFD)
            raise
        st = os.fstat(rootFD)
        self._rootID = (st.st_dev, st.st_ino)
        self._rootFD, self._stateDir, self._locks = rootFD, state, locks
        # The mount type again at each opening: a root opened again may be
        # another mount (a share mounted over it after the start).
        kind = rootMountType(self.root)
        if not self._sharedGiven:
            self.shared = not isLocalType(kind)
        if onFuse(kind):
            neverSplice(self)

    def _fresh(self) -> None:
        """
        Notice that the root was removed (and perhaps made again), or that a
        folder of the state was replaced, since they were opened, and open
        them again: the store goes on without a restart, and never writes
        into a removed folder.

        @raise StorageUnavailable: the root is missing.
        @raise UnsafeState: the state folder is a link now.
        """
        if self._current():
            return
        with self._reopening:
            if self._current():
                return
            old = (self._rootFD, self._stateDir, self._locks)
            self._openRoot()
            # Requests under way may still use the old descriptors for a
            # moment (their held locks have descriptors of their own): kept
            # until the next reopening, so that a clean-up job that keeps
            # removing an empty folder does not use up descriptors.
            self._closeRetired()
            self._retired.append(old)
        log.warn("{root} or its state folder was replaced: opened again", root=self.root)

    def _current(self) -> bool:
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            raise StorageUnavailable(
                "root-missing", "the server's storage folder is missing",
                f"the storage root {self.root} does not exist",
            ) from None
        return (st.st_dev, st.st_ino) == self._rootID and self._stateDir.matches(self._rootFD)

    def close(self) -> None:
        self._closeRetired()
        os.close(self._rootFD)
        self._stateDir.close()
        self._locks.close()

    def _closeRetired(self) -> None:
        for rootFD, state, locks in self._retired:
            os.close(rootFD)
            state.close()
            locks.close()
        self._retired = []

    @staticmethod
    def keyFor(target: Target) -> str:
        """
        C{p-<sha-256 of the path>} for a path, C{i-<id>} for an upload id.
        """
        return uploadKey(target)

    def _resolve(self, target: Target) -> tuple[str, UploadPath]:
        """
        The key and destination of C{target}: an upload id's destination
        is the one recorded when L{create} made it.

        @raise NotFound: an upload id that names no staged upload (never
            made, or completed, cancelled or expired since).
        """
        key = self.keyFor(target)
        if isinstance(target, UploadPath):
            return key, target
        info = self._readInfo(key)
        relative = info.get("path") if info is not None else None
        path = parseRelativePath(relative) if isinstance(relative, str) else None
        if info is None or path is None or info.get("uploadId") != target.value:
            raise NotFound("no-upload", "there is no such upload")
        return key, path

    def create(
        self,
        path: UploadPath | None,
        total: int | None = None,
        attributes: Mapping[str, str] | None = None,
        partial: bool = False,
        uploadId: UploadId | None = None,
    ) -> UploadId:
        """
        Make an empty upload for C{path} under a new server-assigned id,
        durably (its C{.json} names the destination), and return the id.
        See L{IUploadStore.create}.

        @raise Forbidden: the path crosses a symbolic link.
        @raise Conflict: the path is a folder, or a parent is a file.
        """
        self._fresh()
        if uploadId is None:
            uploadId = newUploadId()
        if path is None:
            path = parseRelativePath(f"{INCOMING}/{uploadId.value}")
        destination.entry(self._rootFD, path, strict=False)
        key = self.keyFor(uploadId)
        with self._stateLock(key):
            if self._readInfo(key) is not None:
                raise Conflict("id-taken", "an upload with this id exists")
            fd = self._openData(key, create=True)
            assert fd is not None
            os.close(fd)
            self._writeInfo(key, createdInfo(path, key, total, attributes, partial))
        return uploadId

    def describe(self, target: UploadId) -> Incomplete:
        """
        The upload made by L{create} as L{listIncomplete} would list it.

        @raise NotFound: an id that names no upload.
        """
        self._fresh()
        key, path = self._resolve(target)
        folder = self._stateDir.shard(self._shardName(key), create=False)
        touched = None
        if folder is not None:
            try:
                touched = _touched(folder, key)
            finally:
                os.close(folder)
        info = self._readInfo(key)
        if touched is None or info is None:
            raise NotFound("no-upload", "there is no such upload")
        size, when = touched
        return Incomplete(
            key=key, path=path.relative, uploadId=target, offset=size,
            total=info.get("total"), touched=when,
            attributes=dict(info.get("attributes", {})), partial=bool(info.get("partial")),
        )

    def concatenate(self, final: UploadId, parts: Sequence[UploadId]) -> int:
        """
        Fill C{final} with the bytes of the complete partial uploads
        C{parts} (see L{IUploadStore.concatenate}): copied in the kernel
        (L{copyAll}), never read into memory, then fsync'd and its total
        recorded, under the writer locks of all of them (none waited for).
        """
        self._fresh()
        finalKey, _ = self._resolve(final)
        locks = [self._lock(finalKey)]
        fds: list[int] = []
        try:
            for part in parts:
                key, _ = self._resolve(part)
                info = self._readInfo(key) or {}
                if not info.get("partial"):
                    raise BadRequest("bad-concat", "Upload-Concat names an upload that is not partial")
                locks.append(self._lock(key))
                fd = self._openData(key, create=False)
                if fd is None:
                    raise NotFound("no-upload", "there is no such upload")
                fds.append(fd)
                if info.get("total") != dataSize(fd):
                    raise BadRequest("bad-concat", "Upload-Concat names a partial upload not complete")
            out = self._openData(finalKey, create=True)
            assert out is not None
            fds.append(out)
            if not lockData(out):
                raise _heldElsewhere(finalKey, self._where(finalKey, ".data"))
            total = copyAll(fds[:-1], out)
            if self.fsync:
                self.system.fsync(out)
            with self._stateLock(finalKey):
                finalInfo = self._readInfo(finalKey)
                if finalInfo is None:
                    raise NotFound("no-upload", "there is no such upload")
                finalInfo["total"] = total
                self._writeInfo(finalKey, finalInfo)
            return total
        finally:
            for fd in fds:
                os.close(fd)
            for lock in locks:
                lock.release()

    def listIncomplete(self) -> list[Incomplete]:
        """
        Every incomplete upload under the state folder, with when it last
        received a byte (its data file's modification time: see
        L{_touched}).
        Entries that are not regular files are left out (and left alone).
        """
        self._fresh()
        found = []
        for folder, names in self._stagingFolders():
            for name in names:
                key = name[: -len(".data")]
                if not name.endswith(".data") or KEY.fullmatch(key) is None:
                    continue
                touched = _touched(folder, key)
                if touched is None:
                    continue
                size, when = touched
                try:
                    info = self._readInfo(key) or {}
                except UnsafeState as e:
                    # One planted link must not stop the sweep for every
                    # other upload: this one is left alone, for the operator.
                    self._warnUnsafe(key, e)
                    continue
                relative = info.get("path")
                found.append(Incomplete(
                    key=key,
                    path=relative if isinstance(relative, str) else None,
                    uploadId=UploadId(key[2:]) if key.startswith("i-") else None,
                    offset=size,
                    total=info.get("total"),
                    touched=when,
                    attributes=dict(info.get("attributes", {})),
                    partial=bool(info.get("partial")),
                ))
        return found

    def _warnUnsafe(self, key: str, error: UnsafeState) -> None:
        """
        Say once per process that the upload C{key} is left out of the
        incomplete uploads (and so never expired) for C{error}.
        """
        if key in self._unsafeSeen:
            return
        self._unsafeSeen.add(key)
        log.warn(
            "leaving the incomplete upload {key} alone: {detail}; an operator must remove it",
            key=key, detail=error.detail,
        )

    def _stagingFolders(self) -> Iterator[tuple[int, list[str]]]:
        """
        Each C{uploads/<xx>} folder, open, with the names in it (sorted);
        it is closed when the caller moves on. A link or a file among them
        is left alone, for the operator.
        """
        listFD = os.open(
            ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._stateDir.uploadsFD
        )
        try:
            shards = sorted(os.listdir(listFD))
        finally:
            os.close(listFD)
        for shard in shards:
            try:
                folder = self._stateDir.shard(shard, create=False)
            except UploadError:
                continue
            if folder is None:
                continue
            try:
                yield folder, sorted(os.listdir(folder))
            finally:
                os.close(folder)

    def expire(self, key: str, idleSeconds: float, now: float | None = None) -> bool:
        """
        Discard the incomplete upload C{key} (from L{listIncomplete}) if it
        received no byte for C{idleSeconds} and no request of any process
        holds it (it is never waited for, nor asked to let go).

        Safe against everyone else sharing the root: the writer lock is
        tried (a writer that holds it, here or in another process, keeps the
        upload), and the age is read again under it, so a writer that
        appended after L{listIncomplete} looked keeps it too; a writer that
        comes after finds nothing staged and starts from zero. Of several
        processes expiring at once, only the one that removed the data file
        is told C{True}.

        @param now: seconds since the epoch (default: now).
        @return: whether it was discarded.
        @raise ValueError: C{key} is not a key this store makes.
        """
        if KEY.fullmatch(key) is None:
            raise ValueError(f"not an upload key: {key!r}")
        self._fresh()
        if now is None:
            now = time.time()
        lock = self._locks.tryLock(key)
        if lock is None:
            return False
        try:
            with self._stateLock(key):
                touched = self._touchedOf(key)
                if touched is None or now - touched < idleSeconds:
                    return False
                fd = self._openData(key, create=False)
                if fd is None:
                    return False
                try:
                    try:
                        locked = lockData(fd, exclusive=False)
                    except OSError as e:
                        if e.errno in GONE:
                            return False  # removed by another host meanwhile
                        raise
                    if not locked:
                        return False  # a writer holding another lock file
                    return self._discard(key)
                finally:
                    closeReader(fd)
        finally:
            lock.release()

    def touchedAt(self, target: Target) -> float | None:
        """
        When the upload of C{target} last received a byte (its data file's
        modification time, see L{_touched}); L{None} when none is staged.
        """
        self._fresh()
        key, _ = self._resolve(target)
        return self._touchedOf(key)

    def _touchedOf(self, key: str) -> float | None:
        """
        When the staged upload C{key} last received a byte (L{_touched});
        L{None} when none is staged.
        """
        folder = self._stateDir.shard(self._shardName(key), create=False)
        if folder is None:
            return None
        try:
            touched = _touched(folder, key)
        finally:
            os.close(folder)
        return None if touched is None else touched[1]

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def _shardName(key: str) -> str:
        # (Cached: a new upload's begin and complete ask about ten times.)
        return "%02x" % (zlib.crc32(key.encode("utf-8")) & 0xFF)

    def _where(self, key: str, suffix: str) -> str:
        """
        A state file's path relative to the root, for the operator's log.
        """
        return f"{STATE_DIR}/uploads/{self._shardName(key)}/{key}{suffix}"

    def _readInfo(self, key: str) -> dict[str, Any] | None:
        """
        The upload's metadata; L{None} when it has none, or when its
        C{.json} is unreadable (the data file's size is the offset anyway;
        the total and digests are learnt again from the next request, whose
        end rewrites the file).
        """
        folder = self._stateDir.shard(self._shardName(key), create=False)
        if folder is None:
            return None
        where = self._where(key, ".json")
        try:
            info = statedir.readJSON(folder, key + ".json", where, self.system, self.shared)
            if info is not None:
                checkInfo(info, where)
            return info
        except CorruptState as e:
            log.warn("ignoring the unreadable metadata of an upload: {why}", why=e.args[0])
            return None
        finally:
            os.close(folder)

    def _openData(self, key: str, create: bool, truncate: bool = False) -> int | None:
        """
        Open the upload's data file, never through a link nor a file with
        another name: for reading only (it must work on a read-only disk),
        or for writing and reading (made when missing).

        @param truncate: empty it (after the checks: never another file).
        @return: the descriptor, or L{None} when there is no data file and
            C{create} is false.
        """
        folder = self._stateDir.shard(self._shardName(key), create, self.fsync)
        if folder is None:
            return None
        try:
            fd = statedir.openFile(
                folder, key + ".data", os.O_RDWR | os.O_CREAT if create else os.O_RDONLY,
                self._where(key, ".data"), system=self.system, listFirst=self.shared,
            )
        finally:
            os.close(folder)
        if fd is None and create:
            raise StorageFault(
                "staged-gone", "the staged upload was removed from the server's disk",
                f"{self._where(key, '.data')} was removed as it was opened",
            )
        if fd is not None and truncate:
            emptyFile(fd)
        return fd

    def _unlinkInfo(self, key: str) -> None:
        folder = self._stateDir.shard(self._shardName(key), create=False)
        if folder is not None:
            try:
                statedir.unlinkFile(folder, key + ".json", self._where(key, ".json"))
            finally:
                os.close(folder)

    def _checkAlive(self, staged: StagedFile) -> None:
        """
        Before an offset is reported: the staged file still has its one
        name (the root may have been removed under it).
        """
        links = os.fstat(staged.fd).st_nlink
        if links == 0:
            raise StorageFault(
                "staged-gone", "the staged upload was removed from the server's disk",
                f"{self._where(staged.key, '.data')} was removed while being written",
            )
        if links != 1:
            raise UnsafeState(
                f"{self._where(staged.key, '.data')} has {links} names (a hard link)"
            )

    def inspect(self, target: Target, durable: bool = True, strict: bool = False) -> Stored:
        """
        What is stored for C{target} (a path, or an upload id and its
        destination): the offset of an incomplete upload and
        the size of a complete file.

        @param durable: fsync the staged bytes before reporting their count
            (an offset sent to a client must be durable).
        @param strict: the answer tells a client what is at the path (a
            status query, a cancel): an entry there that is not a regular
            file (a symbolic link, a FIFO) is refused rather than reported
            as a complete file, unless an incomplete upload is staged for
            the path. (For a write it counts as an existing entry.)
        @raise Forbidden: the path crosses a symbolic link.
        @raise Conflict: a parent of the path is a file, or the path is a
            folder (or, if C{strict}, a link or another kind of entry).
        @raise UnsafeState: the staged files are links or not regular.
        @raise StorageUnavailable: the staged file vanished as it was read,
            every time (503: the client's next try finds it settled).
        """
        self._fresh()
        return self._inspect(target, durable, strict)

    def _inspect(self, target: Target, durable: bool = True, strict: bool = False) -> Stored:
        """
        L{inspect}, for a caller that has just made sure the root is fresh
        (L{_fresh}: five system calls).
        """
        key, path = self._resolve(target)
        for _ in range(statedir.READ_TRIES):
            stored = self._inspectOnce(key, path, durable, strict)
            if stored is not None:
                return stored
        raise StorageUnavailable(
            "state-changing", "the upload changed on another server as it was read; try again",
            f"{self._where(key, '.data')} vanished as it was read, {statedir.READ_TRIES} times",
            retryAfter=1,
        )

    def _inspectOnce(self, key: str, path: UploadPath, durable: bool, strict: bool) -> Stored | None:
        """
        L{inspect}, once: L{None} when the staged file vanished as it was
        read (another host completed, expired or cancelled the upload after
        this one opened it: C{ENOENT} or C{ESTALE} from its C{lseek} or
        C{fsync} on GlusterFS), to be asked again.
        """
        completeSize, oddEntry = destination.entry(self._rootFD, path, strict)
        fd = self._openData(key, create=False)
        if fd is None:
            if oddEntry is not None:
                raise oddEntry
            return Stored(completeSize=completeSize)
        try:
            info = self._readInfo(key)
            if info is None:
                info = {}
                if self.fsync and durable:
                    # Named by no synced metadata yet (a crash in its first
                    # request): make its name durable before reporting it.
                    self._syncFolder(key)
            try:
                offset = dataSize(fd)
                if self.fsync and durable:
                    self.system.fsync(fd)  # everything up to the size read above is durable
            except OSError as e:
                if e.errno not in GONE:
                    raise
                return None
        finally:
            closeReader(fd)
        total = info.get("total")
        if total is not None and total < offset:
            # Metadata that cannot be right (a hand edit, a restored backup):
            # the bytes on disk win, and the total is learnt again.
            log.warn("ignoring the total {total} of {where}, below its {offset} bytes",
                     total=total, where=self._where(key, ".json"), offset=offset)
            total = None
        return Stored(
            offset=offset,
            total=total,
            incomplete=True,
            digests=dict(info.get("digests", {})),
            completeSize=completeSize,
        )

    def begin(
        self,
        target: Target,
        decide: Callable[[Stored], Plan | AlreadyComplete],
        digests: dict[str, str],
        hashState: tuple[str, int, Any] | None,
    ) -> tuple[Stored, Plan | AlreadyComplete, StagedFile | None]:
        """
        Lock the upload of C{path}, decide the request against what is
        stored now, and open the staged file for writing as the plan says.

        The decision runs under the lock, so writers in other processes
        cannot change the offset between the decision and the first write.

        @param decide: the pure decision (L{planWrite} with the request's
            headers bound); it may raise the refusal.
        @param digests: C{Repr-Digest} values to remember (latest wins).
        @param hashState: C{(generation, offset, sha256 hasher)} kept in
            memory from an earlier request of this process; see
            L{uploadsvc.storage.hashing.usableHashState} for when it is used.
        @return: what was stored, the plan, and the staged file (L{None}
            when the plan is L{AlreadyComplete}).
        @raise Busy: C{locked}, another request, of this process or
            another, holds the upload: refused at once, asking nobody to
            let go (see L{askTakeover}).
        """
        self._fresh()
        key, path = self._resolve(target)
        lock = self._lock(key)
        try:
            stored = self._inspect(target, durable=False)
            plan = decide(stored)
            if isinstance(plan, AlreadyComplete):
                lock.release()
                return stored, plan, None
            return stored, plan, self._open(path, key, stored, plan, digests, hashState, lock)
        except BaseException:
            lock.release()
            raise

    def _open(
        self,
        path: UploadPath,
        key: str,
        stored: Stored,
        plan: Plan,
        digests: dict[str, str],
        hashState: tuple[str, int, Any] | None,
        lock: HeldLock | None = None,
    ) -> StagedFile:
        info = None if plan.startOver else self._readInfo(key)
        onDisk = info is not None
        base = dict(info) if info is not None else {}
        dirty = info is None
        if info is None:
            info = newInfo(path, key)
        elif not isinstance(info.get("generation"), str):
            info["generation"] = newGeneration()  # an older .json
            dirty = True
        if plan.total is not None and info.get("total") != plan.total:
            info["total"] = plan.total
            dirty = True
        if digests:
            info["digests"] = {**info.get("digests", {}), **digests}
            dirty = True
        fd = self._openData(key, create=True)
        assert fd is not None
        try:
            locked = lockData(fd)
        except OSError as e:
            closeReader(fd)
            if e.errno not in GONE:
                raise
            raise _movedElsewhere(self._where(key, ".data")) from e
        if not locked:
            os.close(fd)
            raise _heldElsewhere(key, self._where(key, ".data"))
        if plan.startOver:
            # Under the state lock, so that no status query writes the old
            # metadata back in between. Metadata of an earlier upload (or one
            # a crash left behind) must not describe the new bytes, even if
            # we crash before the next sync. (Truncated after the checks of
            # _openData: never a file that a planted link names.)
            try:
                with self._stateLock(key):
                    if key.startswith("i-"):
                        # An id is known only by its metadata: the new
                        # generation replaces the old one rather than none.
                        self._writeInfo(key, info)
                        onDisk, base = True, dict(info)
                    else:
                        self._unlinkInfo(key)
                    emptyFile(fd)
            except BaseException:
                os.close(fd)
                raise
        # (A start over left the file empty: emptyFile has just measured it.)
        offset = 0 if plan.startOver else dataSize(fd)
        hasher = None
        if offset == 0:
            hasher = newStreamHasher()
        elif usableHashState(hashState, base, offset):
            assert hashState is not None
            hasher = hashState[2]
        staged = StagedFile(self, key, fd, offset, hasher, info, dirty, lock)
        staged.path = path
        staged.infoOnDisk = onDisk
        staged.infoBase = base
        return staged

    def record(
        self,
        target: Target,
        total: int | None,
        digests: dict[str, str],
        decide: Callable[[Stored], Stored] | None = None,
    ) -> Stored:
        """
        Decide a status query against what is stored now, and remember the
        total or digests it carried.

        Only the upload's state lock is taken, never its writer lock: a
        query waits for no writer and ends none, in this process or any
        other, and queries are serialized with each other and with every
        other change of the upload's metadata. A writer holding the upload
        meanwhile keeps what was recorded (see L{StagedFile.sync}).

        @param decide: the pure decision (L{checkQuery} with the query's
            total bound); it sees the durable offset read under the lock and
            may raise the refusal.
        @return: what is stored, as C{decide} answered, with what was
            recorded.
        """
        self._fresh()
        key, path = self._resolve(target)
        with self._stateLock(key):
            stored = self._inspect(target)
            if decide is not None:
                stored = decide(stored)
            if not stored.incomplete or (total is None and not digests):
                return stored
            info = self._readInfo(key)
            if info is None:
                info = newInfo(path, key)
            if total is not None:
                info["total"] = total
            if digests:
                info["digests"] = {**info.get("digests", {}), **digests}
            self._writeInfo(key, info)
            return attrs.evolve(
                stored, total=info.get("total"), digests=dict(info.get("digests", {}))
            )

    def _writeInfo(self, key: str, info: dict[str, Any]) -> None:
        """
        Replace the upload's C{.json} atomically (see L{statedir.writeJSON}:
        a temp file of its own, so that writers running at once never mix).
        """
        folder = self._stateDir.shard(self._shardName(key), True, self.fsync)
        assert folder is not None
        try:
            statedir.writeJSON(folder, key + ".json", info, self.fsync, self.system)
        finally:
            os.close(folder)

    def _syncFolder(self, key: str) -> None:
        fd = self._stateDir.shard(self._shardName(key), create=False)
        if fd is None:
            return
        try:
            fsyncFolder(fd, self.system)
        finally:
            os.close(fd)

    def _lock(self, key: str) -> HeldLock:
        """
        Take the upload's writer lock, or refuse at once (see
        L{takeWriterLock}).
        """
        return takeWriterLock(self._locks, self._stateDir, key)

    def _stateLock(self, key: str) -> AbstractContextManager[None]:
        """
        Hold the upload's state lock (see L{stateLocked}: a bounded wait).
        """
        return stateLocked(self._locks, key, self.system.sleep)

    def askTakeover(self, key: str) -> None:
        """
        Ask whoever holds C{key}'s writer lock, in any process, to let go
        (see L{pendingTakeovers}): for a writer that waits between tries of
        L{begin} on the reactor's clock, and makes it again at each try,
        since the holder may have just cleared it.
        """
        self._fresh()
        self._stateDir.touchMarker(key)

    def dropTakeover(self, key: str) -> None:
        """
        Withdraw the request of L{askTakeover} (a waiter that gives up).
        Taking the lock withdraws it too.
        """
        self._fresh()
        self._stateDir.dropMarker(key)

    def pendingTakeovers(self) -> list[str]:
        """
        Keys of uploads that a writer in another process (or host) waits for:
        whoever holds one of them here should end its request.

        Called twice a second while uploads are written, it also notices a
        lock file that was removed or replaced (see L{holdsCurrentLock}),
        and keeps the lock file's modification time recent, so that a
        clean-up of old files under the state folder passes it by.
        """
        self._fresh()
        now = time.monotonic()
        if now - self._lockTouched >= LOCK_TOUCH_INTERVAL:
            self._lockTouched = now
            os.utime(self._stateDir.lockFD)
        return self._stateDir.markers()

    def holdsCurrentLock(self, staged: StagedFile) -> bool:
        """
        Whether C{staged}'s writer lock is in the lock file that new
        writers lock now. After the lock file was removed or replaced,
        processes that open it later lock another file, so a writer still
        holding a lock in the old one no longer keeps them out: it must end
        (its bytes are kept) before one of them writes the same upload.
        """
        return staged.lock is None or staged.lock.source is self._locks

    def hashStaged(self, staged: StagedFile, algorithms: Iterable[str]) -> dict[str, bytes]:
        """
        Digest the staged bytes from disk (after a restart, or for
        algorithms not computed while streaming).
        """
        return hashFD(staged.fd, algorithms)

    def hashComplete(self, path: UploadPath, algorithms: Iterable[str]) -> dict[str, bytes]:
        """
        Digest the complete file at C{path} (a retried final request).
        """
        self._fresh()
        return destination.hashFile(self._rootFD, path, algorithms)

    def complete(
        self,
        target: Target,
        staged: StagedFile,
        allowOverwrite: bool,
        expected: dict[str, bytes] | None = None,
        streamed: dict[str, bytes] | None = None,
    ) -> bool:
        """
        Move a finished upload into place atomically and durably, and let go
        of it (whatever happens, C{staged} is closed afterwards).

        @param target: its path (an upload id stands for the destination
            decided when it was made).
        @param expected: the whole file's digests (algorithm to raw digest),
            checked first: a mismatch discards the upload. L{None} when the
            caller checked them. Once checked, C{staged.digests} holds every
            digest computed (sha-256 among them).
        @param streamed: digests of the whole upload computed while it
            streamed, used as they are (the rest are read back).
        @raise BadRequest: C{digest-mismatch}.

        @return: whether it replaced an existing file.
        @raise Forbidden: the path crosses a symbolic link (planted since).
        @raise Conflict: a file is there and overwrite is off, or a parent is
            a file.
        @raise UnsafeState: the staged file's name leads elsewhere now.
        """
        path = staged.path if isinstance(target, UploadId) else target
        try:
            assert path is not None
            if expected is not None:
                try:
                    staged.digests = verifyStaged(staged, expected, self.hashStaged, streamed)
                except BadRequest:
                    self.discard(staged)
                    raise
            if self.fsync:
                self.system.fsync(staged.fd)
            self._fresh()
            self._checkAlive(staged)
            parentFD = openParent(
                self._rootFD, path.components[:-1], create=True, durable=self.fsync,
                system=self.system,
            )
            assert parentFD is not None
            try:
                name = path.components[-1]
                st = lstatAt(parentFD, name)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    raise Conflict("is-folder", f"{path.relative!r} is a folder")
                if st is not None and not allowOverwrite:
                    raise Conflict("exists", f"{path.relative!r} already exists")
                # With the metadata's removal, under the state lock: a query
                # must not record metadata for a data file that is gone.
                with self._stateLock(staged.key):
                    try:
                        self._moveStaged(staged, parentFD, name, path, replace=allowOverwrite)
                    except FileNotFoundError:
                        # The staged file is checked just before: the folder
                        # opened for the destination was removed since.
                        raise folderRemoved(f"the folder of {path.relative!r} was removed") from None
                    if self.fsync:
                        fsyncFolder(parentFD, self.system)
                    # Not fsync'd: metadata that comes back after a power loss
                    # without its data file reads as nothing there. (Removed
                    # even when this request wrote none: a query may have.)
                    self._unlinkInfo(staged.key)
            finally:
                os.close(parentFD)
            return st is not None
        finally:
            staged.close()

    def _moveStaged(
        self, staged: StagedFile, parentFD: int, name: str, path: UploadPath, replace: bool
    ) -> None:
        """
        Rename the staged file onto C{name} in C{parentFD}, only if its name
        in the state folder still leads to the file written (a link swapped
        in would otherwise become the destination).

        @param replace: overwrite is on; otherwise nothing made there since
            it was checked is ever replaced.
        @raise Conflict: something was made at C{name} since it was checked.
        """
        key = staged.key
        where = self._where(key, ".data")
        gone = StorageFault(
            "staged-gone", "the staged upload was removed from the server's disk",
            f"{where} was removed before its upload completed",
        )
        folder = self._stateDir.shard(self._shardName(key), create=False)
        if folder is None:
            raise gone
        try:
            try:
                statedir.checkStaged(staged.fd, folder, key + ".data", where)
            except FileNotFoundError:
                raise gone from None
            renamed = False
            if not replace:
                try:
                    renamed = renameNoReplace(folder, key + ".data", parentFD, name)
                except FileExistsError:
                    raise Conflict("exists", f"{path.relative!r} already exists") from None
            if not renamed:
                os.rename(key + ".data", name, src_dir_fd=folder, dst_dir_fd=parentFD)
        finally:
            os.close(folder)
        # Swapped in the instant between the check and the rename: take it
        # out of the destination again (unlinking never follows a link).
        moved, mine = os.lstat(name, dir_fd=parentFD), os.fstat(staged.fd)
        if (moved.st_dev, moved.st_ino) != (mine.st_dev, mine.st_ino):
            os.unlink(name, dir_fd=parentFD)
            raise UnsafeState(f"{where} was replaced while being moved into place")

    def rollback(self, staged: StagedFile, offset: int) -> None:
        """
        Cut the staged bytes back to C{offset}: a request whose
        C{Content-Digest} failed leaves the upload where it was.
        """
        os.ftruncate(staged.fd, offset)
        staged.offset = offset

    def cancel(self, target: Target) -> bool:
        """
        Discard the incomplete upload of C{target}; whether there was one.
        Takes the upload's lock, without waiting (as L{begin}).

        @raise Busy: C{locked}, another request holds the upload.
        @raise NotFound: an upload id that names no upload.
        """
        self._fresh()
        key, path = self._resolve(target)
        # The same path rules as every other request: through a link, 403.
        parentFD = openParent(self._rootFD, path.components[:-1], create=False)
        if parentFD is not None:
            os.close(parentFD)
        lock = self._lock(key)
        try:
            with self._stateLock(key):
                return self._discard(key)
        finally:
            lock.release()

    def discard(self, staged: StagedFile) -> None:
        """
        Throw away an upload being written (its whole-file digest failed) and
        close it.
        """
        try:
            with self._stateLock(staged.key):
                self._discard(staged.key)
        finally:
            staged.close()

    def _discard(self, key: str) -> bool:
        folder = self._stateDir.shard(self._shardName(key), create=False)
        if folder is None:
            return False
        try:
            # The data first: if it cannot be removed, the upload keeps its
            # metadata (total, digests) whole.
            existed = statedir.unlinkFile(folder, key + ".data", self._where(key, ".data"))
            statedir.unlinkFile(folder, key + ".json", self._where(key, ".json"))
            return existed
        finally:
            os.close(folder)

    def openComplete(self, path: UploadPath) -> destination.OpenFile:
        """
        Open the complete file at C{path} for a download, walked without
        following links like L{hashComplete}.
        """
        self._fresh()
        return destination.openFile(self._rootFD, path)

    def deleteComplete(self, path: UploadPath) -> bool:
        """
        Remove a complete file (only when the server allows deletes): a
        regular file, never a link or another kind of entry.
        """
        self._fresh()
        return destination.deleteFile(self._rootFD, path, self.fsync, self.system)

    def freeBytes(self) -> int:
        st = os.statvfs(self._rootFD)
        return st.f_bavail * st.f_frsize

    def recover(self, allowOverwrite: bool) -> list[tuple[str, str]]:
        """
        Finish the uploads that are fully staged but were never moved into
        place (a crash, or a failed rename, between the last write and the
        rename): those whose recorded total is their staged size. Run at
        service start; blocking.

        Each is taken like a writer would (its writer lock, without waiting
        or asking anyone to let go: one that a request of any process holds
        is left to that request), its recorded C{Repr-Digest}s are checked
        (a mismatch discards it, as at completion), and it is renamed into
        place atomically and durably. Those whose destination is taken
        (overwrite off) stay staged: a client still sees them with C{HEAD}.

        @return: C{(path, what happened)} for each upload it acted on.
        """
        done = []
        self._fresh()
        for folder, names in self._stagingFolders():
            _removeOldTemps(folder, names, time.time() - TEMP_AGE)
            for name in names:
                if name.startswith(("p-", "i-")) and name.endswith(".data"):
                    try:
                        outcome = self._recoverOne(name[: -len(".data")], allowOverwrite)
                    except Exception:
                        # One upload that cannot be recovered must not keep
                        # the others staged.
                        log.failure("recovering the staged upload {name}", name=name)
                        continue
                    if outcome is not None:
                        done.append(outcome)
                elif (
                    name.startswith("p-") and name.endswith(".json")
                    and name[: -len(".json")] + ".data" not in names
                ):
                    try:
                        outcome = self._dropCompletedInfo(name[: -len(".json")])
                    except Exception:
                        log.failure("checking the metadata {name}", name=name)
                        continue
                    if outcome is not None:
                        done.append(outcome)
        return done

    def _dropCompletedInfo(self, key: str) -> tuple[str, str] | None:
        """
        Remove the C{.json} of a path upload that has no data file and whose
        destination holds a file: a completion that was killed between its
        rename and the removal of the metadata (seen when servers sharing a
        root are killed at random). Left behind, it would never expire
        (expiry follows data files). Under the upload's writer and state
        locks, as a writer would; anything else is left as it is.
        """
        lock = self._locks.tryLock(key)
        if lock is None:
            return None
        try:
            with self._stateLock(key):
                info = self._readInfo(key)
                path = parseRelativePath(info["path"]) if info else None
                if info is None or path is None or not _keyMatches(key, info, path):
                    return None
                fd = self._openData(key, create=False)
                if fd is not None:
                    closeReader(fd)
                    return None
                completeSize, _ = destination.entry(self._rootFD, path, False)
                if completeSize is None:
                    return None
                self._unlinkInfo(key)
                return path.relative, "removed the metadata a completion left (killed before it)"
        except (OSError, ValueError, TypeError, KeyError, UploadError):
            return None  # not ours to judge here: left as it is
        finally:
            lock.release()

    def _recoverOne(self, key: str, allowOverwrite: bool) -> tuple[str, str] | None:
        lock = self._locks.tryLock(key)
        if lock is None:
            return None
        try:
            with self._stateLock(key):
                info = self._readInfo(key)
                path = parseRelativePath(info["path"]) if info else None
                if (
                    info is None or path is None or not _keyMatches(key, info, path)
                    or info.get("partial")  # a part of a concatenation lands nowhere
                ):
                    lock.release()
                    return None
                fd = self._openData(key, create=False)
                if fd is None:
                    lock.release()
                    return None
                if not lockData(fd, exclusive=False):
                    os.close(fd)
                    lock.release()  # a writer holding another lock file
                    return None
        except (OSError, ValueError, TypeError, KeyError, UploadError):
            lock.release()  # not ours to judge here: left as it is
            return None
        size = dataSize(fd)
        staged = StagedFile(self, key, fd, size, None, info, False, lock)
        staged.path = path
        staged.infoOnDisk = True
        try:
            if info.get("total") != size:
                staged.close()
                return None
            wanted = {
                alg: base64.b64decode(value)
                for alg, value in dict(info.get("digests", {})).items()
            }
            try:
                # complete() checks them (and discards on a mismatch), as
                # for a request that completes an upload.
                self.complete(path, staged, allowOverwrite, wanted)
            except BadRequest as e:
                if e.code != "digest-mismatch":
                    raise
                return path.relative, "discarded: its Repr-Digest does not match"
            return path.relative, "completed"
        except UploadError as e:
            return path.relative, f"left staged: {e.reason}"
        except OSError as e:
            return path.relative, f"left staged: {e}"
        finally:
            staged.close()


def _keyMatches(key: str, info: dict[str, Any], path: UploadPath) -> bool:
    """
    Whether metadata read under C{key} is that upload's own: its path's key,
    or the id it was made with.
    """
    if key.startswith("i-"):
        return info.get("uploadId") == key[2:]
    return FileStore.keyFor(path) == key


def _touched(folderFD: int, key: str) -> tuple[int, float] | None:
    """
    The staged size of upload C{key} in C{folderFD} and when it last
    received a byte: its data file's modification time, which every write,
    the creation and a start-over (truncation) move on. Its C{.json} is left
    out: a status query rewrites it (to record a total or digests), and a
    query must not keep an abandoned upload alive. L{None} when it has no
    data file (or something other than a regular file is in its place).
    """
    try:
        data = os.stat(key + ".data", dir_fd=folderFD, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(data.st_mode):
        return None
    return data.st_size, data.st_mtime


#: Seconds after which a metadata temp file is taken for one that a killed
#: process left (a live writer renames its own within milliseconds).
TEMP_AGE = 3600.0


def _removeOldTemps(folderFD: int, names: list[str], before: float) -> None:
    """
    Remove the metadata temp files (C{<key>.json.<hex>.tmp}) in a staging
    folder that were last changed before C{before}: left by a process
    killed while it wrote one, they would otherwise stay for ever.
    """
    for name in names:
        if not (name.endswith(".tmp") and ".json." in name):
            continue
        try:
            if os.lstat(name, dir_fd=folderFD).st_mtime < before:
                statedir.unlinkFile(folderFD, name, name)
        except (OSError, UploadError):
            pass  # gone already, or not ours to remove: left as it is


def _movedElsewhere(where: str) -> Busy:
    """
    The refusal when the staged file was renamed or removed by another host
    (a completion, a cancel, an expiry) just as this one opened it: 503, and
    the client's next request sees what that host left.
    """
    log.warn("{where} was moved by another host as it was opened", where=where)
    return Busy("locked", "the upload changed on another server as it was opened; try again")


def _heldElsewhere(key: str, where: str) -> Busy:
    """
    The refusal when an upload's data file is locked by a writer that the
    lock file did not show (the lock file was replaced under it): 503; that
    writer is ended within half a second (L{FileStore.holdsCurrentLock}).
    """
    log.warn("{where} is locked by a writer holding another lock file", where=where)
    return Busy("locked", "the upload is being written by another process")


def isNoSpace(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
