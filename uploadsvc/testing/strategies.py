"""
Hypothesis strategies for uploadsvc's wire formats: request paths,
C{Content-Range} values and digest fields, both well-formed and hostile.

They state the rules of docs/protocol.md independently of the parsers in
L{uploadsvc.protocol} (they never call them), so that properties checked
with them can fail. Import this module only where hypothesis is installed
(tests, benchmarks).
"""

from __future__ import annotations

import base64
import unicodedata

from hypothesis import strategies as st

from uploadsvc.protocol.ranges import ContentRange, RangeQuery

MAX_COMPONENT_BYTES = 255
MAX_COMPONENTS = 32
MAX_PATH_BYTES = 1024
MAX_RANGE_VALUE = 2**63 - 1

# Bytes a real client must escape in a path (and that we always escape).
_ALWAYS_ESCAPE = frozenset(b"%?# ")

# Names that look dangerous but are allowed.
_TRICKY_VALID = [
    "%2e%2e",
    "%2e",
    "%2F",
    "%252e",
    "%",
    "%%",
    "a..b",
    "a.",
    "~",
    "a b",
    "+;=,@:!$&'()*",
    "?x#y",
    "\u00e9",
    "\u65e5\u672c",
    "\U0001f600",
    "\u0301",
    "\ufeff",
    "\u200b",
    "a" * MAX_COMPONENT_BYTES,
    "\u00e9" * 127 + "a",
    "\U0001f600" * 63 + "abc",
]


def isValidComponent(text: str) -> bool:
    """
    The per-component rules of docs/protocol.md section 1, restated for the
    generators (not the code under test).
    """
    return (
        text != ""
        and not text.startswith(".")
        and "/" not in text
        and "\\" not in text
        and not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
        and unicodedata.normalize("NFC", text) == text
        and len(text.encode("utf-8")) <= MAX_COMPONENT_BYTES
    )


def validComponents() -> st.SearchStrategy[str]:
    """
    Path components that the rules allow: non-empty NFC text without
    controls, slashes or backslashes, not starting with a dot, at most 255
    UTF-8 bytes.
    """
    anyChar = st.characters(
        exclude_categories=("Cc", "Cs"), exclude_characters="/\\"
    )
    asciiChar = st.characters(
        min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="/\\"
    )
    return st.one_of(
        st.text(asciiChar, min_size=1, max_size=24),
        st.text(anyChar, min_size=1, max_size=24),
        st.sampled_from(_TRICKY_VALID),
    ).map(lambda text: unicodedata.normalize("NFC", text)).filter(
        isValidComponent
    )


def _pathBytes(components: tuple[str, ...]) -> int:
    return len("/".join(components).encode("utf-8"))


def validComponentTuples(
    maxComponents: int = MAX_COMPONENTS,
) -> st.SearchStrategy[tuple[str, ...]]:
    """
    Component tuples that make a valid path: 1 to C{maxComponents}
    components, at most 1024 bytes joined.
    """
    return (
        st.lists(validComponents(), min_size=1, max_size=maxComponents)
        .map(tuple)
        .filter(lambda components: _pathBytes(components) <= MAX_PATH_BYTES)
    )


def _escape(byte: int, upper: bool) -> bytes:
    return (b"%%%02X" if upper else b"%%%02x") % (byte,)


@st.composite
def encodedComponent(draw: st.DrawFn, component: str) -> bytes:
    """
    One way a client might percent-encode C{component}: minimally, fully, or
    byte by byte at random (raw UTF-8 bytes left in are allowed too).
    """
    mode = draw(st.sampled_from(["minimal", "all", "mixed"]))
    upper = draw(st.booleans())
    out = []
    for byte in component.encode("utf-8"):
        if byte in _ALWAYS_ESCAPE or mode == "all":
            escape = True
        elif mode == "minimal":
            escape = False
        else:
            escape = draw(st.booleans())
        out.append(_escape(byte, upper) if escape else bytes((byte,)))
    return b"".join(out)


@st.composite
def validUploadPathPairs(
    draw: st.DrawFn, prefix: bytes = b""
) -> tuple[bytes, tuple[str, ...]]:
    """
    A raw request path that must parse, with the components it must give.
    """
    components: tuple[str, ...] = draw(validComponentTuples())
    encoded = [draw(encodedComponent(c)) for c in components]
    return prefix + b"/" + b"/".join(encoded), components


def validUploadPaths(prefix: bytes = b"") -> st.SearchStrategy[bytes]:
    """
    Raw request paths (percent-encoded bytes, no query) that must parse.
    """
    return validUploadPathPairs(prefix).map(lambda pair: pair[0])


