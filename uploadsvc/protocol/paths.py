"""
The addressing rules of docs/protocol.md section 1: from a raw request path to the
components of a destination under the storage root.

The parser rejects rather than repairs: every path that is not plainly a
relative file name is refused with a L{BadRequest} whose C{code} says which
rule it broke. Nothing here touches the filesystem; the symbolic-link (403)
and parent-is-a-file (409) rules belong to storage.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable
from urllib.parse import quote

import attrs

from uploadsvc.errors import BadRequest, NotFound

MAX_COMPONENT_BYTES = 255
MAX_COMPONENTS = 32
MAX_PATH_BYTES = 1024

# RFC 3986 pchar minus "/": unreserved (always kept by quote), sub-delims,
# ":" and "@".  Everything else, "%" included, is percent-encoded.
_PCHAR_SAFE = "!$&'()*+,;=:@"

_HEX2 = re.compile(rb"[0-9A-Fa-f]{2}")


def _isControl(char: str) -> bool:
    """
    Is C{char} a C0 control (NUL included), DEL, or a C1 control?
    """
    point = ord(char)
    return point < 0x20 or 0x7F <= point <= 0x9F


def _percentDecode(raw: bytes) -> bytes:
    """
    Decode the C{%XX} escapes of one raw path component, exactly once.

    @raise BadRequest: C{bad-escape} for C{%} not followed by two hex digits
        (C{%zz}, C{%u002e}, a trailing C{%}); C{encoded-slash} for C{%2F}.
    """
    pieces = raw.split(b"%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if _HEX2.match(piece) is None:
            raise BadRequest(
                "bad-escape",
                "malformed percent-escape in path (need % and two hex digits)",
            )
        value = int(piece[:2], 16)
        if value == 0x2F:
            raise BadRequest(
                "encoded-slash", "encoded slash (%2F) in a path component"
            )
        out.append(bytes((value,)))
        out.append(piece[2:])
    return b"".join(out)


def _checkComponent(component: str) -> int:
    """
    Apply the per-component rules to one decoded component.

    @return: its length in UTF-8 bytes.
    @raise BadRequest: when a rule is broken.
    """
    if component == "":
        raise BadRequest("empty-component", "empty path component (as in a//b)")
    try:
        encoded = component.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("bad-utf8", "path is not valid UTF-8") from None
    for char in component:
        if _isControl(char):
            raise BadRequest(
                "control-char", "control character in path (U+%04X)" % ord(char)
            )
        if char == "\\":
            raise BadRequest("backslash", "backslash in path")
        if char == "/":
            raise BadRequest("encoded-slash", "slash inside a path component")
    if not unicodedata.is_normalized("NFC", component):
        raise BadRequest("not-nfc", "path is not in Unicode NFC form")
    if component in (".", ".."):
        raise BadRequest("dot-component", "path component . or .. not allowed")
    if component.startswith("."):
        raise BadRequest(
            "leading-dot", "path components starting with a dot are reserved"
        )
    if len(encoded) > MAX_COMPONENT_BYTES:
        raise BadRequest(
            "component-too-long",
            f"path component longer than {MAX_COMPONENT_BYTES} bytes",
        )
    return len(encoded)


def _tooManyComponents() -> BadRequest:
    return BadRequest(
        "too-many-components", f"path has more than {MAX_COMPONENTS} components"
    )


def _checkComponents(components: tuple[str, ...]) -> None:
    """
    Apply every decoded-path rule of section 1, in a fixed order: the
    component count, then each component from left to right, then the total
    length.

    @raise BadRequest: when a rule is broken.
    """
    if not components:
        raise BadRequest("empty-path", "no file name in path")
    if len(components) > MAX_COMPONENTS:
        raise _tooManyComponents()
    total = len(components) - 1  # the separating slashes
    for component in components:
        total += _checkComponent(component)
    if total > MAX_PATH_BYTES:
        raise BadRequest(
            "path-too-long", f"path longer than {MAX_PATH_BYTES} bytes"
        )


def _validateComponents(
    instance: object, attribute: object, value: tuple[str, ...]
) -> None:
    """
    attrs validator: an L{UploadPath} can only hold a path that obeys the
    rules, however it was built.
    """
    _checkComponents(value)


def _normalizePrefix(prefix: bytes) -> bytes:
    """
    Drop trailing slashes from a mount prefix, so C{b"/up/"} and C{b"/up"}
    mean the same and C{b"/"} means no prefix.
    """
    return prefix.rstrip(b"/")


@attrs.frozen
class UploadPath:
    """
    A checked destination path: components relative to the storage root.

    Building one (directly or by parsing) checks the rules of docs/protocol.md
    section 1, so code that holds an C{UploadPath} holds a safe name.

    @ivar components: the decoded components, e.g. C{("photos", "a.jpg")}.
    @ivar prefix: the raw mount prefix the path was found under (no trailing
        slash), used to build L{location}.
    """

    components: tuple[str, ...] = attrs.field(validator=_validateComponents)
    prefix: bytes = attrs.field(default=b"", converter=_normalizePrefix)

    @property
    def relative(self) -> str:
        """
        The path relative to the root, no leading slash: C{"photos/a.jpg"}.
        """
        return "/".join(self.components)

    @property
    def location(self) -> bytes:
        """
        The path-absolute URL of this file, mount prefix included, each
        component percent-encoded (UTF-8): C{b"/up/photos/a%20b.jpg"}.
        """
        encoded = (
            quote(component, safe=_PCHAR_SAFE, encoding="utf-8").encode("ascii")
            for component in self.components
        )
        return self.prefix + b"/" + b"/".join(encoded)


def parseUploadPath(rawPath: bytes, prefix: bytes = b"") -> UploadPath:
    """
    Parse a raw request path into an L{UploadPath}.

    Checks happen in a fixed order: leading slash, mount prefix, emptiness,
    component count, then the percent-decoding and UTF-8 decoding of each
    component from left to right, then the per-component rules (see
    L{_checkComponent}) from left to right, then the total length.

    @param rawPath: the request path without the query string, still
        percent-encoded, e.g. C{b"/photos/a%20b.jpg"}.
    @param prefix: the configured mount prefix, e.g. C{b"/up"}, or C{b""}.

    @raise NotFound: C{outside-prefix} when C{rawPath} is not under C{prefix}.
    @raise ValueError: when C{prefix} is not empty and does not start with
        C{/} (a configuration error).
    @raise BadRequest: when the path breaks a rule of section 1.
    """
    if not rawPath.startswith(b"/"):
        raise BadRequest("not-absolute", "path must start with /")
    if prefix and not prefix.startswith(b"/"):
        raise ValueError(f"mount prefix must start with /: {prefix!r}")
    prefix = _normalizePrefix(prefix)
    if prefix:
        if rawPath == prefix:
            rawPath = b""
        elif rawPath.startswith(prefix + b"/"):
            rawPath = rawPath[len(prefix) :]
        else:
            raise NotFound("outside-prefix", "path is outside the upload area")
    body = rawPath[1:]
    if not body:
        raise BadRequest("empty-path", "no file name in path")
    rawComponents = body.split(b"/")
    if len(rawComponents) > MAX_COMPONENTS:
        raise _tooManyComponents()
    return UploadPath(tuple(_decodeComponents(rawComponents)), prefix)


def _decodeComponents(rawComponents: Iterable[bytes]) -> Iterable[str]:
    """
    Percent-decode, then strictly UTF-8 decode, each raw component.
    """
    for raw in rawComponents:
        decoded = _percentDecode(raw)
        try:
            yield decoded.decode("utf-8", "strict")
        except UnicodeDecodeError:
            raise BadRequest("bad-utf8", "path is not valid UTF-8") from None


def parseRelativePath(relative: str, prefix: bytes = b"") -> UploadPath:
    """
    Check a plain-text relative path, such as a tus C{filename} metadata
    value, against the same rules: split on C{/}, no percent-decoding (a
    C{%} is literal).

    @param relative: e.g. C{"photos/a b.jpg"}; no leading slash.
    @param prefix: the mount prefix to use for L{UploadPath.location}.

    @raise BadRequest: when the path breaks a rule of section 1.
    """
    if not relative:
        raise BadRequest("empty-path", "no file name in path")
    if relative.startswith("/"):
        raise BadRequest("not-relative", "path must not start with /")
    return UploadPath(tuple(relative.split("/")), prefix)
