"""
Uploads staged on disk under the root's reserved C{.uploadsvc} folder.

Layout (C{<key>} names one upload: C{p-<sha256 of the path>} for
path-addressed uploads; server-assigned ids such as tus get their own prefix
and the same layout)::

    <root>/.uploadsvc/uploads/<key>/data        the bytes received so far
    <root>/.uploadsvc/uploads/<key>/info.json   path, total, digests
    <root>/.uploadsvc/locks/<key>               flock: one writer across processes
    <root>/.uploadsvc/takeover/<key>            a writer elsewhere asks the holder to let go

The offset of an upload is the size of its C{data} file (as in tusd), so there
is nothing to rewrite per chunk. C{info.json} changes rarely and is replaced
atomically (temp file, fsync, rename, folder fsync). Completion is a rename of
C{data} onto the destination, walked without following links, then a folder
fsync. After a restart, C{kill -9} included, the folder is the whole state.

Everything here blocks: the web layer calls it through the disk thread pool.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import time
from typing import Any, Callable, Iterable, Sequence

import attrs

from uploadsvc.errors import Busy, Conflict
from uploadsvc.protocol.decisions import AlreadyComplete, Plan, Stored
from uploadsvc.protocol.paths import UploadPath
from uploadsvc.storage.safepath import fsyncFolder, lstatAt, openParent, openRoot

STATE_DIR = ".uploadsvc"
_READ_SIZE = 1024 * 1024


class StagedFile:
    """
    An incomplete upload opened for writing by one request.

    @ivar offset: where the next byte goes (the staged size).
    @ivar hasher: sha-256 of bytes C{0..offset}, or L{None} when this process
        did not see them all (then completion re-reads the file).
    """

    def __init__(
        self, store: FileStore, key: str, fd: int, lockFD: int, offset: int, hasher: Any
    ) -> None:
        self.store = store
        self.key = key
        self.fd = fd
        self.lockFD = lockFD
        self.offset = offset
        self.hasher = hasher
        self.closed = False
        self.infoDurable = False

    def writeChunks(self, chunks: Sequence[bytes | memoryview]) -> None:
        """
        Append C{chunks} at the current offset (blocking).
        """
        fd, offset = self.fd, self.offset
        written = os.pwritev(fd, chunks, offset)
        total = sum(map(len, chunks))
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
        Make the staged upload durable (bytes, and once its metadata);
        return the durable offset.
        """
        if self.store.fsync:
            os.fsync(self.fd)
            if not self.infoDurable:
                self.store._syncInfo(self.key)
        self.infoDurable = True
        return self.offset

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)
            os.close(self.lockFD)  # releases the flock


@attrs.define
class Completed:
    size: int
    sha256: bytes
    replaced: bool


