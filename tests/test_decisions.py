"""
Tests for L{uploadsvc.protocol.decisions}: the offset decision of
docs/protocol.md sections 2 and 3, as tables of cases and as properties.
"""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import BadRequest, Conflict, NotFound
from uploadsvc.protocol.decisions import (
    AlreadyComplete,
    Plan,
    Stored,
    checkQuery,
    offsetHeaders,
    planFinish,
    planWrite,
    queryCompletes,
)
from uploadsvc.protocol.ranges import ContentRange

_properties = settings(max_examples=300, deadline=None)


def incomplete(offset: int, total: int | None = None, **kw: object) -> Stored:
    """
    What the store reports for an incomplete upload of C{offset} bytes.
    """
    return Stored(offset=offset, total=total, incomplete=True, **kw)  # type: ignore[arg-type]


def complete(size: int) -> Stored:
    """
    What the store reports for a complete file of C{size} bytes.
    """
    return Stored(completeSize=size)


class OffsetHeadersTests(SynchronousTestCase):
    """
    Tests for L{offsetHeaders}.
    """

    def test_zero(self) -> None:
        """
        At offset 0 the headers give the offset and no C{Range}.
        """
        self.assertEqual(
            offsetHeaders(0), {b"Upload-Offset": b"0", b"Upload-Complete": b"?0"}
        )

    def test_positive(self) -> None:
        """
        At offset N > 0 the headers add C{Range: bytes=0-(N-1)}.
        """
        self.assertEqual(
            offsetHeaders(10),
            {
                b"Upload-Offset": b"10",
                b"Upload-Complete": b"?0",
                b"Range": b"bytes=0-9",
            },
        )


class PlainPutTests(SynchronousTestCase):
    """
    Tests for L{planWrite} with no C{Content-Range} (section 2).
    """

    def test_new(self) -> None:
        """
        A plain PUT on an empty path writes the whole body from 0, recording
        its length as the total.
        """
        self.assertEqual(
            planWrite(Stored(), None, 100, False), Plan(True, 0, 0, 100, 100)
        )

    def test_newChunked(self) -> None:
        """
        A chunked plain PUT takes all of the body and records no total.
        """
        self.assertEqual(
            planWrite(Stored(), None, None, False), Plan(True, 0, 0, None, None)
        )

    def test_overIncomplete(self) -> None:
        """
        A plain PUT over an incomplete upload starts it over from zero.
        """
        plan = planWrite(incomplete(50, 200), None, 30, False)
        self.assertEqual(plan, Plan(True, 0, 0, 30, 30))

    def test_overCompleteRefused(self) -> None:
        """
        A plain PUT over a complete file is a 409 when overwrite is off.
        """
        error = self.assertRaises(Conflict, planWrite, complete(10), None, 5, False)
        self.assertEqual(error.status, 409)
        self.assertEqual(error.code, "exists")

    def test_overCompleteAndIncompleteRefused(self) -> None:
        """
        A complete file wins over a leftover incomplete upload: still 409
        without overwrite.
        """
        stored = Stored(offset=3, incomplete=True, completeSize=10)
        self.assertRaises(Conflict, planWrite, stored, None, 5, False)

    def test_overCompleteOverwrite(self) -> None:
        """
        With overwrite on, a plain PUT over a complete file replaces it from 0.
        """
        self.assertEqual(
            planWrite(complete(10), None, 5, True), Plan(True, 0, 0, 5, 5)
        )


