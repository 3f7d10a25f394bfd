"""
An incomplete upload opened for writing by one request: its data file, its
running hash, the metadata it will record, and its writer lock.

The store that opened it (L{uploadsvc.storage.filestore.FileStore}) keeps
the layout and the locks; a staged file only writes at its offset and, at
the end of a request, makes its bytes and metadata durable. Blocking: call
from the disk pool.
"""

from __future__ import annotations

import errno
import mmap
import os
import weakref
from typing import TYPE_CHECKING, Any, Callable, Sequence

from zope.interface import implementer

from uploadsvc.protocol.paths import UploadPath
from uploadsvc.storage.interfaces import IStagedUpload
from uploadsvc.storage.locks import HeldLock

if TYPE_CHECKING:
    from uploadsvc.storage.filestore import FileStore

#: Most buffers one pwritev(2) takes.
IOV_MAX: int = os.sysconf("SC_IOV_MAX")


@implementer(IStagedUpload)
class StagedFile:
    """
    An incomplete upload opened for writing by one request, holding its lock.

    @ivar offset: where the next byte goes (the staged size).
    @ivar hasher: sha-256 of bytes C{0..offset}, or L{None} when this process
        did not see them all (then completion re-reads the file).
    @ivar info: the upload's metadata, written by L{sync} when C{infoDirty}.
    @ivar infoOnDisk: whether a C{.json} of this upload exists.
    @ivar infoBase: the metadata as it was on disk when this request began
        (empty when it started the upload or found none): what L{sync}
        compares with to keep what status queries recorded meanwhile.
    @ivar lock: the upload's writer lock, held until L{close}.
    @ivar path: the upload's destination.
    @ivar digests: the whole upload's digests, once completion checked them.
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
        lock: HeldLock | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.fd = fd
        self.offset = offset
        self.hasher = hasher
        self.info = info
        self.infoDirty = infoDirty
        self.infoOnDisk = False
        self.infoBase: dict[str, Any] = {}
        self.lock = lock
        self.closed = False
        self.path: UploadPath | None = None
        self.digests: dict[str, bytes] | None = None

    def writeChunks(self, chunks: Sequence[bytes | memoryview]) -> None:
        """
        Append C{chunks} at the current offset (blocking).
        """
        if self.store.throttle is not None:
            self.store.throttle.wait(sum(map(len, chunks)))
        # A client that sends its body in small pieces (tiny chunks, DATA
        # frames or TLS records) can queue more of them than one pwritev
        # takes (IOV_MAX, 1024 on Linux: EINVAL beyond).
        if len(chunks) <= IOV_MAX:
            self._writeAt(chunks)  # the usual case: no copy of the list
            return
        for start in range(0, len(chunks), IOV_MAX):
            self._writeAt(chunks[start:start + IOV_MAX])

    def _writeAt(self, chunks: Sequence[bytes | memoryview]) -> None:
        fd, offset = self.fd, self.offset
        total = sum(map(len, chunks))
        written = os.pwritev(fd, chunks, offset)
        if written != total:
            # Short write (rare on regular files): finish it piece by piece.
            rest = b"".join(chunks)[written:]
            while rest:
                n = os.pwrite(fd, rest, offset + written)
                written += n
                rest = rest[n:]
        self.offset = offset + written

    def spliceIn(self, pipeFd: int, count: int) -> int:
        """
        Move C{count} bytes that wait in the pipe C{pipeFd} to the current
        offset with splice(2), never through Python (blocking). A file
        system that cannot splice (C{EINVAL}) gets them copied instead, and
        L{spliceable} says no for its files from then on.

        @return: the offset the bytes start at.
        """
        if self.store.throttle is not None:
            self.store.throttle.wait(count)
        start = offset = self.offset
        end = start + count
        while offset < end:
            try:
                moved = os.splice(pipeFd, self.fd, end - offset, offset_dst=offset, flags=_SPLICE_FLAGS)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                _UNSPLICEABLE.add(self.store)
                data = os.read(pipeFd, end - offset)
                moved = os.pwrite(self.fd, data, offset) if data else 0
            if moved <= 0:
                raise OSError(errno.EIO, "the body's pipe ran dry before its bytes were written")
            offset += moved
            self.offset = offset  # (what is written counts, even if the rest fails)
        return start

    def spliceable(self) -> bool:
        """
        Whether splice(2) into this file is worth trying: the system has it
        and the store's staging folder did not refuse it before. (No system
        call: it is asked on the reactor thread.)
        """
        return hasattr(os, "splice") and self.store not in _UNSPLICEABLE

    def hashRange(
        self, start: int, count: int, update: Callable[[Sequence[bytes | memoryview]], None]
    ) -> None:
        """
        Feed bytes C{start..start+count} of the file to C{update} from the page
        cache, mapped rather than copied (blocking): how the digest lane sees
        bytes that were spliced in and never entered Python.
        """
        hashFileRange(self.fd, start, count, update)

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
            self.store.system.fsync(self.fd)
        self.store._checkAlive(self)
        if self.infoDirty:
            with self.store._stateLock(self.key):
                try:
                    onDisk = self.store._readInfo(self.key)
                except ValueError:
                    onDisk = None  # damaged: replaced by what this writer knows
                self.info = mergeInfo(self.info, self.infoBase, onDisk, self.offset)
                self.store._writeInfo(self.key, self.info)
            self.infoBase = dict(self.info)
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
            try:
                os.close(self.fd)  # NFS reports deferred write errors here
            finally:
                if self.lock is not None:
                    self.lock.release()


#: Stores whose staging folder's file system refused splice(2) (C{EINVAL})
#: in this process.
_UNSPLICEABLE: weakref.WeakSet[Any] = weakref.WeakSet()


def neverSplice(store: Any) -> None:
    """
    Take C{store}'s staged files off the zero-copy path for good: on a FUSE
    mount (GlusterFS) the bytes spliced in may not be read back through the
    same mount at once (a size from the attribute cache ends the read early),
    and the digest is computed by reading them back.
    """
    _UNSPLICEABLE.add(store)

_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0)

#: Bytes mapped at a time by L{hashFileRange}.
_MAP_SPAN = 8 * 1024 * 1024
#: Ranges smaller than this are read rather than mapped (mmap, munmap and
#: the page faults cost more than copying a few pages).
_MAP_MIN = 64 * 1024
#: (No MAP_POPULATE: populating small spans costs more than the faults it saves.)
_MAP_FLAGS = mmap.MAP_SHARED


def hashFileRange(
    fd: int, start: int, count: int, update: Callable[[Sequence[bytes | memoryview]], None],
    span: int = _MAP_SPAN,
) -> None:
    """
    Feed bytes C{start..start+count} of the file C{fd} to C{update} through
    C{mmap} (no copy into Python: hashlib reads the page cache, with the
    GIL released), in spans of at most C{span} bytes.
    """
    if count < _MAP_MIN:
        # A slow client's few kilobytes: one read costs less than mapping.
        _hashRead(fd, start, count, update)
        return
    end = start + count
    while start < end:
        base = start - start % mmap.ALLOCATIONGRANULARITY
        length = min(end, start + span) - base
        try:
            mapped = mmap.mmap(fd, length, flags=_MAP_FLAGS, prot=mmap.PROT_READ, offset=base)
        except ValueError:
            # mmap checks the range against fstat's size, which a shared
            # mount (GlusterFS's FUSE client) may serve stale from its
            # attribute cache right after this process wrote the bytes:
            # read them instead.
            _hashRead(fd, start, end - start, update)
            return
        with mapped:
            view = memoryview(mapped)
            try:
                part = view[start - base:]
                try:
                    update([part])
                finally:
                    part.release()
            finally:
                view.release()
        start = base + length


def _hashRead(
    fd: int, start: int, count: int, update: Callable[[Sequence[bytes | memoryview]], None],
) -> None:
    """
    Feed bytes C{start..start+count} of C{fd} to C{update} by C{pread}, in
    pieces of at most L{_MAP_SPAN}.

    @raise OSError: the file ends before the range does (C{EIO}): the bytes
        hashed must be the bytes written, never fewer.
    """
    end = start + count
    while start < end:
        piece = os.pread(fd, min(_MAP_SPAN, end - start), start)
        if not piece:
            raise OSError(errno.EIO, f"the staged file ends at {start}, before {end}, as it is hashed")
        update([piece])
        start += len(piece)


def mergeInfo(
    mine: dict[str, Any],
    base: dict[str, Any],
    onDisk: dict[str, Any] | None,
    offset: int,
) -> dict[str, Any]:
    """
    The metadata a writer records: its own, plus what status queries
    recorded while it ran.

    A writer holds the writer lock, so nobody else changed its bytes or
    started them over: a C{.json} on disk now describes them, whatever its
    generation. What in it differs from what the writer found at its start
    (C{base}) was recorded by a query since, which is newer than the
    writer's headers: such C{Repr-Digest}s win (latest wins). A total from
    the writer's own headers wins (its bytes obey it); a recorded total is
    adopted only if the writer has none, and never when it is below the
    offset (an upload must be able to finish).

    @param offset: the writer's staged size now.
    """
    if not onDisk:
        return mine
    merged = dict(mine)
    total = onDisk.get("total")
    if merged.get("total") is None and isinstance(total, int) and total >= offset:
        merged["total"] = total
    before = base.get("digests", {})
    newer = {
        alg: value for alg, value in dict(onDisk.get("digests", {})).items()
        if before.get(alg) != value
    }
    if newer:
        merged["digests"] = {**merged.get("digests", {}), **newer}
    return merged
