"""
Uploads staged on disk under the root's reserved C{.uploadsvc} folder.

Layout (C{<key>} names one upload: C{p-<sha256 of the path>} for
path-addressed uploads; server-assigned ids such as tus get their own prefix
and the same layout; C{<xx>} is two hex digits of the key's CRC-32, which
spreads the files over 256 folders (made as needed) so that concurrent uploads do not queue on one
folder's lock)::

    <root>/.uploadsvc/uploads/<xx>/<key>.data   the bytes received so far
    <root>/.uploadsvc/uploads/<xx>/<key>.json   total, digests, path
    <root>/.uploadsvc/lock                      one locked byte per upload being written
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

Everything here blocks: the web layer calls it through the disk thread pool.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time
import zlib
from typing import Any, Callable, Iterable, Sequence

from twisted.logger import Logger

from uploadsvc.errors import Busy, Conflict, StorageFault, StorageUnavailable, UnsafeState
from uploadsvc.protocol.decisions import AlreadyComplete, Plan, Stored
from uploadsvc.protocol.paths import UploadPath
from uploadsvc.storage import statedir
from uploadsvc.storage.locks import RegionLocks
from uploadsvc.storage.throttle import WriteThrottle
from uploadsvc.storage.safepath import fsyncFolder, lstatAt, openParent, openRoot
from uploadsvc.storage.statedir import STATE_DIR, CorruptState, StateDir

__all__ = ["STATE_DIR", "FileStore", "StagedFile", "isNoSpace"]

log = Logger()
_READ_SIZE = 1024 * 1024


class StagedFile:
    """
    An incomplete upload opened for writing by one request, holding its lock.

    @ivar offset: where the next byte goes (the staged size).
    @ivar hasher: sha-256 of bytes C{0..offset}, or L{None} when this process
        did not see them all (then completion re-reads the file).
    @ivar info: the upload's metadata, written by L{sync} when C{infoDirty}.
    @ivar infoOnDisk: whether a C{.json} of this upload exists.
    """

    def __init__(
        self,
        store: FileStore,
        key: str,
        fd: int,
        offset: int,
        hasher: Any,
        info: dict[str, Any],
        infoDirty: bool,
    ) -> None:
        self.store = store
        self.key = key
        self.fd = fd
        self.offset = offset
        self.hasher = hasher
        self.info = info
        self.infoDirty = infoDirty
        self.infoOnDisk = False
        self.closed = False

    def writeChunks(self, chunks: Sequence[bytes | memoryview]) -> None:
        """
        Append C{chunks} at the current offset (blocking).
        """
        fd, offset = self.fd, self.offset
        total = sum(map(len, chunks))
        if self.store.throttle is not None:
            self.store.throttle.wait(total)
        written = os.pwritev(fd, chunks, offset)
        if written != total:
            # Short write (rare on regular files): finish it piece by piece.
            rest = b"".join(chunks)[written:]
            while rest:
                n = os.pwrite(fd, rest, offset + written)
                written += n
                rest = rest[n:]
        self.offset = offset + written

    def hashChunks(self, chunks: Sequence[bytes | memoryview]) -> None:
        """
        Feed C{chunks} to the running sha-256 (blocking; in order, on its own
        lane so that it runs beside the writes).
        """
        update = self.hasher.update
        for chunk in chunks:
            update(chunk)

    def sync(self) -> int:
        """
        Make the staged upload durable, bytes and metadata; return the
        durable offset.
        """
        if self.store.fsync:
            os.fsync(self.fd)
        self.store._checkAlive(self)
        if self.infoDirty:
            self.store._writeInfo(self.key, self.info)
            self.infoDirty = False
            self.infoOnDisk = True
        return self.offset

    def syncAndClose(self) -> int:
        """
        L{sync}, then L{close}: the end of a request that did not complete.
        """
        try:
            return self.sync()
        finally:
            self.close()

    def close(self) -> None:
        """
        Close the data file and let go of the upload's lock.
        """
        if not self.closed:
            self.closed = True
            os.close(self.fd)
            self.store._unlock(self.key)


class FileStore:
    """
    Staged uploads and completed files under one root folder.

    @ivar fsync: when false, nothing is fsync'd (faster, not crash-safe).
    @ivar lockWait: seconds to wait for another process's writer to let go.
    """

    def __init__(
        self,
        root: str,
        fsync: bool = True,
        lockWait: float = 5.0,
        throttle: WriteThrottle | None = None,
    ) -> None:
        """
        @param throttle: slows every write down (benchmarks only).
        """
        self.root = os.path.abspath(root)
        self.fsync = fsync
        self.lockWait = lockWait
        self.throttle = throttle
        self._state = os.path.join(self.root, STATE_DIR)
        self._uploads = os.path.join(self._state, "uploads")
        self._takeovers = os.path.join(self._state, "takeover")
        os.makedirs(self.root, exist_ok=True)
        self._reopening = threading.Lock()
        self._retired: list[tuple[int, StateDir, RegionLocks]] = []
        self._openRoot()

    def _openRoot(self) -> None:
        """
        Open the root, its state folder (never through a link: see
        L{statedir}) and the lock file.
        """
        rootFD = openRoot(self.root)
        try:
            state = StateDir(rootFD)
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
            # Requests under way may still use the old descriptors (and hold
            # locks in the old lock file): they are closed with the store.
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
        for rootFD, state, locks in [*self._retired, (self._rootFD, self._stateDir, self._locks)]:
            os.close(rootFD)
            state.close()
            locks.close()
        self._retired = []

    @staticmethod
    def keyFor(path: UploadPath) -> str:
        return "p-" + hashlib.sha256(path.relative.encode("utf-8")).hexdigest()

    def _folder(self, key: str) -> str:
        return os.path.join(self._uploads, self._shardName(key))

    @staticmethod
    def _shardName(key: str) -> str:
        return "%02x" % (zlib.crc32(key.encode("utf-8")) & 0xFF)

    def _where(self, key: str, suffix: str) -> str:
        """
        A state file's path relative to the root, for the operator's log.
        """
        return f"{STATE_DIR}/uploads/{self._shardName(key)}/{key}{suffix}"

    def _data(self, key: str) -> str:
        return os.path.join(self._folder(key), key + ".data")

    def _info(self, key: str) -> str:
        return os.path.join(self._folder(key), key + ".json")

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
        try:
            return statedir.readJSON(folder, key + ".json", self._where(key, ".json"))
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
                self._where(key, ".data"),
            )
        finally:
            os.close(folder)
        if fd is None and create:
            raise StorageFault(
                "staged-gone", "the staged upload was removed from the server's disk",
                f"{self._where(key, '.data')} was removed as it was opened",
            )
        if fd is not None and truncate:
            os.ftruncate(fd, 0)
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

    def inspect(self, path: UploadPath, durable: bool = True, strict: bool = False) -> Stored:
        """
        What is stored for C{path}: the offset of an incomplete upload and
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
        """
        self._fresh()
        completeSize = None
        oddEntry = None
        parentFD = openParent(self._rootFD, path.components[:-1], create=False)
        if parentFD is not None:
            try:
                st = lstatAt(parentFD, path.components[-1])
            finally:
                os.close(parentFD)
            if st is not None:
                if stat.S_ISDIR(st.st_mode):
                    raise Conflict("is-folder", f"{path.relative!r} is a folder")
                if strict and not stat.S_ISREG(st.st_mode):
                    oddEntry = _notAFile(path, st)
                completeSize = st.st_size
        key = self.keyFor(path)
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
            offset = os.fstat(fd).st_size
            if self.fsync and durable:
                os.fsync(fd)  # everything up to the size read above is durable
        finally:
            os.close(fd)
        return Stored(
            offset=offset,
            total=info.get("total"),
            incomplete=True,
            digests=dict(info.get("digests", {})),
            completeSize=completeSize,
        )

    def begin(
        self,
        path: UploadPath,
        decide: Callable[[Stored], Plan | AlreadyComplete],
        digests: dict[str, str],
        hashState: tuple[int, Any] | None,
    ) -> tuple[Stored, Plan | AlreadyComplete, StagedFile | None]:
        """
        Lock the upload of C{path}, decide the request against what is
        stored now, and open the staged file for writing as the plan says.

        The decision runs under the lock, so writers in other processes
        cannot change the offset between the decision and the first write.

        @param decide: the pure decision (L{planWrite} with the request's
            headers bound); it may raise the refusal.
        @param digests: C{Repr-Digest} values to remember (latest wins).
        @param hashState: C{(offset, sha256 hasher)} kept in memory from an
            earlier request of this process, used when its offset matches.
        @return: what was stored, the plan, and the staged file (L{None}
            when the plan is L{AlreadyComplete}).
        @raise Busy: another process holds the upload for longer than
            C{lockWait}.
        """
        key = self.keyFor(path)
        self._fresh()
        self._lock(key)
        try:
            stored = self.inspect(path, durable=False)
            plan = decide(stored)
            if isinstance(plan, AlreadyComplete):
                self._unlock(key)
                return stored, plan, None
            return stored, plan, self._open(path, key, stored, plan, digests, hashState)
        except BaseException:
            self._unlock(key)
            raise

    def _open(
        self,
        path: UploadPath,
        key: str,
        stored: Stored,
        plan: Plan,
        digests: dict[str, str],
        hashState: tuple[int, Any] | None,
    ) -> StagedFile:
        info = None if plan.startOver else self._readInfo(key)
        onDisk = info is not None
        dirty = info is None
        if info is None:
            info = {"path": path.relative, "created": time.time()}
        if plan.total is not None and info.get("total") != plan.total:
            info["total"] = plan.total
            dirty = True
        if digests:
            info["digests"] = {**info.get("digests", {}), **digests}
            dirty = True
        if plan.startOver:
            # Metadata of an earlier upload (or one a crash left behind) must
            # not describe the new bytes, even if we crash before the next sync.
            self._unlinkInfo(key)
        fd = self._openData(key, create=True, truncate=plan.startOver)
        assert fd is not None
        offset = os.fstat(fd).st_size
        hasher = None
        if offset == 0:
            hasher = hashlib.sha256()
        elif hashState is not None and hashState[0] == offset:
            hasher = hashState[1]
        staged = StagedFile(self, key, fd, offset, hasher, info, dirty)
        staged.infoOnDisk = onDisk
        return staged

    def record(self, path: UploadPath, total: int | None, digests: dict[str, str]) -> None:
        """
        Remember a total or digests learnt from a request that carried no data.
        """
        key = self.keyFor(path)
        self._fresh()
        self._lock(key)
        try:
            fd = self._openData(key, create=False)
            if fd is None:
                return
            os.close(fd)
            info = self._readInfo(key) or {"path": path.relative, "created": time.time()}
            if total is not None:
                info["total"] = total
            if digests:
                info["digests"] = {**info.get("digests", {}), **digests}
            self._writeInfo(key, info)
        finally:
            self._unlock(key)

    def _writeInfo(self, key: str, info: dict[str, Any]) -> None:
        """
        Replace the upload's C{.json} atomically (see L{statedir.writeJSON}:
        a temp file of its own, so that writers running at once never mix).
        """
        folder = self._stateDir.shard(self._shardName(key), True, self.fsync)
        assert folder is not None
        try:
            statedir.writeJSON(folder, key + ".json", info, self.fsync)
        finally:
            os.close(folder)

    def _syncFolder(self, key: str) -> None:
        fd = self._stateDir.shard(self._shardName(key), create=False)
        if fd is None:
            return
        try:
            fsyncFolder(fd)
        finally:
            os.close(fd)

    def _lock(self, key: str) -> None:
        """
        Take the upload's lock. When another process holds it, leave a
        takeover request for it (see L{pendingTakeovers}) and wait up to
        C{lockWait} seconds for it to let go.
        """
        state = self._stateDir
        if self._locks.tryLock(key):
            # A marker left by a writer that gave up would end this request;
            # a writer still waiting makes its marker again within 50 ms.
            state.dropMarker(key)
            return
        deadline = time.monotonic() + self.lockWait
        try:
            while True:
                # (Re)made each round: the holder may have just cleared it.
                state.touchMarker(key)
                time.sleep(0.05)
                if self._locks.tryLock(key):
                    return
                if time.monotonic() >= deadline:
                    raise Busy("locked", "the upload is being written by another process")
        finally:
            state.dropMarker(key)

    def _unlock(self, key: str) -> None:
        self._locks.unlock(key)

    def pendingTakeovers(self) -> list[str]:
        """
        Keys of uploads that a writer in another process (or host) waits for:
        whoever holds one of them here should end its request.
        """
        return self._stateDir.markers()

    def hashStaged(self, staged: StagedFile, algorithms: Iterable[str]) -> dict[str, bytes]:
        """
        Digest the staged bytes from disk (after a restart, or for
        algorithms not computed while streaming).
        """
        return _hashFD(staged.fd, algorithms)

    def hashComplete(self, path: UploadPath, algorithms: Iterable[str]) -> dict[str, bytes]:
        """
        Digest the complete file at C{path} (a retried final request).
        """
        self._fresh()
        parentFD = openParent(self._rootFD, path.components[:-1], create=False)
        if parentFD is None:
            raise FileNotFoundError(path.relative)
        try:
            name = path.components[-1]
            try:
                fd = os.open(
                    name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                    dir_fd=parentFD,
                )
            except OSError as e:
                if e.errno != errno.ELOOP:
                    raise
                raise _notAFile(path, os.lstat(name, dir_fd=parentFD)) from None
        finally:
            os.close(parentFD)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _notAFile(path, st)
            return _hashFD(fd, algorithms)
        finally:
            os.close(fd)

    def complete(self, path: UploadPath, staged: StagedFile, allowOverwrite: bool) -> bool:
        """
        Move a finished upload into place atomically and durably, and let go
        of it (whatever happens, C{staged} is closed afterwards).

        @return: whether it replaced an existing file.
        @raise Forbidden: the path crosses a symbolic link (planted since).
        @raise Conflict: a file is there and overwrite is off, or a parent is
            a file.
        @raise UnsafeState: the staged file's name leads elsewhere now.
        """
        try:
            if self.fsync:
                os.fsync(staged.fd)
            self._fresh()
            self._checkAlive(staged)
            parentFD = openParent(
                self._rootFD, path.components[:-1], create=True, durable=self.fsync
            )
            assert parentFD is not None
            try:
                name = path.components[-1]
                st = lstatAt(parentFD, name)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    raise Conflict("is-folder", f"{path.relative!r} is a folder")
                if st is not None and not allowOverwrite:
                    raise Conflict("exists", f"{path.relative!r} already exists")
                self._moveStaged(staged, parentFD, name)
                if self.fsync:
                    fsyncFolder(parentFD)
            finally:
                os.close(parentFD)
            # Not fsync'd: metadata that comes back after a power loss
            # without its data file reads as nothing there.
            if staged.infoOnDisk:
                self._unlinkInfo(staged.key)
            return st is not None
        finally:
            staged.close()

    def _moveStaged(self, staged: StagedFile, parentFD: int, name: str) -> None:
        """
        Rename the staged file onto C{name} in C{parentFD}, only if its name
        in the state folder still leads to the file written (a link swapped
        in would otherwise become the destination).
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

    def cancel(self, path: UploadPath) -> bool:
        """
        Discard the incomplete upload of C{path}; whether there was one.
        Takes the upload's lock (C{Busy} if another process keeps it).
        """
        key = self.keyFor(path)
        self._fresh()
        # The same path rules as every other request: through a link, 403.
        parentFD = openParent(self._rootFD, path.components[:-1], create=False)
        if parentFD is not None:
            os.close(parentFD)
        self._lock(key)
        try:
            return self._discard(key)
        finally:
            self._unlock(key)

    def discard(self, staged: StagedFile) -> None:
        """
        Throw away an upload being written (its whole-file digest failed) and
        close it.
        """
        try:
            self._discard(staged.key)
        finally:
            staged.close()

    def _discard(self, key: str) -> bool:
        folder = self._stateDir.shard(self._shardName(key), create=False)
        if folder is None:
            return False
        try:
            statedir.unlinkFile(folder, key + ".json", self._where(key, ".json"))
            return statedir.unlinkFile(folder, key + ".data", self._where(key, ".data"))
        finally:
            os.close(folder)

    def deleteComplete(self, path: UploadPath) -> bool:
        """
        Remove a complete file (only when the server allows deletes): a
        regular file, never a link or another kind of entry.
        """
        self._fresh()
        parentFD = openParent(self._rootFD, path.components[:-1], create=False)
        if parentFD is None:
            return False
        try:
            st = lstatAt(parentFD, path.components[-1])
            if st is None:
                return False
            if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
                raise _notAFile(path, st)
            try:
                os.unlink(path.components[-1], dir_fd=parentFD)
            except FileNotFoundError:
                return False
            except IsADirectoryError:
                raise Conflict("is-folder", f"{path.relative!r} is a folder")
            if self.fsync:
                fsyncFolder(parentFD)
            return True
        finally:
            os.close(parentFD)

    def freeBytes(self) -> int:
        st = os.statvfs(self._rootFD)
        return st.f_bavail * st.f_frsize


def _hashFD(fd: int, algorithms: Iterable[str]) -> dict[str, bytes]:
    """
    Digest the whole file open as C{fd} (read by position: a descriptor
    being written keeps its own).
    """
    hashers = {alg: hashlib.new(alg.replace("-", "")) for alg in algorithms}
    offset = 0
    while chunk := os.pread(fd, _READ_SIZE, offset):
        offset += len(chunk)
        for h in hashers.values():
            h.update(chunk)
    return {alg: h.digest() for alg, h in hashers.items()}


def _notAFile(path: UploadPath, st: os.stat_result) -> Conflict:
    """
    The refusal for an entry at the destination that is no uploaded file:
    a symbolic link (never followed) or a FIFO, socket or device.
    """
    if stat.S_ISLNK(st.st_mode):
        return Conflict("is-link", f"{path.relative!r} is a symbolic link, not an uploaded file")
    return Conflict("not-a-file", f"{path.relative!r} is not a regular file")


def isNoSpace(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