class RangeWriteTests(SynchronousTestCase):
    """
    Tests for L{planWrite} with C{Content-Range: bytes S-E/T} (section 3).
    """

    def test_appendAtOffset(self) -> None:
        """
        C{S == N}: all of the body is appended at N.
        """
        plan = planWrite(incomplete(100, 300), ContentRange(100, 199, 300), 100, False)
        self.assertEqual(plan, Plan(False, 100, 0, 100, 300))

    def test_overlapSkips(self) -> None:
        """
        C{S < N <= E+1}: the first N-S bytes of the body are skipped, the rest
        appended at N.
        """
        plan = planWrite(incomplete(150, 300), ContentRange(100, 199, 300), 100, False)
        self.assertEqual(plan, Plan(False, 150, 50, 50, 300))

    def test_overlapEndsAtOffset(self) -> None:
        """
        C{N == E+1}: everything is already stored, nothing is written.
        """
        plan = planWrite(incomplete(200, 300), ContentRange(100, 199, 300), 100, False)
        self.assertEqual(plan, Plan(False, 200, 100, 0, 300))

    def test_wholeRangeBelowOffset(self) -> None:
        """
        C{E+1 < N}: nothing to write; the plan answers with the current offset.
        """
        plan = planWrite(incomplete(250, 300), ContentRange(0, 99, 300), 100, False)
        assert isinstance(plan, Plan)
        self.assertEqual((plan.offset, plan.skip, plan.take), (250, 100, 0))
        self.assertFalse(plan.startOver)

    def test_gapRefused(self) -> None:
        """
        C{S > N}: 409 with C{Upload-Offset: N} and C{Range}.
        """
        error = self.assertRaises(
            Conflict,
            planWrite, incomplete(100, 300), ContentRange(150, 199, 300), 50, False,
        )
        self.assertEqual(error.status, 409)
        self.assertEqual(error.headers[b"Upload-Offset"], b"100")
        self.assertEqual(error.headers[b"Range"], b"bytes=0-99")

    def test_gapAtZeroRefused(self) -> None:
        """
        C{S > N} with N == 0 on an incomplete upload: 409 with
        C{Upload-Offset: 0} and no C{Range}.
        """
        error = self.assertRaises(
            Conflict, planWrite, incomplete(0), ContentRange(10, 19, None), 10, False
        )
        self.assertEqual(error.headers[b"Upload-Offset"], b"0")
        self.assertNotIn(b"Range", error.headers)

    def test_totalMismatch(self) -> None:
        """
        A total different from the recorded one: 409 with C{Upload-Length}
        set to the recorded total.
        """
        error = self.assertRaises(
            Conflict,
            planWrite, incomplete(100, 300), ContentRange(100, 199, 400), 100, False,
        )
        self.assertEqual(error.code, "length-mismatch")
        self.assertEqual(error.headers[b"Upload-Length"], b"300")

    def test_unknownTotalKeepsRecorded(self) -> None:
        """
        C{T = *} on an upload with a recorded total keeps that total.
        """
        plan = planWrite(incomplete(100, 300), ContentRange(100, 199, None), 100, False)
        assert isinstance(plan, Plan)
        self.assertEqual(plan.total, 300)

    def test_totalLearnt(self) -> None:
        """
        A total sent for an upload whose total was unknown is recorded.
        """
        plan = planWrite(incomplete(100), ContentRange(100, 199, 200), 100, False)
        self.assertEqual(plan, Plan(False, 100, 0, 100, 200))

    def test_firstRequestAtZero(self) -> None:
        """
        The first request for a path may carry a range starting at 0.
        """
        plan = planWrite(Stored(), ContentRange(0, 99, 1000), 100, False)
        self.assertEqual(plan, Plan(True, 0, 0, 100, 1000))

    def test_firstRequestAtZeroUnknownTotal(self) -> None:
        """
        A first request C{bytes 0-E/*} records no total.
        """
        plan = planWrite(Stored(), ContentRange(0, 9, None), None, False)
        self.assertEqual(plan, Plan(True, 0, 0, 10, None))

    def test_firstRequestAboveZero(self) -> None:
        """
        A first request starting above 0: 409 with C{Upload-Offset: 0}.
        """
        error = self.assertRaises(
            Conflict, planWrite, Stored(), ContentRange(5, 9, 10), 5, False
        )
        self.assertEqual(error.headers[b"Upload-Offset"], b"0")
        self.assertNotIn(b"Range", error.headers)


