"""
Copying staged bytes from file to file without holding them: the disk side of
tus concatenation (L{uploadsvc.storage.interfaces.IUploadStore.concatenate}).
"""

from __future__ import annotations

import errno
import os
from typing import Sequence

from uploadsvc.storage.freshness import dataSize, emptyFile

#: Bytes per system call: a few MiB keeps each call short on a slow disk.
CHUNK = 4 * 1024 * 1024

#: copy_file_range refusals that mean "not between these two files": the
#: copy goes on with pread/pwrite.
_NO_RANGE_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)


def copyAll(sources: Sequence[int], out: int, chunk: int = CHUNK) -> int:
    """
    Write the whole of each file in C{sources}, in order, at the start of
    C{out} (emptied first), in the kernel when it can (C{copy_file_range}),
    a chunk at a time otherwise; return the bytes written.
    """
    emptyFile(out)
    written = 0
    for source in sources:
        size = dataSize(source)
        done = 0
        while done < size:
            n = _copy(source, out, done, written, min(chunk, size - done))
            if n == 0:
                raise OSError(errno.EIO, "a partial upload ended before its size")
            done += n
            written += n
    return written


def _copy(source: int, out: int, at: int, to: int, count: int) -> int:
    try:
        return os.copy_file_range(source, out, count, at, to)
    except OSError as e:
        if e.errno not in _NO_RANGE_COPY:
            raise
    data = os.pread(source, count, at)
    return os.pwrite(out, data, to) if data else 0
