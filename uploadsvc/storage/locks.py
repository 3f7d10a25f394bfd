"""
One writer per upload across processes and hosts: byte-range locks on a
single file.

Each upload owns two bytes of C{<root>/.uploadsvc/lock}, at offsets derived
from its key: the I{writer} byte, held by the one request that writes the
upload's data for as long as it runs, and the I{state} byte, held for a few
milliseconds by whoever rewrites the upload's metadata (a status query, a
writer's sync, a start-over, a cancel, a completion). Unlike one lock file per
upload there is nothing to create or delete per upload.

Every lock taken is an open-file-description (OFD) lock on a file description
of its own, returned as a L{HeldLock}: only that handle can release it (by
closing its description). So two holders in one process conflict exactly like
two processes do, and no other request of any process can drop a writer's
lock by taking and releasing "its own" lock on the same byte (which is what a
single shared descriptor per process allowed). Locks are taken with
F_OFD_SETLK (Linux 3.15+); NFSv4 carries them between hosts.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import struct

_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
#: struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid (+ padding)
_FLOCK = "hhqqi4x"

#: The lock a request holds while it writes an upload's data.
WRITER = 0
#: The lock held while an upload's metadata is read, changed and rewritten.
STATE = 1 << 56


@functools.lru_cache(maxsize=1024)
def _region(key: str) -> int:
    # (Cached: a new upload takes three locks of its key.)
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:7], "big")


class HeldLock:
    """
    One lock held on its own open file description; L{release} (or process
    exit) drops it, nothing else does.

    @ivar source: the L{RegionLocks} (the lock file) it was taken in.
    """

    def __init__(self, fd: int, source: RegionLocks | None = None) -> None:
        self._fd: int | None = fd
        self.source = source

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """
        Let go (closing the description drops its lock); idempotent.
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


#: Where a writer locks its upload's data file itself (far past any data).
DATA_LOCK_OFFSET = 1 << 62


def lockData(fd: int, exclusive: bool = True) -> bool:
    """
    Lock the upload's data file itself, through C{fd}'s open file
    description (closing C{fd} lets go): a second lock that does not depend
    on the lock file. Were the lock file removed or replaced while a writer
    holds a lock in it, a process that opens the new one would otherwise
    take the same upload and rename its data file while the first writer
    still appends to it.

    @param exclusive: a write lock (C{fd} open for writing); otherwise a
        read lock, which still conflicts with a writer's.
    @return: whether it was taken (false: another writer holds the file).
    """
    kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    arg = struct.pack(_FLOCK, kind, os.SEEK_SET, DATA_LOCK_OFFSET, 1, 0)
    try:
        fcntl.fcntl(fd, _F_OFD_SETLK, arg)
    except (BlockingIOError, PermissionError):
        return False
    return True


class RegionLocks:
    """
    Non-blocking exclusive locks, per key and kind, on one shared file.
    """

    def __init__(self, path: str) -> None:
        # Kept open to reopen the same file (not whatever the path names
        # now) for each lock: /proc/self/fd/N makes a new open file
        # description. Without /proc, the path is opened again.
        self._path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _reopen(self) -> int:
        try:
            return os.open(f"/proc/self/fd/{self._fd}", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return os.open(self._path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)

    def tryLock(self, key: str, kind: int = WRITER) -> HeldLock | None:
        """
        Lock C{key}'s byte of C{kind} (L{WRITER} or L{STATE}).

        @return: the held lock, or L{None} if anyone else, in this process
            or another, holds it.
        """
        fd = self._reopen()
        arg = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, kind + _region(key), 1, 0)
        try:
            fcntl.fcntl(fd, _F_OFD_SETLK, arg)
        except (BlockingIOError, PermissionError):
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return HeldLock(fd, self)

    def close(self) -> None:
        """
        Close the base descriptor (locks still held stay held until their
        own L{HeldLock.release}).
        """
        os.close(self._fd)
