"""
Tests for the access and lifecycle log lines (L{uploadsvc.ops.logs},
L{uploadsvc.web.observed}): their JSON fields, no secret in them, the
request id sent back, lost requests, and connections counted.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from prometheus_client import generate_latest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import (
    Logger,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.ops.events import Events, UploadEvent
from uploadsvc.ops.logs import (
    RECORD,
    ClassicText,
    escapeText,
    jsonFileObserver,
    jsonLine,
    logAccess,
    logEvent,
    textFileObserver,
)
from uploadsvc.ops.metrics import Metrics
from uploadsvc.storage.filestore import FileStore
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp
from uploadsvc.web.auth import Authenticator, SecretFile
from uploadsvc.web.observed import ObservedSite
from tests.test_metrics import samples


class Captured:
    """
    The log events published while a test runs.
    """

    def __init__(self, testCase: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)  # type: ignore[arg-type]
        testCase.addCleanup(globalLogPublisher.removeObserver, self.events.append)  # type: ignore[arg-type]

    def records(self, kind: str) -> list[dict[str, Any]]:
        """
        The JSON lines of the events of C{kind} (access, event), parsed.
        """
        return [
            json.loads(jsonLine(e) or "")
            for e in self.events
            if isinstance(e.get(RECORD), dict) and e[RECORD]["type"] == kind
        ]


class AccessLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        root = os.path.abspath(self.mktemp())
        self.store = FileStore(root, fsync=False)
        self.addCleanup(self.store.close)
        tokens = os.path.abspath(self.mktemp())
        with open(tokens, "w") as f:
            f.write("s3cret-0123456789abcdef\n")
        self.clock = Clock()
        self.clock.advance(1000)
        events = Events()
        events.subscribe(logEvent)
        self.metrics = Metrics()
        auth = Authenticator(self.clock, SecretFile(tokens, self.clock))
        app = UploadApp(
            self.store, ImmediateRunner(), Config(), auth=auth, clock=self.clock, events=events
        )
        self.site = ObservedSite(app.resource(), reactor=self.clock, metrics=self.metrics)
        self.log = Captured(self)

    def connect(self) -> tuple[Any, StringTransport]:
        channel = self.site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4444))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 4444))
        channel.makeConnection(transport)
        return channel, transport

    def metricValues(self) -> dict[Any, float]:
        return samples(generate_latest(self.metrics.registry).decode())

    def test_jsonFieldsNoSecrets(self) -> None:
        """
        A completed upload's access line has its id (the one sent back as
        X-Request-Id), method, path without the query, status, bytes,
        offsets, duration and client; the bearer token and the query's
        signature appear in no log line.
        """
        channel, transport = self.connect()
        channel.dataReceived(
            b"PUT /a/b.bin?sig=SIGSECRET&expires=9 HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer s3cret-0123456789abcdef\r\nContent-Length: 5\r\n\r\n"
        )
        self.clock.advance(2)
        channel.dataReceived(b"hello")
        answer = transport.value()
        self.assertIn(b"201 Created", answer)
        [access] = self.log.records("access")
        self.assertIn(f"X-Request-Id: {access['requestId']}\r\n".encode(), answer)
        self.assertEqual(len(access["requestId"]), 16)
        self.assertEqual(
            {k: v for k, v in access.items() if k not in ("time", "requestId", "responseBytes")},
            {
                "type": "access", "method": "PUT", "path": "/a/b.bin", "uploadId": None,
                "protocol": "put",
                "status": 201, "bytes": 5, "offsetBefore": 0, "offsetAfter": 5,
                "duration": 2.0, "client": "192.0.2.7", "credential": None,
            },
        )
        self.assertEqual(
            [(e["event"], e["requestId"], e["path"]) for e in self.log.records("event")],
            [("created", access["requestId"], "a/b.bin"),
             ("completed", access["requestId"], "a/b.bin")],
        )
        everything = "".join(jsonLine(e) or "" for e in self.log.events)
        everything += "".join(str(e) for e in self.log.events)
        self.assertNotIn("s3cret", everything)
        self.assertNotIn("SIGSECRET", everything)
        values = self.metricValues()
        self.assertEqual(
            values[("uploadsvc_requests_total", (("method", "PUT"), ("status", "201")))], 1
        )
        self.assertEqual(values[("uploadsvc_upload_bytes_total", ())], 5)

    def test_refusedRequestLogged(self) -> None:
        """A refused request (401) gets its access line and its id too."""
        channel, transport = self.connect()
        channel.dataReceived(b"HEAD /x.bin?token=QSECRET HTTP/1.1\r\nHost: x\r\n\r\n")
        [access] = self.log.records("access")
        self.assertEqual((access["status"], access["path"], access["bytes"]), (401, "/x.bin", 0))
        self.assertIn(f"X-Request-Id: {access['requestId']}".encode(), transport.value())
        self.assertNotIn("QSECRET", "".join(jsonLine(e) or "" for e in self.log.events))

    def test_textLine(self) -> None:
        """The text access line is the combined log line, query redacted, with the request id."""
        channel, _ = self.connect()
        channel.dataReceived(b"HEAD /x.bin?sig=SIGSECRET HTTP/1.1\r\nHost: x\r\n\r\n")
        [event] = [e for e in self.log.events if e.get("log_namespace") == "uploadsvc.access"]
        line = event["line"]
        self.assertIn('"HEAD /x.bin?sig=REDACTED HTTP/1.1" 401', line)
        self.assertTrue(line.endswith(f" rid={event[RECORD]['requestId']}"), line)

    def test_lostRequest(self) -> None:
        """
        A request whose client goes away mid-body is logged once as lost,
        with the bytes it wrote, and counted with status lost.
        """
        channel, _ = self.connect()
        channel.dataReceived(
            b"PUT /l.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-0123456789abcdef\r\n"
            b"Content-Range: bytes 0-9/10\r\nContent-Length: 10\r\n\r\nabcd"
        )
        self.assertEqual(self.log.records("access"), [])
        channel.connectionLost(Failure(ConnectionError("gone")))
        [access] = self.log.records("access")
        self.assertEqual(
            (access["status"], access["bytes"], access["offsetBefore"], access["offsetAfter"]),
            ("lost", 4, 0, 4),
        )
        [event] = [e for e in self.log.events if e.get("log_namespace") == "uploadsvc.access"]
        self.assertEqual(
            formatEvent(event),
            f'"PUT /l.bin" lost: the client went away before the answer (4 bytes written) '
            f'rid={access["requestId"]}',
        )
        self.assertEqual(event["log_level"].name, "info")
        self.assertNotIn("cutShort", access)
        self.assertEqual(
            self.metricValues()[("uploadsvc_requests_total", (("method", "PUT"), ("status", "lost")))],
            1,
        )

    def test_connectionsCounted(self) -> None:
        """Open connections are counted up when accepted and down when closed."""
        gauge = lambda: self.metricValues()[("uploadsvc_connections_open", ())]  # noqa: E731
        first, _ = self.connect()
        second, _ = self.connect()
        self.assertEqual(gauge(), 2)
        first.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(gauge(), 1)
        second.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(gauge(), 0)


class JsonLineTests(SynchronousTestCase):
    def test_lifecycleEvent(self) -> None:
        """A lifecycle event's line has its kind and every field of the event."""
        log = Captured(self)
        logEvent(UploadEvent(
            "hook-failed", "p-k", path="a", offset=3, total=9, requestId="r1",
            credential="phones", detail={"hook": "post-finish", "error": "timeout"},
        ))
        [record] = log.records("event")
        self.assertEqual(record.pop("time")[-1], "Z")
        self.assertEqual(record, {
            "type": "event", "event": "hook-failed", "key": "p-k", "path": "a", "uploadId": None,
            "protocol": None, "offset": 3, "total": 9, "requestId": "r1",
            "credential": "phones", "detail": {"hook": "post-finish", "error": "timeout"},
        })

    def test_otherEvents(self) -> None:
        """Any other log event becomes a line with its level, namespace, message and traceback."""
        log = Captured(self)
        logger = Logger(namespace="somewhere")
        logger.warn("disk {name} slow", name="sda")
        try:
            1 / 0
        except ZeroDivisionError:
            logger.failure("it broke")
        self.flushLoggedErrors(ZeroDivisionError)
        warn, failure = [json.loads(jsonLine(e) or "") for e in log.events[-2:]]
        self.assertEqual(
            (warn["type"], warn["level"], warn["namespace"], warn["message"]),
            ("log", "warn", "somewhere", "disk sda slow"),
        )
        self.assertIn("ZeroDivisionError", failure["traceback"])
        self.assertEqual(failure["message"], "it broke")

    def test_fileObserver(self) -> None:
        """The JSON observer writes one parseable line per event to twistd's --logfile."""
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        path = os.path.abspath(self.mktemp())
        observer = jsonFileObserver({"logfile": path, "nodaemon": False})
        Logger(namespace="t", observer=observer).info("one {x}", x=1)
        Logger(namespace="t", observer=observer).info("two")
        with open(path) as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual([line["message"] for line in lines], ["one 1", "two"])


