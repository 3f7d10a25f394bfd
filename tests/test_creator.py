"""
L{uploadsvc.protocol.creator}: which front end answers an upload named by
an id, from the attributes its store keeps.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import NotFound
from uploadsvc.protocol.creator import IETF, TUS, checkCreator, createdBy, creatorOf


class CreatorTests(SynchronousTestCase):
    def test_recorded(self) -> None:
        """The recorded protocol is the creator, whatever else the attributes hold."""
        self.assertEqual(creatorOf(createdBy(TUS), False), TUS)
        self.assertEqual(creatorOf(createdBy(IETF), False), IETF)
        self.assertEqual(creatorOf({**createdBy(IETF), "tus-metadata": "a Yg=="}, False), IETF)

    def test_unrecorded(self) -> None:
        """Without a record, a partial upload or tus attributes tell tus; nothing else tells anyone."""
        self.assertEqual(creatorOf({}, True), TUS)
        for name in ("tus-metadata", "tus-concat", "tus-defer-length"):
            self.assertEqual(creatorOf({name: "x"}, False), TUS, name)
        self.assertIsNone(creatorOf({}, False))
        self.assertIsNone(creatorOf({"other": "x"}, False))

    def test_check(self) -> None:
        """Another protocol's upload is 404 no-upload; one's own, or one nothing tells, passes."""
        e = self.assertRaises(NotFound, checkCreator, createdBy(TUS), False, IETF)
        self.assertEqual((e.status, e.code, e.reason), (404, "no-upload", "there is no such upload"))
        self.assertRaises(NotFound, checkCreator, {}, True, IETF)
        self.assertRaises(NotFound, checkCreator, createdBy(IETF), False, TUS)
        checkCreator(createdBy(TUS), True, TUS)
        checkCreator(createdBy(IETF), False, IETF)
        checkCreator({}, False, IETF)
        checkCreator({}, False, TUS)
