"""
What the tus and draft front ends answer beside the upload itself: the time
left before expiry from the store (the same in every process and after a
restart), an expired upload's 404, the draft's C{incoming/<id>}, URLs
through a trusted proxy, and one C{created} and one C{completed} event per
upload. StubTreq; a memory store on the test's clock where times matter,
a file store where paths do.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.protocol.expiry import httpDate
from uploadsvc.protocol.forwarded import TrustedProxies
from uploadsvc.storage.filestore import FileStore
from uploadsvc.storage.memory import MemoryStore
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp
from tests.support.stubapp import StubRequests

TUS = {"Tus_Resumable": "1.0.0"}
STREAM = {"Content_Type": "application/offset+octet-stream"}
PARTIAL = {"Content_Type": "application/partial-upload"}
DRAFT = {"Upload_Draft_Interop_Version": "8"}
START = 1_000_000
HOUR = 3600


class ExpiryAnswerTests(StubRequests, SynchronousTestCase):
    """
    The store's clock may differ from the app's (a file server's): the
    answers follow the store's record of the last byte, as expiry does.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.skew = 50.0
        self.store = MemoryStore(now=lambda: self.clock.seconds() + self.skew)
        self.treq = self.serve()

    def serve(self) -> StubTreq:
        """
        A process of its own (a worker, or the server after a restart) on
        the shared store.
        """
        app = UploadApp(
            self.store, ImmediateRunner(), Config(expireAfter=HOUR), clock=self.clock,  # type: ignore[arg-type]
        )
        return StubTreq(app.resource())

    def using(self, treq: StubTreq, f: Callable[[], Any]) -> Any:
        before, self.treq = self.treq, treq
        try:
            return f()
        finally:
            self.treq = before

    def test_tusFromStore(self) -> None:
        """tus creation, PATCH and HEAD answers, here and in another process, tell the same Upload-Expires: the store's last byte plus the expiry."""
        response, _ = self.request("POST", "/.tus/", Upload_Length="10", **TUS)
        url = self.header(response, "Location") or ""
        created = httpDate(START + self.skew + HOUR)
        self.assertEqual(self.header(response, "Upload-Expires"), created)
        other = self.serve()
        head, _ = self.using(other, lambda: self.request("HEAD", url, **TUS))
        self.assertEqual(self.header(head, "Upload-Expires"), created)
        self.clock.advance(100)
        response, _ = self.request("PATCH", url, b"abc", Upload_Offset="0", **TUS, **STREAM)
        moved = httpDate(START + 100 + self.skew + HOUR)
        self.assertEqual(self.header(response, "Upload-Expires"), moved)
        head, _ = self.using(other, lambda: self.request("HEAD", url, **TUS))
        self.assertEqual(self.header(head, "Upload-Expires"), moved)

    def test_draftFromStore(self) -> None:
        """The draft's max-age, at creation and from another process or after a restart, is the time the store's record leaves."""
        self.skew = 0.0
        response, _ = self.request("POST", "/.uploads/", b"01", Upload_Complete="?0", **DRAFT)
        location = self.header(response, "Location") or ""
        self.assertEqual(self.header(response, "Upload-Limit"), f"max-size={64 * 1024**3}, min-size=0, max-age={HOUR}")
        self.clock.advance(600)
        restarted = self.serve()
        head, _ = self.using(restarted, lambda: self.request("HEAD", location, **DRAFT))
        self.assertEqual(head.code, 204)
        self.assertIn(f"max-age={HOUR - 600}", self.header(head, "Upload-Limit") or "")
        response, _ = self.using(restarted, lambda: self.request(
            "PATCH", location, b"23", Upload_Offset="2", Upload_Complete="?0", **PARTIAL, **DRAFT
        ))
        self.assertEqual(response.code, 204)
        self.assertIn(f"max-age={HOUR}", self.header(response, "Upload-Limit") or "")
        self.clock.advance(60)
        head, _ = self.request("HEAD", location, **DRAFT)
        self.assertIn(f"max-age={HOUR - 60}", self.header(head, "Upload-Limit") or "")

    def test_tusExpired(self) -> None:
        """Once its Upload-Expires has passed, a tus upload's URL is 404 for HEAD and PATCH, even before expiry removed it; nothing is written."""
        self.skew = 0.0
        response, _ = self.request("POST", "/.tus/", Upload_Length="10", **TUS)
        url = self.header(response, "Location") or ""
        self.request("PATCH", url, b"abc", Upload_Offset="0", **TUS, **STREAM)
        self.clock.advance(HOUR)
        self.assertEqual(self.request("HEAD", url, **TUS)[0].code, 404)
        response, body = self.request("PATCH", url, b"def", Upload_Offset="3", **TUS, **STREAM)
        self.assertEqual(response.code, 404, body)
        [entry] = self.store.listIncomplete()
        self.assertEqual(entry.offset, 3)

    def test_draftExpired(self) -> None:
        """Once its time is up, a draft upload's URL is 404 for HEAD and PATCH, even before expiry removed it."""
        self.skew = 0.0
        response, _ = self.request("POST", "/.uploads/", b"01", Upload_Complete="?0", **DRAFT)
        location = self.header(response, "Location") or ""
        self.clock.advance(HOUR)
        self.assertEqual(self.request("HEAD", location, **DRAFT)[0].code, 404)
        response, _ = self.request(
            "PATCH", location, b"23", Upload_Offset="2", Upload_Complete="?1", **PARTIAL, **DRAFT
        )
        self.assertEqual(response.code, 404)
        [entry] = self.store.listIncomplete()
        self.assertEqual(entry.offset, 2)


class _FileCase(StubRequests, SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.build(Config())

    def build(self, config: Config) -> None:
        self.buildFileApp(config)


class DraftIncomingTests(_FileCase):
    def test_incomingIsTheId(self) -> None:
        """A draft creation without a filename lands at incoming/<its upload id>."""
        response, _ = self.request("POST", "/.uploads/", b"01", Upload_Complete="?0", **DRAFT)
        location = self.header(response, "Location") or ""
        uploadId = location.rsplit("/", 1)[1]
        response, _ = self.request(
            "PATCH", location, b"23", Upload_Offset="2", Upload_Complete="?1", **PARTIAL, **DRAFT
        )
        self.assertEqual(response.code, 201)
        self.assertEqual(self.header(response, "Location"), f"/incoming/{uploadId}")
        self.assertEqual(self.stored(f"incoming/{uploadId}"), b"0123")

    def test_incomingInOneRequest(self) -> None:
        """In one ?1 request too the file is named by the upload's id (the one its events tell)."""
        response, _ = self.request("POST", "/.uploads/", b"0123", Upload_Complete="?1", **DRAFT)
        self.assertEqual(response.code, 201)
        uploadId = self.events[0].uploadId
        self.assertEqual(self.header(response, "Location"), f"/incoming/{uploadId}")
        self.assertEqual(os.listdir(os.path.join(self.root, "incoming")), [uploadId])

    def test_incomingLink(self) -> None:
        """A symbolic link at incoming/ is 403 before anything is made."""
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        os.makedirs(self.root, exist_ok=True)
        os.symlink(outside, os.path.join(self.root, "incoming"))
        response, _ = self.request("POST", "/.uploads/", b"01", Upload_Complete="?0", **DRAFT)
        self.assertEqual(response.code, 403)
        self.assertEqual(self.store.listIncomplete(), [])
        self.assertEqual(os.listdir(outside), [])

    def test_incomingNoSpace(self) -> None:
        """Too little free space is 507 before anything is made."""
        self.build(Config(minFreeBytes=2**62))
        response, _ = self.request("POST", "/.uploads/", b"01", Upload_Complete="?0", **DRAFT)
        self.assertEqual(response.code, 507)
        self.assertEqual(self.store.listIncomplete(), [])


class ProxyURLTests(_FileCase):
    FORWARDED = {
        "X_Forwarded_Proto": "https",
        "X_Forwarded_Host": "up.example.org",
        "X_Forwarded_Prefix": "/files",
    }

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.build(Config(prefix=b"/up", proxies=TrustedProxies.fromStrings(["127.0.0.1"])))

    def create(self, **headers: str) -> str:
        response, body = self.request(
            "POST", "/up/.tus/", Upload_Length="3", **TUS, **self.FORWARDED, **headers
        )
        self.assertEqual(response.code, 201, body)
        return self.header(response, "Location") or ""

    def test_location(self) -> None:
        """A tus Location is the URL the proxy's client sees."""
        location = self.create()
        self.assertRegex(location, r"^https://up\.example\.org/files/\.tus/[0-9a-f]{32}$")

    def test_concatPublicURLs(self) -> None:
        """A final concatenation may name its parts by the URLs handed out (absolute, public prefix) or by the public path."""
        parts = [self.create(Upload_Concat="partial") for _ in range(2)]
        for part, data in zip(parts, (b"abc", b"def")):
            path = "/up/.tus/" + part.rsplit("/", 1)[1]
            self.assertEqual(
                self.request("PATCH", path, data, Upload_Offset="0", **TUS, **STREAM)[0].code, 204
            )
        publicPath = "/files/.tus/" + parts[1].rsplit("/", 1)[1]
        response, body = self.request(
            "POST", "/up/.tus/", Upload_Concat=f"final;{parts[0]} {publicPath}",
            Upload_Metadata="filename am9pbmVk", **TUS, **self.FORWARDED,
        )
        self.assertEqual(response.code, 201, body)
        self.assertEqual(self.stored("joined"), b"abcdef")

    def test_concatHeaderPublic(self) -> None:
        """HEAD tells a final upload's parts by their public URLs."""
        from twisted.web.server import Request
        from twisted.web.test.requesthelper import DummyChannel

        from uploadsvc.web.forwarded import notePublicBase

        request = Request(DummyChannel())  # its peer: 192.168.1.1
        for name, value in self.FORWARDED.items():
            request.requestHeaders.setRawHeaders(name.replace("_", "-"), [value])
        notePublicBase(request, TrustedProxies.fromStrings(["192.168.1.1"]), b"/up")
        ids = ["a" * 32, "b" * 32]
        stored = f"final;/up/.tus/{ids[0]} /up/.tus/{ids[1]}"
        self.app.tus._describe(request, 6, 6, {"tus-concat": stored})
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"Upload-Concat"),
            [f"final;https://up.example.org/files/.tus/{ids[0]} "
             f"https://up.example.org/files/.tus/{ids[1]}".encode()],
        )