class ClassicTextTests(SynchronousTestCase):
    """
    L{ClassicText} writes exactly the line twistd's own text observer would
    (L{formatEventAsClassicLogText}, default time format) for every event:
    the access and lifecycle lines it makes cheaply, and all others.
    """

    def events(self) -> list[dict[str, Any]]:
        log = Captured(self)
        logEvent(UploadEvent(kind="created", key="k", path="a/b.bin", offset=3, total=9,
                             requestId="r1", detail={"hook": "x"}))
        logEvent(UploadEvent(kind="expired", key="k", uploadId=HOSTILE))
        logAccess('"127.0.0.1" - - "PUT /a HTTP/1.1" 201 0', {"status": 201})
        logAccess("cut", {"status": 200}, LogLevel.warn)
        logger = Logger(namespace="elsewhere")
        logger.info("plain {x}", x=HOSTILE)
        logger.info("{line}", line="claims a line", log_system="sys-given")
        logger.info("{line}", line=5)
        logger.info("{line}", line="two\nlines")
        try:
            1 / 0
        except ZeroDivisionError:
            logger.failure("{line}", line="it broke")
        self.flushLoggedErrors(ZeroDivisionError)
        events = list(log.events)
        self.assertEqual(len(events), 9)
        return events

    def test_sameAsTwisted(self) -> None:
        """Every event's line is twistd's, character for character."""
        events = self.events()
        # Two seconds apart, then back: the cached time text follows.
        for when in (1.25, 1.75, 3.5, 1.0, None):
            make = ClassicText()
            for event in events:
                if when is not None:
                    event = {**event, "log_time": when}
                self.assertEqual(make(event), formatEventAsClassicLogText(event), event)

    def test_secondsEdges(self) -> None:
        """
        A time that rounds up to the next second, and one before 1970, have
        twistd's time text too; an empty message is no line, as twistd's.
        """
        for when in (1796176799.9999995, 1796176799.9999999, 1796176799.999999, -1.5, -0.25):
            make = ClassicText()
            make({"log_format": "{line}", "line": "x", "log_time": float(int(when))})
            event = {"log_format": "{line}", "line": "x", "log_time": when,
                     "log_level": LogLevel.info, "log_namespace": "n"}
            self.assertEqual(make(event), formatEventAsClassicLogText(event), when)
        empty = {"log_format": "{line}", "line": "", "log_time": 5.0, "log_level": LogLevel.info}
        self.assertIsNone(formatEventAsClassicLogText(empty))
        self.assertIsNone(ClassicText()(empty))

    def test_noLevel(self) -> None:
        """An event without a level says C{-} in its system, as twistd does."""
        event = {"log_format": "{line}", "line": "x", "log_time": 5.0, "log_namespace": "n"}
        self.assertEqual(ClassicText()(event), formatEventAsClassicLogText(event))
        self.assertIn("[n#-] x", ClassicText()(event) or "")

    def test_timeFormattedOncePerSecond(self) -> None:
        """The time text is made once for all the events of one second."""
        made: list[float | None] = []

        def stamp(when: float | None) -> str:
            made.append(when)
            return "T"

        make = ClassicText(stamp)
        for when in (7.1, 7.2, 7.9, 8.0, 8.5):
            make({"log_format": "{line}", "line": "x", "log_time": when, "log_level": LogLevel.info})
        self.assertEqual(made, [7.0, 8.0])

    def test_fileObserver(self) -> None:
        """The text observer writes twistd's lines to twistd's --logfile."""
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        path = os.path.abspath(self.mktemp())
        observer = textFileObserver({"logfile": path, "nodaemon": False})
        events = self.events()
        for event in events:
            observer(event)
        with open(path, newline="") as f:
            self.assertEqual(f.read(), "".join(formatEventAsClassicLogText(e) or "" for e in events))


