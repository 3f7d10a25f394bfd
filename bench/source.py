"""
The source of every upload body, and the byte-for-byte check of what a server
stored.

The source is one file of random bytes, made once and kept under the work
folder; each upload sends one region of it (an offset and a size) with
C{os.sendfile}, so the client copies nothing in user space.  A stored file is
right when its size and SHA-256 equal those of its region.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_BLOCK = 4 * 1024 * 1024


def ensureSource(path: Path, size: int) -> None:
    """
    Make C{path} a file of at least C{size} random bytes, reusing it when it
    is already large enough.
    """
    if path.exists() and path.stat().st_size >= size:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as f:
        written = 0
        while written < size:
            block = os.urandom(min(_BLOCK, size - written))
            f.write(block)
            written += len(block)
    os.replace(partial, path)


def regionDigest(fd: int, offset: int, size: int) -> str:
    """
    The SHA-256 (hex) of C{size} bytes of C{fd} from C{offset}.

    @raise ValueError: when the file ends before the region does.
    """
    h = hashlib.sha256()
    done = 0
    while done < size:
        block = os.pread(fd, min(_BLOCK, size - done), offset + done)
        if not block:
            raise ValueError(f"short read at {offset + done}")
        h.update(block)
        done += len(block)
    return h.hexdigest()


class Verifier:
    """
    Checks stored files against their source regions, remembering each
    region's digest so that repeated runs hash the source only once.

    @ivar _fd: the source file, open for reading.
    @ivar _known: region digests by C{(offset, size)}.
    """

    def __init__(self, source: Path) -> None:
        self._fd = os.open(source, os.O_RDONLY)
        self._known: dict[tuple[int, int], str] = {}

    def close(self) -> None:
        """
        Close the source file.
        """
        os.close(self._fd)

    def expected(self, offset: int, size: int) -> str:
        """
        The SHA-256 (hex) of a source region.
        """
        key = (offset, size)
        if key not in self._known:
            self._known[key] = regionDigest(self._fd, offset, size)
        return self._known[key]

    def check(self, stored: Path, offset: int, size: int) -> str | None:
        """
        Compare a stored file with its source region.

        @return: L{None} when they are equal byte for byte, or why not.
        """
        try:
            fd = os.open(stored, os.O_RDONLY)
        except OSError as e:
            return f"missing: {e.strerror}"
        try:
            actual = os.fstat(fd).st_size
            if actual != size:
                return f"size {actual} != {size}"
            if regionDigest(fd, 0, size) != self.expected(offset, size):
                return "content differs"
        finally:
            os.close(fd)
        return None
