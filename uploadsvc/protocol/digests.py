"""
The C{Content-Digest} and C{Repr-Digest} fields of RFC 9530 (docs/protocol.md
section 4).

Both are Structured Field Dictionaries (RFC 9651) mapping an algorithm to a
byte sequence: C{sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:}.
A small strict parser for the whole Dictionary grammar lives here, so that
members for algorithms we do not know, whatever their shape, are skipped
correctly while malformed fields are refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Callable, Iterable, Protocol

import attrs

from uploadsvc.errors import BadRequest


class Hasher(Protocol):
    """
    The part of a C{hashlib} object that uploadsvc uses.
    """

    @property
    def digest_size(self) -> int:
        ...

    def update(self, data: bytes, /) -> None:
        ...

    def digest(self) -> bytes:
        ...

    def hexdigest(self) -> str:
        ...

    def copy(self) -> Hasher:
        ...


# Algorithm name (RFC 9530 registry) -> (constructor, digest length).  A new
# algorithm is one line here.
_ALGORITHMS: dict[str, tuple[Callable[[], Hasher], int]] = {
    "sha-256": (hashlib.sha256, 32),
    "sha-512": (hashlib.sha512, 64),
}

SUPPORTED: tuple[str, ...] = ("sha-256", "sha-512")


def _badDigest(reason: str) -> BadRequest:
    return BadRequest("bad-digest", reason)


@attrs.frozen
class DigestSet:
    """
    The digests a request carries, for the algorithms uploadsvc supports.

    @ivar values: C{(algorithm, raw digest)} pairs in the field's order, one
        per algorithm; it is false when empty.
    """

    values: tuple[tuple[str, bytes], ...] = ()

    def get(self, alg: str) -> bytes | None:
        """
        The raw digest for C{alg}, or L{None} when the field had none.
        """
        for name, digest in self.values:
            if name == alg:
                return digest
        return None

    def __bool__(self) -> bool:
        return bool(self.values)


def newHasher(alg: str) -> Hasher:
    """
    A fresh hash object for a supported algorithm name.

    @raise ValueError: for an algorithm not in L{SUPPORTED}.
    """
    try:
        factory, _ = _ALGORITHMS[alg]
    except KeyError:
        raise ValueError(f"unsupported digest algorithm {alg!r}") from None
    return factory()


def digestAll(algorithms: Iterable[str], chunks: Iterable[bytes]) -> dict[str, bytes]:
    """
    Digest the bytes C{chunks} yield with each of C{algorithms} in one pass:
    the one hashing helper, used for request bodies and stored files alike.

    @raise ValueError: for an algorithm not in L{SUPPORTED}.
    """
    hashers = {alg: newHasher(alg) for alg in algorithms}
    for chunk in chunks:
        for hasher in hashers.values():
            hasher.update(chunk)
    return {alg: hasher.digest() for alg, hasher in hashers.items()}


def digestLength(alg: str) -> int | None:
    """
    How many bytes a digest of C{alg} has; L{None} for an algorithm not in
    L{SUPPORTED}.
    """
    known = _ALGORITHMS.get(alg)
    return None if known is None else known[1]


def formatDigest(alg: str, digest: bytes) -> bytes:
    """
    Format one member of a digest field: C{b"sha-256=:<base64>:"}.

    @raise ValueError: for an unsupported algorithm or a digest of the wrong
        length (a programming error, not a client's).
    """
    if alg not in _ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm {alg!r}")
    if len(digest) != _ALGORITHMS[alg][1]:
        raise ValueError(f"{alg} digest must be {_ALGORITHMS[alg][1]} bytes")
    return alg.encode("ascii") + b"=:" + base64.b64encode(digest) + b":"


def parseDigestHeader(value: bytes) -> DigestSet:
    """
    Parse a C{Content-Digest} or C{Repr-Digest} field value.

    Members for unknown algorithms are ignored (so the result may be empty:
    the caller decides what that means). When a request has several field
    lines, join them with C{b", "} first (RFC 9651 section 4.2).

    @raise BadRequest: C{bad-digest} when the field is not a valid
        Dictionary, or a supported algorithm's value is not a byte sequence of
        the right length. When an algorithm repeats, the last one wins.
    """
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise _badDigest("non-ASCII byte in digest field") from None
    found: dict[str, bytes] = {}
    for key, member in _Parser(text).parseDictionary():
        if key not in _ALGORITHMS:
            continue
        if not isinstance(member, bytes):
            raise _badDigest(f"{key} value is not a byte sequence (:base64:)")
        if len(member) != _ALGORITHMS[key][1]:
            raise _badDigest(f"{key} digest must be {_ALGORITHMS[key][1]} bytes")
        found[key] = member
    return DigestSet(tuple(found.items()))


class _InnerList:
    """
    Stands for an Inner List member; its contents are not needed.
    """


_KEY = re.compile(r"[a-z*][a-z0-9_.*-]*")
_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+.^_`|~:/-]*")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_NUMBER = re.compile(r"-?([0-9]+)(\.([0-9]*))?")


class _Parser:
    """
    A strict RFC 9651 Dictionary parser over an ASCII string. Only byte
    sequences are decoded; every other value is checked and discarded.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0

    def _peek(self) -> str:
        return self._text[self._pos : self._pos + 1]

    def _fail(self, what: str) -> BadRequest:
        return _badDigest(f"malformed digest field: {what} at {self._pos}")

    def _skip(self, chars: str) -> None:
        while self._peek() != "" and self._peek() in chars:
            self._pos += 1

    def _regex(self, pattern: re.Pattern[str], what: str) -> re.Match[str]:
        match = pattern.match(self._text, self._pos)
        if match is None or match.end() == self._pos:
            raise self._fail(what)
        self._pos = match.end()
        return match

    def parseDictionary(self) -> list[tuple[str, object]]:
        """
        Parse the whole text as a Dictionary.

        @return: C{(key, value)} pairs, later duplicates replacing earlier
            ones in place.
        """
        members: dict[str, object] = {}
        self._skip(" ")
        while self._peek() != "":
            key = self._regex(_KEY, "bad key").group()
            if self._peek() == "=":
                self._pos += 1
                members[key] = self._itemOrInnerList()
            else:
                members[key] = True
                self._parameters()
            self._skip(" \t")
            if self._peek() == "":
                break
            if self._peek() != ",":
                raise self._fail("expected ','")
            self._pos += 1
            self._skip(" \t")
            if self._peek() == "":
                raise self._fail("trailing ','")
        return list(members.items())

    def _itemOrInnerList(self) -> object:
        if self._peek() != "(":
            item = self._bareItem()
            self._parameters()
            return item
        self._pos += 1
        while True:
            self._skip(" ")
            if self._peek() == ")":
                self._pos += 1
                self._parameters()
                return _InnerList()
            self._bareItem()
            self._parameters()
            if self._peek() not in (" ", ")"):
                raise self._fail("bad inner list")

    def _parameters(self) -> None:
        while self._peek() == ";":
            self._pos += 1
            self._skip(" ")
            self._regex(_KEY, "bad parameter key")
            if self._peek() == "=":
                self._pos += 1
                self._bareItem()

    def _bareItem(self) -> object:
        char = self._peek()
        if char != "" and char in "-0123456789":
            return self._number()
        if char == '"':
            return self._string()
        if char == ":":
            return self._bytes()
        if char == "?":
            self._pos += 1
            if self._peek() not in ("0", "1"):
                raise self._fail("bad boolean")
            self._pos += 1
            return self._text[self._pos - 1] == "1"
        if char == "@":
            self._pos += 1
            if not isinstance(self._number(), int):
                raise self._fail("bad date")
            return None
        if char == "%":
            return self._displayString()
        if char != "":
            self._regex(_TOKEN, "bad item")
            return None
        raise self._fail("missing value")

    def _number(self) -> int | float:
        match = self._regex(_NUMBER, "bad number")
        integer, dot, fraction = match.group(1, 2, 3)
        if dot is None:
            if len(integer) > 15:
                raise self._fail("integer too long")
            return int(match.group())
        if len(integer) > 12 or not fraction or len(fraction) > 3:
            raise self._fail("bad decimal")
        return float(match.group())

    def _string(self) -> str:
        self._pos += 1
        out: list[str] = []
        while True:
            char = self._peek()
            self._pos += 1
            if char == "":
                raise self._fail("unterminated string")
            if char == '"':
                return "".join(out)
            if char == "\\":
                char = self._peek()
                self._pos += 1
                if char not in ('"', "\\"):
                    raise self._fail("bad escape in string")
            elif not " " <= char <= "~":
                raise self._fail("bad character in string")
            out.append(char)

    def _displayString(self) -> str:
        self._pos += 1
        if self._peek() != '"':
            raise self._fail("bad display string")
        self._pos += 1
        out = bytearray()
        while True:
            char = self._peek()
            self._pos += 1
            if char == "":
                raise self._fail("unterminated display string")
            if char == '"':
                try:
                    return out.decode("utf-8")
                except UnicodeDecodeError:
                    raise self._fail("bad UTF-8 in display string") from None
            if char == "%":
                hexDigits = self._text[self._pos : self._pos + 2]
                if re.fullmatch("[0-9a-f]{2}", hexDigits) is None:
                    raise self._fail("bad escape in display string")
                out.append(int(hexDigits, 16))
                self._pos += 2
            elif " " <= char <= "~":
                out.append(ord(char))
            else:
                raise self._fail("bad character in display string")

    def _bytes(self) -> bytes:
        end = self._text.find(":", self._pos + 1)
        if end == -1:
            raise self._fail("unterminated byte sequence")
        content = self._text[self._pos + 1 : end]
        core = content.rstrip("=")
        if (
            _BASE64.fullmatch(content) is None
            or len(core) % 4 == 1
            or (core != content and len(content) % 4 != 0)
        ):
            raise self._fail("bad base64 in byte sequence")
        self._pos = end + 1
        # RFC 9651 4.2.7: tolerate missing "=" padding and non-zero pad bits.
        return binascii.a2b_base64(core + "=" * (-len(core) % 4))
