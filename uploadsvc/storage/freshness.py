"""
What another host changed, seen through this host's caches: the size of a
staged file and whether a state file still has its name, read so that a
mount's attribute and entry caches (FUSE: GlusterFS, CephFS; NFS) cannot
answer in the file system's place.

On a shared file system each host's kernel (and, with FUSE, the file
system's own client) caches a file's attributes and its names' lookups for
a while (GlusterFS: one second by default). Through those caches C{fstat}
of a freshly opened file reports the size this host saw earlier, not the
bytes another host has written and fsync'd; and a name that another host
renamed away or replaced still opens the old file. On a local disk both
helpers answer what C{fstat} and C{open} would.
"""

from __future__ import annotations

import errno
import os
import re

from uploadsvc.storage.syscalls import SYSTEM, SystemCalls

#: Segments of data a staged file is read through before its size is
#: taken from its attributes instead (ours have one: bytes are appended).
_MAX_SEGMENTS = 64


def dataSize(fd: int) -> int:
    """
    The size of the file open as C{fd}, asked of the file system itself
    rather than of the attribute cache: the end of its data, found with
    C{lseek(SEEK_HOLE)}, which FUSE sends to the file system (GlusterFS
    answers from the brick) and local file systems answer from the inode.

    A staged file has no holes (its bytes are appended at its end), so the
    first hole is its end. A trailing hole (a file extended with
    C{ftruncate}) is not counted; without C{SEEK_HOLE} (an old kernel or a
    file system that refuses it) the answer is C{fstat}'s. The file
    position is left where it was.
    """
    position = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        end = 0
        for _ in range(_MAX_SEGMENTS):
            try:
                hole = os.lseek(fd, end, os.SEEK_HOLE)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    return end  # nothing at or after end: the file ends there
                raise
            try:
                end = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    return hole  # no data after this hole
                raise
        return os.fstat(fd).st_size
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        return os.fstat(fd).st_size
    finally:
        os.lseek(fd, position, os.SEEK_SET)


def emptyFile(fd: int) -> None:
    """
    Empty the file open as C{fd}, unless it is empty already (a new
    upload's staged file: most of them). On ext4, truncating a file to size
    0 marks it to have its data written out when it is next closed
    (C{auto_da_alloc}): a new file truncated for nothing had its bytes
    written out at each completion, in the disk thread, even with
    C{--no-fsync} (S4: a disk write per upload; S1: 2 GiB written out before
    the answer). Both sizes are asked: the attribute cache's and the file
    system's (L{dataSize}: another host may have written it).
    """
    if os.fstat(fd).st_size or dataSize(fd):
        os.ftruncate(fd, 0)


def isListed(folderFD: int, name: str, system: SystemCalls = SYSTEM) -> bool:
    """
    Whether C{name} is in the folder open as C{folderFD}, as the file system
    lists it now (a directory read is not answered from the name cache).

    Reading the folder also refreshes this host's cached names of the
    entries it lists (FUSE's READDIRPLUS): a name another host replaced
    (a metadata file rewritten with C{rename}) opens the new file after it.
    A name no longer listed must not be opened: its cached lookup would
    still open the file that another host renamed away (a completed
    upload, now at its destination) or removed.

    Only a shared file system needs it (see L{isLocalType}).

    @param system: makes the listing.
    """
    return name in system.listdir(folderFD)


#: What a file operation fails with when another host removed or renamed
#: the file after this host opened or looked it up.
GONE = (errno.ENOENT, errno.ESTALE)


def closeReader(fd: int) -> None:
    """
    Close a descriptor that was only read through. On a FUSE mount, the
    close of a file another host removed meanwhile can fail (C{ENOENT},
    C{ESTALE}); nothing was written through it, so nothing is lost.
    """
    try:
        os.close(fd)
    except OSError as e:
        if e.errno not in GONE:
            raise


def _unescape(field: str) -> str:
    """
    A mount point as the kernel escapes it in C{mountinfo} (space, tab,
    newline and backslash as C{\\ooo} octal), unescaped.
    """
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mountType(path: str, mountinfo: str) -> str | None:
    """
    The file system type of the mount that holds C{path} (absolute, links
    resolved), from the text of C{/proc/self/mountinfo}: the mount with the
    longest mount point that is C{path} or one of its parents, last mounted
    last. L{None} when no line names one.
    """
    best: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        point = _unescape(fields[4])
        kind = line.split(" - ", 1)[1].split()[0]
        if path == point or path.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= best[0]:
                best = (len(point), kind)
    return best[1] if best else None


#: File systems whose caches are this kernel's own, so what another
#: process changed is seen at once: the listing before an open
#: (L{isListed}) is skipped on them. Anything else (FUSE, NFS, CephFS,
#: SMB, a type not named here) is taken for shared and listed first.
LOCAL_TYPES = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "jfs", "reiserfs",
    "bcachefs", "zfs", "overlay",
})


def isLocalType(kind: str | None) -> bool:
    """
    Whether a mount of type C{kind} (L{mountType}'s answer) is a local file
    system of L{LOCAL_TYPES}; an unknown type is not.
    """
    return kind in LOCAL_TYPES


def rootMountType(path: str) -> str | None:
    """
    The type of the mount that holds C{path}, from C{/proc/self/mountinfo}
    (read once per call: a store asks when it opens its root, never per
    request); L{None} when it cannot be read.
    """
    try:
        with open("/proc/self/mountinfo") as f:
            text = f.read()
    except OSError:
        return None
    return mountType(os.path.realpath(path), text)


def onFuse(kind: str | None) -> bool:
    """
    Whether a mount of type C{kind} (L{rootMountType}'s answer) is a FUSE
    mount (GlusterFS, among others), whose page cache and sizes can lag the
    bytes this very process wrote: see
    L{uploadsvc.storage.staged.StagedFile.spliceable}.
    """
    return kind is not None and kind.startswith("fuse")