class PastTheTotalTests(SynchronousTestCase):
    """
    An upload never passes its total and never records one below its
    offset (issue 8 item 4), decided from the headers.
    """

    def test_rangePastRecordedTotal(self) -> None:
        """
        C{bytes 50-149/*} on an upload of recorded total 100 at offset 50:
        400, as C{E >= T} would be, naming the total.
        """
        error = self.assertRaises(
            BadRequest, planWrite, incomplete(50, 100), ContentRange(50, 149, None), 100, False
        )
        self.assertEqual(error.code, "range-past-length")
        self.assertEqual(error.headers[b"Upload-Length"], b"100")

    def test_overlapPastRecordedTotal(self) -> None:
        """
        A retry that overlaps stored bytes but ends past the recorded total is
        refused too.
        """
        self.assertRaises(
            BadRequest, planWrite, incomplete(80, 100), ContentRange(50, 100, None), 51, False
        )

    def test_rangeUpToRecordedTotal(self) -> None:
        """
        C{bytes 50-99/*} on an upload of recorded total 100 reaches it.
        """
        self.assertEqual(
            planWrite(incomplete(50, 100), ContentRange(50, 99, None), 50, False),
            Plan(False, 50, 0, 50, 100),
        )

    def test_rangeTotalBelowOffset(self) -> None:
        """
        A range whose total is below what is stored (1000 bytes of unknown
        total, then C{bytes 0-99/500}): 409 with the offset.
        """
        error = self.assertRaises(
            Conflict, planWrite, incomplete(1000), ContentRange(0, 99, 500), 100, False
        )
        self.assertEqual(error.code, "length-below-offset")
        self.assertEqual(error.headers[b"Upload-Offset"], b"1000")
        self.assertNotIn(b"Upload-Length", error.headers)

    def test_queryTotalBelowOffset(self) -> None:
        """
        C{bytes */500} on 1000 stored bytes of unknown total: 409 with the
        offset (no total is recorded).
        """
        error = self.assertRaises(Conflict, checkQuery, incomplete(1000), 500)
        self.assertEqual(error.code, "length-below-offset")
        self.assertEqual(error.headers[b"Upload-Offset"], b"1000")
        self.assertEqual(error.headers[b"Range"], b"bytes=0-999")

    def test_queryTotalAtOffset(self) -> None:
        """
        C{bytes */1000} on 1000 stored bytes is accepted.
        """
        self.assertEqual(checkQuery(incomplete(1000), 1000), incomplete(1000))


class QueryCompletesTests(SynchronousTestCase):
    """
    Tests for L{queryCompletes}.
    """

    def test_fullyStaged(self) -> None:
        """
        An incomplete upload whose offset is its known total is finished by
        a status query.
        """
        self.assertTrue(queryCompletes(incomplete(10, 10)))
        self.assertTrue(queryCompletes(incomplete(0, 0)))

    def test_notYet(self) -> None:
        """
        Not when bytes are missing, the total is unknown, or nothing is
        incomplete.
        """
        self.assertFalse(queryCompletes(incomplete(9, 10)))
        self.assertFalse(queryCompletes(incomplete(10)))
        self.assertFalse(queryCompletes(complete(10)))
        self.assertFalse(queryCompletes(Stored()))

    def test_finishPlan(self) -> None:
        """
        Its plan writes nothing and ends at the total; there is none when
        the upload is not fully staged.
        """
        self.assertEqual(planFinish(incomplete(10, 10)), Plan(False, 10, 0, 0, 10))
        self.assertIsNone(planFinish(incomplete(9, 10)))
        self.assertIsNone(planFinish(complete(10)))


