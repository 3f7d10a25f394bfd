"""
Every private name of Twisted that uploadsvc touches, checked to exist on
Twisted's own classes (never on our subclasses, which could hide a rename).

twisted.web has no public hook for a request body that is still arriving
(twisted/twisted#4688), so the streaming glue uses some of its internals.
When a Twisted release renames or removes one, the test of its table fails
with a message that names the attribute, the Twisted object that lost it
and the place in uploadsvc that uses it, instead of a stray
C{AttributeError} somewhere in the streaming tests. L{ImportsListedTests}
keeps the tables honest: a new import of a private Twisted name that is not
listed here fails it.

Each row names its user (a file and what in it), for the message only; when
code that uses such a name moves or stops using it, change its rows here.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
from typing import Any, Iterable

import twisted
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.internet import tcp
from twisted.web import http, resource, server
from twisted.web.http import H2_ENABLED

#: Names imported from Twisted modules: (module, name, user). A private
#: module (C{twisted.web._http2}) or a private name makes a row.
IMPORTS = [
    ("twisted.web.http", "_GenericHTTPChannelProtocol", "uploadsvc/web/streaming/negotiate.py"),
    ("twisted.web._http2", "H2Connection", "uploadsvc/web/streaming/h2fixes.py (with h2)"),
    ("twisted.web._http2", "H2Stream", "uploadsvc/web/streaming/request.py (with h2: _onHTTP2)"),
    ("twisted.web.http", "_IdentityTransferDecoder",
     "uploadsvc/web/streaming/splice.py: startSplicing, BodySplicer (the body's count)"),
    # The test suite's own.
    ("twisted.web.http", "_ChunkedTransferDecoder", "tests/test_e2e_harness.py"),
]

_STREAMING = "uploadsvc/web/streaming"
_HTTP1 = f"{_STREAMING}/http1.py"
_HTTP2 = f"{_STREAMING}/http2.py"
_H2STREAM = f"{_STREAMING}/h2stream.py"
_H2GUARD = f"{_STREAMING}/h2guard.py"
_H2FIXES = f"{_STREAMING}/h2fixes.py"
_NEGOTIATE = f"{_STREAMING}/negotiate.py"
_REQUEST = f"{_STREAMING}/request.py"
_SPLICE = f"{_STREAMING}/splice.py"

#: Methods and class-level attributes: (class, name, user).
CLASS_ATTRIBUTES = [
    (http.HTTPChannel, "_send100Continue",
     f"{_HTTP1}: StreamingHTTPChannel holds it back until the body gate sends it"),
    (http.HTTPChannel, "_requestProducer", f"{_HTTP1}: StreamingHTTPChannel.resumeProducing"),
    (http.HTTPChannel, "_waitingForTransport", f"{_HTTP1}: StreamingHTTPChannel"),
    (http.Request, "_disconnected", f"{_REQUEST}: StreamingRequest.handleContentChunk"),
    (http.HTTPChannel, "_respondToBadRequestAndDisconnect",
     f"{_HTTP1}: StreamingHTTPChannel (a 400 with a reason, reading stopped)"),
    (http.HTTPChannel, "_buffer", f"{_HTTP1}: StreamingHTTPChannel (the unfinished header line counts); {_SPLICE}: startSplicing (bytes still to parse)"),
    (http._GenericHTTPChannelProtocol, "_negotiatedProtocol", f"{_NEGOTIATE}: _NegotiatingChannel"),
    (http._IdentityTransferDecoder, "contentLength",
     f"{_SPLICE}: BodySplicer (read as the bytes left, kept in step with what is spliced)"),
    (http.HTTPChannel, "rawDataReceived", f"{_SPLICE}: BodySplicer.doRead (an empty chunk ends the body)"),
    (tcp.Connection, "doRead", f"{_SPLICE}: BodySplicer.start, stop (replaced on the instance for one body)"),
    (tcp.Connection, "TLS", f"{_SPLICE}: startSplicing (a connection that started TLS is not spliced)"),
] + [
    (http._GenericHTTPChannelProtocol, name, f"{_NEGOTIATE}: _NegotiatingChannel._switchToHTTP2")
    for name in ["_factory", "_requestFactory", "_site", "_timeOut", "_callLater"]
]

#: Attributes a live HTTP/1.1 channel has once a request's headers are in:
#: (name, user).
CHANNEL_ATTRIBUTES = [
    ("_command", f"{_HTTP1}: StreamingHTTPChannel.allHeadersReceived"),
    ("_path", f"{_HTTP1}: StreamingHTTPChannel.allHeadersReceived"),
    ("_version", f"{_HTTP1}: StreamingHTTPChannel.allHeadersReceived, headerReceived"),
    ("_transferDecoder", f"{_HTTP1}: StreamingHTTPChannel.allContentReceived; {_SPLICE}: startSplicing"),
    ("_handlingRequest", f"{_HTTP1}: StreamingHTTPChannel.allContentReceived, resumeProducing"),
    ("_waitingForTransport", f"{_HTTP1}: StreamingHTTPChannel.resumeProducing"),
    ("_requestProducer", f"{_HTTP1}: StreamingHTTPChannel.resumeProducing"),
    ("_networkProducer", f"{_HTTP1}: the body pause; {_NEGOTIATE}: _NegotiatingChannel._switchToHTTP2"),
]

#: Attributes of Twisted's protocol switch as built for a connection.
NEGOTIATING_ATTRIBUTES = [
    ("_channel", f"{_NEGOTIATE}: _NegotiatingChannel"),
]

#: Methods and class attributes of Twisted's HTTP/2 connection that
#: StreamingH2Connection extends, calls or reads.
H2_CONNECTION_METHODS = [
    ("_terminate", _H2FIXES),
    ("_sendPrioritisedData", _H2FIXES),
    ("_handleWindowUpdate", _H2FIXES),
    ("_log", _H2GUARD),
    ("_handlePriorityUpdate", _H2GUARD),
    ("_tryToWriteControlData", f"{_H2GUARD}, {_HTTP2}, {_H2STREAM}: HTTP2BodyGate._sendInterim (104)"),
    ("_requestReceived", _HTTP2),
    ("_send100Continue", _HTTP2),
    ("_requestDataReceived", _HTTP2),
    ("_requestEnded", _HTTP2),
    ("_requestAborted", _HTTP2),
    ("_requestDone", f"{_HTTP2}; {_H2FIXES}: H2ConnectionFixes._blockClosedStreams"),
]

#: Attributes of a live HTTP/2 connection: (name, user).
H2_CONNECTION_ATTRIBUTES = [
    ("_outboundStreamQueues",
     f"{_H2FIXES}: H2ConnectionFixes._blockStarvedStreams, _blockClosedStreams; "
     f"{_H2STREAM}: HTTP2BodyGate.unsentBytes"),
    ("_sendingDeferred", f"{_H2FIXES}: H2ConnectionFixes._wakeSendLoop"),
    ("_reactor", f"{_H2FIXES}: H2ConnectionFixes._handleWindowUpdate (the send loop woken on the next turn)"),
    ("priority", f"{_H2FIXES}: H2ConnectionFixes (streams blocked for want of window, or closed by h2)"),
    ("_stillProducing", f"{_HTTP2}: StreamingH2Connection._requestDone, _bodyResumed; {_H2GUARD}; {_H2FIXES}"),
    ("streams", f"{_HTTP2}; {_H2GUARD}; {_H2STREAM}: HTTP2BodyGate"),
    ("conn", f"{_HTTP2}, {_H2GUARD}, {_H2FIXES}, {_H2STREAM}: HTTP2BodyGate._sendInterim (the h2 state machine)"),
]

#: Attributes of the h2 library's connection state machine (Twisted's
#: C{H2Connection.conn}) that the streaming glue reads or replaces to bound
#: header blocks and stop reading after GOAWAY: (name, user).
H2_STATE_ATTRIBUTES = [
    ("incoming_buffer", f"{_H2FIXES}: H2ConnectionFixes._stopReading (dropped after GOAWAY)"),
    ("decoder", f"{_H2GUARD}: GuardedH2Connection (decoded header list capped)"),
    ("local_settings", f"{_H2GUARD}: GuardedH2Connection (limits in the first SETTINGS)"),
    ("max_inbound_frame_size", f"{_H2FIXES}: H2ConnectionFixes._stopReading"),
]

#: Attributes of a live HTTP/2 stream whose headers are in: (name, user).
H2_STREAM_ATTRIBUTES = [
    ("producing", f"{_H2GUARD}: GuardedH2Connection._dataFrameAllowed (frames held for a paused stream)"),
    ("_request", f"{_HTTP2}: StreamingH2Connection._requestReceived"),
    ("_inboundDataBuffer", f"{_HTTP2}: StreamingH2Connection._requestDone; {_H2GUARD}: _dataFrameAllowed"),
    ("_send100Continue", f"{_H2STREAM}: HTTP2BodyGate._send100Continue"),
    ("command", f"{_H2STREAM}: HTTP2BodyGate"),
    ("path", f"{_H2STREAM}: HTTP2BodyGate"),
    ("streamID", f"{_H2STREAM}: HTTP2BodyGate"),
]

def _where(owner: Any) -> str:
    if isinstance(owner, type):
        return f"{owner.__module__}.{owner.__qualname__}"
    return f"a {type(owner).__module__}.{type(owner).__qualname__}"


def missing(owner: Any, rows: Iterable[tuple[str, str]]) -> list[str]:
    """
    One line for each name of C{rows} that C{owner} lacks, naming it, the
    owner and the user.
    """
    return [
        f"{_where(owner)} has no {name!r} in Twisted {twisted.__version__} "
        f"(used by {user})"
        for name, user in rows
        if not hasattr(owner, name)
    ]


def assertNoneMissing(testCase: SynchronousTestCase, problems: list[str]) -> None:
    """
    Fail C{testCase} with every line of C{problems}, if there are any.
    """
    if problems:
        testCase.fail(
            "Twisted internals that uploadsvc relies on are gone:\n  " + "\n  ".join(problems)
        )


class _Nothing(resource.Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        return b""


class InternalsTests(SynchronousTestCase):
    """
    Each private Twisted name that uploadsvc uses exists.
    """

    def test_imports(self) -> None:
        """Every private module and name imported from Twisted can be imported."""
        problems = []
        for module, name, user in IMPORTS:
            if module == "twisted.web._http2" and not H2_ENABLED:
                continue
            try:
                imported = importlib.import_module(module)
            except ImportError as e:
                problems.append(f"{module} cannot be imported ({e}; used by {user})")
                continue
            if not hasattr(imported, name):
                problems.append(
                    f"{module} has no {name!r} in Twisted {twisted.__version__} (used by {user})"
                )
        assertNoneMissing(self, problems)

    def test_classAttributes(self) -> None:
        """Every private method and class attribute used exists on Twisted's class."""
        problems: list[str] = []
        for owner, name, user in CLASS_ATTRIBUTES:
            problems += missing(owner, [(name, user)])
        assertNoneMissing(self, problems)

    def test_httpChannel(self) -> None:
        """An HTTPChannel has the parser state that the streaming channel reads when a request's headers are in."""
        seen: dict[str, bool] = {}

        class Probe(http.HTTPChannel):
            def allHeadersReceived(self) -> None:
                for name, _ in CHANNEL_ATTRIBUTES:
                    seen[name] = hasattr(self, name)
                super().allHeadersReceived()

        channel = Probe()
        channel.requestFactory = http.Request  # type: ignore[assignment]
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
        self.assertEqual(set(seen), {n for n, _ in CHANNEL_ATTRIBUTES}, "headers never came in")
        assertNoneMissing(
            self,
            [
                f"twisted.web.http.HTTPChannel has no {name!r} when a request's headers "
                f"are in, in Twisted {twisted.__version__} (used by {user})"
                for name, user in CHANNEL_ATTRIBUTES
                if not seen[name]
            ],
        )
        channel.connectionLost(None)  # type: ignore[arg-type]

    def test_negotiatingChannel(self) -> None:
        """Twisted's protocol switch keeps the HTTP/1.1 channel where the streaming switch looks for it."""
        site = server.Site(_Nothing())
        switch = site.buildProtocol(None)
        self.assertIsInstance(switch, http._GenericHTTPChannelProtocol)
        assertNoneMissing(self, missing(switch, NEGOTIATING_ATTRIBUTES))