class EventCountTests(_FileCase):
    def kinds(self) -> list[tuple[str, str | None, str | None]]:
        return [(e.kind, e.protocol, e.uploadId) for e in self.events]

    def test_tus(self) -> None:
        """A tus upload in two PATCHes tells one created, one resumed and one completed event, each with protocol tus and its id; its access notes name them."""
        response, _ = self.request("POST", "/.tus/", Upload_Length="6", Upload_Metadata="filename dC5iaW4=", **TUS)
        url = self.header(response, "Location") or ""
        uploadId = url.rsplit("/", 1)[1]
        self.request("PATCH", url, b"abc", Upload_Offset="0", **TUS, **STREAM)
        self.request("PATCH", url, b"def", Upload_Offset="3", **TUS, **STREAM)
        self.assertEqual(self.kinds(), [
            ("created", "tus", uploadId), ("resumed", "tus", uploadId), ("completed", "tus", uploadId),
        ])
        self.assertEqual([e.path for e in self.events], ["t.bin"] * 3)

    def test_tusIncoming(self) -> None:
        """An unnamed tus upload's events name incoming/<id> from its creation on."""
        response, _ = self.request("POST", "/.tus/", Upload_Length="3", **TUS)
        url = self.header(response, "Location") or ""
        uploadId = url.rsplit("/", 1)[1]
        self.request("PATCH", url, b"abc", Upload_Offset="0", **TUS, **STREAM)
        self.assertEqual([e.kind for e in self.events], ["created", "completed"])
        self.assertEqual([e.path for e in self.events], [f"incoming/{uploadId}"] * 2)

    def test_draft(self) -> None:
        """A draft upload, in one request or two, tells exactly one created and one completed event, each with protocol ietf and its id."""
        response, _ = self.request(
            "POST", "/.uploads/", b"0123", Upload_Complete="?1",
            Content_Disposition="attachment; filename=one.bin", **DRAFT,
        )
        self.assertEqual(response.code, 201)
        [created, completed] = self.events
        self.assertEqual((created.kind, completed.kind), ("created", "completed"))
        self.assertEqual({created.protocol, completed.protocol}, {"ietf"})
        self.assertEqual(created.uploadId, completed.uploadId)
        self.assertIsNotNone(created.uploadId)
        del self.events[:]
        response, _ = self.request(
            "PUT", "/two.bin", b"01", Upload_Complete="?0", **DRAFT,
        )
        location = self.header(response, "Location") or ""
        self.request("PATCH", location, b"23", Upload_Offset="2", Upload_Complete="?1", **PARTIAL, **DRAFT)
        uploadId = location.rsplit("/", 1)[1]
        self.assertEqual(self.kinds(), [
            ("created", "ietf", uploadId), ("resumed", "ietf", uploadId), ("completed", "ietf", uploadId),
        ])


