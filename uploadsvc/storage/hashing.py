"""
Digests of staged and stored bytes, and the running sha-256 a writer keeps.

The digest arithmetic itself is L{uploadsvc.protocol.digests.digestAll}, the
same for request bodies and files; this module only reads files for it and
decides when a hash state remembered in memory may stand for a file's bytes.
Blocking (it reads files): call from the disk pool.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator

from uploadsvc.errors import BadRequest
from uploadsvc.protocol.digests import Hasher, digestAll, newHasher

#: The digest every upload gets (its C{Repr-Digest} in the final answer).
STREAMED = "sha-256"
_READ_SIZE = 1024 * 1024


def newStreamHasher() -> Hasher:
    """
    A fresh running hash for bytes written from offset 0.
    """
    return newHasher(STREAMED)


def readFD(fd: int, size: int = _READ_SIZE) -> Iterator[bytes]:
    """
    The whole file open as C{fd}, in chunks, read by position: a descriptor
    being written keeps its own.
    """
    offset = 0
    while chunk := os.pread(fd, size, offset):
        offset += len(chunk)
        yield chunk


def hashFD(fd: int, algorithms: Iterable[str]) -> dict[str, bytes]:
    """
    Digest the whole file open as C{fd} with each of C{algorithms}.
    """
    return digestAll(algorithms, readFD(fd))


def usableHashState(
    hashState: tuple[str, int, Any] | None, onDisk: dict[str, Any], offset: int
) -> bool:
    """
    Whether a sha-256 state remembered by this process still covers exactly
    the staged bytes, C{0..offset}.

    The staged bytes change only by: an append at C{offset = size} (bytes
    below the size are never rewritten); a rollback to the start of the
    request that appended (which was at or above any size remembered
    before it); a start over, truncate to 0; or a cancel or discard. Each of
    the last two removes the C{.json} first, under the writer and state
    locks, and a new C{.json} gets a new random generation. A state is
    remembered only after the C{.json} naming its generation was written.
    So while the C{.json} carries that same generation, the size never went
    below the remembered offset, and the first C{offset} bytes are the ones
    hashed: if the size equals the offset too, the state covers the file. In
    any other case (no C{.json}, another generation, another size; as when
    another process deleted and rewrote the upload) it is not used and
    completion re-reads the file.

    @param hashState: C{(generation, offset, hasher)}.
    @param onDisk: the C{.json} read under the writer lock (empty if none).
    """
    if hashState is None:
        return False
    generation, stateOffset, _ = hashState
    return onDisk.get("generation") == generation and stateOffset == offset


def verifyStaged(
    staged: Any,
    expected: dict[str, bytes],
    hashStaged: Callable[[Any, set[str]], dict[str, bytes]],
    known: dict[str, bytes] | None = None,
) -> dict[str, bytes]:
    """
    Check a whole staged upload against the digests it must have, before it
    is moved into place: the running sha-256 when it covers the bytes, the
    rest read back with C{hashStaged}.

    @param staged: an L{IStagedUpload}.
    @param expected: algorithm to raw digest.
    @param known: digests of the whole upload already computed (while it
        streamed), used as they are.
    @return: every digest computed (sha-256 always among them).
    @raise BadRequest: C{digest-mismatch}, naming the first that differs.
    """
    computed: dict[str, bytes] = dict(known or {})
    if staged.hasher is not None:
        computed[STREAMED] = staged.hasher.digest()
    missing = (set(expected) | {STREAMED}) - set(computed)
    if missing:
        computed.update(hashStaged(staged, missing))
    for alg, value in expected.items():
        if computed[alg] != value:
            raise BadRequest(
                "digest-mismatch", f"the file's {alg} digest does not match Repr-Digest"
            )
    return computed