@st.composite
def reachableAndRange(draw: st.DrawFn) -> tuple[Stored, ContentRange]:
    """
    An incomplete upload whose recorded total (if any) is not below its
    offset, and any range of any total (or none).
    """
    offset = draw(st.integers(0, 10**6))
    recorded = draw(st.one_of(st.none(), st.integers(offset, 2 * 10**6)))
    first = draw(st.integers(0, 2 * 10**6))
    last = draw(st.integers(first, 2 * 10**6))
    sent = draw(st.one_of(st.none(), st.integers(last + 1, 3 * 10**6)))
    return Stored(offset=offset, total=recorded, incomplete=True), ContentRange(first, last, sent)


class CanFinishPropertyTests(SynchronousTestCase):
    """
    Whatever is accepted leaves an upload that can still finish.
    """

    @_properties
    @given(reachableAndRange())
    def test_planNeverPassesTotal(self, case: tuple[Stored, ContentRange]) -> None:
        """
        An accepted write records no total below the offset, and never
        writes past the total it records.
        """
        stored, rng = case
        try:
            plan = planWrite(stored, rng, rng.length, False)
        except (Conflict, BadRequest):
            return
        assert isinstance(plan, Plan) and plan.take is not None
        if plan.total is not None:
            self.assertGreaterEqual(plan.total, stored.offset)
            self.assertLessEqual(plan.offset + plan.take, plan.total)
            self.assertLess(rng.last, plan.total)

    @_properties
    @given(reachableAndRange())
    def test_refusalFromHeadersAlone(self, case: tuple[Stored, ContentRange]) -> None:
        """
        A range that passes the known total, or a total below the offset,
        is refused: 400 for the range, 409 for the total.
        """
        stored, rng = case
        known = rng.total if rng.total is not None else stored.total
        assume(stored.total is None or rng.total is None or rng.total == stored.total)
        assume(rng.first <= stored.offset)
        if known is not None and rng.last >= known:
            self.assertRaises(BadRequest, planWrite, stored, rng, rng.length, False)
        elif known is not None and known < stored.offset:
            self.assertRaises(Conflict, planWrite, stored, rng, rng.length, False)
        else:
            self.assertIsInstance(planWrite(stored, rng, rng.length, False), Plan)

    @_properties
    @given(st.integers(0, 10**6), st.one_of(st.none(), st.integers(0, 2 * 10**6)))
    def test_queryNeverBelowOffset(self, offset: int, total: int | None) -> None:
        """
        A status query is accepted exactly when its total is unknown or not
        below the offset.
        """
        stored = incomplete(offset)
        if total is not None and total < offset:
            self.assertRaises(Conflict, checkQuery, stored, total)
        else:
            self.assertEqual(checkQuery(stored, total), stored)


