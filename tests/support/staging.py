"""
Uploads left on disk as a crash would leave them, for tests of recovery.
"""

from __future__ import annotations

from uploadsvc.protocol.decisions import Plan
from uploadsvc.protocol.paths import parseRelativePath
from uploadsvc.storage.filestore import FileStore


def stageFully(
    store: FileStore,
    relative: str,
    data: bytes,
    total: int | None,
    digests: dict[str, str] | None = None,
) -> None:
    """
    Leave C{data} fully staged for C{relative}, as a C{kill -9} between the
    last write and the rename would: with its metadata (the total recorded)
    when C{total} is given, else the data file only (a plain PUT's only
    request writes none).
    """
    _, _, staged = store.begin(
        parseRelativePath(relative), lambda stored: Plan(True, 0, 0, None, total),
        digests or {}, None,
    )
    assert staged is not None
    try:
        staged.writeChunks([data])
        if total is not None:
            staged.sync()
    finally:
        staged.close()


def stageFullyAt(root: str, relative: str, data: bytes, total: int | None) -> None:
    """
    L{stageFully} into the store at C{root} (while no server runs on it).
    """
    store = FileStore(root, fsync=False)
    try:
        stageFully(store, relative, data, total)
    finally:
        store.close()