#: Characters that end a line for str.splitlines(), C1 controls, and the
#: bidi controls that make a terminal show a line other than it is.
HOSTILE = "a\u2028b\u2029c\x85d\u202ee\u2066f\x1cg\x0bh\x0ci\rj\nk\u200fl\x00m\x9bn.bin"


def assertOneSafeLine(testCase: SynchronousTestCase, text: str) -> None:
    """
    C{text} (a trailing newline aside) is one line for splitlines() and holds
    no line break, C0/C1 control or bidi control.
    """
    testCase.assertEqual(len(text.splitlines()), 1, repr(text))
    for c in "\u2028\u2029\x85\u202e\u2066\u200f\x1c\x0b\x0c\r\n\x00\x9b":
        testCase.assertNotIn(c, text.rstrip("\n"))


class OneLineTests(SynchronousTestCase):
    """
    Whatever a path or name holds, one log event is one line of text for any
    C{splitlines()}, and neither a line break nor a bidi control reaches the
    log raw; JSON lines still carry the exact text.
    """

    def assertOneSafeLine(self, text: str) -> None:
        assertOneSafeLine(self, text)

    def test_escapeText(self) -> None:
        """Unsafe characters are written as Python-style escapes, others as they are."""
        self.assertEqual(escapeText('x\u2028y\x85z\\"'), 'x\\u2028y\\x85z\\"')
        self.assertEqual(escapeText("caf\u00e9 \U0001f600 ok"), "caf\u00e9 \U0001f600 ok")
        self.assertEqual(escapeText("\U000e0041"), "\\U000e0041")  # a tag character
        self.assertEqual(escapeText("\udcff"), "\\udcff")  # a lone surrogate

    def test_eventText(self) -> None:
        """A lifecycle event's text line shows the path escaped, on one line."""
        log = Captured(self)
        logEvent(UploadEvent(
            "completed", "p-k", path=HOSTILE, offset=1, total=1, credential="x\u2028y",
        ))
        [event] = [e for e in log.events if e.get("log_namespace") == "uploadsvc.events"]
        text = formatEvent(event)
        self.assertOneSafeLine(text)
        self.assertIn("a\\u2028b\\u2029c\\x85d\\u202ee", text)

    def test_eventTextNamesTheUploadId(self) -> None:
        """
        The text line of a tus or draft upload's event (one named by a path
        and an id) gives the id too: an expired tus upload's line once
        named only its path.
        """
        log = Captured(self)
        logEvent(UploadEvent("expired", "i-ab12", path="in/x.bin", uploadId="ab12", offset=0, total=5))
        logEvent(UploadEvent("expired", "p-k", path="y.bin", offset=0, total=5))
        first, second = [
            formatEvent(e) for e in log.events if e.get("log_namespace") == "uploadsvc.events"
        ]
        self.assertEqual(
            first, "upload expired: in/x.bin offset 0 of 5 (request -, credential -, id ab12)"
        )
        self.assertEqual(second, "upload expired: y.bin offset 0 of 5 (request -, credential -)")

    def test_eventJSON(self) -> None:
        """A lifecycle event's JSON line is one line whose path reads back exactly."""
        log = Captured(self)
        logEvent(UploadEvent("completed", "p-k", path=HOSTILE, offset=1, total=1))
        [event] = [e for e in log.events if e.get("log_namespace") == "uploadsvc.events"]
        line = jsonLine(event) or ""
        self.assertOneSafeLine(line)
        self.assertEqual(json.loads(line)["path"], HOSTILE)

    def test_otherEventJSON(self) -> None:
        """Any other event's JSON line is one line too."""
        log = Captured(self)
        Logger(namespace="t").info("{what}", what=HOSTILE + "\U000e0041")
        line = jsonLine(log.events[-1]) or ""
        self.assertOneSafeLine(line)
        self.assertEqual(json.loads(line)["message"], HOSTILE + "\U000e0041")

    def test_surrogateJSON(self) -> None:
        """A lone surrogate (an undecodable byte) is a JSON escape, so the line encodes."""
        line = jsonLine({"log_level": None, "log_format": "{x}", "x": "a\udcffb"}) or ""
        line.encode("utf-8")
        self.assertEqual(json.loads(line)["message"], "a\udcffb")

    def test_accessText(self) -> None:
        """An access line's text is one line, its JSON path exact."""
        log = Captured(self)
        logAccess(f'"GET /{HOSTILE}" lost', {"path": "/" + HOSTILE})
        [event] = [e for e in log.events if e.get("log_namespace") == "uploadsvc.access"]
        self.assertOneSafeLine(formatEvent(event))
        line = jsonLine(event) or ""
        self.assertOneSafeLine(line)
        self.assertEqual(json.loads(line)["path"], "/" + HOSTILE)