# Fragments that break exactly one rule wherever they are put into a valid
# component: (fragment, expected code).
_ANYWHERE = [
    (b"%zz", "bad-escape"),
    (b"%u002e", "bad-escape"),
    (b"%g0", "bad-escape"),
    (b"%%41", "bad-escape"),
    (b"%2F", "encoded-slash"),
    (b"%2f", "encoded-slash"),
    (b"%c0%ae", "bad-utf8"),
    (b"%ff", "bad-utf8"),
    (b"%fe", "bad-utf8"),
    (b"\xff", "bad-utf8"),
    (b"%ed%a0%80", "bad-utf8"),
    (b"%ed%bf%bf", "bad-utf8"),
    (b"%e0%80%af", "bad-utf8"),
    (b"%f4%90%80%80", "bad-utf8"),
    (b"%80", "bad-utf8"),
    (b"%c3", "bad-utf8"),
    (b"%00", "control-char"),
    (b"\x00", "control-char"),
    (b"%01", "control-char"),
    (b"\t", "control-char"),
    (b"%0a", "control-char"),
    (b"%0D", "control-char"),
    (b"%1f", "control-char"),
    (b"%7f", "control-char"),
    (b"\x7f", "control-char"),
    (b"%c2%80", "control-char"),
    (b"%c2%85", "control-char"),
    (b"%c2%9f", "control-char"),
    (b"\xc2\x85", "control-char"),
    (b"\\", "backslash"),
    (b"%5c", "backslash"),
    (b"%5C", "backslash"),
    (b"e%cc%81", "not-nfc"),
    (b"A%CC%8A", "not-nfc"),
    (b"%e2%84%ab", "not-nfc"),  # U+212B ANGSTROM SIGN
    (b"%e1%84%80%e1%85%a1", "not-nfc"),  # conjoining jamo
]

# Fragments that only break a rule at the end of a component (at the
# start they could join the following bytes into a valid escape).
_AT_END = [
    (b"%", "bad-escape"),
    (b"%2", "bad-escape"),
    (b"%e", "bad-escape"),
]

# Fragments that only break a rule at the start of a component.
_AT_START = [
    (b".", "leading-dot"),
    (b"%2e", "leading-dot"),
    (b"%2E", "leading-dot"),
]

# Whole components that break a rule.
_WHOLE = [
    (b".", "dot-component"),
    (b"..", "dot-component"),
    (b"%2e", "dot-component"),
    (b"%2E%2E", "dot-component"),
    (b".%2e", "dot-component"),
    (b".hidden", "leading-dot"),
    (b"a" * 256, "component-too-long"),
    (b"%C3%A9" * 128, "component-too-long"),
]


@st.composite
def hostilePathsWithCodes(draw: st.DrawFn) -> tuple[bytes, str]:
    """
    A raw request path that must be refused with 400, and the C{code} the
    refusal must carry. Each one is a valid path with exactly one defect.
    """
    kind = draw(
        st.sampled_from(
            ["fragment", "whole", "empty", "tooMany", "tooLong", "relative", "root"]
        )
    )
    if kind == "tooMany":
        count = draw(st.integers(MAX_COMPONENTS + 1, MAX_COMPONENTS + 20))
        return b"/" + b"/".join([b"a"] * count), "too-many-components"
    if kind == "tooLong":
        # Five components of 205 to 255 bytes: each fine, 1024+ in all.
        sizes = draw(st.lists(st.integers(205, 255), min_size=5, max_size=5))
        return b"/" + b"/".join(b"n" * size for size in sizes), "path-too-long"
    if kind == "root":
        return b"/", "empty-path"
    components: tuple[str, ...] = draw(validComponentTuples(6))
    encoded: list[bytes] = [draw(encodedComponent(c)) for c in components]
    if kind == "relative":
        return b"/".join(encoded), "not-absolute"
    index: int = draw(st.integers(0, len(encoded)))
    code: str
    if kind == "empty":
        encoded.insert(index, b"")
        code = "empty-component"
    elif kind == "whole":
        whole, code = draw(st.sampled_from(_WHOLE))
        encoded.insert(index, whole)
    else:
        index = min(index, len(encoded) - 1)
        where = draw(st.sampled_from(["start", "end"]))
        if where == "start":
            fragment, code = draw(st.sampled_from(_ANYWHERE + _AT_START))
            encoded[index] = fragment + encoded[index]
        else:
            fragment, code = draw(st.sampled_from(_ANYWHERE + _AT_END))
            encoded[index] = encoded[index] + fragment
    return b"/" + b"/".join(encoded), code


def hostilePaths() -> st.SearchStrategy[bytes]:
    """
    Raw request paths that must be refused with 400.
    """
    return hostilePathsWithCodes().map(lambda pair: pair[0])


def _rangeNumber(value: int, padding: int) -> bytes:
    digits = b"%d" % (value,)
    return b"0" * min(padding, 19 - len(digits)) + digits


_UNITS = st.sampled_from([b"bytes", b"bytes", b"BYTES", b"Bytes"])