class HTTP2InternalsTests(SynchronousTestCase):
    """
    Each private name of Twisted's HTTP/2 code that uploadsvc uses exists.
    """

    skip = None if H2_ENABLED else "the h2 package is not installed"

    def test_connectionMethods(self) -> None:
        """H2Connection has every method that StreamingH2Connection extends or calls."""
        from twisted.web._http2 import H2Connection

        assertNoneMissing(
            self, missing(H2Connection, H2_CONNECTION_METHODS)
        )

    def test_liveConnectionAndStream(self) -> None:
        """A Twisted HTTP/2 connection and a stream whose headers are in have the attributes the streaming glue reads."""
        from tests.test_streaming_h2 import H2Client
        from twisted.web._http2 import H2Connection

        clock = Clock()
        site = server.Site(_Nothing(), reactor=clock)
        switch = site.buildProtocol(None)
        transport = StringTransport()
        transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        switch.makeConnection(transport)
        client = H2Client(switch, transport, clock)
        client.exchange()
        connection = switch._channel
        self.assertIsInstance(connection, H2Connection)
        streamID = client.request(b"PUT", b"/a", (b"content-length", b"3"))
        problems = missing(connection, H2_CONNECTION_ATTRIBUTES)
        problems += missing(getattr(connection, "conn", None), H2_STATE_ATTRIBUTES)
        from h2.frame_buffer import FrameBuffer  # noqa: F401 (the glue makes a fresh one)

        streams = getattr(connection, "streams", {})
        self.assertIn(streamID, streams, "the stream was not opened")
        problems += missing(streams[streamID], H2_STREAM_ATTRIBUTES)
        assertNoneMissing(self, problems)
        switch.connectionLost(None)  # type: ignore[arg-type]


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def privateImports(folder: str) -> set[tuple[str, str, str]]:
    """
    Every C{from twisted... import name} under C{folder} where the module
    or the name is private: (module, name, file relative to the repository).
    """
    found = set()
    for top, _, files in os.walk(os.path.join(_ROOT, folder)):
        for fileName in files:
            if not fileName.endswith(".py"):
                continue
            path = os.path.join(top, fileName)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            where = os.path.relpath(path, _ROOT)
            for node in ast.walk(tree):
                module = getattr(node, "module", None) or ""
                if not (isinstance(node, ast.ImportFrom) and module.startswith("twisted")):
                    continue
                privateModule = any(part.startswith("_") for part in module.split("."))
                for alias in node.names:
                    if privateModule or alias.name.startswith("_"):
                        found.add((module, alias.name, where))
    return found


