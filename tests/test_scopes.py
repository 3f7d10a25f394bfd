"""
Scoped credentials (L{uploadsvc.protocol.scopes}): the token line syntax and
the scope decisions, against parsed paths (never raw URLs).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import BadRequest, Forbidden, UploadError
from uploadsvc.protocol.paths import parseUploadPath
from uploadsvc.protocol.scopes import (
    DELETE,
    DOWNLOAD,
    OPERATIONS,
    UPLOAD,
    Credential,
    ScopeSyntaxError,
    checkScope,
    parseTokenLine,
    parseTokenLines,
    requestOperation,
)

TOKEN = b"alice-token-0123456789"
ALICE = Credential(TOKEN, "alice", ("alice",), frozenset({UPLOAD, DOWNLOAD}))


def scopeOf(credential: Credential | None, raw: bytes, operation: str) -> str:
    """
    What a request for the raw path C{raw} gets: C{"ok"}, or the code of the
    refusal, path rules first as the app ranks them.
    """
    try:
        path = parseUploadPath(raw)
        checkScope(credential, path, operation)
    except UploadError as e:
        return e.code
    return "ok"


class TokenLineTests(SynchronousTestCase):
    def test_plainLine(self) -> None:
        """A token alone may do everything, anywhere, and has no name."""
        self.assertEqual(parseTokenLine(TOKEN), Credential(TOKEN))
        self.assertEqual(parseTokenLine(b"  " + TOKEN + b"\t"), Credential(TOKEN, None, (), frozenset(OPERATIONS)))

    def test_blankAndComments(self) -> None:
        """Blank lines and comments hold no credential."""
        for line in (b"", b"   ", b"# a comment", b"  # name=x"):
            self.assertIsNone(parseTokenLine(line))

    def test_scoped(self) -> None:
        """name, prefix and ops limit the token; a prefix may be written with slashes."""
        for prefix in (b"alice", b"alice/", b"/alice/"):
            with self.subTest(prefix=prefix):
                line = TOKEN + b" name=alice prefix=" + prefix + b" ops=upload,download"
                self.assertEqual(parseTokenLine(line), ALICE)
        deep = parseTokenLine(TOKEN + b" prefix=teams/r%C3%A9/x ops=delete")
        assert deep is not None
        self.assertEqual(deep.prefix, ("teams", "r%C3%A9", "x"))  # no percent-decoding
        self.assertEqual(deep.operations, frozenset({DELETE}))

    def test_bad(self) -> None:
        """Every malformed field is one clear error that never shows the token."""
        cases = {
            b"ops=uplaod": "unknown operation 'uplaod'",
            b"ops=": "unknown operation ''",
            b"ops=upload,,delete": "unknown operation ''",
            b"prefix=../bob": "prefix '../bob'",
            b"prefix=a//b": "prefix 'a//b'",
            b"prefix=.hidden": "prefix '.hidden'",
            b"prefix=/": "prefix= is empty",
            b"prefix=": "prefix= is empty",
            b"name=": "name ''",
            b"name=a b": "'b' is not key=value",
            b"name=-x": "name '-x'",
            b"nmae=alice": "unknown field 'nmae'",
            b"name=a name=b": "name= given twice",
            b"alice": "'alice' is not key=value",
            b"prefix=\xff": "not UTF-8",
        }
        for fields, message in cases.items():
            with self.subTest(fields=fields):
                error = self.assertRaises(ScopeSyntaxError, parseTokenLine, TOKEN + b" " + fields)
                self.assertIn(message, str(error))
                self.assertNotIn(TOKEN.decode(), str(error))
                self.assertNotIn("\n", str(error))

    def test_file(self) -> None:
        """A file's credentials come with their line numbers; errors name the line."""
        lines = [b"# tokens", TOKEN + b" name=alice", b"", b"bob-token-0123456789 name=bob"]
        self.assertEqual(
            [(n, c.name) for n, c in parseTokenLines(lines)], [(2, "alice"), (4, "bob")]
        )
        bad = self.assertRaises(ScopeSyntaxError, parseTokenLines, [*lines, b"x" * 20 + b" ops=all"])
        self.assertEqual(str(bad), "line 5: unknown operation 'all' in ops= (use upload, download, delete)")

    def test_duplicates(self) -> None:
        """A name or a token on two lines is refused, naming both lines."""
        name = self.assertRaises(
            ScopeSyntaxError, parseTokenLines,
            [TOKEN + b" name=a", b"other-token-0123456789 name=a"],
        )
        self.assertEqual(str(name), "line 2: name 'a' already used on line 1")
        token = self.assertRaises(
            ScopeSyntaxError, parseTokenLines, [TOKEN + b" name=a", TOKEN + b" name=b"]
        )
        self.assertEqual(str(token), "line 2: the same token as on line 1")

    @given(
        token=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=16, max_size=40)
        .filter(lambda t: not t.startswith("#")),
        name=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,20}", fullmatch=True)),
        prefix=st.lists(
            st.from_regex(r"[a-z0-9][a-z0-9_%-]{0,8}", fullmatch=True),
            max_size=3,
        ),
        ops=st.one_of(st.none(), st.sets(st.sampled_from(OPERATIONS), min_size=1)),
        order=st.permutations([0, 1, 2]),
    )
    def test_roundTrip(
        self, token: str, name: str | None, prefix: list[str], ops: set[str] | None,
        order: list[int],
    ) -> None:
        """Any well-formed line, its fields in any order, reads back what it says."""
        fields = [
            f"name={name}" if name is not None else None,
            f"prefix={'/'.join(prefix)}/" if prefix else None,
            f"ops={','.join(sorted(ops))}" if ops is not None else None,
        ]
        line = " ".join([token, *[f for f in (fields[i] for i in order) if f]])
        self.assertEqual(
            parseTokenLine(line.encode()),
            Credential(
                token.encode(), name, tuple(prefix),
                frozenset(ops) if ops is not None else frozenset(OPERATIONS),
            ),
        )

    @given(st.binary(max_size=60))
    def test_anyLine(self, tail: bytes) -> None:
        """Any line is a credential or one ScopeSyntaxError, never another exception."""
        try:
            parseTokenLine(TOKEN + b" " + tail)
        except ScopeSyntaxError:
            pass

    def test_tokenNotInRepr(self) -> None:
        """A credential's repr (what a log might show) leaves its token out."""
        self.assertNotIn(TOKEN.decode(), repr(ALICE))


