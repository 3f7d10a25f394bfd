"""
One writer per upload across processes and hosts: byte-range locks on a
single file.

Each upload owns one byte of C{<root>/.uploadsvc/lock}, at an offset derived
from its key, and its writer holds an open-file-description (OFD) write lock
on that byte. Unlike one lock file per upload there is nothing to create or
delete per upload, and unlike classic POSIX record locks an OFD lock belongs to
the descriptor, so closing some other descriptor of the file never drops it,
and two L{RegionLocks} on one file conflict even inside one process. Locks
are taken with F_OFD_SETLK (Linux 3.15+); NFSv4 carries them between hosts.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct

_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
#: struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid (+ padding)
_FLOCK = "hhqqi4x"


def _region(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:7], "big")


class RegionLocks:
    """
    Non-blocking exclusive locks, one per key, on one shared file.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def tryLock(self, key: str) -> bool:
        """
        Lock C{key}'s byte; false if another descriptor holds it.
        """
        arg = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _region(key), 1, 0)
        try:
            fcntl.fcntl(self._fd, _F_OFD_SETLK, arg)
        except (BlockingIOError, PermissionError):
            return False
        return True

    def unlock(self, key: str) -> None:
        arg = struct.pack(_FLOCK, fcntl.F_UNLCK, os.SEEK_SET, _region(key), 1, 0)
        fcntl.fcntl(self._fd, _F_OFD_SETLK, arg)

    def close(self) -> None:
        os.close(self._fd)
