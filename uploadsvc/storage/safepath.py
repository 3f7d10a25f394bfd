"""
Walking a client's path inside the root without ever following a link.

Every folder is opened relative to its parent's descriptor with
C{O_NOFOLLOW | O_DIRECTORY}, so a symbolic link anywhere on the way, planted
before or after the server started, stops the walk instead of leading it out
of the root. Blocking: call from the disk thread pool.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys
import threading
from typing import Any, Sequence

from uploadsvc.errors import Conflict, Forbidden, StorageUnavailable
from uploadsvc.storage.syscalls import SYSTEM, SystemCalls

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def openRoot(root: str) -> int:
    """
    Open the storage root itself (which may be reached through links: it is
    the operator's choice, not the client's).
    """
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def openParent(
    rootFD: int,
    folders: Sequence[str],
    create: bool,
    durable: bool = False,
    system: SystemCalls = SYSTEM,
) -> int | None:
    """
    Open the folder that will hold a file, relative to C{rootFD}.

    @param folders: the path's components but the last.
    @param create: make missing folders (mode 0o755).
    @param durable: fsync each folder that gets a new folder, so that the
        path to a completed file survives a power loss.
    @param system: makes the fsyncs.
    @return: a descriptor the caller closes, or L{None} when a folder is
        missing and C{create} is false.
    @raise Forbidden: a component is a symbolic link, or a mount point
        (another file system: nothing could be renamed into it, and a bind
        mount would lead outside the root).
    @raise Conflict: a component is an existing file.
    @raise StorageUnavailable: a folder kept vanishing as it was made
        (removed by someone else at the same time); a later try may work.
    """
    rootMount = mountOf(rootFD)
    fd = os.dup(rootFD)
    try:
        for name in folders:
            nextFD = _step(fd, name, create, durable, system)
            if nextFD is None:
                os.close(fd)
                return None
            os.close(fd)
            fd = nextFD
            if mountOf(fd) != rootMount:
                raise Forbidden("mount-point", f"path crosses a mount point at {name!r}")
        return fd
    except BaseException:
        os.close(fd)
        raise


def mountOf(fd: int) -> tuple[int, int | None]:
    """
    Which mount C{fd} is on: its device, and the kernel's mount id
    (L{None} where neither C{statx} nor C{/proc} tells it). The device
    alone misses a bind mount of a folder of the same file system, which
    would lead a path outside the root all the same.

    One C{statx} call where the kernel (5.8+) reports the mount id; else
    the device from C{fstat} and the id from C{/proc/self/fdinfo} (four
    calls more, on every folder of every path walked: a tenth of a small
    upload's CPU in S4's profile).
    """
    found = _statxMount(fd)
    if found is not None:
        return found
    return os.fstat(fd).st_dev, _fdinfoMount(fd)


def _fdinfoMount(fd: int) -> int | None:
    """
    C{fd}'s mount id from C{/proc/self/fdinfo}, or L{None}.
    """
    try:
        info = os.open(f"/proc/self/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(info, 4096)
    except OSError:
        return None
    finally:
        os.close(info)
    for line in text.splitlines():
        if line.startswith(b"mnt_id:"):
            return int(line.split()[1])
    return None


_AT_EMPTY_PATH = 0x1000
_STATX_MNT_ID = 0x1000
_STATX_SIZE = 256  # struct statx, padding included
_STATX_DEV_MAJOR = 136  # offsets in struct statx (linux/stat.h)
_STATX_DEV_MINOR = 140
_STATX_MNT_ID_AT = 144


def _libcStatx() -> Any:
    """
    glibc's C{statx} (2.28+), or L{None}.
    """
    try:
        statx = ctypes.CDLL(None, use_errno=True).statx
    except (AttributeError, OSError):
        return None
    statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    statx.restype = ctypes.c_int
    return statx


_statx = _libcStatx()
_perThread = threading.local()


def _statxMount(fd: int) -> tuple[int, int] | None:
    """
    C{fd}'s device and mount id from one C{statx} call, or L{None} when
    the kernel or C library cannot tell the mount id that way.
    """
    if _statx is None:
        return None
    try:
        buffer = _perThread.statx
    except AttributeError:
        # (One per thread, reused: a request walks several folders.)
        buffer = _perThread.statx = ctypes.create_string_buffer(_STATX_SIZE)
    if _statx(fd, b"", _AT_EMPTY_PATH, _STATX_MNT_ID, buffer) != 0:
        return None
    raw, order = buffer.raw, sys.byteorder
    if not int.from_bytes(raw[0:4], order) & _STATX_MNT_ID:
        return None
    major = int.from_bytes(raw[_STATX_DEV_MAJOR:_STATX_DEV_MAJOR + 4], order)
    minor = int.from_bytes(raw[_STATX_DEV_MINOR:_STATX_DEV_MINOR + 4], order)
    mountID = int.from_bytes(raw[_STATX_MNT_ID_AT:_STATX_MNT_ID_AT + 8], order)
    return os.makedev(major, minor), mountID


def _step(
    parentFD: int, name: str, create: bool, durable: bool, system: SystemCalls = SYSTEM
) -> int | None:
    """
    Open (or make, then open) the folder C{name} in C{parentFD}; L{None} when
    it is missing and C{create} is false.
    """
    for _ in range(3):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parentFD)
        except FileNotFoundError:
            if not create:
                return None
        except OSError as e:
            _refuse(parentFD, name, e)
            raise
        try:
            os.mkdir(name, 0o755, dir_fd=parentFD)
        except FileExistsError:
            pass  # raced with another upload; open it next round
        except FileNotFoundError:
            raise folderRemoved(f"the folder that holds {name!r} was removed") from None
        else:
            if durable:
                system.fsync(parentFD)
    raise folderRemoved(f"{name!r} vanished three times as it was made")


def folderRemoved(detail: str) -> StorageUnavailable:
    """
    Someone removed a folder of the destination's path while the upload was
    being moved into place: the staged upload is intact, and a later try
    (which makes the folders again) may work.
    """
    return StorageUnavailable(
        "folder-removed", "a folder of the path was removed while the upload was completed",
        detail, retryAfter=1,
    )


def _refuse(parentFD: int, name: str, error: OSError) -> None:
    if error.errno in (errno.ELOOP, errno.ENOTDIR):
        st = os.lstat(name, dir_fd=parentFD)
        if stat.S_ISLNK(st.st_mode):
            raise Forbidden("symlink", f"path crosses a symbolic link at {name!r}")
        raise Conflict("parent-is-file", f"{name!r} is a file, not a folder")


_RENAME_NOREPLACE = 1


def _renameat2() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:  # a C library without it
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2Function = _renameat2()


def renameNoReplace(srcFolderFD: int, src: str, dstFolderFD: int, dst: str) -> bool:
    """
    Rename C{src} onto C{dst} only if nothing is at C{dst}, atomically
    (C{renameat2} with C{RENAME_NOREPLACE}): a file another program makes
    there between a check and the rename is never replaced.

    @return: false when the file system cannot do it atomically (NFS, an
        old kernel): the caller falls back to a check and a plain rename.
    @raise FileExistsError: something is at C{dst}.
    """
    if _renameat2Function is None:
        return False
    result = _renameat2Function(
        srcFolderFD, os.fsencode(src), dstFolderFD, os.fsencode(dst), _RENAME_NOREPLACE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), dst)


def lstatAt(parentFD: int, name: str) -> os.stat_result | None:
    """
    C{lstat} of C{name} in the folder C{parentFD}, L{None} when absent.
    """
    try:
        return os.lstat(name, dir_fd=parentFD)
    except FileNotFoundError:
        return None


def fsyncFolder(fd: int, system: SystemCalls = SYSTEM) -> None:
    """
    Make a rename or unlink in the folder C{fd} durable.
    """
    system.fsync(fd)
