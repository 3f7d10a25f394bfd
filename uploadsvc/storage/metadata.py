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
from typing import Any

from uploadsvc.protocol.digests import digestLength
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
