"""
Tests for L{uploadsvc.protocol.ranges}: the C{Content-Range} request header
of docs/protocol.md section 3.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import parseContentRange as twistedParseContentRange

from uploadsvc.errors import BadRequest
from uploadsvc.protocol.ranges import (
    MAX_VALUE,
    ContentRange,
    RangeQuery,
    checkRangeLength,
    parseContentRange,
)
from uploadsvc.testing.strategies import badContentRanges, contentRanges

_properties = settings(max_examples=300, deadline=None)

VALID: list[tuple[bytes, ContentRange | RangeQuery]] = [
    (b"bytes 0-0/1", ContentRange(0, 0, 1)),
    (b"bytes 0-99/100", ContentRange(0, 99, 100)),
    (b"bytes 100-199/1000", ContentRange(100, 199, 1000)),
    (b"bytes 5-9/*", ContentRange(5, 9, None)),
    (b"bytes 0-0/*", ContentRange(0, 0, None)),
    (b"BYTES 1-2/3", ContentRange(1, 2, 3)),
    (b"Bytes 1-2/3", ContentRange(1, 2, 3)),
    (b"bytes 007-009/010", ContentRange(7, 9, 10)),
    (b"bytes */100", RangeQuery(100)),
    (b"bytes */*", RangeQuery(None)),
    (b"bytes */0", RangeQuery(0)),
    (
        b"bytes 0-9223372036854775806/9223372036854775807",
        ContentRange(0, MAX_VALUE - 1, MAX_VALUE),
    ),
    (
        b"bytes 9223372036854775807-9223372036854775807/*",
        ContentRange(MAX_VALUE, MAX_VALUE, None),
    ),
    (b"bytes 0000000000000000001-2/3", ContentRange(1, 2, 3)),
    (b"bytes */9223372036854775807", RangeQuery(MAX_VALUE)),
]

INVALID = [
    b"",
    b"bytes",
    b"bytes ",
    b"bytes 5-3/10",  # end before start
    b"bytes 0-99/10",  # end beyond total
    b"bytes 0-10/10",  # end at total
    b"bytes 0-0/0",
    b"bytes 1-1/1",
    b"bytes 0-9223372036854775808/*",  # beyond 2**63 - 1
    b"bytes */9223372036854775808",
    b"bytes 0-1/99999999999999999999",  # 20 digits
    b"bytes 00000000000000000001-2/3",  # 20 digits, even if small
    b"bytes -1-2/3",
    b"bytes 1--2/3",
    b"bytes +1-2/3",
    b"bytes 1_0-20/30",
    b"bytes 1-2/3/4",
    b"bytes 1-2",
    b"bytes 1-/3",
    b"bytes -2/3",
    b"bytes 1-2/",
    b"bytes */",
    b"bytes *",
    b"bytes *-*/*",
    b"bytes 1-2/3, 4-5/6",
    b"bytes 1-2,4-5/6",
    b"bytes=1-2/3",
    b"bytes  1-2/3",
    b"bytes\t1-2/3",
    b"bytes1-2/3",
    b" bytes 1-2/3",
    b"bytes 1-2/3 ",
    b"bytes 1-2/3\n",
    b"bytes 1 - 2/3",
    b"bits 1-2/3",
    b"byte 1-2/3",
    b"items 1-2/3",
    b"bytes \xd9\xa1-2/3",  # ARABIC-INDIC DIGIT ONE
    b"bytes 0x1-2/3",
    b"bytes 1.0-2/3",
]


class ParseTests(SynchronousTestCase):
    """
    L{parseContentRange} accepts exactly the two forms of section 3.
    """

    def test_valid(self) -> None:
        """
        Every header of the valid table parses to its expected value.
        """
        for header, expected in VALID:
            self.assertEqual((header, parseContentRange(header)), (header, expected))

    def test_invalid(self) -> None:
        """
        Every header of the invalid table is refused with C{bad-range} (400)
        and a one-line reason.
        """
        for header in INVALID:
            try:
                result = parseContentRange(header)
            except BadRequest as error:
                self.assertEqual((header, error.code), (header, "bad-range"))
                self.assertEqual(error.status, 400)
                self.assertNotIn("\n", error.reason)
            else:
                self.fail(f"{header!r} parsed as {result!r}")

    def test_length(self) -> None:
        """
        A range's length counts both ends.
        """
        self.assertEqual(ContentRange(0, 0, None).length, 1)
        self.assertEqual(ContentRange(100, 199, 1000).length, 100)

    def test_toHeader(self) -> None:
        """
        Ranges and queries format back to their canonical header values.
        """
        self.assertEqual(ContentRange(5, 9, None).toHeader(), b"bytes 5-9/*")
        self.assertEqual(ContentRange(0, 9, 10).toHeader(), b"bytes 0-9/10")
        self.assertEqual(RangeQuery(None).toHeader(), b"bytes */*")
        self.assertEqual(RangeQuery(0).toHeader(), b"bytes */0")

    def test_invariants(self) -> None:
        """
        A L{ContentRange} or L{RangeQuery} that breaks the rules cannot be
        built, even directly.
        """
        for args in [(5, 3, None), (-1, 3, None), (0, 9, 9), (0, MAX_VALUE + 1, None)]:
            self.assertRaises(ValueError, ContentRange, *args)
        self.assertRaises(ValueError, RangeQuery, -1)
        self.assertRaises(ValueError, RangeQuery, MAX_VALUE + 1)

    def test_twistedIsLaxer(self) -> None:
        """
        Twisted's parser (given text, since it compares the unit with a
        C{str}) accepts ranges that ours refuses, which is why it is only an
        oracle.
        """
        for header in [b"bytes 5-3/10", b"bytes 0-99/10", b"bytes  1-2/3 "]:
            twistedParseContentRange(header.decode("ascii"))
            self.assertRaises(BadRequest, parseContentRange, header)


class CheckRangeLengthTests(SynchronousTestCase):
    """
    L{checkRangeLength} compares C{Content-Length} with the range.
    """

    def test_matches(self) -> None:
        """
        A matching length, or none at all (chunked), passes.
        """
        checkRangeLength(ContentRange(10, 19, None), 10)
        checkRangeLength(ContentRange(10, 19, None), None)

    def test_mismatch(self) -> None:
        """
        A length that differs in either direction is refused with
        C{range-length-mismatch} (400).
        """
        for length in [0, 9, 11]:
            error = self.assertRaises(
                BadRequest, checkRangeLength, ContentRange(10, 19, 100), length
            )
            self.assertEqual((error.code, error.status), ("range-length-mismatch", 400))


class RangePropertyTests(SynchronousTestCase):
    """
    Properties of the Content-Range parser over generated inputs.
    """

    @_properties
    @given(contentRanges())
    def test_validParses(self, pair: tuple[bytes, ContentRange | RangeQuery]) -> None:
        """
        Every generated valid header parses to the value it was made from.
        """
        header, expected = pair
        self.assertEqual(parseContentRange(header), expected)

    @_properties
    @given(contentRanges())
    def test_roundTrip(self, pair: tuple[bytes, ContentRange | RangeQuery]) -> None:
        """
        A parsed value formats to a header that parses back to it.
        """
        value = parseContentRange(pair[0])
        self.assertEqual(parseContentRange(value.toHeader()), value)

    @_properties
    @given(contentRanges())
    def test_twistedOracle(self, pair: tuple[bytes, ContentRange | RangeQuery]) -> None:
        """
        Where ours accepts a C{bytes S-E/T} header, Twisted's parser reads
        the same numbers from it.
        """
        header, expected = pair
        if isinstance(expected, ContentRange):
            self.assertEqual(
                twistedParseContentRange(header.decode("ascii")),
                (expected.first, expected.last, expected.total),
            )

    @_properties
    @given(
        st.one_of(
            st.binary(max_size=40).map(lambda b: b"bytes " + b),
            st.lists(
                st.sampled_from(
                    [b"bytes", b" ", b"0", b"1", b"9", b"-", b"/", b"*", b"+", b"\t"]
                ),
                max_size=14,
            ).map(b"".join),
            st.tuples(
                st.integers(0, 30),
                st.integers(0, 30),
                st.one_of(st.none(), st.integers(0, 30)),
            ).map(
                lambda t: b"bytes %d-%d/%s"
                % (t[0], t[1], b"*" if t[2] is None else b"%d" % t[2])
            ),
        )
    )
    def test_agreesWithTwistedOnCanonical(self, header: bytes) -> None:
        """
        On arbitrary bytes ours raises only L{BadRequest}; what it accepts
        Twisted reads alike; and of what Twisted reads from a canonically
        written header, ours accepts exactly the sound ranges.
        """
        try:
            ours: ContentRange | RangeQuery | None = parseContentRange(header)
        except BadRequest:
            ours = None
        try:
            theirs = twistedParseContentRange(header.decode("latin-1"))
        except ValueError:
            theirs = None
        if isinstance(ours, ContentRange):
            self.assertEqual(theirs, (ours.first, ours.last, ours.total))
        if theirs is not None:
            first, last, total = theirs
            sound = 0 <= first <= last <= MAX_VALUE and (
                total is None or last < total <= MAX_VALUE
            )
            canonical = b"bytes %d-%d/%s" % (
                first,
                last,
                b"*" if total is None else b"%d" % (total,),
            )
            if header == canonical:
                expected = ContentRange(first, last, total) if sound else None
                self.assertEqual(ours, expected)

    @_properties
    @given(badContentRanges())
    def test_badRefused(self, header: bytes) -> None:
        """
        Every generated defective header is refused with C{bad-range}.
        """
        error = self.assertRaises(BadRequest, parseContentRange, header)
        self.assertEqual(error.code, "bad-range")
