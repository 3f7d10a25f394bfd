"""
The download decisions of L{uploadsvc.protocol.byteranges}: C{Range} parsing
(checked against werkzeug's parser as an oracle) and the conditional headers.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from werkzeug.http import parse_range_header

from uploadsvc.protocol.byteranges import (
    UNSATISFIABLE,
    Answer,
    Conditions,
    Span,
    Validators,
    decide,
    parseETags,
    parseHTTPDate,
    parseRange,
)

ETAG = b'"abc123"'
MODIFIED = 1_700_000_000
DATE = b"Tue, 14 Nov 2023 22:13:20 GMT"  # MODIFIED
EARLIER = b"Tue, 14 Nov 2023 22:13:19 GMT"
VALIDATORS = Validators(ETAG, MODIFIED)


class ParseRangeTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """The three forms of one byte range give the bytes they name, clamped to the file."""
        cases = {
            b"bytes=0-9": Span(0, 10),
            b"bytes=5-": Span(5, 95),
            b"bytes=-10": Span(90, 10),
            b"bytes=90-500": Span(90, 10),
            b"bytes=-500": Span(0, 100),
            b"bytes=99-99": Span(99, 1),
            b"BYTES = 1-2": Span(1, 2),
        }
        for value, expected in cases.items():
            with self.subTest(value=value):
                self.assertEqual(parseRange(value, 100), expected)

    def test_unsatisfiable(self) -> None:
        """A range that starts at or past the end, or a zero suffix, cannot be served (416)."""
        for value in (b"bytes=100-", b"bytes=100-200", b"bytes=-0", b"bytes=0-0"):
            with self.subTest(value=value):
                self.assertEqual(parseRange(value, 100 if value != b"bytes=0-0" else 0),
                                 UNSATISFIABLE)

    def test_ignored(self) -> None:
        """Malformed ranges, other units, several ranges: the header is ignored (200)."""
        for value in (
            None, b"", b"bytes", b"bytes=", b"bytes=a-b", b"bytes=5-3", b"items=0-1",
            b"bytes=0-1,3-4", b"bytes=0-1,", b"bytes=--1", b"bytes=-", b"bytes=1-2-3",
            b"bytes=" + b"9" * 20 + b"-", b"bytes=+1-2", b"bytes=0x1-2", b"bytes= 1 - 2",
        ):
            with self.subTest(value=value):
                self.assertIsNone(parseRange(value, 100))

    def test_emptyFile(self) -> None:
        """A suffix range of an empty file is ignored: no Content-Range describes nothing."""
        self.assertIsNone(parseRange(b"bytes=-5", 0))

    @settings(max_examples=500)
    @example(first=0, last=None, suffix=True, size=5)
    @example(first=9, last=None, suffix=True, size=5)
    @example(first=5, last=3, suffix=False, size=10)
    @given(
        first=st.integers(0, 300), last=st.one_of(st.none(), st.integers(0, 300)),
        suffix=st.booleans(), size=st.integers(1, 200),
    )
    def test_oracle(self, first: int, last: int | None, suffix: bool, size: int) -> None:
        """
        Wherever werkzeug reads one satisfiable range, it reads the same
        bytes; where it differs, RFC 9110 section 14.1.1 sides with us (a
        suffix longer than the file is the whole file; C{-0} is unsatisfiable,
        not malformed).
        """
        if suffix and (first == 0 or first >= size):
            self.assertEqual(
                parseRange(b"bytes=-%d" % first, size), Span(0, size) if first else UNSATISFIABLE
            )
            return
        if suffix:
            value = b"bytes=-%d" % first
        else:
            value = b"bytes=%d-" % first + (b"" if last is None else b"%d" % last)
        ours = parseRange(value, size)
        parsed = parse_range_header(value.decode())
        theirs = parsed.range_for_length(size) if parsed is not None else None
        if theirs is not None:
            start, stop = theirs
            self.assertEqual(ours, Span(start, stop - start))
        elif parsed is None:
            self.assertIsNone(ours)  # werkzeug refuses what we ignore
        else:
            # werkzeug saw a range it cannot serve: so do we.
            self.assertEqual(ours, UNSATISFIABLE)

    @given(st.binary(max_size=40))
    def test_anyBytes(self, value: bytes) -> None:
        """Whatever the header holds, the answer is a span inside the file, 416 or ignored."""
        result = parseRange(b"bytes=" + value, 50)
        if isinstance(result, Span):
            self.assertTrue(0 <= result.start and result.length > 0 and result.end < 50)
        else:
            self.assertIn(result, (None, UNSATISFIABLE))


class ConditionalTests(SynchronousTestCase):
    def decide(self, head: bool = False, size: int = 100, **conditions: bytes) -> Answer:
        return decide(head, Conditions(**conditions), size, VALIDATORS, now=MODIFIED + 60)

    def test_plain(self) -> None:
        """No conditions: the whole file; an empty file has nothing to send."""
        self.assertEqual(self.decide(), Answer(200, Span(0, 100)))
        self.assertEqual(self.decide(size=0), Answer(200, None))

    def test_ifNoneMatch(self) -> None:
        """A matching tag (weak comparison, a list, or *) is 304; another tag is not."""
        for value in (ETAG, b'"x", ' + ETAG, b"W/" + ETAG, b"*"):
            with self.subTest(value=value):
                self.assertEqual(self.decide(ifNoneMatch=value), Answer(304))
        self.assertEqual(self.decide(ifNoneMatch=b'"other"').status, 200)

    def test_ifNoneMatchBeatsIfModifiedSince(self) -> None:
        """When If-None-Match is sent, If-Modified-Since is not looked at."""
        self.assertEqual(self.decide(ifNoneMatch=b'"other"', ifModifiedSince=DATE).status, 200)

    def test_ifModifiedSince(self) -> None:
        """Not modified since the date is 304; modified after it, or a bad date, is 200."""
        self.assertEqual(self.decide(ifModifiedSince=DATE), Answer(304))
        self.assertEqual(self.decide(ifModifiedSince=EARLIER).status, 200)
        self.assertEqual(self.decide(ifModifiedSince=b"yesterday").status, 200)

    def test_range(self) -> None:
        """GET honours one range (206) or refuses it (416); HEAD ignores it."""
        self.assertEqual(self.decide(range=b"bytes=10-19"), Answer(206, Span(10, 10)))
        self.assertEqual(self.decide(range=b"bytes=100-"), Answer(416))
        self.assertEqual(self.decide(head=True, range=b"bytes=10-19"), Answer(200, Span(0, 100)))

    def test_ifRange(self) -> None:
        """If-Range keeps the range only for the same file: strong tag or exact date."""
        rng = b"bytes=10-19"
        self.assertEqual(self.decide(range=rng, ifRange=ETAG).status, 206)
        self.assertEqual(self.decide(range=rng, ifRange=DATE).status, 206)
        for stale in (b'"other"', b"W/" + ETAG, EARLIER, b"garbage"):
            with self.subTest(stale=stale):
                self.assertEqual(self.decide(range=rng, ifRange=stale), Answer(200, Span(0, 100)))

    def test_ifMatch(self) -> None:
        """If-Match needs a strong match (or *); otherwise 412, before anything else."""
        for value in (ETAG, b'"x", ' + ETAG, b"*"):
            with self.subTest(value=value):
                self.assertEqual(self.decide(ifMatch=value).status, 200)
        for value in (b'"x"', b"W/" + ETAG):
            with self.subTest(value=value):
                self.assertEqual(self.decide(ifMatch=value, ifNoneMatch=ETAG), Answer(412))

    def test_ifUnmodifiedSince(self) -> None:
        """If-Unmodified-Since before the file's time is 412; ignored under If-Match or when bad."""
        self.assertEqual(self.decide(ifUnmodifiedSince=EARLIER), Answer(412))
        self.assertEqual(self.decide(ifUnmodifiedSince=DATE).status, 200)
        self.assertEqual(self.decide(ifUnmodifiedSince=b"soon").status, 200)
        self.assertEqual(self.decide(ifMatch=ETAG, ifUnmodifiedSince=EARLIER).status, 200)

    def test_notModifiedBeforeRange(self) -> None:
        """304 wins over a range."""
        self.assertEqual(self.decide(ifNoneMatch=ETAG, range=b"bytes=0-1"), Answer(304))

    def test_parsers(self) -> None:
        """Entity tag lists and HTTP dates parse; garbage is skipped or None."""
        self.assertEqual(parseETags(b'"a", W/"b", junk'), [(False, b'"a"'), (True, b'"b"')])
        self.assertIsNone(parseETags(b" * "))
        self.assertEqual(parseHTTPDate(DATE), MODIFIED)
        self.assertIsNone(parseHTTPDate(b"\xff"))
        self.assertIsNone(parseHTTPDate(b""))


