"""
The refusal table of L{uploadsvc.protocol.refusals}: when several refusals
apply, the one docs/protocol.md section 6 lists first wins, for every pair.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from uploadsvc.protocol.decisions import AlreadyComplete, Plan
from uploadsvc.protocol.refusals import (
    METHODS_WITH_DOWNLOADS, REFUSALS, UNKNOWN, Facts, firstRefusal,
)

PLAN = Plan(startOver=False, offset=0, skip=0, take=10, total=10)

#: A write that every check lets through.
ACCEPTED = Facts(
    credentials=None,
    path=None,
    method=b"PUT",
    declaredEnd=10,
    maxUploadSize=100,
    link=None,
    freeBytes=1000,
    minFreeBytes=0,
    busy=False,
    query=False,
    rangeError=None,
    fieldError=None,
    state=PLAN,
)

#: For each row of the table, facts that make it refuse, and the refusal's
#: (status, code).
TRIGGERS: dict[str, tuple[dict[str, Any], tuple[int, str]]] = {
    "credentials": ({"credentials": Unauthorized("credentials", "no")}, (401, "credentials")),
    "path": ({"path": BadRequest("bad-path", "no")}, (400, "bad-path")),
    "method": ({"method": b"PATCH"}, (405, "method")),
    "scope": ({"scope": Forbidden("out-of-scope", "no")}, (403, "out-of-scope")),
    "size": ({"declaredEnd": 101}, (413, "too-large")),
    "link": ({"link": Forbidden("symlink", "no")}, (403, "symlink")),
    "space": ({"freeBytes": 50, "minFreeBytes": 45}, (507, "no-space")),
    "busy": ({"busy": True}, (503, "busy")),
    "headers": ({"rangeError": BadRequest("content-range", "no")}, (400, "content-range")),
    "state": ({"state": Conflict("offset", "no")}, (409, "offset")),
}


def refusal(facts: Facts) -> tuple[int, str] | None:
    error = firstRefusal(facts)
    return None if error is None else (error.status, error.code)


class TableTests(SynchronousTestCase):
    def test_order(self) -> None:
        """The table lists the refusals in docs/protocol.md section 6's order."""
        self.assertEqual(
            [name for name, _ in REFUSALS],
            ["credentials", "path", "method", "scope", "size", "link", "space", "busy", "headers", "state"],
        )
        self.assertEqual(set(TRIGGERS), {name for name, _ in REFUSALS})

    def test_accepted(self) -> None:
        """A request that breaks no rule is not refused."""
        self.assertIsNone(firstRefusal(ACCEPTED))

    def test_each(self) -> None:
        """Each row alone gives its own refusal."""
        for name, (changes, expected) in TRIGGERS.items():
            with self.subTest(name):
                self.assertEqual(refusal(attrs.evolve(ACCEPTED, **changes)), expected)

    def test_everyPair(self) -> None:
        """For every pair of refusals that apply, the one listed first wins."""
        names = [name for name, _ in REFUSALS]
        for first, second in itertools.combinations(names, 2):
            with self.subTest(first=first, second=second):
                changes = {**TRIGGERS[second][0], **TRIGGERS[first][0]}
                self.assertEqual(
                    refusal(attrs.evolve(ACCEPTED, **changes)), TRIGGERS[first][1]
                )

    def test_unknownHoldsBackLaterRows(self) -> None:
        """
        No refusal below a fact not known yet is given: it might be
        overtaken by one that ranks before it. (Busy also waits for the
        state: see L{ExemptionTests.test_busyWaitsForTheDecision}.)
        """
        names = [name for name, _ in REFUSALS]
        unknowns = {
            "credentials": {"credentials": UNKNOWN},
            "path": {"path": UNKNOWN},
            "method": {"method": UNKNOWN},
            "scope": {"scope": UNKNOWN},
            "size": {"declaredEnd": UNKNOWN},
            "link": {"link": UNKNOWN},
            "space": {"freeBytes": UNKNOWN},
            "busy": {"busy": UNKNOWN},
            "headers": {"rangeError": UNKNOWN},
            "state": {"state": UNKNOWN},
        }
        for i, unknown in enumerate(names):
            for j, refused in enumerate(names):
                if unknown == refused or (unknown, refused) == ("state", "busy"):
                    continue
                with self.subTest(unknown=unknown, refused=refused):
                    facts = attrs.evolve(ACCEPTED, **{**TRIGGERS[refused][0], **unknowns[unknown]})
                    expected = TRIGGERS[refused][1] if j < i else None
                    self.assertEqual(refusal(facts), expected)

    def test_headersOnly(self) -> None:
        """What the headers tell is enough to refuse a size, before the disk is looked at."""
        facts = Facts(
            credentials=None, path=None, method=b"PUT", declaredEnd=101, maxUploadSize=100,
            busy=True, rangeError=None, fieldError=None,
        )
        self.assertEqual(refusal(facts), (413, "too-large"))
        self.assertIsNone(refusal(attrs.evolve(facts, declaredEnd=100)))

    def test_dispatchFacts(self) -> None:
        """The credentials, path and method alone decide their refusals, in that order."""
        facts = Facts(credentials=None, path=NotFound("outside", "no"), method=b"PATCH")
        self.assertEqual(refusal(facts), (404, "outside"))
        self.assertEqual(refusal(attrs.evolve(facts, path=None)), (405, "method"))
        self.assertIsNone(refusal(attrs.evolve(facts, path=None, method=b"HEAD")))

    def test_getOnlyWithDownloads(self) -> None:
        """GET is 405 (with Allow) unless the server serves downloads."""
        facts = Facts(credentials=None, path=None, method=b"GET")
        self.assertEqual(refusal(facts), (405, "method"))
        error = firstRefusal(facts)
        assert error is not None
        self.assertEqual(error.headers[b"Allow"], b"PUT, POST, HEAD, DELETE")
        self.assertEqual(error.reason, "use PUT, POST, HEAD or DELETE")
        self.assertIsNone(refusal(attrs.evolve(facts, methods=METHODS_WITH_DOWNLOADS)))

    def test_scopeAfterMethod(self) -> None:
        """A credential's scope is refused after the method, before anything the disk tells."""
        outside = Forbidden("out-of-scope", "no")
        facts = Facts(credentials=None, path=None, method=b"PATCH", scope=outside)
        self.assertEqual(refusal(facts), (405, "method"))
        self.assertEqual(refusal(attrs.evolve(facts, method=b"PUT")), (403, "out-of-scope"))


