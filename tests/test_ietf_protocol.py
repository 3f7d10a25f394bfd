"""
Tests for L{uploadsvc.protocol.ietf}: the draft's structured fields (with
http-sfv as an independent oracle, fuzzed with hypothesis), its versions,
C{Upload-Limit}, problem documents and the decisions of docs/protocol.md
section 9.
"""

from __future__ import annotations

import json
import re

import http_sfv
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import BadRequest, NotFound
from uploadsvc.protocol import ietf
from uploadsvc.protocol.decisions import Stored

SUPPORTED = (6, 8, 10)


def h(**fields: str) -> dict[bytes, list[bytes]]:
    """
    Request headers as the front end hands them: lowercase names to lines.
    """
    return {k.replace("_", "-").lower().encode(): [v.encode()] for k, v in fields.items()}


def oracle(text: bytes) -> object:
    """
    http-sfv's reading of an Item (L{None} when it is not one).
    """
    item = http_sfv.Item()
    try:
        item.parse(text)
    except ValueError:
        return None
    # http-sfv accepts numbers that RFC 9651 section 4.2.4 refuses (more
    # than 15 integer digits, more than 12 before a decimal point, a
    # decimal ending in "."): the oracle is made as strict as the RFC there.
    if re.search(rb"(^ *|=)-?([0-9]{16,}|[0-9]{13,}\.|[0-9]{1,12}\.(?![0-9]))", text):
        return None
    return item.value


class FieldTests(SynchronousTestCase):
    """
    sf-boolean and sf-integer Items are read strictly; other shapes are
    ignored.
    """

    def test_boolean(self) -> None:
        """?1 and ?0 read as booleans, with parameters and outer spaces allowed; anything else is ignored."""
        self.assertIs(ietf.parseBoolean([b"?1"]), True)
        self.assertIs(ietf.parseBoolean([b" ?0;x=1 "]), False)
        for bad in [b"1", b"true", b"?2", b"?1, ?1", b"?1 ;", b"\t?1", b""]:
            self.assertIsNone(ietf.parseBoolean([bad]), bad)
        self.assertIsNone(ietf.parseBoolean([b"?1", b"?1"]))  # two lines: a list
        self.assertIsNone(ietf.parseBoolean(None))

    def test_integer(self) -> None:
        """Up to 15 digits; negative, decimal, 16 digits or leading plus are ignored."""
        self.assertEqual(ietf.parseInteger([b"0"]), 0)
        self.assertEqual(ietf.parseInteger([b"999999999999999"]), 999999999999999)
        for bad in [b"-1", b"1.5", b"1000000000000000", b"+1", b"0x10", b"1 2", b"?1"]:
            self.assertIsNone(ietf.parseInteger([bad]), bad)

    @given(st.binary(max_size=40) | st.from_regex(rb"\A ?(\?[01]|-?[0-9]{1,16})(;[a-z]{1,3}(=[0-9?a-z\"]{1,4})?)? ?\Z"))
    def test_booleanOracle(self, text: bytes) -> None:
        """Whatever the bytes, a boolean is read exactly when http-sfv reads a boolean Item."""
        expected = oracle(text)
        got = ietf.parseBoolean([text])
        self.assertEqual(got, expected if isinstance(expected, bool) else None)

    @given(st.binary(max_size=40) | st.from_regex(rb"\A ?-?[0-9]{1,16}(;[a-z]{1,3}(=[0-9?a-z\"]{1,4})?)? ?\Z"))
    def test_integerOracle(self, text: bytes) -> None:
        """Whatever the bytes, a non-negative integer is read exactly when http-sfv reads one."""
        expected = oracle(text)
        ok = type(expected) is int and expected >= 0
        self.assertEqual(ietf.parseInteger([text]), expected if ok else None)

    def test_limit(self) -> None:
        """Upload-Limit is a dictionary that http-sfv reads; version 6 names the lifetime expires, later ones max-age."""
        for number, key in [(6, "expires"), (8, "max-age"), (10, "max-age")]:
            value = ietf.formatLimit(ietf.KNOWN[number], 1000, 60)
            parsed = http_sfv.Dictionary()
            parsed.parse(value)
            self.assertEqual(
                {k: v.value for k, v in parsed.items()},
                {"max-size": 1000, "min-size": 0, key: 60},
            )
        self.assertEqual(ietf.formatLimit(ietf.KNOWN[8], 5, None), b"max-size=5, min-size=0")

    @given(
        st.sampled_from(sorted(ietf.KNOWN)),
        st.integers(min_value=0, max_value=10**20),
        st.none() | st.integers(min_value=0, max_value=10**20),
    )
    def test_limitAnyValues(self, number: int, maxSize: int, maxAge: int | None) -> None:
        """Whatever the sizes and lifetime, Upload-Limit reads back through http-sfv as the same dictionary; values past a structured-field integer's 15 digits are announced as the largest one."""
        value = ietf.formatLimit(ietf.KNOWN[number], maxSize, maxAge)
        parsed = http_sfv.Dictionary()
        parsed.parse(value)
        top = ietf.SF_INTEGER_MAX
        expected: dict[str, int] = {"max-size": min(maxSize, top), "min-size": 0}
        if maxAge is not None:
            expected["expires" if number == 6 else "max-age"] = min(maxAge, top)
        self.assertEqual({k: v.value for k, v in parsed.items()}, expected)


