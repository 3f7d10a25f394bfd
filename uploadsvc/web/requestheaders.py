"""
What a write request's headers say, read once: its length, its range, the
size it claims, its digests.
"""

from __future__ import annotations

import base64
from typing import Any

from uploadsvc.protocol.digests import DigestSet, parseDigestHeader
from uploadsvc.protocol.ranges import ContentRange, RangeQuery


def contentLength(request: Any) -> int | None:
    """
    The declared body length; L{None} for a chunked body.
    """
    value = request.requestHeaders.getRawHeaders(b"Content-Length")
    if value is None:
        return None
    return int(value[-1])  # the channel refused non-digits already


def declaredEnd(rng: ContentRange | RangeQuery | None, length: int | None) -> int | None:
    """
    The largest size the headers claim (a lying Content-Length counts).
    """
    claims = [length] if length is not None else []
    if isinstance(rng, ContentRange):
        claims.append(rng.total if rng.total is not None else rng.last + 1)
    return max(claims, default=None)


def digestHeader(request: Any, name: bytes) -> DigestSet:
    """
    A C{Repr-Digest} or C{Content-Digest} field, all its lines joined.
    """
    values = request.requestHeaders.getRawHeaders(name)
    return parseDigestHeader(b", ".join(values)) if values else DigestSet()


def digestsB64(digests: DigestSet) -> dict[str, str]:
    """
    Digests as the store records them (algorithm to base64).
    """
    return {alg: base64.b64encode(v).decode("ascii") for alg, v in digests.values}
