"""
Tests for L{uploadsvc.protocol.paths}: the addressing rules of docs/protocol.md
section 1.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import BadRequest, NotFound, UploadError
from uploadsvc.protocol.paths import UploadPath, parseRelativePath, parseUploadPath
from uploadsvc.testing.strategies import (
    hostilePathsWithCodes,
    isValidComponent,
    validComponentTuples,
    validUploadPathPairs,
)

_properties = settings(max_examples=200, deadline=None)

# (raw path, components)
VALID = [
    (b"/a", ("a",)),
    (b"/photos/2026/a.jpg", ("photos", "2026", "a.jpg")),
    (b"/photos/a%20b.jpg", ("photos", "a b.jpg")),
    (b"/%252e%252e/x", ("%2e%2e", "x")),
    (b"/%252e", ("%2e",)),
    (b"/%25", ("%",)),
    (b"/%252F", ("%2F",)),
    (b"/a..b/c.", ("a..b", "c.")),
    (b"/~user/x-y_z", ("~user", "x-y_z")),
    (b"/caf%C3%A9", ("caf\u00e9",)),
    (b"/caf%c3%a9", ("caf\u00e9",)),
    (b"/caf\xc3\xa9", ("caf\u00e9",)),
    (b"/caf%c3\xa9", ("caf\u00e9",)),
    (b"/%E6%97%A5%E6%9C%AC", ("\u65e5\u672c",)),
    (b"/%F0%9F%98%80", ("\U0001f600",)),
    (b"/%41%42c", ("ABc",)),
    (b"/a+b;c=d,e@f:g!$&'()*", ("a+b;c=d,e@f:g!$&'()*",)),
    (b"/q%3Fx%23y", ("q?x#y",)),
    (b"/%cc%81", ("\u0301",)),
    (b"/" + b"a" * 255, ("a" * 255,)),
    (b"/" + b"%C3%A9" * 127 + b"a", ("\u00e9" * 127 + "a",)),
    (b"/" + b"/".join([b"d"] * 32), ("d",) * 32),
]

# (raw path, code): at least one entry per rule, and every classic trick.
HOSTILE = [
    # malformed escapes
    (b"/%zz", "bad-escape"),
    (b"/a%u002e", "bad-escape"),
    (b"/%u2215etc", "bad-escape"),
    (b"/a%", "bad-escape"),
    (b"/a%2", "bad-escape"),
    (b"/a%2/b", "bad-escape"),
    (b"/%%32%65", "bad-escape"),
    (b"/%+1", "bad-escape"),
    (b"/%-1", "bad-escape"),
    (b"/% 1", "bad-escape"),
    (b"/%1_", "bad-escape"),
    (b"/%\xd9\xa1\xd9\xa1", "bad-escape"),
    # encoded slash
    (b"/a%2Fb", "encoded-slash"),
    (b"/a%2fb", "encoded-slash"),
    (b"/..%2f..%2fetc", "encoded-slash"),
    # dot components, however encoded
    (b"/.", "dot-component"),
    (b"/..", "dot-component"),
    (b"/a/./b", "dot-component"),
    (b"/a/../b", "dot-component"),
    (b"/a/..", "dot-component"),
    (b"/%2e", "dot-component"),
    (b"/%2E", "dot-component"),
    (b"/%2e%2e/etc/passwd", "dot-component"),
    (b"/%2E%2E", "dot-component"),
    (b"/.%2e", "dot-component"),
    (b"/%2e.", "dot-component"),
    # leading dot
    (b"/.hidden", "leading-dot"),
    (b"/a/.tus", "leading-dot"),
    (b"/...", "leading-dot"),
    (b"/%2ehidden", "leading-dot"),
    (b"/.uploadsvc/state", "leading-dot"),
    # empty components, empty path
    (b"/a//b", "empty-component"),
    (b"//a", "empty-component"),
    (b"/a/", "empty-component"),
    (b"//", "empty-component"),
    (b"/", "empty-path"),
    # not absolute
    (b"", "not-absolute"),
    (b"a/b", "not-absolute"),
    (b"*", "not-absolute"),
    (b"http://example.com/a", "not-absolute"),
    # invalid UTF-8
    (b"/%c0%ae%c0%ae", "bad-utf8"),
    (b"/%c0%af", "bad-utf8"),
    (b"/%e0%80%ae", "bad-utf8"),
    (b"/%ff", "bad-utf8"),
    (b"/\xff", "bad-utf8"),
    (b"/%ed%a0%80", "bad-utf8"),
    (b"/%ed%b0%80", "bad-utf8"),
    (b"/%f4%90%80%80", "bad-utf8"),
    (b"/%80", "bad-utf8"),
    (b"/caf%c3", "bad-utf8"),
    (b"/%fe%ff", "bad-utf8"),
    # control characters
    (b"/%00", "control-char"),
    (b"/a%00.jpg", "control-char"),
    (b"/a\x00b", "control-char"),
    (b"/%01", "control-char"),
    (b"/%09", "control-char"),
    (b"/a%0d%0aSet-Cookie:x", "control-char"),
    (b"/%1F", "control-char"),
    (b"/%7f", "control-char"),
    (b"/a\x7f", "control-char"),
    (b"/%c2%80", "control-char"),
    (b"/%c2%85", "control-char"),
    (b"/%C2%9F", "control-char"),
    (b"/a\xc2\x85b", "control-char"),
    # backslash
    (b"/a\\b", "backslash"),
    (b"/a%5cb", "backslash"),
    (b"/..%5c..%5cwindows", "backslash"),
    (b"/%5C", "backslash"),
    # not NFC
    (b"/e%cc%81", "not-nfc"),
    (b"/caf" + "e\u0301".encode("utf-8"), "not-nfc"),
    (b"/A%CC%8A", "not-nfc"),
    (b"/%e2%84%ab", "not-nfc"),
    (b"/%e2%84%a6", "not-nfc"),
    (b"/%e1%84%80%e1%85%a1", "not-nfc"),
    # lengths
    (b"/" + b"a" * 256, "component-too-long"),
    (b"/" + b"%C3%A9" * 128, "component-too-long"),
    (b"/ok/" + b"x" * 300 + b"/z", "component-too-long"),
    (b"/" + b"/".join([b"d"] * 33), "too-many-components"),
    (b"/" + b"/".join([b"d"] * 1000), "too-many-components"),
    (b"/" + b"/".join([b"%"] * 40), "too-many-components"),
    (b"/" + b"/".join([b"n" * 255] * 4) + b"/abcd", "path-too-long"),
]


class ValidPathTests(SynchronousTestCase):
    """
    Paths that obey the rules parse to their decoded components.
    """

    def test_table(self) -> None:
        """
        Every path of the valid table parses to its expected components.
        """
        for raw, components in VALID:
            self.assertEqual(
                parseUploadPath(raw).components, components, repr(raw)
            )

    def test_decodedOnce(self) -> None:
        """
        C{%252e%252e} decodes once, to a folder literally called C{%2e%2e}.
        """
        path = parseUploadPath(b"/%252e%252e/b")
        self.assertEqual(path.relative, "%2e%2e/b")
        self.assertEqual(path.location, b"/%252e%252e/b")

    def test_relative(self) -> None:
        """
        C{relative} joins the components with C{/}, without a leading slash.
        """
        self.assertEqual(
            parseUploadPath(b"/photos/2026/a.jpg").relative, "photos/2026/a.jpg"
        )

    def test_location(self) -> None:
        """
        C{location} percent-encodes each component as UTF-8, keeping the
        RFC 3986 pchar characters other than C{/}.
        """
        path = UploadPath(("a b", "caf\u00e9", "100%", "x+y;z=@:!$&'()*,~", "q?#"))
        self.assertEqual(
            path.location,
            b"/a%20b/caf%C3%A9/100%25/x+y;z=@:!$&'()*,~/q%3F%23",
        )

    def test_locationCanonical(self) -> None:
        """
        Different encodings of one name give the same C{location}.
        """
        self.assertEqual(
            parseUploadPath(b"/%61%2D%62").location, parseUploadPath(b"/a-b").location
        )

    def test_componentLimitExact(self) -> None:
        """
        A component of exactly 255 UTF-8 bytes is allowed, counting bytes,
        not characters.
        """
        name = "\U0001f600" * 63 + "abc"
        self.assertEqual(len(name.encode("utf-8")), 255)
        self.assertEqual(UploadPath((name,)).components, (name,))

    def test_pathLimitExact(self) -> None:
        """
        A path of exactly 1024 bytes (slashes counted, leading slash not) is
        allowed; one more byte is refused.
        """
        components = ("n" * 255,) * 3 + ("n" * 252, "abc")
        self.assertEqual(len("/".join(components)), 1024)
        raw = b"/" + "/".join(components).encode("ascii")
        self.assertEqual(parseUploadPath(raw).components, components)
        error = self.assertRaises(BadRequest, parseUploadPath, raw + b"d")
        self.assertEqual(error.code, "path-too-long")

    def test_pathLimitDecoded(self) -> None:
        """
        The total length counts decoded bytes, so a long escaped path whose
        decoded form fits is allowed.
        """
        raw = b"/" + b"/".join([b"%61" * 200] * 5)
        self.assertEqual(len(raw), 3005)
        self.assertEqual(parseUploadPath(raw).components, ("a" * 200,) * 5)


class HostilePathTests(SynchronousTestCase):
    """
    Paths that break a rule are refused with 400 and the rule's code.
    """

    def test_tableSize(self) -> None:
        """
        The hostile table covers at least forty paths.
        """
        self.assertGreaterEqual(len(HOSTILE), 40)

    def test_table(self) -> None:
        """
        Every path of the hostile table is refused with a L{BadRequest}
        (status 400) carrying its expected code and a one-line reason.
        """
        for raw, code in HOSTILE:
            try:
                parseUploadPath(raw)
            except BadRequest as error:
                self.assertEqual((raw, error.code), (raw, code))
                self.assertEqual(error.status, 400)
                self.assertTrue(error.reason)
                self.assertNotIn("\n", error.reason)
            else:
                self.fail(f"{raw!r} was accepted")

    def test_tableUnderPrefix(self) -> None:
        """
        Under a mount prefix, the hostile paths are refused with the same
        codes (except that a path not under the prefix is 404).
        """
        for raw, code in HOSTILE:
            if not raw.startswith(b"/"):
                continue
            error = self.assertRaises(
                BadRequest, parseUploadPath, b"/up" + raw, b"/up"
            )
            self.assertEqual((raw, error.code), (raw, code))

    def test_firstComponentWins(self) -> None:
        """
        With defects in several components, decoding errors are found first,
        then the rules are applied from left to right.
        """
        cases = [
            (b"/a%00/.x", "control-char"),
            (b"/.x/a%00", "leading-dot"),
            (b"/.x/%zz", "bad-escape"),
            (b"/a\\/%ff", "bad-utf8"),
        ]
        for raw, code in cases:
            error = self.assertRaises(BadRequest, parseUploadPath, raw)
            self.assertEqual((raw, error.code), (raw, code))


class PrefixTests(SynchronousTestCase):
    """
    The mount prefix is matched on the raw path and stripped.
    """

    def test_stripped(self) -> None:
        """
        A path under the prefix parses without it, and its location has it.
        """
        path = parseUploadPath(b"/up/photos/a.jpg", b"/up")
        self.assertEqual(path.components, ("photos", "a.jpg"))
        self.assertEqual(path.relative, "photos/a.jpg")
        self.assertEqual(path.location, b"/up/photos/a.jpg")

    def test_trailingSlashPrefix(self) -> None:
        """
        A prefix given with a trailing slash means the same as without.
        """
        self.assertEqual(
            parseUploadPath(b"/up/a", b"/up/"), parseUploadPath(b"/up/a", b"/up")
        )
        self.assertEqual(parseUploadPath(b"/a", b"/").location, b"/a")

    def test_outside(self) -> None:
        """
        A path not under the prefix is L{NotFound} (404) with code
        C{outside-prefix}, including one that merely starts with the same
        letters.
        """
        for raw in [b"/upload/a", b"/a", b"/UP/a", b"/%75p/a", b"/u"]:
            error = self.assertRaises(NotFound, parseUploadPath, raw, b"/up")
            self.assertEqual(
                (raw, error.code, error.status), (raw, "outside-prefix", 404)
            )

    def test_badPrefix(self) -> None:
        """
        A mount prefix that does not start with C{/} is a configuration
        error, not a client's.
        """
        self.assertRaises(ValueError, parseUploadPath, b"/up/a", b"up")

    def test_prefixItself(self) -> None:
        """
        The prefix itself, with or without a trailing slash, names no file.
        """
        for raw in [b"/up", b"/up/"]:
            error = self.assertRaises(BadRequest, parseUploadPath, raw, b"/up")
            self.assertEqual(error.code, "empty-path")

    def test_lengthExcludesPrefix(self) -> None:
        """
        The 1024-byte limit does not count the prefix.
        """
        components = ("n" * 255,) * 3 + ("n" * 252, "abc")
        raw = b"/a/long/prefix/" + "/".join(components).encode("ascii")
        self.assertEqual(
            parseUploadPath(raw, b"/a/long/prefix").components, components
        )


class UploadPathTests(SynchronousTestCase):
    """
    L{UploadPath} holds only checked paths.
    """

    def test_constructorChecks(self) -> None:
        """
        Building an L{UploadPath} directly applies the same rules.
        """
        cases = [
            ((), "empty-path"),
            (("..",), "dot-component"),
            (("a", ".b"), "leading-dot"),
            (("a/b",), "encoded-slash"),
            (("\ud800",), "bad-utf8"),
            (("a\x00",), "control-char"),
            (("e\u0301",), "not-nfc"),
            (("",), "empty-component"),
            (("d",) * 33, "too-many-components"),
        ]
        for components, code in cases:
            error = self.assertRaises(BadRequest, UploadPath, components)
            self.assertEqual((components, error.code), (components, code))

    def test_equality(self) -> None:
        """
        Two parses of the same name are equal and hash alike.
        """
        self.assertEqual(parseUploadPath(b"/a%20b"), parseUploadPath(b"/a b"))
        self.assertEqual(
            hash(parseUploadPath(b"/a%20b")), hash(UploadPath(("a b",)))
        )


class RelativePathTests(SynchronousTestCase):
    """
    L{parseRelativePath} checks plain-text names such as tus filenames.
    """

    def test_valid(self) -> None:
        """
        A plain relative path splits on C{/} and keeps C{%} literal.
        """
        path = parseRelativePath("photos/100%25 a.jpg", b"/up")
        self.assertEqual(path.components, ("photos", "100%25 a.jpg"))
        self.assertEqual(path.location, b"/up/photos/100%2525%20a.jpg")

    def test_hostile(self) -> None:
        """
        Plain relative paths that break a rule are refused with its code.
        """
        cases = [
            ("", "empty-path"),
            ("/etc/passwd", "not-relative"),
            ("../x", "dot-component"),
            ("a//b", "empty-component"),
            (".tus", "leading-dot"),
            ("a\\b", "backslash"),
            ("a\x85", "control-char"),
            ("cafe\u0301", "not-nfc"),
            ("a\udc80", "bad-utf8"),
        ]
        for relative, code in cases:
            error = self.assertRaises(BadRequest, parseRelativePath, relative)
            self.assertEqual((relative, error.code), (relative, code))


class PathPropertyTests(SynchronousTestCase):
    """
    Properties of the path parser over generated inputs.
    """

    @_properties
    @given(validUploadPathPairs())
    def test_validParses(self, pair: tuple[bytes, tuple[str, ...]]) -> None:
        """
        Every generated valid path, however it is encoded, parses to the
        components it was made from.
        """
        raw, components = pair
        self.assertEqual(parseUploadPath(raw).components, components)

    @_properties
    @given(validUploadPathPairs(b"/mount/point"))
    def test_validParsesUnderPrefix(
        self, pair: tuple[bytes, tuple[str, ...]]
    ) -> None:
        """
        Generated valid paths under a prefix parse to their components.
        """
        raw, components = pair
        path = parseUploadPath(raw, b"/mount/point")
        self.assertEqual(path.components, components)
        self.assertTrue(path.location.startswith(b"/mount/point/"))

    @_properties
    @given(validComponentTuples(), st.sampled_from([b"", b"/up", b"/a%20b/c"]))
    def test_roundTrip(self, components: tuple[str, ...], prefix: bytes) -> None:
        """
        A path's C{location} is ASCII and parses back to the same path.
        """
        path = UploadPath(components, prefix)
        location = path.location
        location.decode("ascii")
        self.assertEqual(parseUploadPath(location, prefix), path)
        self.assertEqual(path.relative.split("/"), list(components))

    @_properties
    @given(hostilePathsWithCodes())
    def test_hostileRefused(self, pair: tuple[bytes, str]) -> None:
        """
        No generated hostile path parses; each is refused with its code.
        """
        raw, code = pair
        error = self.assertRaises(BadRequest, parseUploadPath, raw)
        self.assertEqual(error.code, code)

    @_properties
    @given(
        st.one_of(
            st.binary(max_size=80),
            st.binary(max_size=80).map(lambda b: b"/" + b),
            st.lists(
                st.sampled_from(
                    [b"/", b"%", b"2", b"e", b"E", b"f", b".", b"a", b"\\",
                     b"%2e", b"%c3", b"%a9", b"\xc3", b"\xa9", b"%00", b"%cc%81"]
                ),
                max_size=30,
            ).map(b"".join),
        )
    )
    def test_onlyUploadErrors(self, raw: bytes) -> None:
        """
        On arbitrary bytes the parser either returns a path that obeys every
        rule or raises an L{UploadError}, and nothing else.
        """
        try:
            path = parseUploadPath(raw)
        except UploadError as error:
            self.assertIn(error.status, (400, 404))
        else:
            for component in path.components:
                self.assertTrue(isValidComponent(component), repr(component))
            self.assertLessEqual(len(path.relative.encode("utf-8")), 1024)
            self.assertLessEqual(len(path.components), 32)
            self.assertEqual(parseUploadPath(path.location), path)

    @_properties
    @given(st.text(max_size=60))
    def test_relativeOnlyUploadErrors(self, relative: str) -> None:
        """
        On arbitrary text L{parseRelativePath} returns a path that obeys the
        rules, or raises L{BadRequest}.
        """
        try:
            path = parseRelativePath(relative)
        except BadRequest:
            pass
        else:
            self.assertEqual(path.relative, relative)
            for component in path.components:
                self.assertTrue(isValidComponent(component), repr(component))
