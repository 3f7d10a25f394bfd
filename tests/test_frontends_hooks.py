"""
The blocking hooks on the tus and draft front ends, as on path uploads:
pre-create before anything is made (a refusal is the hook's status and
reason, a failure 503 with Retry-After, a new destination checked again),
pre-finish after the last byte (a refusal discards, a failure keeps the
data for the client's retry, which asks again); payloads carry the
protocol, the upload id and tus metadata. StubTreq, a real file store,
hook targets whose answers the test gives.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.ops.events import Events, UploadEvent
from uploadsvc.ops.hookrunner import Hooks
from uploadsvc.ops.hooks import ALL_HOOKS, HookFailed, Proceed, Refuse
from uploadsvc.storage.filestore import FileStore
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp
from tests.support.hooktargets import FakeTarget
from tests.support.stubapp import StubRequests

TUS = {"Tus_Resumable": "1.0.0"}
STREAM = {"Content_Type": "application/offset+octet-stream"}
PARTIAL = {"Content_Type": "application/partial-upload"}
DRAFT = {"Upload_Draft_Interop_Version": "8"}


def metadata(**pairs: str) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in pairs.items()
    )


class _HookCase(StubRequests, SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.target = FakeTarget()
        self.store = FileStore(self.root, fsync=False)
        self.addCleanup(self.store.close)
        self.clock = Clock()
        self.events = Events()
        self.told: list[UploadEvent] = []
        self.events.subscribe(self.told.append)
        self.hooks = Hooks([self.target], frozenset(ALL_HOOKS), self.clock)
        self.hooks.listenTo(self.events)
        self.app = UploadApp(
            self.store, ImmediateRunner(), Config(), clock=self.clock,
            events=self.events, hooks=self.hooks,
        )
        self.treq = StubTreq(self.app.resource())

    def asked(self, hook: str) -> list[dict[str, Any]]:
        return [doc for name, doc in self.target.calls if name == hook]

    def incomplete(self) -> list[tuple[str | None, int]]:
        return sorted((e.path, e.offset) for e in self.store.listIncomplete())


class TusHookTests(_HookCase):
    def create(self, length: int = 5, **headers: str) -> tuple[Any, bytes]:
        return self.request("POST", "/.tus/", Upload_Length=str(length), **TUS, **headers)

    def patch(self, url: str, offset: int, body: bytes) -> tuple[Any, bytes]:
        return self.request("PATCH", url, body, Upload_Offset=str(offset), **TUS, **STREAM)

    def test_preCreatePayload(self) -> None:
        """A tus creation asks pre-create with the protocol, the id it will have, its destination and metadata."""
        response, _ = self.create(Upload_Metadata=metadata(filename="d/a.bin", filetype="x/y"))
        self.assertEqual(response.code, 201)
        [document] = self.asked("pre-create")
        uploadId = (self.header(response, "Location") or "").rsplit("/", 1)[1]
        upload = document["upload"]
        self.assertEqual(
            (upload["protocol"], upload["id"], upload["key"], upload["path"], upload["total"]),
            ("tus", uploadId, "i-" + uploadId, "d/a.bin", 5),
        )
        self.assertEqual(upload["metadata"], {"filename": "d/a.bin", "filetype": "x/y"})
        self.assertEqual(document["request"]["path"], "/.tus/")

    def test_preCreateUnnamed(self) -> None:
        """Without a name pre-create is told where it lands: incoming/<id>."""
        response, _ = self.create()
        uploadId = (self.header(response, "Location") or "").rsplit("/", 1)[1]
        self.assertEqual(self.asked("pre-create")[0]["upload"]["path"], "incoming/" + uploadId)

    def test_preCreateRefuses(self) -> None:
        """A refusal is the hook's status and reason; nothing is created."""
        self.target.answers = [Refuse(429, "over quota")]
        response, body = self.create(Upload_Metadata=metadata(filename="q.bin"))
        self.assertEqual((response.code, body), (429, b"over quota\n"))
        self.assertIsNone(self.header(response, "Location"))
        self.assertEqual(self.incomplete(), [])
        self.assertEqual([e.kind for e in self.told], [])

    def test_preCreateFails(self) -> None:
        """A failed hook is 503 with Retry-After; nothing is created."""
        self.target.answers = [HookFailed("down")]
        response, _ = self.create(Upload_Metadata=metadata(filename="q.bin"))
        self.assertEqual(response.code, 503)
        self.assertEqual(self.header(response, "Retry-After"), "5")
        self.assertEqual(self.incomplete(), [])

    def test_preCreateMoves(self) -> None:
        """The hook's destination is where the upload lands."""
        self.target.answers = [Proceed("chosen/b.bin")]
        response, _ = self.create(Upload_Metadata=metadata(filename="asked.bin"))
        self.assertEqual(response.code, 201)
        self.patch(self.header(response, "Location") or "", 0, b"abcde")
        self.assertEqual(self.stored("chosen/b.bin"), b"abcde")
        self.assertIsNone(self.stored("asked.bin"))
        self.assertEqual(self.asked("pre-finish")[0]["upload"]["path"], "chosen/b.bin")

    def test_preCreateMovesThroughLink(self) -> None:
        """A destination the hook chose through a symbolic link is 403, nothing created."""
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        os.makedirs(self.root, exist_ok=True)
        os.symlink(outside, os.path.join(self.root, "linked"))
        self.target.answers = [Proceed("linked/b.bin")]
        response, _ = self.create(Upload_Metadata=metadata(filename="asked.bin"))
        self.assertEqual(response.code, 403)
        self.assertEqual(self.incomplete(), [])
        self.assertEqual(os.listdir(outside), [])

    def test_preFinishPayloadAndRefusal(self) -> None:
        """pre-finish carries the id, protocol and metadata; its refusal discards the upload."""
        self.target.answers = [Proceed(), Refuse(422, "not a PDF")]
        response, _ = self.create(Upload_Metadata=metadata(filename="r.pdf"))
        url = self.header(response, "Location") or ""
        response, body = self.patch(url, 0, b"abcde")
        self.assertEqual((response.code, body), (422, b"not a PDF\n"))
        [document] = self.asked("pre-finish")
        upload = document["upload"]
        self.assertEqual(
            (upload["protocol"], upload["id"], upload["path"], upload["offset"], upload["metadata"]),
            ("tus", url.rsplit("/", 1)[1], "r.pdf", 5, {"filename": "r.pdf"}),
        )
        self.assertIsNone(self.stored("r.pdf"))
        self.assertEqual(self.request("HEAD", url, **TUS)[0].code, 404)

    def test_preFinishFailsHeadRetries(self) -> None:
        """A failed pre-finish keeps every byte (503); the client's HEAD asks again and lands it."""
        self.target.answers = [Proceed(), HookFailed("down")]
        response, _ = self.create(Upload_Metadata=metadata(filename="h.bin"))
        url = self.header(response, "Location") or ""
        response, _ = self.patch(url, 0, b"abcde")
        self.assertEqual(response.code, 503)
        self.assertEqual(self.header(response, "Retry-After"), "5")
        self.assertIsNone(self.stored("h.bin"))
        self.assertEqual(self.incomplete(), [("h.bin", 5)])
        head, _ = self.request("HEAD", url, **TUS)
        self.assertEqual(head.code, 200)
        self.assertEqual(self.header(head, "Upload-Offset"), "5")
        self.assertEqual(self.stored("h.bin"), b"abcde")
        self.assertEqual(len(self.asked("pre-finish")), 2)

    def test_preFinishStillFailing(self) -> None:
        """A HEAD whose pre-finish fails again is 503 again, never an offset that says the upload is done."""
        self.target.answers = [Proceed(), HookFailed("down"), HookFailed("still down")]
        response, _ = self.create(Upload_Metadata=metadata(filename="s.bin"))
        url = self.header(response, "Location") or ""
        self.assertEqual(self.patch(url, 0, b"abcde")[0].code, 503)
        head, _ = self.request("HEAD", url, **TUS)
        self.assertEqual(head.code, 503)
        self.assertIsNone(self.header(head, "Upload-Offset"))
        self.assertIsNone(self.stored("s.bin"))
        self.assertEqual(self.incomplete(), [("s.bin", 5)])

    def test_preFinishFailsPatchRetries(self) -> None:
        """After a failed pre-finish an empty PATCH at the full offset asks again and lands it."""
        self.target.answers = [Proceed(), HookFailed("down")]
        response, _ = self.create(Upload_Metadata=metadata(filename="p.bin"))
        url = self.header(response, "Location") or ""
        self.assertEqual(self.patch(url, 0, b"abcde")[0].code, 503)
        response, _ = self.patch(url, 5, b"")
        self.assertEqual(response.code, 204)
        self.assertEqual(self.header(response, "Upload-Offset"), "5")
        self.assertEqual(self.stored("p.bin"), b"abcde")
        self.assertEqual(len(self.asked("pre-finish")), 2)

    def test_notificationsCarryMetadata(self) -> None:
        """post-create and post-finish of a tus upload carry its id, protocol and metadata."""
        response, _ = self.create(Upload_Metadata=metadata(filename="n.bin"))
        url = self.header(response, "Location") or ""
        self.patch(url, 0, b"abcde")
        self.clock.advance(0)
        for hook in ("post-create", "post-finish"):
            [document] = self.asked(hook)
            upload = document["upload"]
            self.assertEqual(
                (upload["protocol"], upload["id"], upload["path"], upload["metadata"]),
                ("tus", url.rsplit("/", 1)[1], "n.bin", {"filename": "n.bin"}),
                hook,
            )


