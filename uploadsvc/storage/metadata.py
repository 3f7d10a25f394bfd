"""
What an upload's C{<key>.json} may hold.

The file is the server's own, but a power loss under C{--no-fsync}, a
restored backup or a hand edit can leave anything there. Metadata of the
wrong shape is treated like metadata that is not JSON at all (the upload's
offset is its data file's size; the total and digests are learnt again):
never a 500 on every request, and never a digest that cannot be right
discarding an upload at completion.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from typing import Any

from uploadsvc.protocol.digests import digestLength
from uploadsvc.protocol.paths import UploadPath
from uploadsvc.storage.statedir import CorruptState


def checkInfo(info: dict[str, Any], where: str) -> None:
    """
    Check the shape of an upload's metadata, read from C{where}.

    @raise CorruptState: a field has the wrong type or value.
    """
    try:
        _check(info)
    except BadMetadata as e:
        raise CorruptState(f"{where}: {e}") from None


class BadMetadata(ValueError):
    pass


def _check(info: dict[str, Any]) -> None:
    total = info.get("total")
    if total is not None and (type(total) is not int or total < 0):
        raise BadMetadata(f"its total is {total!r}")
    for name in ("path", "generation"):
        if name in info and not isinstance(info[name], str):
            raise BadMetadata(f"its {name} is {info[name]!r}")
    attributes = info.get("attributes", {})
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise BadMetadata(f"its attributes are {attributes!r}")
    if type(info.get("partial", False)) is not bool:
        raise BadMetadata(f"its partial flag is {info['partial']!r}")
    created = info.get("created", 0)
    if type(created) not in (int, float):
        raise BadMetadata(f"its creation time is {created!r}")
    digests = info.get("digests", {})
    if not isinstance(digests, dict):
        raise BadMetadata(f"its digests are {digests!r}")
    for alg, value in digests.items():
        if not isinstance(value, str):
            raise BadMetadata(f"its {alg} digest is {value!r}")
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error:
            raise BadMetadata(f"its {alg} digest is not base64") from None
        if len(raw) != digestLength(alg):
            raise BadMetadata(f"its {alg} digest has {len(raw)} bytes")


def newGeneration() -> str:
    """
    A random generation: new whenever an upload's bytes start over.
    """
    return secrets.token_hex(16)


def createdInfo(
    path: UploadPath,
    key: str,
    total: int | None,
    attributes: Any,
    partial: bool,
    now: float | None = None,
) -> dict[str, Any]:
    """
    Metadata of an upload made by C{create} (see L{IUploadStore.create}).
    """
    info = newInfo(path, key, now)
    if total is not None:
        info["total"] = total
    if attributes:
        info["attributes"] = dict(attributes)
    if partial:
        info["partial"] = True
    return info


def newInfo(path: UploadPath, key: str, now: float | None = None) -> dict[str, Any]:
    """
    Metadata of an upload (re)started now, with a generation of its own
    (and the id of an upload made by C{create}: its key is C{i-<id>}).

    @param now: the creation time (default: the system's clock).
    """
    info: dict[str, Any] = {
        "path": path.relative,
        "created": time.time() if now is None else now,
        "generation": newGeneration(),
    }
    if key.startswith("i-"):
        info["uploadId"] = key[2:]
    return info
