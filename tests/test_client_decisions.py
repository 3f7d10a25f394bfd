"""
Tests for L{uploadsvc.client.decisions}: the client's choice of the next
range and its reading of answers, sans IO, as tables of cases and as
properties (like tests/test_decisions.py for the server's side).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import os
from typing import Any, Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

import uploadsvc.client.decisions
from uploadsvc.client.decisions import (
    FINAL_PIECE,
    MAX_RETRY_AFTER,
    Answer,
    Completed,
    Held,
    Piece,
    checkDigest,
    digestField,
    nextPiece,
    readDataAnswer,
    readQuery,
    refusal,
    retryAfter,
)
from uploadsvc.client.errors import Fatal, OffsetConflict, Retryable

_properties = settings(max_examples=300, deadline=None)

SIZE = 10_000
FINAL = 500
SHA = hashlib.sha256(b"the file").digest()
SHA512_ZERO = b"sha-512=:" + base64.b64encode(bytes(64)) + b":"


def outcome(f: Callable[..., Any], *args: Any) -> Any:
    """
    What C{f(*args)} comes to: its result, or C{(exception type, reason or
    offset, retryAfter)} for what it raised.
    """
    try:
        return f(*args)
    except Retryable as e:
        return (Retryable, e.reason, e.retryAfter)
    except Fatal as e:
        return (Fatal, e.reason)
    except OffsetConflict as e:
        return (OffsetConflict, e.offset)


class SansIOTests(SynchronousTestCase):
    """
    The module is sans IO.
    """

    def test_imports(self) -> None:
        """
        L{uploadsvc.client.decisions} imports no Twisted, treq, socket, file
        or OS module, nor the client's HTTP plumbing: only values, the
        client's exception types and the pure protocol modules.
        """
        path = uploadsvc.client.decisions.__file__
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
        self.assertEqual(
            imported,
            {
                "__future__",
                "attrs",
                "base64",
                "re",
                "typing",
                "uploadsvc.client.errors",
                "uploadsvc.protocol.digests",
                "uploadsvc.protocol.ranges",
            },
        )
        self.assertTrue(os.path.basename(path).startswith("decisions"))


class NextPieceTests(SynchronousTestCase):
    """
    Tests for L{nextPiece}.
    """

    def test_table(self) -> None:
        """
        Each row: the server's offset, the file size and the chunk size give
        this piece (closing piece of L{FINAL} bytes).
        """
        cases = [
            # offset, size, chunkSize -> start, end, closing
            ((0, SIZE, None), (0, 9500, False)),
            ((1234, SIZE, None), (1234, 9500, False)),
            ((0, SIZE, 3000), (0, 3000, False)),
            ((6000, SIZE, 3000), (6000, 9000, False)),
            ((9000, SIZE, 3000), (9000, 9500, False)),
            ((9499, SIZE, None), (9499, 9500, False)),
            ((9500, SIZE, None), (9500, SIZE, True)),
            ((9700, SIZE, 3000), (9700, SIZE, True)),
            ((9999, SIZE, None), (9999, SIZE, True)),
            # The server holds it all: the closing piece again confirms it.
            ((SIZE, SIZE, None), (9500, SIZE, True)),
            ((SIZE + 7, SIZE, 3000), (9500, SIZE, True)),
            # No bigger than the closing piece: one request.
            ((0, 9, None), (0, 9, True)),
            ((0, FINAL, None), (0, FINAL, True)),
            ((0, FINAL + 1, None), (0, 1, False)),
            ((1, FINAL + 1, None), (1, FINAL + 1, True)),
        ]
        for (offset, size, chunk), (start, end, closing) in cases:
            self.assertEqual(
                nextPiece(offset, size, chunk, FINAL),
                Piece(start, end, size, closing),
                (offset, size, chunk),
            )

    def test_emptyFile(self) -> None:
        """
        An empty file is one closing piece of nothing, sent without a
        C{Content-Range}.
        """
        piece = nextPiece(0, 0, None, FINAL)
        self.assertEqual(piece, Piece(0, 0, 0, True))
        self.assertIsNone(piece.contentRange())

    def test_contentRange(self) -> None:
        """
        A piece's C{Content-Range} names its first and last byte and the
        total.
        """
        self.assertEqual(Piece(0, 9500, SIZE, False).contentRange(), b"bytes 0-9499/10000")
        self.assertEqual(Piece(9500, SIZE, SIZE, True).contentRange(), b"bytes 9500-9999/10000")
        self.assertEqual(Piece(9500, SIZE, SIZE, True).length, 500)

    def test_defaultFinalPiece(self) -> None:
        """
        By default the closing piece is the last 64 KiB.
        """
        self.assertEqual(FINAL_PIECE, 64 * 1024)
        self.assertEqual(nextPiece(0, 10**6, None).end, 10**6 - 64 * 1024)

    @_properties
    @given(
        st.integers(1, 10**7),
        st.data(),
        st.one_of(st.none(), st.integers(1, 10**6)),
        st.integers(1, 10**5),
    )
    def test_startsAtOffsetWithinFile(self, size: int, data: st.DataObject, chunk: int | None, final: int) -> None:
        """
        Below the end, the next piece starts at the server's offset, holds
        at least one byte and never passes the file's end; a piece that is
        not the closing one ends at or before the closing piece (so the
        whole digest is known when the closing piece is sent) and holds at
        most C{chunkSize} bytes; the closing piece ends at the file's end
        and holds at most C{finalPiece} bytes.
        """
        offset = data.draw(st.integers(0, size - 1))
        piece = nextPiece(offset, size, chunk, final)
        self.assertEqual(piece.start, offset)
        self.assertTrue(piece.start < piece.end <= size)
        self.assertEqual(piece.total, size)
        if piece.closing:
            self.assertEqual(piece.end, size)
            self.assertLessEqual(piece.length, final)
        else:
            self.assertLessEqual(piece.end, size - final)
            if chunk is not None:
                self.assertLessEqual(piece.length, chunk)

    @_properties
    @given(st.integers(1, 10**7), st.integers(0, 10**7), st.integers(1, 10**5))
    def test_completeSendsClosingPiece(self, size: int, beyond: int, final: int) -> None:
        """
        When the server holds the whole file (or claims more), the next
        piece is the closing piece, inside the file.
        """
        piece = nextPiece(size + beyond, size, None, final)
        self.assertEqual(piece, Piece(max(0, size - final), size, size, True))

    @_properties
    @given(
        st.integers(0, 5000),
        st.one_of(st.none(), st.integers(1, 3000)),
        st.integers(1, 2000),
        st.data(),
    )
    def test_wholeFileCovered(self, size: int, chunk: int | None, final: int, data: st.DataObject) -> None:
        """
        Whatever part of each request the server keeps (at least a byte),
        sending from the server's offset each time covers the whole file
        with no gap, in at most C{size} requests, and the last request is
        the closing piece.
        """
        offset = 0
        sent: list[Piece] = []
        for _ in range(size + 1):
            piece = nextPiece(offset, size, chunk, final)
            sent.append(piece)
            if size == 0:
                break
            self.assertEqual(piece.start, offset)
            offset = piece.start + data.draw(st.integers(1, piece.length))
            if offset == size:
                break
        self.assertLessEqual(len(sent), max(size, 1))
        self.assertTrue(sent[-1].closing)
        self.assertEqual(sent[-1].end, size)
        covered = 0
        for piece in sent:
            self.assertLessEqual(piece.start, covered)
            covered = max(covered, piece.end)
        self.assertEqual(covered, size)


class AnswerTests(SynchronousTestCase):
    """
    Tests for L{Answer}.
    """

    def test_headerNamesWithoutCase(self) -> None:
        """
        Header names match whatever their case.
        """
        answer = Answer(204, {b"upload-OFFSET": b"12"})
        self.assertEqual(answer.header(b"Upload-Offset"), b"12")
        self.assertEqual(answer.intHeader(b"UPLOAD-offset"), 12)
        self.assertIsNone(answer.header(b"Upload-Length"))
        self.assertIsNone(answer.intHeader(b"Upload-Length"))

    def test_malformedInteger(self) -> None:
        """
        An integer header that is not digits is a garbled answer: retried.
        """
        for value in (b"12a", b"-1", b"", b"1.5", b"0x10"):
            self.assertEqual(
                outcome(Answer(204, {b"Upload-Offset": value}).intHeader, b"Upload-Offset"),
                (Retryable, "server sent a malformed Upload-Offset header", None),
                value,
            )

    def test_detail(self) -> None:
        """
        The server's reason is the first line of a text body or the title of
        an HTML page, printable, at most 200 characters.
        """
        cases = [
            (b"", ""),
            (b"offset moved\nmore\n", "offset moved"),
            (b"  \n padded \n", "padded"),
            (b"<html><head><title>413 Request\n Entity Too Large</title></head></html>",
             "413 Request Entity Too Large"),
            (b"<p>no title</p>", ""),
            (b"tab\there \x1b[31m", "tab?here ?[31m"),
            (b"x" * 300, "x" * 200),
            (b"\xff\xfe bad utf-8", "\ufffd\ufffd bad utf-8"),
        ]
        for body, detail in cases:
            self.assertEqual(Answer(500, {}, body).detail(), detail, body)

    def test_reason(self) -> None:
        """
        The reason is C{HTTP <code>} and the detail when there is one.
        """
        self.assertEqual(Answer(500, {}, b"oops\n").reason(), "HTTP 500: oops")
        self.assertEqual(Answer(502).reason(), "HTTP 502")


class RetryAfterTests(SynchronousTestCase):
    """
    Tests for L{retryAfter}.
    """

    def test_table(self) -> None:
        """
        Seconds are honoured up to L{MAX_RETRY_AFTER}; a date or garbage is
        ignored.
        """
        cases = [
            (None, None),
            (b"7", 7.0),
            (b" 7 ", 7.0),
            (b"0", 0.0),
            (b"600", 600.0),
            (b"99999", MAX_RETRY_AFTER),
            (b"Wed, 21 Oct 2026 07:28:00 GMT", None),
            (b"-5", None),
            (b"1.5", None),
        ]
        for value, expected in cases:
            headers = {} if value is None else {b"Retry-After": value}
            self.assertEqual(retryAfter(Answer(503, headers)), expected, value)

    @_properties
    @given(st.binary(max_size=30))
    def test_bounded(self, value: bytes) -> None:
        """
        Whatever the header holds, the wait is absent or between 0 and
        L{MAX_RETRY_AFTER}.
        """
        delay = retryAfter(Answer(503, {b"Retry-After": value}))
        self.assertTrue(delay is None or 0 <= delay <= MAX_RETRY_AFTER, delay)


class RefusalTests(SynchronousTestCase):
    """
    Tests for L{refusal}.
    """

    def test_table(self) -> None:
        """
        Each row: an answer (and whether credentials were sent) gives this
        exception and reason.
        """
        page = b"<html><head><title>401 Authorization Required</title></head></html>"
        cases = [
            ((Answer(500, {}, b"oops"), False), (Retryable, "HTTP 500: oops", None)),
            ((Answer(503, {b"Retry-After": b"7"}, b"busy"), False), (Retryable, "HTTP 503: busy", 7.0)),
            ((Answer(599), False), (Retryable, "HTTP 599", None)),
            ((Answer(408), False), (Retryable, "HTTP 408", None)),
            ((Answer(429, {b"Retry-After": b"3"}), False), (Retryable, "HTTP 429", 3.0)),
            ((Answer(401, {}, page), False),
             (Fatal, "HTTP 401: the server asks for credentials (none were sent)"
                     " (401 Authorization Required)")),
            ((Answer(401), True), (Fatal, "HTTP 401: the server refused the credentials")),
            ((Answer(403), False), (Fatal, "HTTP 403: forbidden")),
            ((Answer(403, {}, b"crosses a symbolic link\n"), False),
             (Fatal, "HTTP 403: crosses a symbolic link")),
            ((Answer(409, {b"Upload-Length": b"99"}, b"total differs"), False),
             (Fatal, "the server recorded a total of 99 bytes for this URL;"
                     " the file has 10000 (HTTP 409: total differs)")),
            ((Answer(409, {b"Upload-Length": b"10000"}, b"other"), False), (Fatal, "HTTP 409: other")),
            ((Answer(409, {}, b"a complete file exists"), False),
             (Fatal, "HTTP 409: a complete file exists")),
            ((Answer(400, {}, b"Repr-Digest mismatch"), False), (Fatal, "HTTP 400: Repr-Digest mismatch")),
            ((Answer(404), False), (Fatal, "HTTP 404")),
            ((Answer(302, {b"Location": b"/elsewhere"}), False), (Fatal, "HTTP 302")),
            ((Answer(413, {}, b"too large"), False), (Fatal, "HTTP 413: too large")),
        ]
        for (answer, credentials), expected in cases:
            error = refusal(answer, SIZE, credentials)
            got = (
                (Retryable, error.reason, error.retryAfter)
                if isinstance(error, Retryable)
                else (Fatal, error.reason)
            )
            self.assertEqual(got, expected, answer)

    def test_malformedLengthIn409(self) -> None:
        """
        A C{409} with a garbled C{Upload-Length} is a garbled answer:
        retried.
        """
        self.assertEqual(
            outcome(refusal, Answer(409, {b"Upload-Length": b"x"}), SIZE, False),
            (Retryable, "server sent a malformed Upload-Length header", None),
        )


class ReadQueryTests(SynchronousTestCase):
    """
    Tests for L{readQuery}: the answer to a C{HEAD}.
    """

    def test_table(self) -> None:
        """
        Each row: an answer to a C{HEAD} for a file of C{SIZE} bytes gives
        this offset or this refusal.
        """
        cases = [
            (Answer(404), Held(0, False)),
            (Answer(204, {b"Upload-Offset": b"1234", b"Upload-Length": b"10000"}), Held(1234, False)),
            (Answer(204, {b"Upload-Offset": b"0"}), Held(0, False)),
            (Answer(204, {b"Upload-Offset": b"10000"}), Held(SIZE, False)),
            (Answer(204, {}), (Fatal, "the server did not report an Upload-Offset")),
            (Answer(204, {b"Upload-Offset": b"5", b"Upload-Length": b"99"}),
             (Fatal, "the server holds an incomplete upload of 99 bytes at this URL;"
                     " the file has 10000")),
            (Answer(204, {b"Upload-Offset": b"10001"}),
             (Fatal, "the server holds 10001 bytes; the file has 10000")),
            (Answer(204, {b"Upload-Offset": b"1e3"}),
             (Retryable, "server sent a malformed Upload-Offset header", None)),
            (Answer(200, {b"Upload-Offset": b"10000", b"Content-Length": b"10000"}), Held(SIZE, True)),
            (Answer(200, {b"Content-Length": b"10000"}), Held(SIZE, True)),
            (Answer(200, {b"Upload-Offset": b"10"}),
             (Fatal, "a different file (10 bytes) already exists at this URL; the file has 10000")),
            (Answer(200, {}),
             (Fatal, "a different file (None bytes) already exists at this URL; the file has 10000")),
            (Answer(503, {b"Retry-After": b"2"}, b"busy"), (Retryable, "HTTP 503: busy", 2.0)),
            (Answer(403), (Fatal, "HTTP 403: forbidden")),
            (Answer(401), (Fatal, "HTTP 401: the server asks for credentials (none were sent)")),
        ]
        for answer, expected in cases:
            self.assertEqual(outcome(readQuery, answer, SIZE, False), expected, answer)

    @_properties
    @given(
        st.integers(100, 599),
        st.dictionaries(
            st.sampled_from([b"Upload-Offset", b"Upload-Length", b"Content-Length", b"Retry-After"]),
            st.one_of(st.integers(0, 2 * SIZE).map(lambda n: b"%d" % n), st.binary(max_size=8)),
        ),
        st.binary(max_size=50),
    )
    def test_anyAnswer(self, code: int, headers: dict[bytes, bytes], body: bytes) -> None:
        """
        Any answer to a C{HEAD} gives an offset within the file or a
        L{Retryable} or L{Fatal}, never another exception.
        """
        result = outcome(readQuery, Answer(code, headers, body), SIZE, False)
        if isinstance(result, Held):
            self.assertTrue(0 <= result.offset <= SIZE, result)
            self.assertEqual(result.complete, result.offset == SIZE and code == 200)
        else:
            self.assertIn(result[0], (Retryable, Fatal))


class ReadDataAnswerTests(SynchronousTestCase):
    """
    Tests for L{readDataAnswer}: the answer to a C{PUT} that carried data.
    """

    def test_table(self) -> None:
        """
        Each row: an answer to a request that started at 5000 gives this
        offset, completion or refusal.
        """
        digest = digestField(SHA)
        cases = [
            (Answer(201, {b"Upload-Offset": b"10000", b"Repr-Digest": digest}), Completed(digest)),
            (Answer(200, {b"Repr-Digest": digest}), Completed(digest)),
            (Answer(201, {b"Upload-Offset": b"10000"}), Completed(None)),
            (Answer(201, {b"Upload-Offset": b"9999"}),
             (Fatal, "the server completed the upload at 9999 bytes; the file has 10000")),
            (Answer(204, {b"Upload-Offset": b"7000"}), 7000),
            (Answer(204, {b"Upload-Offset": b"5000"}), 5000),
            (Answer(204), (Retryable, "the server did not report an Upload-Offset", None)),
            (Answer(204, {b"Upload-Offset": b"x"}),
             (Retryable, "server sent a malformed Upload-Offset header", None)),
            (Answer(409, {b"Upload-Offset": b"1234"}, b"offset"), (OffsetConflict, 1234)),
            (Answer(409, {b"Upload-Offset": b"0"}), (OffsetConflict, 0)),
            # At or past where this request started: not a conflict to
            # resolve by moving back, but a refusal.
            (Answer(409, {b"Upload-Offset": b"5000"}, b"offset"), (Fatal, "HTTP 409: offset")),
            (Answer(409, {}, b"different content"), (Fatal, "HTTP 409: different content")),
            (Answer(409, {b"Upload-Length": b"77"}, b"total"),
             (Fatal, "the server recorded a total of 77 bytes for this URL;"
                     " the file has 10000 (HTTP 409: total)")),
            (Answer(400, {}, b"Repr-Digest mismatch"), (Fatal, "HTTP 400: Repr-Digest mismatch")),
            (Answer(500, {}, b"oops"), (Retryable, "HTTP 500: oops", None)),
        ]
        for answer, expected in cases:
            self.assertEqual(outcome(readDataAnswer, answer, 5000, SIZE, False), expected, answer)

    @_properties
    @given(st.integers(0, SIZE), st.integers(0, 2 * SIZE))
    def test_conflictOnlyBelowStart(self, start: int, offset: int) -> None:
        """
        A C{409} with an offset moves the client only back, to an offset
        below where the request started; otherwise it is final.
        """
        result = outcome(readDataAnswer, Answer(409, {b"Upload-Offset": b"%d" % offset}), start, SIZE, False)
        if offset < start:
            self.assertEqual(result, (OffsetConflict, offset))
        else:
            self.assertEqual(result[0], Fatal)


class CheckDigestTests(SynchronousTestCase):
    """
    Tests for L{checkDigest} and L{digestField}.
    """

    def test_table(self) -> None:
        """
        Each row: the C{Repr-Digest} of a completion answer, checked against
        the file's sha-256, passes or fails with this reason.
        """
        other = hashlib.sha256(b"another").digest()
        cases = [
            (digestField(SHA), None),
            (digestField(SHA) + b", " + SHA512_ZERO, None),
            (None, (Fatal, "the server did not send a Repr-Digest for the completed file")),
            (b"sha-256=not base64", (Fatal, "the server sent a malformed Repr-Digest")),
            (SHA512_ZERO, (Fatal, "the server's Repr-Digest has no sha-256")),
            (digestField(other),
             (Fatal, "the stored file differs: server sha-256 "
                     "rkSKyGxOjk3sZFcpcI70GHOuecbf+E7/czYJiUh/COU=, "
                     "local mUZZ3of3J93N5130QxTzHX82ezv/NH6FLzkFMPKXIMc=")),
        ]
        for field, expected in cases:
            self.assertEqual(outcome(checkDigest, Completed(field), SHA), expected, field)

    def test_field(self) -> None:
        """
        The field is the sha-256 as a structured-field byte sequence.
        """
        self.assertEqual(digestField(hashlib.sha256(b"").digest()),
                         b"sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:")

    @_properties
    @given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
    def test_onlyTheSameDigestPasses(self, ours: bytes, theirs: bytes) -> None:
        """
        A completion passes exactly when the server's sha-256 is the file's.
        """
        result = outcome(checkDigest, Completed(digestField(theirs)), ours)
        if theirs == ours:
            self.assertIsNone(result)
        else:
            self.assertEqual(result[0], Fatal)
            self.assertTrue(result[1].startswith("the stored file differs"))