class ExemptionTests(SynchronousTestCase):
    def test_queryNeverTooLargeForSpaceOrBusy(self) -> None:
        """A status query is not refused for space or busy (it writes nothing)."""
        facts = attrs.evolve(
            ACCEPTED, query=True, declaredEnd=None, freeBytes=0, minFreeBytes=1, busy=True,
            state=UNKNOWN,
        )
        self.assertIsNone(firstRefusal(facts))

    def test_malformedQueryBusy(self) -> None:
        """A query whose range is refused is answered 503 when busy: it is no status query."""
        facts = attrs.evolve(
            ACCEPTED, query=True, busy=True, rangeError=BadRequest("query-with-body", "no"),
            state=UNKNOWN,
        )
        self.assertEqual(refusal(facts), (503, "busy"))
        self.assertEqual(refusal(attrs.evolve(facts, busy=False)), (400, "query-with-body"))

    def test_queryDigestFieldNotBusy(self) -> None:
        """A query with a malformed digest field is refused for the field, never as busy."""
        facts = attrs.evolve(
            ACCEPTED, query=True, busy=True, fieldError=BadRequest("digest", "no"), state=UNKNOWN,
        )
        self.assertEqual(refusal(facts), (400, "digest"))

    def test_retriedFinalRequestNotBusy(self) -> None:
        """A retried final request (the file is complete) is answered even when busy."""
        facts = attrs.evolve(ACCEPTED, busy=True, state=AlreadyComplete(size=10))
        self.assertIsNone(firstRefusal(facts))

    def test_busyWaitsForTheDecision(self) -> None:
        """
        Busy with well-formed headers is not decided until what is stored
        is: the request may be a retried final request.
        """
        facts = attrs.evolve(ACCEPTED, busy=True, state=UNKNOWN)
        self.assertIsNone(firstRefusal(facts))
        self.assertEqual(refusal(attrs.evolve(facts, state=PLAN)), (503, "busy"))

    def test_busyBeforeMalformedHeaders(self) -> None:
        """Busy with malformed headers is refused before what is stored is known."""
        facts = attrs.evolve(
            ACCEPTED, busy=True, state=UNKNOWN, fieldError=BadRequest("digest", "no"),
        )
        self.assertEqual(refusal(facts), (503, "busy"))

    def test_unknownLengthNeedsTheFloor(self) -> None:
        """A body of unknown length is refused when less than the floor is free."""
        facts = attrs.evolve(ACCEPTED, declaredEnd=None, freeBytes=9, minFreeBytes=10)
        self.assertEqual(refusal(facts), (507, "no-space"))
        self.assertIsNone(firstRefusal(attrs.evolve(facts, freeBytes=10)))

    def test_resumeNeedsRoomForTheRestOnly(self) -> None:
        """
        A piece that starts at byte S of a T-byte upload needs T - S bytes
        free, not T: the bytes below S are staged already (a 1.5 MiB upload
        with 1 MiB staged and 1 MiB free was refused forever).
        """
        facts = attrs.evolve(
            ACCEPTED, declaredEnd=1536, declaredStart=1024, freeBytes=1024, maxUploadSize=2048,
        )
        self.assertIsNone(firstRefusal(facts))
        self.assertEqual(refusal(attrs.evolve(facts, freeBytes=511)), (507, "no-space"))
        self.assertEqual(refusal(attrs.evolve(facts, declaredStart=0)), (507, "no-space"))

    def test_rangeBeforeDigestField(self) -> None:
        """A malformed Content-Range is reported before a malformed digest field."""
        facts = attrs.evolve(
            ACCEPTED,
            rangeError=BadRequest("content-range", "no"),
            fieldError=BadRequest("digest", "no"),
        )
        self.assertEqual(refusal(facts), (400, "content-range"))
