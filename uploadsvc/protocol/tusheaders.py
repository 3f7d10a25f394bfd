"""
The header values of tus 1.0.0 (docs/protocol-tus.md): C{Tus-Resumable},
offsets and lengths, C{Upload-Metadata}, C{Upload-Concat},
C{Upload-Checksum}, the body's content type.

Pure: each parser rejects rather than repairs (full-match patterns, capped
digit counts) and raises the L{UploadError} tus gives it: C{412} for another
protocol version, C{415} for another body type, C{400} for anything
malformed. The decisions that use them are L{uploadsvc.protocol.tus}.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any, Callable, Union

import attrs

from uploadsvc.errors import BadRequest, PreconditionFailed, UnsupportedMediaType
from uploadsvc.protocol.paths import UploadPath, parseRelativePath

#: The one version spoken, as C{Tus-Resumable} and C{Tus-Version} carry it.
VERSION = b"1.0.0"

#: The extensions served, as C{Tus-Extension} lists them.
EXTENSIONS = (
    b"creation", b"creation-with-upload", b"creation-defer-length", b"termination",
    b"checksum", b"expiration", b"concatenation",
)

#: C{Upload-Checksum} algorithms: name to (constructor, digest length).
CHECKSUMS: dict[str, tuple[Callable[[], Any], int]] = {
    "sha1": (hashlib.sha1, 20),
    "sha256": (hashlib.sha256, 32),
    "md5": (hashlib.md5, 16),
}

#: The content type of a tus PATCH body.
OFFSET_STREAM = b"application/offset+octet-stream"

#: Where tus lives, under the mount prefix.
ROOT = b"/.tus"

#: Digits of an offset or length: more than 2**63 is refused before int().
MAX_DIGITS = 19
#: Bytes of an C{Upload-Metadata} or C{Upload-Concat} value.
MAX_HEADER = 16 * 1024
#: Pairs in C{Upload-Metadata}; partial uploads in one C{Upload-Concat}.
MAX_PAIRS = 64
MAX_PARTS = 256

_DIGITS = re.compile(rb"[0-9]{1,%d}" % MAX_DIGITS)
_KEY = re.compile(rb"[!-+\--~]+")  # printable ASCII, no space, no comma
_B64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_OWS = b" \t"
#: An upload id in a URL.
ID = rb"[0-9a-f]{32}"
_ABSOLUTE = re.compile(rb"https?://[^/?#\s]+(/[^?#\s]*)")


def headerValue(headers: Any, name: bytes) -> bytes | None:
    """
    The one value of header C{name} (twisted's C{Headers}), L{None} when
    absent.

    @raise BadRequest: the header is sent more than once.
    """
    values = headers.getRawHeaders(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest("duplicate-header", f"{name.decode()} is sent more than once")
    return values[0]  # type: ignore[no-any-return]


def checkResumable(value: bytes | None) -> None:
    """
    Every tus request but C{OPTIONS} names the version it speaks.

    @raise PreconditionFailed: it is not C{1.0.0} (the answer names the
        version served in C{Tus-Version}).
    """
    if value != VERSION:
        raise PreconditionFailed(
            "tus-version", "this server speaks tus 1.0.0 (Tus-Resumable: 1.0.0)",
            {b"Tus-Version": VERSION},
        )


def parseNumber(value: bytes, name: str) -> int:
    """
    A non-negative decimal of at most L{MAX_DIGITS} digits, nothing else.

    @raise BadRequest: C{bad-<name>}.
    """
    if _DIGITS.fullmatch(value) is None:
        raise BadRequest(
            f"bad-{name.lower()}", f"{name} must be a decimal number of at most {MAX_DIGITS} digits"
        )
    return int(value)


def parseOptionalNumber(value: bytes | None, name: str) -> int | None:
    return None if value is None else parseNumber(value, name)


def parseDeferLength(value: bytes | None) -> bool:
    """
    C{Upload-Defer-Length}: absent, or C{1}.
    """
    if value is None:
        return False
    if value != b"1":
        raise BadRequest("bad-upload-defer-length", "Upload-Defer-Length must be 1")
    return True


@attrs.frozen
class Metadata:
    """
    C{Upload-Metadata}: keys to decoded values (L{None}: a key alone), in
    the order sent, and the value as sent (echoed by C{HEAD}).
    """

    pairs: tuple[tuple[str, bytes | None], ...] = ()
    raw: bytes = b""

    def get(self, key: str) -> bytes | None:
        for name, value in self.pairs:
            if name == key:
                return value
        return None


def parseMetadata(value: bytes | None) -> Metadata:
    """
    C{Upload-Metadata}: comma-separated C{key base64value} pairs (a key
    alone is allowed); keys are printable ASCII without spaces or commas,
    and unique; values are strict base64. An empty value means none.

    @raise BadRequest: C{bad-metadata}, with what is wrong.
    """
    if value is None or value.strip(_OWS) == b"":
        return Metadata()
    if len(value) > MAX_HEADER:
        raise _badMetadata(f"longer than {MAX_HEADER} bytes")
    items = value.split(b",")
    if len(items) > MAX_PAIRS:
        raise _badMetadata(f"more than {MAX_PAIRS} pairs")
    pairs: list[tuple[str, bytes | None]] = []
    for item in items:
        key, space, encoded = item.lstrip(_OWS).partition(b" ")
        encoded = encoded.strip(_OWS)
        if _KEY.fullmatch(key) is None:
            raise _badMetadata("a key is empty or not printable ASCII")
        if space and _B64.fullmatch(encoded) is None:
            raise _badMetadata(f"the value of {key.decode('ascii')} is not base64")
        name = key.decode("ascii")
        if any(name == seen for seen, _ in pairs):
            raise _badMetadata(f"the key {name} is sent twice")
        decoded = base64.b64decode(encoded, validate=True) if space else None
        pairs.append((name, decoded))
    return Metadata(tuple(pairs), value)


def _badMetadata(why: str) -> BadRequest:
    return BadRequest("bad-metadata", f"Upload-Metadata: {why}")


def metadataDestination(metadata: Metadata, prefix: bytes = b"") -> UploadPath | None:
    """
    The destination a client names: C{relativePath} (what Uppy sends for a
    file of a dropped folder, as C{/folder/name}: the one leading slash is
    the drop's root; C{null} for any other file) wins over C{filename};
    L{None} when neither is sent. Both obey section 1's rules.

    @raise BadRequest: not UTF-8, or a path section 1 refuses.
    """
    for key in ("relativePath", "filename"):
        value = metadata.get(key)
        if value is None or (key == "relativePath" and value == b"null"):
            # Uppy sends relativePath "null" (String(null)) for a file that
            # is not in a dropped folder.
            continue
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("bad-metadata", f"Upload-Metadata: {key} is not UTF-8") from None
        if key == "relativePath" and text.startswith("/"):
            # A dropped folder's entries are rooted at the drop
            # ("/photos/a.jpg", FileSystemEntry.fullPath): one slash off.
            text = text[1:]
        try:
            return parseRelativePath(text, prefix)
        except BadRequest as e:
            raise BadRequest(e.code, f"Upload-Metadata {key}: {e.reason}") from None
    return None


@attrs.frozen
class Partial:
    """
    C{Upload-Concat: partial}: a part of a later concatenation, landing
    nowhere on its own.
    """


@attrs.frozen
class Final:
    """
    C{Upload-Concat: final;<url> ...}: the ids of the parts, in order.
    """

    parts: tuple[str, ...]


Concat = Union[Partial, Final]


def parseConcat(
    value: bytes | None, prefix: bytes = b"", publicPrefix: bytes | None = None
) -> Concat | None:
    """
    C{Upload-Concat}: C{partial}, or C{final;} and the space-separated URLs
    of partial uploads of this server: C{<prefix>/.tus/<id>}, or an
    absolute C{http(s)} URL with that path (any host: behind a proxy the
    client's host is not ours to know), or with C{<publicPrefix>/.tus/<id>}
    (the path a trusted proxy serves the server under: the URLs handed out).

    @raise BadRequest: C{bad-concat}, for anything else (another path, a
        query, a repeated part, an empty list).
    """
    if value is None:
        return None
    if value == b"partial":
        return Partial()
    if len(value) > MAX_HEADER:
        raise _badConcat(f"longer than {MAX_HEADER} bytes")
    kind, semicolon, rest = value.partition(b";")
    if kind != b"final" or not semicolon:
        raise _badConcat("must be partial or final;<urls>")
    urls = rest.strip(_OWS).split()
    if not urls:
        raise _badConcat("final; names no partial upload")
    if len(urls) > MAX_PARTS:
        raise _badConcat(f"more than {MAX_PARTS} partial uploads")
    roots = [prefix.rstrip(b"/") + ROOT]
    if publicPrefix is not None:
        roots.append(publicPrefix.rstrip(b"/") + ROOT)
    own = re.compile(b"(?:" + b"|".join(re.escape(r) for r in roots) + b")/(" + ID + b")")
    parts: list[str] = []
    for url in urls:
        absolute = _ABSOLUTE.fullmatch(url)
        path = absolute.group(1) if absolute is not None else url
        found = own.fullmatch(path)
        if found is None:
            raise _badConcat("a partial upload is not an upload of this server")
        part = found.group(1).decode("ascii")
        if part in parts:
            raise _badConcat("a partial upload is named twice")
        parts.append(part)
    return Final(tuple(parts))


def _badConcat(why: str) -> BadRequest:
    return BadRequest("bad-concat", f"Upload-Concat: {why}")


@attrs.frozen
class Checksum:
    """
    C{Upload-Checksum}: the digest of this request's body.
    """

    alg: str
    digest: bytes


def parseChecksum(value: bytes | None) -> Checksum | None:
    """
    C{Upload-Checksum: <alg> <base64>} with an algorithm of L{CHECKSUMS}.

    @raise BadRequest: C{bad-checksum} (an unknown algorithm, bad base64, a
        digest of the wrong length).
    """
    if value is None:
        return None
    alg, space, encoded = value.partition(b" ")
    name = alg.decode("ascii", "replace")
    if name not in CHECKSUMS:
        raise BadRequest(
            "bad-checksum",
            "Upload-Checksum: the algorithm must be one of " + ", ".join(CHECKSUMS),
        )
    if not space or _B64.fullmatch(encoded) is None or not encoded:
        raise BadRequest("bad-checksum", "Upload-Checksum: the digest is not base64")
    try:
        digest = base64.b64decode(encoded, validate=True)
    except binascii.Error:  # pragma: no cover - the pattern is stricter
        raise BadRequest("bad-checksum", "Upload-Checksum: the digest is not base64") from None
    if len(digest) != CHECKSUMS[name][1]:
        raise BadRequest(
            "bad-checksum", f"Upload-Checksum: a {name} digest has {CHECKSUMS[name][1]} bytes"
        )
    return Checksum(name, digest)


def newChecksumHasher(alg: str) -> Any:
    """
    A hash object for an algorithm of L{CHECKSUMS}.
    """
    return CHECKSUMS[alg][0]()


def checkContentType(value: bytes | None) -> None:
    """
    A tus body (a PATCH's, a creation's) is C{application/offset+octet-stream}.

    @raise UnsupportedMediaType: C{415} for any other type, or none.
    """
    if value is None or value.split(b";")[0].strip(_OWS).lower() != OFFSET_STREAM:
        raise UnsupportedMediaType(
            "content-type", "a tus body carries Content-Type: application/offset+octet-stream"
        )