@st.composite
def contentRanges(
    draw: st.DrawFn,
) -> tuple[bytes, ContentRange | RangeQuery]:
    """
    A valid C{Content-Range} header value and the value it must parse to.
    """
    unit: bytes = draw(_UNITS)
    pad: int = draw(st.sampled_from([0, 0, 0, 1, 5]))
    bound = draw(st.sampled_from([100, 2**32, MAX_RANGE_VALUE]))
    total: int | None = draw(st.one_of(st.none(), st.integers(0, bound)))
    totalBytes = b"*" if total is None else _rangeNumber(total, pad)
    if draw(st.integers(0, 4)) == 0 or total == 0:
        return unit + b" */" + totalBytes, RangeQuery(total)
    limit = MAX_RANGE_VALUE if total is None else total - 1
    first = draw(st.integers(0, min(limit, bound)))
    last = draw(st.integers(first, min(limit, bound)))
    header = b"%s %s-%s/%s" % (
        unit,
        _rangeNumber(first, pad),
        _rangeNumber(last, pad),
        totalBytes,
    )
    return header, ContentRange(first, last, total)


@st.composite
def badContentRanges(draw: st.DrawFn) -> bytes:
    """
    A C{Content-Range} header value that must be refused with C{bad-range}:
    a valid one with one defect.
    """
    first: int = draw(st.integers(0, 10**6))
    last: int = draw(st.integers(first, first + 10**6))
    total = last + 1 + draw(st.integers(0, 10**6))
    defect = draw(
        st.sampled_from(
            [
                "reversed",
                "endAtTotal",
                "tooManyDigits",
                "tooLarge",
                "negative",
                "unit",
                "spaces",
                "trailing",
                "missingPart",
                "multi",
                "nonAscii",
            ]
        )
    )
    if defect == "reversed":
        return b"bytes %d-%d/%d" % (last + 1, first, total)
    if defect == "endAtTotal":
        return b"bytes %d-%d/%d" % (first, last, draw(st.integers(0, last)))
    if defect == "tooManyDigits":
        return b"bytes %s-%d/*" % (b"0" * 20 + b"%d" % first, last)
    if defect == "tooLarge":
        big = draw(st.integers(MAX_RANGE_VALUE + 1, 10**19 - 1))
        return b"bytes 0-%d/*" % (big,)
    if defect == "negative":
        return b"bytes -%d-%d/%d" % (first + 1, last, total)
    if defect == "unit":
        unit = draw(st.sampled_from([b"byte", b"bits", b"items", b"", b"bytes="]))
        return b"%s %d-%d/%d" % (unit, first, last, total)
    if defect == "spaces":
        return draw(
            st.sampled_from(
                [
                    b"bytes  %d-%d/%d" % (first, last, total),
                    b"bytes %d - %d/%d" % (first, last, total),
                    b"bytes\t%d-%d/%d" % (first, last, total),
                    b"bytes%d-%d/%d" % (first, last, total),
                    b" bytes %d-%d/%d" % (first, last, total),
                    b"bytes %d-%d/%d " % (first, last, total),
                ]
            )
        )
    if defect == "trailing":
        junk = draw(st.sampled_from([b"\n", b",", b";", b"x", b"/5", b"-1"]))
        return b"bytes %d-%d/%d" % (first, last, total) + junk
    if defect == "missingPart":
        return draw(
            st.sampled_from(
                [
                    b"bytes %d-/%d" % (first, total),
                    b"bytes -%d/%d" % (last, total),
                    b"bytes %d-%d" % (first, last),
                    b"bytes %d-%d/" % (first, last),
                    b"bytes */",
                    b"bytes *",
                    b"bytes",
                    b"",
                ]
            )
        )
    if defect == "multi":
        return b"bytes %d-%d/%d, %d-%d/%d" % (first, last, total, first, last, total)
    return b"bytes %d-%d/%d" % (first, last, total) + "\u0661".encode("utf-8")


_DIGEST_SIZES = {"sha-256": 32, "sha-512": 64}


@st.composite
def digestFields(draw: st.DrawFn) -> tuple[bytes, dict[str, bytes]]:
    """
    A valid C{Content-Digest}/C{Repr-Digest} field value, with unknown
    algorithms and parameters mixed in, and the supported digests it holds.
    """
    members: list[bytes] = []
    expected: dict[str, bytes] = {}
    names: list[str] = draw(
        st.lists(
            st.sampled_from(["sha-256", "sha-512", "md5", "unixsum", "id-sha-256"]),
            max_size=5,
        )
    )
    for name in names:
        if name in _DIGEST_SIZES:
            digest: bytes = draw(
                st.binary(min_size=_DIGEST_SIZES[name], max_size=_DIGEST_SIZES[name])
            )
            value = b":" + base64.b64encode(digest) + b":"
            expected[name] = digest
        else:
            value = draw(
                st.sampled_from(
                    [b":AAAA:", b"10", b"-3.25", b'"x\\"y"', b"tok/en:1", b"?0",
                     b"(1 2 :AA==:)", b"@1700000000", b'%"caf%c3%a9"']
                )
            )
        params = draw(st.sampled_from([b"", b";a=1", b";b", b";c=?1;d=\"q\""]))
        members.append(name.encode("ascii") + b"=" + value + params)
    separator: bytes = draw(st.sampled_from([b",", b", ", b" ,\t", b"  ,  "]))
    return separator.join(members), expected