def users() -> set[str]:
    """
    Every file named as a user in the tables above.
    """
    texts = [user for _, _, user in IMPORTS] + [user for _, _, user in CLASS_ATTRIBUTES]
    for rows in (H2_CONNECTION_METHODS, CHANNEL_ATTRIBUTES, NEGOTIATING_ATTRIBUTES, H2_CONNECTION_ATTRIBUTES,
                 H2_STATE_ATTRIBUTES, H2_STREAM_ATTRIBUTES):
        texts += [user for _, user in rows]
    return set(re.findall(r"(?:uploadsvc|tests)/[\w/]+\.py", " ".join(texts)))


class ImportsListedTests(SynchronousTestCase):
    """
    The tables above list every private Twisted import of the project.
    """

    def test_usersExist(self) -> None:
        """Every file the tables name as a user exists (rows follow the code when it moves)."""
        found = users()
        self.assertIn(f"{_STREAMING}/http1.py", found)
        self.assertEqual(
            sorted(path for path in found if not os.path.isfile(os.path.join(_ROOT, path))), []
        )

    def test_everyPrivateImportListed(self) -> None:
        """Each import of a private Twisted module or name in uploadsvc/ and tests/ has its row in IMPORTS."""
        listed = {(module, name) for module, name, _ in IMPORTS}
        found = privateImports("uploadsvc") | privateImports("tests")
        unlisted = sorted(
            row for row in found
            if row[:2] not in listed and row[2] != "tests/test_twisted_internals.py"
        )
        self.assertEqual(
            unlisted, [],
            "private Twisted imports missing from tests/test_twisted_internals.py IMPORTS "
            "(add a row, and a check of every private attribute the new code reads)",
        )


#: A Twisted requirement of setup.py: extras, a lower and an upper bound.
_TWISTED_REQUIREMENT = re.compile(r"twisted(?:\[[a-z0-9,]+\])?>=([0-9.]+),<([0-9]+)")


class PinTests(SynchronousTestCase):
    """
    setup.py keeps Twisted below the next year's releases, whose internals
    nobody has checked yet.
    """

    def test_twistedBounded(self) -> None:
        """Every Twisted requirement in setup.py has an upper bound, and the Twisted under test is inside it."""
        with open(os.path.join(_ROOT, "setup.py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        requirements = [
            node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and re.match(r"twisted(\[|[<>=~!]|$)", node.value, re.IGNORECASE)
        ]
        self.assertTrue(requirements, "setup.py names no twisted requirement")
        installed = int(twisted.__version__.split(".")[0])
        for requirement in requirements:
            match = _TWISTED_REQUIREMENT.fullmatch(requirement)
            self.assertIsNotNone(match, f"setup.py: {requirement!r} has no upper bound (>=X,<Y)")
            assert match is not None
            self.assertLess(
                installed, int(match.group(2)),
                f"Twisted {twisted.__version__} is above setup.py's {requirement!r}",
            )
