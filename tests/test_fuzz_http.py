"""
Fuzzing the HTTP request path (issue 4, item 7): hypothesis builds requests
with random methods, paths, headers, framings and bodies, cut into random
TCP reads, and feeds them through the real channel (L{LimitedSite} over
L{StreamingSite}, a StringTransport and a Clock) to the real
L{UploadApp} over a store on a temp folder, disk calls run inline.

For every example: nothing crashes (no error is logged), no client mistake
is answered with a 5xx other than 503/507, and the other uploads in the
store (a complete file and an incomplete upload set up first) keep their
bytes. Deterministic: hypothesis is derandomized.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import UploadError
from uploadsvc.protocol.paths import parseUploadPath
from uploadsvc.storage.filestore import FileStore
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.testing.strategies import (
    badContentRanges,
    contentRanges,
    digestFields,
    hostilePaths,
    validUploadPaths,
)
from uploadsvc.web.app import Config, UploadApp
from uploadsvc.web.auth import Authenticator, SecretFile
from uploadsvc.web.limits import LimitedSite

TOKEN = b"fuzz-token-0123456789"
KEEP = b"victim/keep.bin"
PART = b"victim/part.bin"
KEEP_DATA = bytes(range(256)) * 20
PART_DATA = bytes(range(255, -1, -1)) * 10
PART_TOTAL = 10_000

_fuzz = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    # The same tests run under two configurations (two executors, on purpose).
    suppress_health_check=[
        HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.differing_executors,
    ],
)

_STATUS = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3}) ")


def _isVictim(path: bytes) -> bool:
    try:
        relative = parseUploadPath(path.split(b"?", 1)[0]).relative.encode("utf-8")
    except UploadError:
        return False
    return relative.startswith(b"victim")


_tokens = st.sampled_from([b"", b"printable", b"0", b"-1", b"+5", b"1e3", b"\xff", b"99999999999999999999"])
_names = st.sampled_from([
    b"Content-Range", b"Content-Length", b"Transfer-Encoding", b"Expect",
    b"Repr-Digest", b"Content-Digest", b"Authorization", b"Upload-Complete",
    b"Upload-Length", b"Host", b"Connection", b"X-Other",
])
_values = st.one_of(
    contentRanges().map(lambda pair: pair[0]),
    badContentRanges(),
    digestFields().map(lambda pair: pair[0]),
    st.sampled_from([
        b"chunked", b"gzip, chunked", b"identity", b"100-continue", b"close",
        b"keep-alive", b"Bearer " + TOKEN, b"Bearer wrong", b"Basic Zm9vOmJhcg==", b"?1", b"?0",
    ]),
    _tokens,
    st.binary(max_size=40).map(lambda b: bytes(c for c in b if 32 <= c < 127 or c >= 128)),
)


#: A few paths that many examples share, so that uploads start, resume,
#: complete and collide across examples.
_SHARED_PATHS = [b"/f/a.bin", b"/f/b.bin", b"/g.bin", b"/f"]


def _digestOf(algs: list[str], body: bytes) -> bytes:
    return b", ".join(
        alg.encode() + b"=:" + base64.b64encode(hashlib.new(alg.replace("-", ""), body).digest()) + b":"
        for alg in algs
    )


@st.composite
def _headers(draw: st.DrawFn, body: bytes) -> list[tuple[bytes, bytes]]:
    """
    Header fields for a request with C{body}: mostly fitting ones (a range
    that matches the body, right or wrong digests of it), some chaos.
    """
    fields: list[tuple[bytes, bytes]] = []
    for kind in draw(st.lists(
        st.sampled_from(["range", "query", "content-digest", "repr-digest", "expect", "chaos"]),
        max_size=4,
    )):
        if kind == "range" and body:
            first = draw(st.sampled_from([0, 0, 1, 100, 5000]))
            last = first + len(body) - 1
            total = draw(st.sampled_from([b"%d" % (last + 1), b"%d" % (last + 1000), b"*", b"%d" % last]))
            fields.append((b"Content-Range", b"bytes %d-%d/%s" % (first, last, total)))
        elif kind == "query":
            fields.append((b"Content-Range", draw(st.sampled_from([b"bytes */*", b"bytes */10000", b"bytes */5"]))))
        elif kind in ("content-digest", "repr-digest"):
            name = b"Content-Digest" if kind == "content-digest" else b"Repr-Digest"
            algs = draw(st.lists(st.sampled_from(["sha-256", "sha-512"]), min_size=1, max_size=2))
            right = draw(st.booleans())
            fields.append((name, _digestOf(algs, body if right else body + b"x")))
        elif kind == "expect":
            fields.append((b"Expect", b"100-continue"))
        else:
            fields.append(draw(st.tuples(_names, _values)))
    return fields


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """
    The bytes of one or two requests on a connection, and where to cut them
    into reads.
    """
    wire = b""
    for _ in range(draw(st.integers(1, 2))):
        method = draw(st.sampled_from([b"PUT", b"PUT", b"PUT", b"POST", b"HEAD", b"DELETE", b"GET", b"FOO"]))
        path = draw(st.one_of(
            st.sampled_from(_SHARED_PATHS), st.sampled_from(_SHARED_PATHS), validUploadPaths(),
            validUploadPaths(), hostilePaths(), st.sampled_from([b"*", b"/", b"//"]),
        ))
        if draw(st.integers(0, 9)) != 9:
            # Mostly as a client would send it: bytes outside printable
            # ASCII escaped (raw, Twisted refuses the request line itself).
            path = re.sub(rb"[^\x21-\x7e]", lambda m: b"%%%02X" % m.group()[0], path)
        if _isVictim(path):
            path = b"/elsewhere.bin"
        if draw(st.integers(0, 4)) == 4:
            path += b"?" + draw(st.sampled_from([b"expires=1&sig=00", b"a=b", b"", b"sig=" + b"f" * 64]))
        body = draw(st.binary(max_size=3000))
        headers = draw(_headers(body))
        if draw(st.integers(0, 5)) != 5:
            headers.append((b"Authorization", b"Bearer " + TOKEN))
        framing = draw(st.sampled_from(["length", "length", "chunked", "none", "lying"]))
        host = draw(st.sampled_from([b"fuzz", b"fuzz", b"fuzz", b"\xff\xfe", b"", b"a:99999", b"[::1]:x"]))
        lines = [method + b" " + path + b" HTTP/1.1", b"Host: " + host]
        lines += [name + b": " + value for name, value in headers if b"\r" not in value and b"\n" not in value]
        if framing == "length":
            lines.append(b"Content-Length: %d" % len(body))
            payload = body
        elif framing == "lying":
            lines.append(b"Content-Length: %d" % (len(body) + draw(st.integers(1, 100))))
            payload = body
        elif framing == "chunked":
            lines.append(b"Transfer-Encoding: chunked")
            size = draw(st.integers(1, 700))
            payload = b"".join(
                b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                for i in range(0, len(body), size)
            ) + b"0\r\n\r\n"
        else:
            payload = b""
        wire += b"\r\n".join(lines) + b"\r\n\r\n" + payload
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    return wire, cuts


class FuzzTestCase(SynchronousTestCase):
    config = Config(maxUploadSize=1_000_000, maxUploads=50)

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        tokens = os.path.abspath(self.mktemp())
        with open(tokens, "wb") as f:
            f.write(TOKEN + b"\n")
        self.store = FileStore(self.root, fsync=False)
        self.addCleanup(self.store.close)
        app = UploadApp(
            self.store, ImmediateRunner(), self.config,
            auth=Authenticator(self.clock, SecretFile(tokens, self.clock)),
        )
        self.app = app
        self.site = LimitedSite(app.resource(), timeout=60, reactor=self.clock, headerTimeout=30)
        self.site.startFactory()
        self.addCleanup(self.site.stopFactory)
        auth = b"Authorization: Bearer " + TOKEN + b"\r\n"
        out = self.send(
            b"PUT /" + KEEP + b" HTTP/1.1\r\nHost: x\r\n" + auth
            + b"Content-Length: %d\r\n\r\n" % len(KEEP_DATA) + KEEP_DATA
        )
        assert b" 201 " in out, out
        out = self.send(
            b"PUT /" + PART + b" HTTP/1.1\r\nHost: x\r\n" + auth
            + b"Content-Range: bytes 0-%d/%d\r\n" % (len(PART_DATA) - 1, PART_TOTAL)
            + b"Content-Length: %d\r\n\r\n" % len(PART_DATA) + PART_DATA
        )
        assert b" 204 " in out, out
        self.victims = self.snapshot()

    def send(self, wire: bytes, cuts: list[int] = []) -> bytes:
        """
        Feed C{wire} to a new connection in reads cut at C{cuts}, let time
        pass, close the connection, and return what the server wrote.
        """
        protocol = self.site.buildProtocol(IPv4Address("TCP", "10.1.2.3", 5555))
        transport = StringTransport()
        protocol.makeConnection(transport)
        start = 0
        for cut in cuts + [len(wire)]:
            if cut > start and not transport.disconnecting:
                protocol.dataReceived(wire[start:cut])
                start = cut
            self.clock.advance(0.1)
        self.clock.advance(1)
        protocol.connectionLost(Failure(ConnectionError("fuzz connection closed")))
        self.clock.advance(100)
        return transport.value()

    def snapshot(self) -> dict[str, Any]:
        with open(os.path.join(self.root, *KEEP.decode().split("/")), "rb") as f:
            keep = hashlib.sha256(f.read()).hexdigest()
        _, head = self.send(b"HEAD /" + PART + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN + b"\r\n\r\n").split(b"\r\n", 1)
        offset = re.search(rb"Upload-Offset: (\d+)", head)
        return {"keep": keep, "partOffset": offset and offset.group(1)}

    def check(self, out: bytes) -> None:
        statuses = [int(code) for code in _STATUS.findall(out)]
        for status in statuses:
            self.assertFalse(500 <= status < 600 and status not in (503, 507), out[:600])
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.snapshot(), self.victims)


class HTTPFuzzTests(FuzzTestCase):
    """
    Random requests through the real channel and app.
    """

    @_fuzz
    @given(requests())
    def test_requests(self, request: tuple[bytes, list[int]]) -> None:
        """Random requests neither crash the server, nor get a 500, nor touch other uploads."""
        wire, cuts = request
        self.check(self.send(wire, cuts))

    @_fuzz
    @given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=6))
    def test_garbage(self, wire: bytes, cuts: list[int]) -> None:
        """Arbitrary bytes on a connection neither crash the server nor touch uploads."""
        self.check(self.send(wire, sorted(cuts)))

    @_fuzz
    @given(st.binary(max_size=200), st.binary(max_size=200))
    def test_garbageAfterHeaders(self, headerJunk: bytes, bodyJunk: bytes) -> None:
        """A valid request line with junk headers and a junk body is answered without a 500."""
        wire = b"PUT /junk.bin HTTP/1.1\r\n" + headerJunk.replace(b"\r\n\r\n", b"") + b"\r\n\r\n" + bodyJunk
        self.check(self.send(wire))


class PermissiveFuzzTests(HTTPFuzzTests):
    """
    The same, with overwrite and delete allowed (more requests get through
    to the store).
    """

    config = Config(maxUploadSize=1_000_000, maxUploads=50, allowOverwrite=True, allowDelete=True)


class FoundByFuzzingTests(FuzzTestCase):
    """
    Requests the fuzzer found answered with an error of Klein's (a 500, or a
    400 after an error in the log).
    """

    def test_unknownMethod(self) -> None:
        """A method no route names is 405 (401 without credentials), not 500."""
        out = self.send(b"FOO /a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN + b"\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 405 "), out)
        self.assertIn(b"Allow: PUT, POST, HEAD, DELETE", out)
        out = self.send(b"FOO /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 401 "), out)
        self.check(out)

    def test_hostThatIsNoName(self) -> None:
        """
        A Host header that is UTF-8 but no host name (an empty label, as in
        C{a..b}, which hypothesis found) is refused 400 with a reason, not
        answered 500 by the router.
        """
        for host in (b"a..b", b".", b"a..b:80"):
            out = self.send(
                b"PUT /n.bin HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer " + TOKEN
                + b"\r\nContent-Length: 2\r\n\r\nhi"
            )
            self.assertTrue(out.startswith(b"HTTP/1.1 400 "), out)
            self.assertIn(b"Host header", out)
            self.check(out)
        self.assertFalse(os.path.exists(os.path.join(self.root, "n.bin")))

    def test_nonUTF8Host(self) -> None:
        """A Host header that is not UTF-8 is refused 400 with a reason, and nothing is logged as an error."""
        out = self.send(
            b"PUT /h.bin HTTP/1.1\r\nHost: \xff\r\nAuthorization: Bearer " + TOKEN
            + b"\r\nContent-Length: 2\r\n\r\nhi"
        )
        self.assertTrue(out.startswith(b"HTTP/1.1 400 "), out)
        self.assertIn(b"Host header", out)
        self.assertFalse(os.path.exists(os.path.join(self.root, "h.bin")))
        self.check(out)