class FileStore:
    """
    Staged uploads and completed files under one root folder.

    @ivar fsync: when false, nothing is fsync'd (faster, not crash-safe).
    @ivar lockWait: seconds to wait for another process's writer to let go.
    """

    def __init__(self, root: str, fsync: bool = True, lockWait: float = 5.0) -> None:
        self.root = os.path.abspath(root)
        self.fsync = fsync
        self.lockWait = lockWait
        self._state = os.path.join(self.root, STATE_DIR)
        self._uploads = os.path.join(self._state, "uploads")
        self._locks = os.path.join(self._state, "locks")
        self._takeovers = os.path.join(self._state, "takeover")
        for d in (self.root, self._state, self._uploads, self._locks, self._takeovers):
            os.makedirs(d, exist_ok=True)
        self._rootFD = openRoot(self.root)

    def close(self) -> None:
        os.close(self._rootFD)

    @staticmethod
    def keyFor(path: UploadPath) -> str:
        return "p-" + hashlib.sha256(path.relative.encode("utf-8")).hexdigest()

    def _dir(self, key: str) -> str:
        return os.path.join(self._uploads, key)

    def _readInfo(self, key: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self._dir(key), "info.json"), "rb") as f:
                return json.load(f)  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None

    def inspect(self, path: UploadPath, durable: bool = True) -> Stored:
        """
        What is stored for C{path}: the offset of an incomplete upload and
        the size of a complete file.

        @param durable: fsync the staged bytes before reporting their count
            (an offset sent to a client must be durable).

        @raise Forbidden: the path crosses a symbolic link.
        @raise Conflict: a parent of the path is a file.
        """
        completeSize = None
        parentFD = openParent(self._rootFD, path.components[:-1], create=False)
        if parentFD is not None:
            try:
                st = lstatAt(parentFD, path.components[-1])
            finally:
                os.close(parentFD)
            if st is not None:
                if stat.S_ISDIR(st.st_mode):
                    raise Conflict("is-folder", f"{path.relative!r} is a folder")
                completeSize = st.st_size
        key = self.keyFor(path)
        info = self._readInfo(key)
        if info is None:
            return Stored(completeSize=completeSize)
        try:
            fd = os.open(os.path.join(self._dir(key), "data"), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # Renamed into place but not yet cleaned up: a crash at completion.
            return Stored(completeSize=completeSize)
        try:
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
            when the plan writes nothing).
        @raise Busy: another process holds the upload for longer than
            C{lockWait}.
        """
        key = self.keyFor(path)
        lockFD = self._lock(key)
        try:
            stored = self.inspect(path, durable=False)
            plan = decide(stored)
            if isinstance(plan, AlreadyComplete):
                os.close(lockFD)
                return stored, plan, None
            staged = self._open(path, key, lockFD, plan, digests, hashState)
        except BaseException:
            os.close(lockFD)
            raise
        return stored, plan, staged

    def _open(
        self,
        path: UploadPath,
        key: str,
        lockFD: int,
        plan: Plan,
        digests: dict[str, str],
        hashState: tuple[int, Any] | None,
    ) -> StagedFile:
        d = self._dir(key)
        info = None if plan.startOver else self._readInfo(key)
        if info is None:
            info = {"path": path.relative, "created": time.time()}
            os.makedirs(d, exist_ok=True)
        changed = plan.total is not None and info.get("total") != plan.total
        if plan.total is not None:
            info["total"] = plan.total
        if digests:
            info["digests"] = {**info.get("digests", {}), **digests}
            changed = True
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        if plan.startOver:
            flags |= os.O_TRUNC
        fd = os.open(os.path.join(d, "data"), flags, 0o644)
        infoNew = plan.startOver or changed or not os.path.exists(os.path.join(d, "info.json"))
        if infoNew:
            # Made durable by the request's first sync, with the bytes.
            self._writeInfo(key, info, durable=False)
        offset = os.fstat(fd).st_size
        hasher = None
        if offset == 0:
            hasher = hashlib.sha256()
        elif hashState is not None and hashState[0] == offset:
            hasher = hashState[1]
        staged = StagedFile(self, key, fd, lockFD, offset, hasher)
        staged.infoDurable = not infoNew
        return staged

    def record(self, path: UploadPath, total: int | None, digests: dict[str, str]) -> None:
        """
        Remember a total or digests learnt from a request that carried no data.
        """
        key = self.keyFor(path)
        info = self._readInfo(key)
        if info is None:
            return
        if total is not None:
            info["total"] = total
        if digests:
            info["digests"] = {**info.get("digests", {}), **digests}
        self._writeInfo(key, info)

    def _writeInfo(self, key: str, info: dict[str, Any], durable: bool = True) -> None:
        d = self._dir(key)
        tmp = os.path.join(d, "info.json.tmp")
        with open(tmp, "w") as f:
            json.dump(info, f)
            f.flush()
            if self.fsync and durable:
                os.fsync(f.fileno())
        os.replace(tmp, os.path.join(d, "info.json"))
        if self.fsync and durable:
            self._syncDir(d)
            self._syncDir(self._uploads)

    def _syncInfo(self, key: str) -> None:
        fd = os.open(os.path.join(self._dir(key), "info.json"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._syncDir(self._dir(key))
        self._syncDir(self._uploads)

    def _syncDir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fsyncFolder(fd)
        finally:
            os.close(fd)

    def _lock(self, key: str) -> int:
        """
        Take the upload's flock. When another process holds it, leave a
        takeover request for it (see L{pendingTakeovers}) and wait up to
        C{lockWait} seconds for it to let go.
        """
        path = os.path.join(self._locks, key)
        marker = os.path.join(self._takeovers, key)
        deadline = time.monotonic() + self.lockWait
        asked = False
        try:
            while True:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    if time.monotonic() >= deadline:
                        raise Busy("locked", "the upload is being written by another process")
                    # (Re)made each round: the holder may have just cleared it.
                    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
                    asked = True
                    time.sleep(0.05)
                    continue
                # The holder may have removed the file as it completed: a lock
                # on an unlinked file locks nothing, so start over on the new one.
                try:
                    if os.stat(path).st_ino == os.fstat(fd).st_ino:
                        break
                except FileNotFoundError:
                    pass
                os.close(fd)
        finally:
            if asked:
                _unlinkMissingOK(marker)
        if not asked:
            # A marker left by a writer that gave up would end this request;
            # a writer still waiting makes its marker again within 50 ms.
            _unlinkMissingOK(marker)
        return fd

    def pendingTakeovers(self) -> list[str]:
        """
        Keys of uploads that a writer in another process (or host) waits for:
        whoever holds one of them here should end its request.
        """
        return os.listdir(self._takeovers)

    def hashStaged(self, staged: StagedFile, algorithms: Iterable[str]) -> dict[str, bytes]:
        """
        Digest the staged bytes from disk (after a restart, or for
        algorithms not computed while streaming).
        """
        fd = os.open(os.path.join(self._dir(staged.key), "data"), os.O_RDONLY | os.O_CLOEXEC)
        return _hashFD(fd, algorithms)

    def hashComplete(self, path: UploadPath, algorithms: Iterable[str]) -> dict[str, bytes]:
        """
        Digest the complete file at C{path} (a retried final request).
        """
        parentFD = openParent(self._rootFD, path.components[:-1], create=False)
        if parentFD is None:
            raise FileNotFoundError(path.relative)
        try:
            fd = os.open(
                path.components[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=parentFD,
            )
        finally:
            os.close(parentFD)
        return _hashFD(fd, algorithms)

    def complete(self, path: UploadPath, staged: StagedFile, allowOverwrite: bool) -> bool:
        """
        Move a finished upload into place atomically and durably.

        @return: whether it replaced an existing file.
        @raise Forbidden: the path crosses a symbolic link (planted since).
        @raise Conflict: a file is there and overwrite is off, or a parent is
            a file.
        """
        if self.fsync:
            os.fsync(staged.fd)
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
            d = self._dir(staged.key)
            upFD = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.rename("data", name, src_dir_fd=upFD, dst_dir_fd=parentFD)
            finally:
                os.close(upFD)
            if self.fsync:
                fsyncFolder(parentFD)
        finally:
            os.close(parentFD)
        self._remove(staged.key)
        os.unlink(os.path.join(self._locks, staged.key))  # still held: see _lock
        return st is not None

    def cancel(self, path: UploadPath) -> bool:
        """
        Discard the incomplete upload of C{path}; whether there was one.
        """
        key = self.keyFor(path)
        if not os.path.isdir(self._dir(key)):
            return False
        self._remove(key)
        return True

    def _remove(self, key: str) -> None:
        # Not fsync'd: a staging folder that comes back after a power loss
        # without its data file reads as nothing there.
        shutil.rmtree(self._dir(key), ignore_errors=True)

    def deleteComplete(self, path: UploadPath) -> bool:
        """
        Remove a complete file (only when the server allows deletes).
        """
        parentFD = openParent(self._rootFD, path.components[:-1], create=False)
        if parentFD is None:
            return False
        try:
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
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize


def _hashFD(fd: int, algorithms: Iterable[str]) -> dict[str, bytes]:
    hashers = {alg: hashlib.new(alg.replace("-", "")) for alg in algorithms}
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(_READ_SIZE):
            for h in hashers.values():
                h.update(chunk)
    return {alg: h.digest() for alg, h in hashers.items()}


def _unlinkMissingOK(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def isNoSpace(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
