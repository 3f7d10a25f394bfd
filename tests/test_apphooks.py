"""
Where the app asks its blocking hooks (pre-create, pre-finish) and what the
client gets: StubTreq in memory, a real store on a temp folder, disk calls
run inline, hook targets whose answers the test gives.
"""

from __future__ import annotations

import os
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.ops.events import COMPLETED, HOOK_FAILED, Events, UploadEvent
from uploadsvc.ops.hookrunner import Hooks
from uploadsvc.ops.hooks import ALL_HOOKS, HookFailed, Proceed, Refuse
from uploadsvc.storage.filestore import FileStore
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp
from tests.support.hooktargets import FakeTarget
from tests.support.staging import stageFully
from tests.support.stubapp import StubRequests

BODY = bytes(range(256)) * 40  # 10240 bytes
TOTAL = len(BODY)


class AppHookTests(StubRequests, SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.target = FakeTarget()
        self.build()

    def build(self, enabled: frozenset[str] = frozenset(ALL_HOOKS), **config: Any) -> None:
        self.store = FileStore(self.root, fsync=False)
        self.addCleanup(self.store.close)
        self.clock = Clock()
        self.events = Events()
        self.told: list[UploadEvent] = []
        self.events.subscribe(self.told.append)
        self.hooks = Hooks([self.target], enabled, self.clock)
        self.hooks.listenTo(self.events)
        self.app = UploadApp(
            self.store, ImmediateRunner(), Config(**config), clock=self.clock,
            events=self.events, hooks=self.hooks,
        )
        self.treq = StubTreq(self.app.resource())

    def asked(self, hook: str | None = None) -> list[dict[str, Any]]:
        return [doc for name, doc in self.target.calls if hook is None or name == hook]

    def stored(self, rel: str) -> bytes:
        with open(os.path.join(self.root, rel), "rb") as f:
            return f.read()

    # --- pre-create ---------------------------------------------------

    def test_preCreateAsked(self) -> None:
        """A new upload asks pre-create, with the upload and the request (minus credentials)."""
        r, _ = self.request("PUT", "/a/b.bin", BODY, Authorization="Bearer secret-token-123456")
        self.assertEqual(r.code, 201)
        [document] = self.asked("pre-create")
        self.assertEqual(document["upload"]["path"], "a/b.bin")
        self.assertEqual(document["upload"]["offset"], 0)
        self.assertEqual(document["upload"]["total"], TOTAL)
        self.assertEqual(document["upload"]["protocol"], "put")
        self.assertEqual(document["request"]["method"], "PUT")
        self.assertEqual(document["request"]["headers"]["content-length"], [str(TOTAL)])
        self.assertNotIn("authorization", document["request"]["headers"])
        self.assertEqual([h for h, _ in self.target.calls], ["pre-create", "pre-finish"])

    def test_refused(self) -> None:
        """A refusal reaches the client with the hook's status and reason; nothing is staged."""
        self.target.answers = [Refuse(403, "over quota")]
        r, body = self.request("PUT", "/a/b.bin", BODY)
        self.assertEqual(r.code, 403)
        self.assertEqual(body, b"over quota\n")
        self.assertEqual(self.header(r, "Content-Type"), "text/plain; charset=utf-8")
        head, _ = self.request("HEAD", "/a/b.bin")
        self.assertEqual(head.code, 404)
        self.assertFalse(os.path.exists(os.path.join(self.root, "a", "b.bin")))

    def test_retryOfRefusedAsksAgain(self) -> None:
        """The retry of a refused creation asks again, and goes on if the hook now agrees."""
        self.target.answers = [Refuse(429, "slow down"), Proceed()]
        r, _ = self.request("PUT", "/a", BODY[:100], Content_Range=f"bytes 0-99/{TOTAL}")
        self.assertEqual(r.code, 429)
        r, _ = self.request("PUT", "/a", BODY[:100], Content_Range=f"bytes 0-99/{TOTAL}")
        self.assertEqual(r.code, 204)
        self.assertEqual(len(self.asked("pre-create")), 2)

    def test_resumeNotAsked(self) -> None:
        """The chunks that continue an upload never ask pre-create; the last one asks pre-finish once."""
        for start in range(0, TOTAL, 4096):
            end = min(start + 4096, TOTAL) - 1
            r, _ = self.request(
                "PUT", "/r", BODY[start:end + 1], Content_Range=f"bytes {start}-{end}/{TOTAL}"
            )
        self.assertEqual(r.code, 201)
        self.assertEqual([h for h, _ in self.target.calls], ["pre-create", "pre-finish"])
        self.assertEqual(self.asked("pre-finish")[0]["upload"]["offset"], TOTAL)

    def test_startOverAsks(self) -> None:
        """A plain PUT over an incomplete upload starts a new one: pre-create is asked again."""
        self.request("PUT", "/s", BODY[:100], Content_Range=f"bytes 0-99/{TOTAL}")
        r, _ = self.request("PUT", "/s", BODY)
        self.assertEqual(r.code, 201)
        self.assertEqual(len(self.asked("pre-create")), 2)

    def test_failedIs503(self) -> None:
        """A pre-create hook that fails answers 503 with Retry-After; nothing is staged; the event is told."""
        self.target.answers = [HookFailed("connection refused")]
        r, _ = self.request("PUT", "/f", BODY)
        self.assertEqual(r.code, 503)
        self.assertEqual(self.header(r, "Retry-After"), "5")
        head, _ = self.request("HEAD", "/f")
        self.assertEqual(head.code, 404)
        self.assertEqual([e.kind for e in self.told if e.kind == HOOK_FAILED], [HOOK_FAILED])

    def test_refusalsComeFirst(self) -> None:
        """A request the server refuses anyway (413, 409) never asks the hook."""
        self.build(maxUploadSize=1000)
        r, _ = self.request("PUT", "/big", BODY)
        self.assertEqual(r.code, 413)
        self.build()
        self.request("PUT", "/x", BODY)
        calls = len(self.target.calls)
        r, _ = self.request("PUT", "/x", BODY)
        self.assertEqual(r.code, 409)
        self.assertEqual(len(self.target.calls), calls)

    def test_changedDestination(self) -> None:
        """pre-create may choose the destination: the file lands there, told as Location."""
        self.target.answers = [Proceed("users/alice/b.bin")]
        r, _ = self.request("PUT", "/b.bin", BODY)
        self.assertEqual(r.code, 201)
        self.assertEqual(self.header(r, "Location"), "/users/alice/b.bin")
        self.assertEqual(self.stored("users/alice/b.bin"), BODY)
        self.assertFalse(os.path.exists(os.path.join(self.root, "b.bin")))
        self.assertEqual(self.asked("pre-finish")[0]["upload"]["path"], "users/alice/b.bin")

    def test_changedDestinationPartial(self) -> None:
        """A first chunk sent elsewhere is told its Location, and resumes there without asking again."""
        self.target.answers = [Proceed("elsewhere/c.bin")]
        r, _ = self.request("PUT", "/c.bin", BODY[:100], Content_Range=f"bytes 0-99/{TOTAL}")
        self.assertEqual(r.code, 204)
        self.assertEqual(self.header(r, "Location"), "/elsewhere/c.bin")
        r, _ = self.request(
            "PUT", "/elsewhere/c.bin", BODY[100:], Content_Range=f"bytes 100-{TOTAL - 1}/{TOTAL}"
        )
        self.assertEqual(r.code, 201)
        self.assertEqual(self.stored("elsewhere/c.bin"), BODY)
        self.assertEqual(len(self.asked("pre-create")), 1)

    def test_changedDestinationBadPath(self) -> None:
        """A destination that breaks the path rules is refused with 400, nothing written."""
        for bad in ("../outside", ".uploadsvc/lock", "a//b"):
            self.target.answers = [Proceed(bad)]
            r, body = self.request("PUT", "/d.bin", BODY)
            self.assertEqual(r.code, 400, bad)
            self.assertIn(b"destination", body)
        self.assertEqual(sorted(os.listdir(self.root)), [".uploadsvc"])

    def test_changedDestinationThroughLink(self) -> None:
        """A destination through a symbolic link is refused with 403, as any request's would be, and names no Location."""
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        os.symlink(outside, os.path.join(self.root, "linked"))
        self.target.answers = [Proceed("linked/e.bin")]
        r, _ = self.request("PUT", "/e.bin", BODY)
        self.assertEqual(r.code, 403)
        self.assertIsNone(self.header(r, "Location"))
        self.assertEqual(os.listdir(outside), [])

    def test_changedDestinationTaken(self) -> None:
        """A destination that holds a complete file is 409 (overwrite off), with no Location."""
        self.request("PUT", "/taken.bin", b"first")
        self.target.answers = [Proceed("taken.bin")]
        r, _ = self.request("PUT", "/other.bin", BODY)
        self.assertEqual(r.code, 409)
        self.assertIsNone(self.header(r, "Location"))
        self.assertEqual(self.stored("taken.bin"), b"first")

    def test_changedDestinationFailedFinishTold(self) -> None:
        """A request accepted at the hook's destination keeps its Location on a later failure (pre-finish 503): the upload is staged there."""
        self.target.answers = [Proceed("kept/f.bin"), HookFailed("down")]
        r, _ = self.request("PUT", "/f.bin", BODY, Content_Range=f"bytes 0-{TOTAL - 1}/{TOTAL}")
        self.assertEqual(r.code, 503)
        self.assertEqual(self.header(r, "Location"), "/kept/f.bin")
        r, _ = self.request("PUT", "/kept/f.bin", Content_Range=f"bytes */{TOTAL}")
        self.assertEqual(r.code, 201)
        self.assertEqual(self.stored("kept/f.bin"), BODY)

    def test_disabled(self) -> None:
        """A hook left out of --hooks is never asked."""
        self.build(enabled=frozenset({"post-finish"}))
        self.target.answers = [Refuse(403, "no"), Refuse(403, "no")]
        r, _ = self.request("PUT", "/n", BODY)
        self.assertEqual(r.code, 201)
        self.assertEqual(self.asked("pre-create") + self.asked("pre-finish"), [])

    # --- pre-finish ---------------------------------------------------

    def test_preFinishRejects(self) -> None:
        """A pre-finish refusal reaches the client; the file never appears and its staged data is discarded."""
        self.target.answers = [Proceed(), Refuse(422, "not a PDF")]
        r, body = self.request("PUT", "/doc.pdf", BODY)
        self.assertEqual(r.code, 422)
        self.assertEqual(body, b"not a PDF\n")
        self.assertFalse(os.path.exists(os.path.join(self.root, "doc.pdf")))
        head, _ = self.request("HEAD", "/doc.pdf")
        self.assertEqual(head.code, 404)
        self.assertEqual([e.kind for e in self.told if e.kind == COMPLETED], [])

    def test_preFinishFailedKeeps(self) -> None:
        """A pre-finish hook that fails answers 503 and keeps the upload fully staged; the retry asks again and completes."""
        self.target.answers = [Proceed(), HookFailed("timed out")]
        r, _ = self.request("PUT", "/k.bin", BODY, Content_Range=f"bytes 0-{TOTAL - 1}/{TOTAL}")
        self.assertEqual(r.code, 503)
        self.assertEqual(self.header(r, "Retry-After"), "5")
        self.assertFalse(os.path.exists(os.path.join(self.root, "k.bin")))
        head, _ = self.request("HEAD", "/k.bin")
        self.assertEqual(head.code, 204)
        self.assertEqual(self.header(head, "Upload-Offset"), str(TOTAL))
        self.assertEqual(self.header(head, "Upload-Length"), str(TOTAL))
        r, _ = self.request("PUT", "/k.bin", Content_Range=f"bytes */{TOTAL}")
        self.assertEqual(r.code, 201)
        self.assertEqual(self.stored("k.bin"), BODY)
        self.assertEqual([h for h, _ in self.target.calls], ["pre-create", "pre-finish", "pre-finish"])

    def test_preFinishFailedRetryChunk(self) -> None:
        """After a failed pre-finish, re-sending the last chunk finishes the upload (the hook asked again)."""
        self.target.answers = [Proceed(), HookFailed("down")]
        self.request("PUT", "/l.bin", BODY, Content_Range=f"bytes 0-{TOTAL - 1}/{TOTAL}")
        r, _ = self.request(
            "PUT", "/l.bin", BODY[-100:], Content_Range=f"bytes {TOTAL - 100}-{TOTAL - 1}/{TOTAL}"
        )
        self.assertEqual(r.code, 201)
        self.assertEqual(self.stored("l.bin"), BODY)

    def test_recoveryLeavesToTheHook(self) -> None:
        """At start, fully staged uploads are not moved into place behind pre-finish's back."""
        stageFully(self.store, "staged.bin", BODY, TOTAL)
        self.successResultOf(self.app.recoverStaged())
        self.assertFalse(os.path.exists(os.path.join(self.root, "staged.bin")))
        r, _ = self.request("PUT", "/staged.bin", Content_Range=f"bytes */{TOTAL}")
        self.assertEqual(r.code, 201)
        self.assertEqual(self.asked("pre-finish")[0]["upload"]["path"], "staged.bin")

    def test_recoveryWithoutPreFinish(self) -> None:
        """Without a pre-finish hook, recovery finishes fully staged uploads as before."""
        self.build(enabled=frozenset({"pre-create"}))
        stageFully(self.store, "staged.bin", BODY, TOTAL)
        self.successResultOf(self.app.recoverStaged())
        self.assertEqual(self.stored("staged.bin"), BODY)
