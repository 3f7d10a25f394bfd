"""
The system calls that durability and atomic replacement rest on, the reads
of state files another host may replace under them, and the pause between
tries of a contended state lock, behind one injected object:
tests watch or fail them through the store's own L{SystemCalls} instead of
patching C{os} or C{time}.
"""

from __future__ import annotations

import os
import time


class SystemCalls:
    """
    C{fsync}, C{replace}, C{read}, C{listdir} and C{sleep} as the store makes them
    (blocking).
    """

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def replace(
        self, src: str, dst: str, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None
    ) -> None:
        os.replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    def read(self, fd: int, size: int) -> bytes:
        """
        Read a state file (a C{.json}): on a shared file system this fails
        (C{ENOENT}, C{ESTALE}) when another host replaced or removed the
        file after this host opened it.
        """
        return os.read(fd, size)

    def listdir(self, folderFD: int) -> list[str]:
        """
        The names in the folder open as C{folderFD}, as the file system
        lists them now (see L{uploadsvc.storage.freshness.isListed}).
        """
        return os.listdir(folderFD)

    def sleep(self, seconds: float) -> None:
        """
        Pause the calling pool thread between two tries of a state lock
        (see L{uploadsvc.storage.takeover.stateLocked}).
        """
        time.sleep(seconds)


#: The calls of the stores and helpers given none of their own.
SYSTEM = SystemCalls()
