"""
HMAC-signed upload URLs: an application that holds the signing key hands a
browser a URL good for one path, one method and a limited time.

A signed URL carries two query parameters::

    /photos/a.jpg?expires=1767225600&sig=<hex HMAC-SHA256>

The signature is HMAC-SHA256, under the key, of the ASCII text
C{"METHOD\\n<raw path>\\n<expires>"}:

  - C{METHOD} is the request method in upper case, with C{POST} written as
    C{PUT} (the two are synonyms in the upload protocol);
  - the raw path is the request path exactly as it appears on the request
    line, before the C{?}, percent-escapes untouched and the mount prefix
    included;
  - C{expires} is a Unix time in whole seconds; the URL is refused after it.

A signature for C{PUT} also authorizes C{HEAD} on the same path, since a client
that resumes needs to ask the offset first. C{DELETE} needs its own signature.
Other query parameters are ignored (and not signed).

Pure: bytes and integers in, a verdict out; the time is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Sequence

from uploadsvc.errors import Unauthorized

#: The query parameters of a signed URL.
EXPIRES = b"expires"
SIGNATURE = b"sig"

_HEX_SIGNATURE = re.compile(rb"[0-9a-fA-F]{64}")
_EXPIRY = re.compile(rb"[0-9]{1,12}")


def canonicalMethod(method: bytes) -> bytes:
    """
    The method as it is signed: upper case, C{POST} as C{PUT}.
    """
    method = method.upper()
    return b"PUT" if method == b"POST" else method


def signedMethods(method: bytes) -> tuple[bytes, ...]:
    """
    The signed methods that authorize a request with C{method}: its own, and
    for C{HEAD} also C{PUT} (resuming starts with an offset query).
    """
    method = canonicalMethod(method)
    if method == b"HEAD":
        return (b"HEAD", b"PUT")
    return (method,)


def signature(key: bytes, method: bytes, rawPath: bytes, expires: int) -> bytes:
    """
    The lowercase hex signature of C{method} on C{rawPath} until C{expires}.
    """
    message = b"%s\n%s\n%d" % (canonicalMethod(method), rawPath, expires)
    return hmac.new(key, message, hashlib.sha256).hexdigest().encode("ascii")


def signQuery(key: bytes, method: bytes, rawPath: bytes, expires: int) -> bytes:
    """
    The query string (without C{?}) that signs C{method} on C{rawPath}.
    """
    return b"expires=%d&sig=%s" % (expires, signature(key, method, rawPath, expires))


def queryParameters(query: bytes) -> dict[bytes, list[bytes]]:
    """
    Split a raw query string into its parameters, values left encoded (the
    signature parameters are digits and hex, which need no decoding).
    """
    params: dict[bytes, list[bytes]] = {}
    for pair in query.split(b"&"):
        if pair:
            name, _, value = pair.partition(b"=")
            params.setdefault(name, []).append(value)
    return params


def hasSignature(query: bytes) -> bool:
    """
    Whether a raw query string carries signed-URL parameters at all.
    """
    params = queryParameters(query)
    return SIGNATURE in params or EXPIRES in params


def checkSignature(
    keys: Sequence[bytes], method: bytes, rawPath: bytes, query: bytes, now: float
) -> None:
    """
    Verify the signed-URL parameters of a request.

    Every key is tried, whatever the outcome of the earlier ones, so that
    the time taken does not tell which key (or how much of a signature)
    matched.

    @param keys: the keys that are currently valid (several during a key
        rotation).
    @param rawPath: the request path before C{?}, as received.
    @param query: the raw query string, after C{?}.
    @param now: the current Unix time.
    @raise Unauthorized: C{bad-signature} for missing, repeated or
        malformed parameters or a signature no key made;
        C{signature-expired} for a URL past its expiry.
    """
    params = queryParameters(query)
    expiresValues = params.get(EXPIRES, [])
    sigValues = params.get(SIGNATURE, [])
    if (
        len(expiresValues) != 1
        or len(sigValues) != 1
        or _EXPIRY.fullmatch(expiresValues[0]) is None
        or _HEX_SIGNATURE.fullmatch(sigValues[0]) is None
    ):
        raise Unauthorized("bad-signature", "malformed signed URL (need expires and sig)")
    expires = int(expiresValues[0])
    given = sigValues[0].lower()
    matched = False
    for key in keys:
        for signed in signedMethods(method):
            matched |= hmac.compare_digest(signature(key, signed, rawPath, expires), given)
    if not matched:
        raise Unauthorized("bad-signature", "the URL's signature does not match")
    if now > expires:
        raise Unauthorized("signature-expired", "the signed URL has expired")
