"""
The system calls that durability and atomic replacement rest on, behind one
injected object: tests watch or fail them through the store's own
L{SystemCalls} instead of patching C{os}.
"""

from __future__ import annotations

import os


class SystemCalls:
    """
    C{fsync} and C{replace} as the store makes them (blocking).
    """

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def replace(
        self, src: str, dst: str, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None
    ) -> None:
        os.replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)


#: The calls of the stores and helpers given none of their own.
SYSTEM = SystemCalls()