class CompleteFileTests(SynchronousTestCase):
    """
    Tests for L{planWrite} with a C{Content-Range} on a path that holds a
    complete file (lost final answers, replacements).
    """

    def test_retryOfFinalPiece(self) -> None:
        """
        C{T == size} and C{E+1 <= T}: L{AlreadyComplete}, nothing written.
        """
        result = planWrite(complete(300), ContentRange(200, 299, 300), 100, False)
        self.assertEqual(result, AlreadyComplete(300))

    def test_retryOfEarlierPiece(self) -> None:
        """
        A retry of a piece before the last one is also L{AlreadyComplete}.
        """
        result = planWrite(complete(300), ContentRange(0, 99, 300), 100, False)
        self.assertEqual(result, AlreadyComplete(300))

    def test_retryOtherTotal(self) -> None:
        """
        A range whose total is not the file's size is a 409.
        """
        self.assertRaises(
            Conflict, planWrite, complete(300), ContentRange(200, 299, 400), 100, False
        )

    def test_retryUnknownTotal(self) -> None:
        """
        A range with C{T = *} cannot be matched to the file: 409.
        """
        self.assertRaises(
            Conflict, planWrite, complete(300), ContentRange(200, 299, None), 100, False
        )

    def test_startAtZeroWithoutOverwrite(self) -> None:
        """
        Without overwrite, a range from 0 of the same total is a retry, not a
        replacement.
        """
        result = planWrite(complete(300), ContentRange(0, 299, 300), 300, False)
        self.assertEqual(result, AlreadyComplete(300))

    def test_replacementFromZero(self) -> None:
        """
        With overwrite on, a range starting at 0 starts a replacement.
        """
        result = planWrite(complete(300), ContentRange(0, 99, 500), 100, True)
        self.assertEqual(result, Plan(True, 0, 0, 100, 500))

    def test_replacementSameSizeFromZero(self) -> None:
        """
        With overwrite on, a range from 0 replaces even a file of the same
        size.
        """
        result = planWrite(complete(300), ContentRange(0, 99, 300), 100, True)
        self.assertEqual(result, Plan(True, 0, 0, 100, 300))

    def test_overwriteAboveZeroIsRetry(self) -> None:
        """
        With overwrite on, a range above 0 on a complete file is a retry.
        """
        result = planWrite(complete(300), ContentRange(200, 299, 300), 100, True)
        self.assertEqual(result, AlreadyComplete(300))

    def test_replacementInProgress(self) -> None:
        """
        With a complete file and an incomplete replacement, a range goes to
        the replacement.
        """
        stored = Stored(offset=100, total=500, incomplete=True, completeSize=300)
        result = planWrite(stored, ContentRange(100, 199, 500), 100, True)
        self.assertEqual(result, Plan(False, 100, 0, 100, 500))


class CheckQueryTests(SynchronousTestCase):
    """
    Tests for L{checkQuery} (HEAD and C{bytes */T}).
    """

    def test_nothing(self) -> None:
        """
        Nothing stored: 404.
        """
        error = self.assertRaises(NotFound, checkQuery, Stored(), None)
        self.assertEqual(error.status, 404)

    def test_nothingWithTotal(self) -> None:
        """
        Nothing stored, with a total: still 404.
        """
        self.assertRaises(NotFound, checkQuery, Stored(), 10)

    def test_incomplete(self) -> None:
        """
        An incomplete upload is answered as it is stored.
        """
        stored = incomplete(40, 100)
        self.assertIs(checkQuery(stored, None), stored)
        self.assertIs(checkQuery(stored, 100), stored)

    def test_incompleteUnknownTotal(self) -> None:
        """
        A total stated for an upload with no recorded total is accepted.
        """
        stored = incomplete(40)
        self.assertIs(checkQuery(stored, 100), stored)

    def test_incompleteTotalMismatch(self) -> None:
        """
        A total that differs from the recorded one: 409 with C{Upload-Length}.
        """
        error = self.assertRaises(Conflict, checkQuery, incomplete(40, 100), 99)
        self.assertEqual(error.status, 409)
        self.assertEqual(error.headers[b"Upload-Length"], b"100")

    def test_complete(self) -> None:
        """
        A complete file is answered as it is stored, with or without its
        total.
        """
        stored = complete(70)
        self.assertIs(checkQuery(stored, None), stored)
        self.assertIs(checkQuery(stored, 70), stored)

    def test_completeTotalMismatch(self) -> None:
        """
        A total that differs from a complete file's size: 409 with
        C{Upload-Length}.
        """
        error = self.assertRaises(Conflict, checkQuery, complete(70), 71)
        self.assertEqual(error.headers[b"Upload-Length"], b"70")


@st.composite
def incompleteAndRange(draw: st.DrawFn) -> tuple[Stored, ContentRange]:
    """
    An incomplete upload and a range of a matching (or unknown) total.
    """
    total = draw(st.integers(1, 10**12))
    offset = draw(st.integers(0, total))
    first = draw(st.integers(0, total - 1))
    last = draw(st.integers(first, total - 1))
    recorded = draw(st.sampled_from([total, None]))
    sent = draw(st.sampled_from([total, None]))
    return (
        Stored(offset=offset, total=recorded, incomplete=True),
        ContentRange(first, last, sent),
    )