class ScopeTests(SynchronousTestCase):
    def test_insideAndOperations(self) -> None:
        """Paths under the prefix pass for the allowed operations only."""
        self.assertEqual(scopeOf(ALICE, b"/alice/a.bin", UPLOAD), "ok")
        self.assertEqual(scopeOf(ALICE, b"/alice/x/y/z", DOWNLOAD), "ok")
        self.assertEqual(scopeOf(ALICE, b"/alice/a.bin", DELETE), "out-of-scope")

    def test_prefixIsAFolder(self) -> None:
        """alice/ covers neither alice2/, alicex, the folder itself nor bob/."""
        for raw in (b"/alice2/a", b"/alicex", b"/alice", b"/bob/a", b"/x/alice/a"):
            with self.subTest(raw=raw):
                self.assertEqual(scopeOf(ALICE, raw, UPLOAD), "out-of-scope")

    def test_traversalAndEncoding(self) -> None:
        """
        Decided on the parsed path: traversal and encoded slashes are refused
        by the path rules first; an escape that decodes into the folder is in
        it, one that decodes elsewhere is not.
        """
        cases = {
            b"/alice/../bob/a": "dot-component",
            b"/alice/%2e%2e/bob/a": "dot-component",
            b"/alice%2F..%2Fbob/a": "encoded-slash",
            b"/alice%2fx": "encoded-slash",
            b"/%61lice/a": "ok",  # the same folder, spelt with an escape
            b"/alice%252F/a": "out-of-scope",  # a folder literally named alice%2F
            b"/alice%00/a": "control-char",
            b"/Alice/a": "out-of-scope",
            b"/alice/./a": "dot-component",
            b"/alice//a": "empty-component",
        }
        for raw, expected in cases.items():
            with self.subTest(raw=raw):
                self.assertEqual(scopeOf(ALICE, raw, UPLOAD), expected)

    def test_unicodeNormalForm(self) -> None:
        """A prefix in NFC does not cover a decomposed spelling (which the path rules refuse)."""
        cafe = parseTokenLine(TOKEN + " prefix=café".encode())
        assert cafe is not None
        self.assertEqual(scopeOf(cafe, b"/caf%C3%A9/a", UPLOAD), "ok")
        self.assertEqual(scopeOf(cafe, b"/cafe%CC%81/a", UPLOAD), "not-nfc")

    def test_noCredential(self) -> None:
        """No credential (signed URL, trusted front end) is not limited here."""
        self.assertEqual(scopeOf(None, b"/bob/a", DELETE), "ok")

    def test_wholeRoot(self) -> None:
        """A plain token covers every path."""
        self.assertEqual(scopeOf(Credential(TOKEN), b"/any/where", DELETE), "ok")

    def test_refusal(self) -> None:
        """The refusal is 403 out-of-scope with a one-line reason naming the operation."""
        error = self.assertRaises(
            Forbidden, checkScope, ALICE, parseUploadPath(b"/alice/a"), DELETE
        )
        self.assertEqual((error.status, error.code, error.reason),
                         (403, "out-of-scope", "this credential may not delete"))


class RequestOperationTests(SynchronousTestCase):
    def test_methods(self) -> None:
        """PUT and POST upload, GET downloads; other methods name no operation."""
        self.assertEqual(requestOperation(ALICE, b"PUT", False), UPLOAD)
        self.assertEqual(requestOperation(ALICE, b"POST", False), UPLOAD)
        self.assertEqual(requestOperation(ALICE, b"GET", True), DOWNLOAD)
        self.assertIsNone(requestOperation(ALICE, b"PATCH", True))

    def test_head(self) -> None:
        """HEAD is a status query for uploaders, a body-less download for downloaders."""
        downloader = Credential(TOKEN, None, (), frozenset({DOWNLOAD}))
        self.assertEqual(requestOperation(ALICE, b"HEAD", False), UPLOAD)
        self.assertEqual(requestOperation(downloader, b"HEAD", True), DOWNLOAD)
        self.assertRaises(Forbidden, requestOperation, downloader, b"HEAD", False)
        deleter = Credential(TOKEN, None, (), frozenset({DELETE}))
        self.assertRaises(Forbidden, requestOperation, deleter, b"HEAD", True)
        self.assertEqual(requestOperation(None, b"HEAD", True), UPLOAD)

    def test_delete(self) -> None:
        """DELETE deletes for deleters; an uploader may only cancel; others are refused."""
        self.assertEqual(requestOperation(Credential(TOKEN), b"DELETE", False), DELETE)
        self.assertEqual(requestOperation(ALICE, b"DELETE", False), UPLOAD)
        reader = Credential(TOKEN, None, (), frozenset({DOWNLOAD}))
        error = self.assertRaises(Forbidden, requestOperation, reader, b"DELETE", True)
        self.assertEqual(error.code, "out-of-scope")

    def test_pathRulesUnchanged(self) -> None:
        """The path rules still refuse as before (a sanity check of the helper)."""
        self.assertRaises(BadRequest, parseUploadPath, b"/a/../b")
