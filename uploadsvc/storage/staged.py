"""
An incomplete upload opened for writing by one request: its data file, its
running hash, the metadata it will record, and its writer lock.

The store that opened it (L{uploadsvc.storage.filestore.FileStore}) keeps
the layout and the locks; a staged file only writes at its offset and, at
the end of a request, makes its bytes and metadata durable. Blocking: call
from the disk pool.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

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