class PlanWritePropertyTests(SynchronousTestCase):
    """
    Properties of L{planWrite} over an incomplete upload.
    """

    @_properties
    @given(incompleteAndRange())
    def test_conflictIffGap(self, case: tuple[Stored, ContentRange]) -> None:
        """
        The answer is a 409 exactly when S > N, and then it names N.
        """
        stored, rng = case
        try:
            plan = planWrite(stored, rng, rng.length, False)
        except Conflict as e:
            self.assertGreater(rng.first, stored.offset)
            self.assertEqual(e.headers[b"Upload-Offset"], b"%d" % stored.offset)
        else:
            self.assertLessEqual(rng.first, stored.offset)
            self.assertIsInstance(plan, Plan)

    @_properties
    @given(incompleteAndRange())
    def test_planCoversRange(self, case: tuple[Stored, ContentRange]) -> None:
        """
        A plan appends at N, skips plus takes the whole range, never writes
        past E, and reaches E+1 whenever N <= E+1.
        """
        stored, rng = case
        assume(rng.first <= stored.offset)
        plan = planWrite(stored, rng, rng.length, False)
        assert isinstance(plan, Plan)
        self.assertFalse(plan.startOver)
        self.assertEqual(plan.offset, stored.offset)
        assert plan.take is not None
        self.assertGreaterEqual(plan.skip, 0)
        self.assertGreaterEqual(plan.take, 0)
        self.assertEqual(plan.skip + plan.take, rng.length)
        # The first kept byte is body byte `skip`, i.e. file byte S+skip,
        # and it lands at the offset: no gap, no overlap.
        if plan.take:
            self.assertEqual(rng.first + plan.skip, plan.offset)
            self.assertEqual(plan.offset + plan.take, rng.last + 1)
        self.assertLessEqual(plan.offset + plan.take, max(stored.offset, rng.last + 1))
        if stored.offset <= rng.last + 1:
            self.assertEqual(plan.offset + plan.take, rng.last + 1)

    @_properties
    @given(incompleteAndRange())
    def test_planKeepsTotal(self, case: tuple[Stored, ContentRange]) -> None:
        """
        A plan records the range's total, or the one recorded before.
        """
        stored, rng = case
        assume(rng.first <= stored.offset)
        plan = planWrite(stored, rng, rng.length, False)
        assert isinstance(plan, Plan)
        expected = rng.total if rng.total is not None else stored.total
        self.assertEqual(plan.total, expected)

    @_properties
    @given(
        st.integers(0, 10**12),
        st.integers(1, 10**12),
        st.integers(0, 10**12),
        st.booleans(),
    )
    def test_totalMismatchAlwaysConflicts(
        self, offset: int, recorded: int, first: int, overwrite: bool
    ) -> None:
        """
        A range whose total differs from the recorded one is always a 409
        naming the recorded total.
        """
        sent = recorded + 1
        first = first % sent
        stored = Stored(offset=offset, total=recorded, incomplete=True)
        rng = ContentRange(first, first, sent)
        error = self.assertRaises(
            Conflict, planWrite, stored, rng, 1, overwrite
        )
        self.assertEqual(error.headers.get(b"Upload-Length"), b"%d" % recorded)

    @_properties
    @given(st.integers(1, 10**12), st.data())
    def test_completeRetries(self, size: int, data: st.DataObject) -> None:
        """
        On a complete file without overwrite, a range of total C{size} is
        always L{AlreadyComplete}, never a plan.
        """
        first = data.draw(st.integers(0, size - 1))
        last = data.draw(st.integers(first, size - 1))
        result = planWrite(complete(size), ContentRange(first, last, size), None, False)
        self.assertEqual(result, AlreadyComplete(size))