class AccessLineTests(SynchronousTestCase):
    """
    The JSON access lines of tus and draft requests, through the real
    site and channel (L{uploadsvc.web.observed}).
    """

    def setUp(self) -> None:
        from uploadsvc.ops.events import Events
        from uploadsvc.ops.logs import logEvent
        from uploadsvc.web.observed import ObservedSite
        from tests.test_logs import Captured

        self.store = FileStore(os.path.abspath(self.mktemp()), fsync=False)
        self.addCleanup(self.store.close)
        self.clock = Clock()
        self.clock.advance(START)
        events = Events()
        events.subscribe(logEvent)
        app = UploadApp(self.store, ImmediateRunner(), Config(), clock=self.clock, events=events)
        self.site = ObservedSite(app.resource(), reactor=self.clock)
        self.log = Captured(self)

    def send(self, head: bytes, body: bytes = b"") -> bytes:
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        peer = IPv4Address("TCP", "192.0.2.7", 4444)
        channel = self.site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        channel.makeConnection(transport)
        channel.dataReceived(head + b"Host: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        return transport.value()

    def fields(self) -> list[tuple[Any, ...]]:
        return [
            (a["method"], a["status"], a["protocol"], a["uploadId"], a["offsetBefore"], a["offsetAfter"])
            for a in self.log.records("access")
        ]

    def test_tus(self) -> None:
        """A tus creation and its PATCH are logged with protocol tus, the upload id and the offsets."""
        answer = self.send(b"POST /.tus/ HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 4\r\n")
        uploadId = answer.split(b"Location: /.tus/", 1)[1][:32].decode()
        self.send(
            b"PATCH /.tus/%s HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            b"Content-Type: application/offset+octet-stream\r\n" % uploadId.encode(), b"abcd",
        )
        self.assertEqual(self.fields(), [
            ("POST", 201, "tus", uploadId, None, None), ("PATCH", 204, "tus", uploadId, 0, 4),
        ])
        self.assertEqual(
            [(e["event"], e["protocol"], e["uploadId"]) for e in self.log.records("event")],
            [("created", "tus", uploadId), ("completed", "tus", uploadId)],
        )

    def test_draft(self) -> None:
        """A draft creation and its PATCH are logged with protocol ietf, the upload id and the offsets."""
        answer = self.send(
            b"POST /.uploads/ HTTP/1.1\r\nUpload-Complete: ?0\r\nUpload-Draft-Interop-Version: 8\r\n", b"01"
        )
        uploadId = answer.split(b"Location: /.uploads/", 1)[1][:32].decode()
        self.send(
            b"PATCH /.uploads/%s HTTP/1.1\r\nUpload-Complete: ?1\r\nUpload-Offset: 2\r\n"
            b"Upload-Draft-Interop-Version: 8\r\nContent-Type: application/partial-upload\r\n"
            % uploadId.encode(), b"23",
        )
        self.assertEqual(self.fields(), [
            ("POST", 201, "ietf", uploadId, 0, 2), ("PATCH", 201, "ietf", uploadId, 2, 4),
        ])
        self.assertEqual(
            [(e["event"], e["protocol"], e["uploadId"]) for e in self.log.records("event")],
            [("created", "ietf", uploadId), ("resumed", "ietf", uploadId), ("completed", "ietf", uploadId)],
        )
