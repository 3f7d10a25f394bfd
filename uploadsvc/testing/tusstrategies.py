"""
Hypothesis strategies for tus 1.0 header values (docs/protocol-tus.md):
C{Upload-Metadata}, C{Upload-Concat}, C{Upload-Checksum}, offsets and
lengths, well-formed and hostile.

Like L{uploadsvc.testing.strategies}, they restate the rules without calling
the parsers of L{uploadsvc.protocol.tusheaders}, so that properties checked with
them can fail. Import only where hypothesis is installed.
"""

from __future__ import annotations

import base64
import hashlib

from hypothesis import strategies as st

#: Printable ASCII without space and comma: what a metadata key may hold.
KEY_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if c != 0x2C)

CHECKSUM_ALGS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}

metadataKeys = st.text(alphabet=KEY_CHARS, min_size=1, max_size=20)


@st.composite
def metadataPairs(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    """
    A well-formed C{Upload-Metadata} value and the pairs it says (unique
    keys; a value may be empty, or absent with its space).
    """
    keys = draw(st.lists(metadataKeys, min_size=1, max_size=8, unique=True))
    pairs: list[tuple[str, bytes | None]] = []
    items = []
    for key in keys:
        value = draw(st.one_of(st.none(), st.binary(max_size=40)))
        pairs.append((key, value))
        item = key if value is None else key + " " + base64.b64encode(value).decode()
        items.append(draw(st.sampled_from(["", " ", "\t"])) + item)
    return ",".join(items).encode("ascii"), pairs


@st.composite
def hostileMetadata(draw: st.DrawFn) -> bytes:
    """
    An C{Upload-Metadata} value that breaks one rule: a duplicate key, a
    value that is not strict base64, a key with a control or non-ASCII
    character, or an empty key.
    """
    header, pairs = draw(metadataPairs())
    kind = draw(st.sampled_from(["duplicate", "badB64", "badKey", "emptyKey"]))
    if kind == "duplicate":
        return header + b"," + pairs[0][0].encode("ascii")
    if kind == "badB64":
        bad = draw(st.sampled_from(["abc", "a===", "ab=c", "****", "YQ", "Y Q==", "YQ==="]))
        return header + b",k " + bad.encode("ascii")
    if kind == "badKey":
        char = draw(st.sampled_from(["\x00", "\x7f", "\u00e9", "\x1f"]))
        return header + b"," + ("k" + char).encode("utf-8") + b" YQ=="
    return header + draw(st.sampled_from([b",", b", ", b",,x"]))  # an empty item


ids = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)


@st.composite
def concatValues(draw: st.DrawFn, prefix: bytes = b"") -> tuple[bytes, tuple[str, ...]]:
    """
    A well-formed C{Upload-Concat: final;...} naming our own uploads (as
    paths, or absolute URLs of any host), and the ids in order.
    """
    parts = draw(st.lists(ids, min_size=1, max_size=6, unique=True))
    urls = []
    for part in parts:
        path = prefix + b"/.tus/" + part.encode("ascii")
        host = draw(st.sampled_from([b"", b"http://127.0.0.1:8080", b"https://example.org"]))
        urls.append(host + path)
    return b"final;" + b" ".join(urls), tuple(parts)


@st.composite
def hostileConcat(draw: st.DrawFn) -> bytes:
    """
    An C{Upload-Concat} value to refuse: another kind, another path, a
    query, an id of another shape, a repeated part, an empty list.
    """
    value, parts = draw(concatValues())
    kind = draw(st.sampled_from(["kind", "path", "query", "shape", "repeat", "empty", "ftp"]))
    if kind == "kind":
        return draw(st.sampled_from([b"Partial", b"final", b"finale;/.tus/" + b"0" * 32, b""]))
    if kind == "path":
        return b"final;/files/" + parts[0].encode("ascii")
    if kind == "query":
        return value + b"?x=1"
    if kind == "shape":
        return b"final;/.tus/" + parts[0].upper().encode("ascii") + b"0"
    if kind == "repeat":
        return value + b" /.tus/" + parts[0].encode("ascii")
    if kind == "ftp":
        return b"final;ftp://h/.tus/" + parts[0].encode("ascii")
    return b"final; "


@st.composite
def checksums(draw: st.DrawFn) -> tuple[bytes, str, bytes]:
    """
    A well-formed C{Upload-Checksum} value, its algorithm and digest.
    """
    alg = draw(st.sampled_from(sorted(CHECKSUM_ALGS)))
    digest = CHECKSUM_ALGS[alg](draw(st.binary(max_size=64))).digest()
    return alg.encode() + b" " + base64.b64encode(digest), alg, digest


@st.composite
def hostileChecksums(draw: st.DrawFn) -> bytes:
    """
    An C{Upload-Checksum} value to refuse: an unknown or mis-cased
    algorithm, a missing or malformed digest, a digest of another length.
    """
    value, alg, digest = draw(checksums())
    kind = draw(st.sampled_from(["alg", "case", "missing", "b64", "length", "twoSpaces"]))
    encoded = base64.b64encode(digest)
    if kind == "alg":
        other = draw(st.sampled_from([b"crc32", b"sha512", b"sha-256", b"sha", b""]))
        return other + b" " + encoded
    if kind == "case":
        return alg.upper().encode() + b" " + encoded
    if kind == "missing":
        return alg.encode()
    if kind == "b64":
        return alg.encode() + b" " + encoded[:-1] + b"*"
    if kind == "length":
        return alg.encode() + b" " + base64.b64encode(digest + b"x")
    return alg.encode() + b"  " + encoded