class DraftHookTests(_HookCase):
    def create(self, path: str = "/.uploads/", body: bytes = b"01234", complete: str = "?0", **headers: str) -> tuple[Any, bytes]:
        return self.request("POST", path, body, Upload_Complete=complete, **DRAFT, **headers)

    def test_preCreatePayload(self) -> None:
        """A draft creation asks pre-create with the protocol, the id it will have and its destination."""
        response, _ = self.create(Content_Disposition='attachment; filename="d/a.bin"', Upload_Length="10")
        self.assertEqual(response.code, 201)
        uploadId = (self.header(response, "Location") or "").rsplit("/", 1)[1]
        upload = self.asked("pre-create")[0]["upload"]
        self.assertEqual(
            (upload["protocol"], upload["id"], upload["path"], upload["total"]),
            ("ietf", uploadId, "d/a.bin", 10),
        )

    def test_preCreateOnPath(self) -> None:
        """A draft creation on a file path asks pre-create once, as the draft's."""
        response, _ = self.create("/f/p.bin", complete="?1")
        self.assertEqual(response.code, 201)
        [document] = self.asked("pre-create")
        self.assertEqual((document["upload"]["protocol"], document["upload"]["path"]), ("ietf", "f/p.bin"))
        self.assertEqual(self.stored("f/p.bin"), b"01234")

    def test_preCreateRefuses(self) -> None:
        """A refusal is the hook's status and reason; nothing is created, no 104 sent."""
        self.target.answers = [Refuse(451, "not here")]
        response, body = self.create(Content_Disposition="attachment; filename=r.bin")
        self.assertEqual((response.code, body), (451, b"not here\n"))
        self.assertEqual(self.incomplete(), [])
        self.assertEqual([e.kind for e in self.told], [])

    def test_preCreateFails(self) -> None:
        """A failed hook is 503 with Retry-After; nothing is created."""
        self.target.answers = [HookFailed("down")]
        response, _ = self.create("/g.bin")
        self.assertEqual(response.code, 503)
        self.assertEqual(self.header(response, "Retry-After"), "5")
        self.assertEqual(self.incomplete(), [])

    def test_preCreateMoves(self) -> None:
        """The hook's destination is where the upload lands."""
        self.target.answers = [Proceed("chosen/c.bin")]
        response, _ = self.create(complete="?1", Content_Disposition="attachment; filename=asked.bin")
        self.assertEqual(response.code, 201)
        self.assertEqual(self.header(response, "Location"), "/chosen/c.bin")
        self.assertEqual(self.stored("chosen/c.bin"), b"01234")
        self.assertIsNone(self.stored("asked.bin"))

    def test_preCreateMovesOntoFile(self) -> None:
        """A destination the hook chose that holds a complete file is 409, nothing created."""
        self.request("PUT", "/taken.bin", b"first")
        self.target.answers = [Proceed("taken.bin")]
        response, _ = self.create(Content_Disposition="attachment; filename=asked.bin")
        self.assertEqual(response.code, 409)
        self.assertEqual(self.incomplete(), [])
        self.assertEqual(self.stored("taken.bin"), b"first")

    def test_preFinishRefusal(self) -> None:
        """pre-finish carries the id and protocol; its refusal discards the upload."""
        self.target.answers = [Proceed(), Refuse(422, "bad file")]
        response, _ = self.create(Content_Disposition="attachment; filename=r.bin")
        location = self.header(response, "Location") or ""
        response, body = self.request(
            "PATCH", location, b"56789", Upload_Offset="5", Upload_Complete="?1", **PARTIAL, **DRAFT
        )
        self.assertEqual((response.code, body), (422, b"bad file\n"))
        upload = self.asked("pre-finish")[0]["upload"]
        self.assertEqual(
            (upload["protocol"], upload["id"], upload["path"], upload["offset"]),
            ("ietf", location.rsplit("/", 1)[1], "r.bin", 10),
        )
        self.assertIsNone(self.stored("r.bin"))
        self.assertEqual(self.request("HEAD", location, **DRAFT)[0].code, 404)

    def test_preFinishFailsRetry(self) -> None:
        """A failed pre-finish keeps the bytes (503); HEAD shows them all, and the completing PATCH asks again and lands it."""
        self.target.answers = [Proceed(), HookFailed("down")]
        response, _ = self.create(Content_Disposition="attachment; filename=k.bin")
        location = self.header(response, "Location") or ""
        response, _ = self.request(
            "PATCH", location, b"56789", Upload_Offset="5", Upload_Complete="?1", **PARTIAL, **DRAFT
        )
        self.assertEqual(response.code, 503)
        self.assertEqual(self.header(response, "Retry-After"), "5")
        head, _ = self.request("HEAD", location, **DRAFT)
        self.assertEqual((head.code, self.header(head, "Upload-Offset")), (204, "10"))
        response, _ = self.request(
            "PATCH", location, Upload_Offset="10", Upload_Complete="?1", **PARTIAL, **DRAFT
        )
        self.assertEqual(response.code, 201)
        self.assertEqual(self.stored("k.bin"), b"0123456789")
        self.assertEqual(len(self.asked("pre-finish")), 2)