class VersionTests(SynchronousTestCase):
    """
    Which requests the draft serves, and by which version.
    """

    def test_optionList(self) -> None:
        """--ietf-versions takes known versions, sorted and without repeats; others are refused with one line."""
        self.assertEqual(ietf.parseVersionList("10, 6,8,6"), (6, 8, 10))
        for bad in ["5", "6,x", "", "11", "6,,8"]:
            with self.assertRaises(ValueError) as e:
                ietf.parseVersionList(bad)
            self.assertNotIn("\n", str(e.exception))

    def test_plainWithoutComplete(self) -> None:
        """A request without Upload-Complete (or with a malformed one) is a plain upload."""
        self.assertIsNone(ietf.readCreation(h(upload_draft_interop_version="8"), 5, SUPPORTED))
        self.assertIsNone(ietf.readCreation(h(upload_complete="yes"), 5, SUPPORTED))

    def test_named(self) -> None:
        """A supported version named gets the 104; none named follows the newest served, without it."""
        c = ietf.readCreation(h(upload_complete="?1", upload_draft_interop_version="6"), 5, SUPPORTED)
        assert c is not None
        self.assertEqual((c.version.number, c.interim, c.complete, c.length), (6, True, True, 5))
        c = ietf.readCreation(h(upload_complete="?0"), 5, SUPPORTED)
        assert c is not None
        self.assertEqual((c.version.number, c.interim, c.complete, c.length), (10, False, False, None))
        c = ietf.readCreation(h(upload_complete="?0"), 5, (6, 8))
        assert c is not None
        self.assertEqual(c.version.number, 8)

    def test_unknownComplete(self) -> None:
        """An unknown (or unserved, or malformed) version with ?1 is served as a plain upload."""
        for value in ["7", "99", "x"]:
            self.assertIsNone(
                ietf.readCreation(h(upload_complete="?1", upload_draft_interop_version=value), 5, SUPPORTED)
            )

    def test_unknownIncomplete(self) -> None:
        """An unknown version with ?0 is refused 400, the reason naming the versions served."""
        with self.assertRaises(BadRequest) as e:
            ietf.readCreation(h(upload_complete="?0", upload_draft_interop_version="99"), 5, SUPPORTED)
        self.assertEqual(e.exception.reason, "Upload-Draft-Interop-Version is unsupported (99); this server speaks 6, 8, 10")
        with self.assertRaises(BadRequest):
            ietf.readVersion(h(upload_draft_interop_version="7"), SUPPORTED)

    def test_creationLengths(self) -> None:
        """A creation at an offset other than 0, or whose Upload-Length differs from its complete body, is refused."""
        self.assertRaises(BadRequest, ietf.readCreation, h(upload_complete="?1", upload_offset="3"), 5, SUPPORTED)
        self.assertRaises(BadRequest, ietf.readCreation, h(upload_complete="?1", upload_length="6"), 5, SUPPORTED)
        c = ietf.readCreation(h(upload_complete="?0", upload_length="60"), 5, SUPPORTED)
        assert c is not None
        self.assertEqual(c.length, 60)


