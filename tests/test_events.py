"""
Tests for L{uploadsvc.ops.events}.
"""

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.ops.events import COMPLETED, Events, UploadEvent


class EventsTests(SynchronousTestCase):
    def test_everyListenerHears(self) -> None:
        events = Events()
        heard: list[tuple[str, UploadEvent]] = []
        events.subscribe(lambda e: heard.append(("a", e)))
        events.subscribe(lambda e: heard.append(("b", e)))
        event = UploadEvent(COMPLETED, "p-x", path="a/b", offset=3, total=3)
        events.emit(event)
        self.assertEqual(heard, [("a", event), ("b", event)])

    def test_failingListenerLoggedOthersHear(self) -> None:
        events = Events()
        heard: list[UploadEvent] = []

        def broken(e: UploadEvent) -> None:
            raise RuntimeError("sink down")

        events.subscribe(broken)
        events.subscribe(heard.append)
        events.emit(UploadEvent(COMPLETED, "p-x"))
        self.assertEqual(len(heard), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unsubscribe(self) -> None:
        events = Events()
        heard: list[UploadEvent] = []
        stop = events.subscribe(heard.append)
        stop()
        events.emit(UploadEvent(COMPLETED, "p-x"))
        self.assertEqual(heard, [])

    def test_unknownKindRefused(self) -> None:
        with self.assertRaises(ValueError):
            UploadEvent("finished", "p-x")

    def test_asDict(self) -> None:
        d = UploadEvent(COMPLETED, "p-x", path="a", detail={"hook": "x"}).asDict()
        self.assertEqual(d["kind"], "completed")
        self.assertEqual(d["path"], "a")
        self.assertEqual(d["detail"], {"hook": "x"})
