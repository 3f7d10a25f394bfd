"""
Downloads (L{uploadsvc.web.download}, C{--allow-download}): the app's GET and
HEAD answers through StubTreq, and the producer's flow control driven by hand
on a real channel over a StringTransport.
"""

from __future__ import annotations

import os
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.storage.filestore import FileStore
from uploadsvc.testing.runners import ImmediateRunner, ManualRunner
from uploadsvc.web.app import Config, UploadApp
from uploadsvc.web.download import CHUNK_SIZE
from uploadsvc.web.streaming import StreamingSite
from tests.support.stubapp import StubRequests

BODY = bytes(range(256)) * 40  # 10240 bytes


class DownloadAppTests(StubRequests, SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.build(Config(allowDownload=True, allowOverwrite=True))
        response, _ = self.request("PUT", "/d/f.bin", BODY)
        self.assertEqual(response.code, 201)

    def build(self, config: Config) -> None:
        self.store = FileStore(self.root, fsync=False)
        self.addCleanup(self.store.close)
        self.app = UploadApp(self.store, ImmediateRunner(), config)
        self.treq = StubTreq(self.app.resource())

    def test_get(self) -> None:
        """GET serves the whole file with its length, validators and Accept-Ranges."""
        response, content = self.request("GET", "/d/f.bin")
        self.assertEqual(response.code, 200)
        self.assertEqual(content, BODY)
        self.assertEqual(response.length, len(BODY))  # the client's reading of Content-Length
        self.assertEqual(self.header(response, "Accept-Ranges"), "bytes")
        etag = self.header(response, "ETag")
        assert etag is not None
        self.assertRegex(etag, r'^"[0-9a-f]{32}"$')
        mtime = int(os.stat(os.path.join(self.root, "d/f.bin")).st_mtime)
        from twisted.web.http import datetimeToString

        self.assertEqual(self.header(response, "Last-Modified"), datetimeToString(mtime).decode())
        self.assertEqual(self.header(response, "Upload-Offset"), str(len(BODY)))

    def test_ranges(self) -> None:
        """One range is 206 with its bytes and Content-Range; the three forms work."""
        for value, start, end in (
            ("bytes=100-199", 100, 199), ("bytes=10000-", 10000, len(BODY) - 1),
            ("bytes=-40", len(BODY) - 40, len(BODY) - 1),
        ):
            with self.subTest(value=value):
                response, content = self.request("GET", "/d/f.bin", Range=value)
                self.assertEqual(response.code, 206)
                self.assertEqual(content, BODY[start : end + 1])
                self.assertEqual(
                    self.header(response, "Content-Range"), f"bytes {start}-{end}/{len(BODY)}"
                )

    def test_unsatisfiable(self) -> None:
        """A range past the end is 416 with Content-Range: bytes */size and no body."""
        response, content = self.request("GET", "/d/f.bin", Range="bytes=20000-")
        self.assertEqual(response.code, 416)
        self.assertEqual(self.header(response, "Content-Range"), f"bytes */{len(BODY)}")
        self.assertEqual(content, b"")

    def test_multipleRangesWholeFile(self) -> None:
        """Several ranges are answered with the whole file (200)."""
        response, content = self.request("GET", "/d/f.bin", Range="bytes=0-1,5-6")
        self.assertEqual((response.code, content), (200, BODY))

    def test_notModified(self) -> None:
        """If-None-Match with the ETag, or If-Modified-Since the time, is 304 without a body."""
        response, _ = self.request("GET", "/d/f.bin")
        etag = self.header(response, "ETag")
        modified = self.header(response, "Last-Modified")
        assert etag is not None and modified is not None
        for headers in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
            with self.subTest(headers=headers):
                again, content = self.request("GET", "/d/f.bin", **headers)
                self.assertEqual((again.code, content), (304, b""))
                self.assertEqual(self.header(again, "ETag"), etag)

    def test_preconditionFailed(self) -> None:
        """If-Match with another tag is 412 with a one-line reason and the current ETag."""
        response, _ = self.request("GET", "/d/f.bin")
        etag = self.header(response, "ETag")
        failed, content = self.request("GET", "/d/f.bin", If_Match='"other"')
        self.assertEqual(failed.code, 412)
        self.assertEqual(content.count(b"\n"), 1)
        self.assertEqual(self.header(failed, "ETag"), etag)
        assert etag is not None
        ok, content = self.request("GET", "/d/f.bin", If_Match=etag, Range="bytes=0-0")
        self.assertEqual((ok.code, content), (206, BODY[:1]))

    def test_replacedChangesETag(self) -> None:
        """A replaced file has another ETag: the old one no longer matches, nor does If-Range."""
        response, _ = self.request("GET", "/d/f.bin")
        etag = self.header(response, "ETag")
        assert etag is not None
        self.assertEqual(self.request("PUT", "/d/f.bin", b"new content")[0].code, 200)
        again, content = self.request("GET", "/d/f.bin", If_None_Match=etag)
        self.assertEqual((again.code, content), (200, b"new content"))
        self.assertNotEqual(self.header(again, "ETag"), etag)
        ranged, content = self.request("GET", "/d/f.bin", Range="bytes=0-2", If_Range=etag)
        self.assertEqual((ranged.code, content), (200, b"new content"))

    def test_repeatedListFields(self) -> None:
        """
        If-Match and If-None-Match sent on several lines are one list each
        (RFC 9110 section 5.3): a tag on any line counts.
        """
        response, _ = self.request("GET", "/d/f.bin")
        etag = self.header(response, "ETag")
        assert etag is not None
        again, content = self.request("GET", "/d/f.bin", If_None_Match=['"other"', etag])
        self.assertEqual((again.code, content), (304, b""))
        ok, content = self.request(
            "GET", "/d/f.bin", If_Match=['"other"', etag], Range="bytes=0-0"
        )
        self.assertEqual((ok.code, content), (206, BODY[:1]))
        failed, _ = self.request("GET", "/d/f.bin", If_Match=['"other"', '"more"'])
        self.assertEqual(failed.code, 412)

    def test_repeatedRangeOrIfRange(self) -> None:
        """Range or If-Range on several lines is ambiguous: the whole file (200)."""
        response, _ = self.request("GET", "/d/f.bin")
        etag = self.header(response, "ETag")
        assert etag is not None
        for headers in (
            {"Range": ["bytes=0-1", "bytes=5-6"]},
            {"Range": "bytes=0-1", "If_Range": [etag, etag]},
        ):
            with self.subTest(headers=headers):
                again, content = self.request("GET", "/d/f.bin", **headers)  # type: ignore[arg-type]
                self.assertEqual((again.code, content), (200, BODY))

    def test_head(self) -> None:
        """HEAD of a complete file carries GET's headers, the upload headers, and no body."""
        response, content = self.request("HEAD", "/d/f.bin", Range="bytes=0-1")
        self.assertEqual((response.code, content), (200, b""))
        self.assertEqual(self.header(response, "Content-Length"), str(len(BODY)))
        self.assertEqual(self.header(response, "Upload-Complete"), "?1")
        self.assertEqual(self.header(response, "Upload-Offset"), str(len(BODY)))
        self.assertIsNotNone(self.header(response, "ETag"))
        self.assertEqual(self.header(response, "Accept-Ranges"), "bytes")

    def test_incompleteNotServed(self) -> None:
        """An incomplete upload is never served: GET 404; HEAD still tells its offset."""
        r, _ = self.request("PUT", "/part", BODY[:100], Content_Range="bytes 0-99/1000")
        self.assertEqual(r.code, 204)
        response, content = self.request("GET", "/part")
        self.assertEqual(response.code, 404)
        self.assertEqual(content, b"no file at this path\n")
        head, _ = self.request("HEAD", "/part")
        self.assertEqual(head.code, 204)
        self.assertEqual(self.header(head, "Upload-Offset"), "100")
        self.assertIsNone(self.header(head, "ETag"))

    def test_replacementInProgress(self) -> None:
        """While a replacement is incomplete, GET serves the complete file, HEAD the upload."""
        self.request("PUT", "/d/f.bin", b"xx", Content_Range="bytes 0-1/10")
        response, content = self.request("GET", "/d/f.bin")
        self.assertEqual((response.code, content), (200, BODY))
        head, _ = self.request("HEAD", "/d/f.bin")
        self.assertEqual((head.code, self.header(head, "Upload-Offset")), (204, "2"))

    def test_nothingThere(self) -> None:
        """GET of nothing is 404; of a folder 409; through a link 403."""
        self.assertEqual(self.request("GET", "/nothing")[0].code, 404)
        self.assertEqual(self.request("GET", "/d")[0].code, 409)
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        with open(os.path.join(outside, "secret"), "wb") as f:
            f.write(b"secret")
        os.symlink(outside, os.path.join(self.root, "out"))
        os.symlink(os.path.join(outside, "secret"), os.path.join(self.root, "s"))
        response, content = self.request("GET", "/out/secret")
        self.assertEqual(response.code, 403)
        self.assertNotIn(b"secret\n", content.replace(b"symbolic", b""))
        self.assertEqual(self.request("GET", "/s")[0].code, 409)

    def test_emptyFile(self) -> None:
        """An empty file is 200 with Content-Length 0, a range of it too."""
        self.request("PUT", "/empty", b"")
        for headers in ({}, {"Range": "bytes=-5"}):
            response, content = self.request("GET", "/empty", **headers)
            self.assertEqual((response.code, content), (200, b""))
            self.assertEqual(response.length, 0)

    def test_downloadsOff(self) -> None:
        """With downloads off GET is 405 with Allow; HEAD is today's status answer."""
        self.build(Config())
        response, content = self.request("GET", "/d/f.bin")
        self.assertEqual(response.code, 405)
        # OPTIONS: the resumable-upload draft (on by default) answers it.
        self.assertEqual(self.header(response, "Allow"), "PUT, POST, HEAD, DELETE, OPTIONS")
        self.assertEqual(content, b"use PUT, POST, HEAD, DELETE or OPTIONS\n")
        head, _ = self.request("HEAD", "/d/f.bin")
        self.assertEqual((head.code, self.header(head, "Cache-Control")), (200, "no-store"))
        self.assertIsNone(self.header(head, "ETag"))

    def test_allowWithDownloads(self) -> None:
        """With downloads on, 405s list GET among the allowed methods."""
        response, _ = self.request("PATCH", "/d/f.bin")
        self.assertEqual(response.code, 405)
        self.assertEqual(
            self.header(response, "Allow"), "GET, PUT, POST, HEAD, DELETE, OPTIONS"
        )


def get(path: bytes, *extra: bytes) -> bytes:
    return b"\r\n".join([b"GET " + path + b" HTTP/1.1", b"Host: example", *extra]) + b"\r\n\r\n"


class ProducerTests(SynchronousTestCase):
    """
    The body streams one chunk at a time from the disk pool, and no read is
    asked for while the transport says its buffer is full.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        store = FileStore(self.root, fsync=False)
        self.addCleanup(store.close)
        self.data = os.urandom(CHUNK_SIZE * 4 + 123)
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, "big"), "wb") as f:
            f.write(self.data)
        self.runner = ManualRunner()
        app = UploadApp(store, self.runner, Config(allowDownload=True), clock=Clock())
        site = StreamingSite(app.resource(), timeout=60, reactor=Clock())
        self.channel: Any = site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def body(self) -> bytes:
        return self.transport.value().split(b"\r\n\r\n", 1)[1]

    def test_pausedStopsReads(self) -> None:
        """While the transport is full no chunk is read; resuming reads on; the bytes are exact."""
        self.channel.dataReceived(get(b"/big"))
        self.runner.complete()  # open
        self.runner.complete()  # the first chunk
        self.assertEqual(len(self.body()), CHUNK_SIZE)
        self.assertEqual(len(self.runner.pending), 1)  # the next read, asked at once
        self.channel.pauseProducing()  # the send buffer is full
        self.runner.complete()  # the read in flight lands...
        self.assertEqual(self.runner.pending, [])  # ...and nothing more is asked
        self.assertEqual(len(self.body()), 2 * CHUNK_SIZE)
        self.channel.resumeProducing()
        self.assertEqual(len(self.runner.pending), 1)
        self.runner.completeAll()
        self.assertEqual(self.body(), self.data)
        self.assertIn(b"Content-Length: %d" % len(self.data), self.transport.value())

    def test_clientGone(self) -> None:
        """A client that goes away stops the reads, and the file is closed."""
        self.channel.dataReceived(get(b"/big", b"Range: bytes=10-"))
        self.runner.complete()  # open
        self.runner.complete()  # first chunk
        self.assertIn(b"206 Partial Content", self.transport.value())
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.channel.connectionLost(Failure(ConnectionLost()))
        # The read in flight lands, then the close: no other read.
        names = []
        while self.runner.pending:
            names.append(getattr(self.runner.pending[0][0], "__name__", ""))
            self.runner.complete()
        self.assertEqual(names, ["read", "close"])

    def test_clientGoneWhileOpening(self) -> None:
        """
        A client that leaves while its file is being opened gets nothing
        more: the file is closed and no error is logged.
        """
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.channel.dataReceived(get(b"/big"))
        self.assertEqual(len(self.runner.pending), 1)  # the open, in the pool
        self.transport.producer.stopProducing()  # as a real transport does first
        self.channel.connectionLost(Failure(ConnectionLost()))
        names = []
        while self.runner.pending:
            names.append(getattr(self.runner.pending[0][0], "__name__", ""))
            self.runner.complete()
        self.assertEqual(names, ["openComplete", "close"])
        self.assertEqual(self.flushLoggedErrors(), [])


class LostDownloadTests(SynchronousTestCase):
    """
    A download whose client goes away before the last byte is logged and
    counted as lost, not as a 200 with part of the body.
    """

    def setUp(self) -> None:
        from uploadsvc.ops.metrics import Metrics
        from uploadsvc.web.observed import ObservedSite
        from tests.test_logs import Captured

        self.root = os.path.abspath(self.mktemp())
        store = FileStore(self.root, fsync=False)
        self.addCleanup(store.close)
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, "big"), "wb") as f:
            f.write(os.urandom(CHUNK_SIZE * 3))
        self.runner = ManualRunner()
        clock = Clock()
        app = UploadApp(store, self.runner, Config(allowDownload=True), clock=clock)
        self.metrics = Metrics()
        site = ObservedSite(app.resource(), reactor=clock, metrics=self.metrics)
        self.log = Captured(self)
        self.channel: Any = site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def loseConnection(self) -> None:
        """
        What a real transport does when its peer resets: stop its producer,
        then tell the protocol.
        """
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.transport.producer.stopProducing()
        self.channel.connectionLost(Failure(ConnectionLost()))

    def test_lostMidBody(self) -> None:
        """A client gone after the first chunk: one access line, status lost; the file closed."""
        from prometheus_client import generate_latest
        from tests.test_metrics import samples

        self.channel.dataReceived(get(b"/big"))
        self.runner.complete(2)  # open, first chunk
        self.assertEqual(len(self.runner.pending), 1)  # the second read
        self.loseConnection()
        names = []
        while self.runner.pending:
            names.append(getattr(self.runner.pending[0][0], "__name__", ""))
            self.runner.complete()
        self.assertEqual(names, ["read", "close"])
        [access] = self.log.records("access")
        self.assertEqual((access["method"], access["status"]), ("GET", "lost"))
        self.assertEqual(access["responseBytes"], CHUNK_SIZE)
        self.assertEqual(
            self.accessText(),
            f'"GET /big" lost: the client went away during the answer '
            f'({CHUNK_SIZE} of {3 * CHUNK_SIZE} body bytes sent) rid={access["requestId"]}',
        )
        counts = samples(generate_latest(self.metrics.registry).decode())
        self.assertEqual(
            counts[("uploadsvc_requests_total", (("method", "GET"), ("status", "lost")))], 1
        )
        self.assertNotIn(
            ("uploadsvc_requests_total", (("method", "GET"), ("status", "200"))), counts
        )
        self.assertEqual(self.flushLoggedErrors(), [])

    def accessText(self) -> str:
        """
        The text of the one access line logged.
        """
        from twisted.logger import formatEvent

        [event] = [e for e in self.log.events if e.get("log_namespace") == "uploadsvc.access"]
        return formatEvent(event)

    def test_lostBeforeBody(self) -> None:
        """A client gone before the answer began: the access line says so, with 0 body bytes sent (no upload bytes to count)."""
        self.channel.dataReceived(get(b"/big"))
        self.runner.complete(1)  # open; the first read is pending
        self.loseConnection()
        self.runner.completeAll()
        [access] = self.log.records("access")
        self.assertEqual(
            self.accessText(),
            f'"GET /big" lost: the client went away before the answer '
            f'(0 of {3 * CHUNK_SIZE} body bytes sent) rid={access["requestId"]}',
        )
        self.assertEqual(access["responseBytes"], 0)

    def test_fileShrank(self) -> None:
        """
        A file cut shorter while it is served drops the connection (the
        promised length cannot be kept), closes the file, and the request
        is logged in one error line that says why and what was sent, not
        as a client gone away.
        """
        self.channel.dataReceived(get(b"/big"))
        self.runner.complete(2)  # open, first chunk
        os.truncate(os.path.join(self.root, "big"), CHUNK_SIZE)
        self.runner.complete()  # the second read finds nothing
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(
            [getattr(f, "__name__", "") for f, _, _ in self.runner.pending], ["close"]
        )
        self.runner.completeAll()
        self.loseConnection()
        [access] = self.log.records("access")
        self.assertEqual(access["status"], "lost")
        self.assertEqual(access["cutShort"], "the file shrank while it was read")
        self.assertEqual(
            self.accessText(),
            f'"GET /big" cut short: the file shrank while it was read '
            f'({CHUNK_SIZE} of {3 * CHUNK_SIZE} body bytes sent) rid={access["requestId"]}',
        )
        [event] = [e for e in self.log.events if e.get("log_namespace") == "uploadsvc.access"]
        self.assertEqual(event["log_level"].name, "error")
        mentions = [
            e for e in self.log.events
            if "shrank" in str(e.get("log_format")) or "went away" in str(e.get("line"))
        ]
        self.assertEqual(mentions, [])
        self.assertEqual(self.flushLoggedErrors(), [])


class IfRangeDateTests(SynchronousTestCase):
    """
    An If-Range date is trusted only when the file was last modified at
    least a second before the answer's Date (RFC 9110 sections 8.8.2.2 and
    13.1.5), on the clock of the site.
    """

    def setUp(self) -> None:
        from twisted.web.http import datetimeToString

        self.root = os.path.abspath(self.mktemp())
        store = FileStore(self.root, fsync=False)
        self.addCleanup(store.close)
        os.makedirs(self.root, exist_ok=True)
        self.path = os.path.join(self.root, "f")
        with open(self.path, "wb") as f:
            f.write(BODY)
        self.modified = 1_700_000_000
        os.utime(self.path, (self.modified, self.modified))
        self.stamp = datetimeToString(self.modified)
        self.clock = Clock()
        app = UploadApp(store, ImmediateRunner(), Config(allowDownload=True), clock=self.clock)
        self.site = StreamingSite(app.resource(), timeout=60, reactor=self.clock)

    def answer(self, *headers: bytes) -> bytes:
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(get(b"/f", *headers))
        return transport.value()

    def test_dateTrustedAfterASecond(self) -> None:
        """A second or more after Last-Modified, an If-Range date equal to it keeps the range."""
        for later in (1, 3600):
            with self.subTest(later=later):
                self.clock.advance(self.modified + later - self.clock.seconds())
                answer = self.answer(b"Range: bytes=0-1", b"If-Range: " + self.stamp)
                self.assertIn(b"206 Partial Content", answer)
                self.assertTrue(answer.endswith(b"\r\n\r\n" + BODY[:2]))

    def test_dateNotTrustedWithinItsSecond(self) -> None:
        """
        Within the second of Last-Modified (or before it: a clock step) the
        file may have been replaced in that second: the whole file, 200.
        """
        for now in (self.modified - 5, self.modified, self.modified + 0.999):
            with self.subTest(now=now):
                self.clock.advance(now - self.clock.seconds())
                answer = self.answer(b"Range: bytes=0-1", b"If-Range: " + self.stamp)
                self.assertIn(b"200 OK", answer)
                self.assertTrue(answer.endswith(b"\r\n\r\n" + BODY))

    def test_dateHeaderIsTheDecisionsTime(self) -> None:
        """The answer's Date is the time the If-Range decision was made at."""
        from twisted.web.http import datetimeToString

        self.clock.advance(self.modified + 1)
        answer = self.answer(b"Range: bytes=0-1", b"If-Range: " + self.stamp)
        self.assertIn(b"\r\nDate: " + datetimeToString(self.modified + 1) + b"\r\n", answer)