class AppendTests(SynchronousTestCase):
    """
    A PATCH's headers and its decision against what is stored.
    """

    v8 = ietf.KNOWN[8]

    def test_mediaType(self) -> None:
        """An append without application/partial-upload is refused 415."""
        with self.assertRaises(ietf.UnsupportedMediaType):
            ietf.readAppend(self.v8, h(upload_offset="0", upload_complete="?1"), 3)
        a = ietf.readAppend(
            self.v8, h(content_type="Application/Partial-Upload; x=1", upload_offset="4", upload_complete="?0"), 3
        )
        self.assertEqual((a.offset, a.complete, a.length), (4, False, None))

    def test_missingFields(self) -> None:
        """Upload-Offset is required; Upload-Complete too, except for version 6 where its absence completes."""
        t = "application/partial-upload"
        self.assertRaises(BadRequest, ietf.readAppend, self.v8, h(content_type=t, upload_complete="?1"), 3)
        self.assertRaises(BadRequest, ietf.readAppend, self.v8, h(content_type=t, upload_offset="0"), 3)
        a = ietf.readAppend(ietf.KNOWN[6], h(content_type=t, upload_offset="2"), 3)
        self.assertEqual((a.complete, a.length), (True, 5))

    def test_mismatch(self) -> None:
        """A wrong offset is a 409 whose problem document names both offsets."""
        a = ietf.DraftWrite(self.v8, 3, False, None)
        with self.assertRaises(ietf.ProblemConflict) as e:
            ietf.planWrite(Stored(offset=5, incomplete=True), a, 2)
        error = e.exception
        self.assertEqual(error.status, 409)
        self.assertEqual(error.headers[b"Upload-Offset"], b"5")
        body = json.loads(ietf.problemBody(error) or b"")
        self.assertEqual(body["type"], "https://iana.org/assignments/http-problem-types#mismatching-upload-offset")
        self.assertEqual((body["expected-offset"], body["provided-offset"], body["status"]), (5, 3, 409))

    def test_pastLength(self) -> None:
        """Data past a known length is refused with an inconsistent-upload-length problem (a plain 400 for version 6)."""
        stored = Stored(offset=5, total=8, incomplete=True)
        with self.assertRaises(ietf.ProblemBadRequest) as e:
            ietf.planWrite(stored, ietf.DraftWrite(self.v8, 5, False, None), 4)
        self.assertIn("inconsistent-upload-length", json.loads(ietf.problemBody(e.exception) or b"")["type"])
        with self.assertRaises(BadRequest) as e6:
            ietf.planWrite(stored, ietf.DraftWrite(ietf.KNOWN[6], 5, False, None), 4)
        self.assertIsNone(ietf.problemBody(e6.exception))
        self.assertRaises(BadRequest, ietf.planWrite, stored, ietf.DraftWrite(self.v8, 5, True, 9), 4)

    def test_plan(self) -> None:
        """An append at the offset writes its body; a chunked one may run to the known length and no further."""
        stored = Stored(offset=5, total=8, incomplete=True)
        plan = ietf.planWrite(stored, ietf.DraftWrite(self.v8, 5, False, None), None)
        self.assertEqual((plan.startOver, plan.offset, plan.skip, plan.take, plan.total), (False, 5, 0, 3, 8))
        plan = ietf.planWrite(Stored(offset=5, incomplete=True), ietf.DraftWrite(self.v8, 5, True, 7), 2)
        self.assertEqual((plan.take, plan.total), (2, 7))

    def test_gone(self) -> None:
        """An append to an upload that is no longer there is 404."""
        self.assertRaises(
            NotFound, ietf.planWrite, Stored(completeSize=3), ietf.DraftWrite(self.v8, 0, True, None), 0
        )


class DispositionTests(SynchronousTestCase):
    """
    The file name of a creation's Content-Disposition (RFC 6266).
    """

    def test_names(self) -> None:
        """filename* in UTF-8 wins over filename; quoted names are unescaped; none gives None."""
        self.assertEqual(ietf.dispositionFilename([b'inline; filename="a b.jpg"']), "a b.jpg")
        self.assertEqual(
            ietf.dispositionFilename([b"inline; filename=x; filename*=UTF-8''%C3%A9t%C3%A9.txt"]), "\u00e9t\u00e9.txt"
        )
        self.assertEqual(ietf.dispositionFilename([b'attachment; filename="q\\"x"']), 'q"x')
        self.assertIsNone(ietf.dispositionFilename([b"inline"]))
        self.assertIsNone(ietf.dispositionFilename(None))

    def test_malformed(self) -> None:
        """A field that is not a type with parameters, or a filename* that is not UTF-8, is refused 400."""
        for bad in [b"", b"; filename=a", b"inline; filename", b'inline; filename="open',
                    b"inline; filename*=latin-1''a", b"inline; filename*=UTF-8''%FF", b"\xff"]:
            self.assertRaises(BadRequest, ietf.dispositionFilename, [bad])

    @given(st.binary(max_size=60) | st.text(max_size=60).map(lambda t: t.encode("utf-8")))
    def test_fuzz(self, value: bytes) -> None:
        """Whatever the bytes, the parser gives a name, None, or a 400; never another error."""
        try:
            name = ietf.dispositionFilename([value])
        except BadRequest:
            return
        self.assertTrue(name is None or isinstance(name, str))