class OneLineSiteTests(SynchronousTestCase):
    """
    An upload whose path holds line separators and bidi controls (sent
    percent-encoded; twisted.web refuses them raw) is logged one line per
    event, and so is a request whose Referer and User-Agent hold them raw.
    """

    setUp = AccessLogTests.setUp
    connect = AccessLogTests.connect

    def test_uploadLines(self) -> None:
        """Every text line of an upload to such a path is one safe line."""
        channel, transport = self.connect()
        channel.dataReceived(
            b"PUT /d/a%E2%80%A8b%E2%80%A9c%E2%80%AEd%E2%81%A6e%E2%80%8F.bin HTTP/1.1\r\n"
            b"Host: x\r\nAuthorization: Bearer s3cret-0123456789abcdef\r\n"
            b"Content-Length: 2\r\n\r\nab"
        )
        self.assertIn(b"201 Created", transport.value())
        texts = [
            formatEvent(e) for e in self.log.events
            if e.get("log_namespace") in ("uploadsvc.access", "uploadsvc.events")
        ]
        self.assertGreaterEqual(len(texts), 3)  # created, completed, the access line
        for text in texts:
            assertOneSafeLine(self, text)
        self.assertIn("d/a\\u2028b\\u2029c\\u202ed\\u2066e\\u200f.bin", " ".join(texts))

    def test_answeredLine(self) -> None:
        """An answered request's combined line is one safe line, whatever its headers hold."""
        channel, _ = self.connect()
        hostile = "x\u2028y\u202ez\x85".encode("utf-8") + b"\x85\x1c"
        channel.dataReceived(
            b"HEAD /x.bin HTTP/1.1\r\nHost: x\r\nUser-Agent: " + hostile
            + b"\r\nReferer: http://h/" + hostile + b"\r\n\r\n"
        )
        [event] = [e for e in self.log.events if e.get("log_namespace") == "uploadsvc.access"]
        assertOneSafeLine(self, formatEvent(event))