def _number() -> st.SearchStrategy[bytes]:
    return st.integers(0, 10**22).map(lambda n: b"%d" % n)


#: HTTP-date-shaped values (RFC 5322 and RFC 850 order) whose numbers are
#: of any size, with real month names so that the parser goes deep.
_dateShaped = st.builds(
    lambda weekday, day, month, year, hour, minute, second, zone: b"%s%s %s %s %s:%s:%s %s" % (
        weekday, day, month, year, hour, minute, second, zone
    ),
    st.sampled_from([b"", b"Mon, ", b"Sunday, "]),
    _number(),
    st.sampled_from([b"Jan", b"Feb", b"Dec", b"jan"]),
    _number(), _number(), _number(), _number(),
    st.one_of(
        st.sampled_from([b"GMT", b"UT", b"EST", b"Z", b""]),
        st.builds(lambda sign, n: sign + n, st.sampled_from([b"+", b"-"]), _number()),
    ),
)

#: One second after MODIFIED: a date validator equal to it is then strong.
LATER = MODIFIED + 1


class DateValidatorTests(SynchronousTestCase):
    """
    HTTP dates that cannot be parsed are ignored, and an If-Range date is
    trusted only when it can tell two versions apart (RFC 9110 13.1.5).
    """

    def test_overflow(self) -> None:
        """Dates whose numbers overflow the platform's integers are no dates (None)."""
        for value in (
            b"Mon, 01 Jan 2020 00:00:99999999999999 GMT",
            b"1 Jan 9999999999999999999 00:00:00 GMT",
            b"01 Jan 2020 00:00:00 +99999999999999999999",
        ):
            with self.subTest(value=value):
                self.assertIsNone(parseHTTPDate(value))

    def test_overflowIgnoredByDecide(self) -> None:
        """A download whose If-* date overflows is answered as if the header were absent."""
        bad = b"1 Jan 9999999999999999999 00:00:00 GMT"
        for field in ("ifModifiedSince", "ifUnmodifiedSince", "ifRange"):
            with self.subTest(field=field):
                answer = decide(False, Conditions(**{field: bad}), 100, VALIDATORS, now=LATER)
                self.assertEqual(answer, Answer(200, Span(0, 100)))

    @given(st.binary(max_size=80))
    @example(b"Mon, 01 Jan 2020 00:00:99999999999999 GMT")
    @example(b"\x00")
    def test_anyBytes(self, value: bytes) -> None:
        """Whatever bytes a date header holds, parsing never raises."""
        result = parseHTTPDate(value)
        self.assertTrue(result is None or isinstance(result, int))

    @given(_dateShaped)
    @settings(max_examples=300)
    def test_dateShapedBytes(self, value: bytes) -> None:
        """Date-shaped headers with numbers of any size never raise either."""
        result = parseHTTPDate(value)
        self.assertTrue(result is None or isinstance(result, int))

    def test_ifRangeDateNeedsASecond(self) -> None:
        """
        An If-Range date equal to Last-Modified keeps the range only once the
        file is at least a second old; a file modified within the second of
        the answer might have been replaced within that second: whole file.
        """
        conditions = Conditions(range=b"bytes=10-19", ifRange=DATE)
        self.assertEqual(decide(False, conditions, 100, VALIDATORS, now=LATER).status, 206)
        self.assertEqual(
            decide(False, conditions, 100, VALIDATORS, now=LATER + 3600).status, 206
        )
        for now in (MODIFIED, MODIFIED + 0.999, MODIFIED - 5):
            with self.subTest(now=now):
                self.assertEqual(
                    decide(False, conditions, 100, VALIDATORS, now=now), Answer(200, Span(0, 100))
                )

    def test_ifRangeETagAnyTime(self) -> None:
        """An If-Range entity tag is strong by itself: the range holds in the file's own second."""
        conditions = Conditions(range=b"bytes=10-19", ifRange=ETAG)
        self.assertEqual(decide(False, conditions, 100, VALIDATORS, now=MODIFIED).status, 206)
