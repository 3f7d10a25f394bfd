"""
End-to-end tests over TLS and HTTP/2 (issue 4 item 6), against a real
C{twistd uploadsvc --listen ssl:...} process on a loopback port.

Each test makes its own CA and server certificate (for C{localhost} and
C{127.0.0.1}); clients trust that CA only. treq checks the certificate and
the host name (service-identity); curl and the C{h2} library speak HTTP/2,
negotiated by ALPN.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import time
from typing import Any

import attr
import treq
import trustme
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import (
    BrowserLikePolicyForHTTPS,
    RequestTransmissionFailed,
    ResponseNeverReceived,
)
from twisted.web.http import H2_ENABLED
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from tests.support.rawhttp import fileSha256, patternBytes
from tests.support.server import ServerRequests, ServerTestMixin, startServer

if H2_ENABLED:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    from h2.errors import ErrorCodes

MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- a test CA -----------------------------------------------------------------


@attr.s(frozen=True, auto_attribs=True)
class TestPKI:
    """
    PEM files of a CA and a server certificate it signed.

    @ivar caPath: the CA certificate (what clients trust).
    @ivar certPath: the server certificate.
    @ivar keyPath: the server's private key.
    """

    caPath: str
    certPath: str
    keyPath: str

    def caCertificate(self) -> Certificate:
        with open(self.caPath, "rb") as f:
            return Certificate.loadPEM(f.read())

    def listen(self) -> str:
        """
        The C{--listen} endpoint string (for L{ServerProcess}).
        """
        return f"ssl:{{port}}:privateKey={self.keyPath}:certKey={self.certPath}:interface={{host}}"


def makePKI(folder: str, caName: str = "uploadsvc test CA") -> TestPKI:
    """
    Write a fresh CA and a server certificate for C{localhost} and
    C{127.0.0.1} (from C{trustme}) into C{folder}.
    """
    os.makedirs(folder, exist_ok=True)
    ca = trustme.CA(organization_name=caName)
    leaf = ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
    pki = TestPKI(
        os.path.join(folder, "ca.pem"),
        os.path.join(folder, "cert.pem"),
        os.path.join(folder, "key.pem"),
    )
    ca.cert_pem.write_to_path(pki.caPath)
    leaf.cert_chain_pems[0].write_to_path(pki.certPath)
    leaf.private_key_pem.write_to_path(pki.keyPath)
    return pki


@implementer(IPolicyForHTTPS)
class ExpectName:
    """
    An HTTPS policy that trusts C{trustRoot} and expects the server to be
    C{hostname}, whatever address the agent connects to.
    """

    def __init__(self, hostname: str, trustRoot: Certificate) -> None:
        self.hostname = hostname
        self.trustRoot = trustRoot

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return optionsForClientTLS(self.hostname, trustRoot=self.trustRoot)


class TLSServerMixin(ServerTestMixin):
    """
    Start a server on an C{ssl:} endpoint with a fresh test PKI.
    """

    pki: TestPKI

    def startTLSServer(self, *extraArgs: str) -> None:
        base = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        os.makedirs(base)
        self.pki = makePKI(os.path.join(base, "pki"))
        self.server = startServer(self, os.path.join(base, "root"), *extraArgs, listen=self.pki.listen())
        self.http = ServerRequests(
            self, self.server, contextFactory=BrowserLikePolicyForHTTPS(self.pki.caCertificate())
        )


# -- TLS with treq ---------------------------------------------------------------


class TLSTests(TLSServerMixin, TestCase):
    """
    C{--listen ssl:...} serves the upload protocol to clients that check the
    certificate and refuse a wrong one.
    """

    timeout = 60

    async def test_uploadAndResume(self) -> None:
        """
        Over TLS, verified against the test CA, an upload stops part way,
        HEAD reports the offset, and the rest completes it byte-identical.
        """
        self.startTLSServer()
        self.assertTrue(self.server.url().startswith("https://127.0.0.1:"))
        data = patternBytes(81, 0, 3 * MiB)
        first = 1 * MiB + 12345
        answer = await self.http.request(
            "PUT", "/tls/a.bin", {"Content-Range": f"bytes 0-{first - 1}/{len(data)}"}, data[:first]
        )
        self.assertIncomplete(answer, first)
        answer = await self.http.request("HEAD", "/tls/a.bin")
        self.assertIncomplete(answer, first, len(data), head=True)
        answer = await self.http.request(
            "PUT", "/tls/a.bin",
            {"Content-Range": f"bytes {first}-{len(data) - 1}/{len(data)}"}, data[first:],
        )
        self.assertCompleted(answer, "tls/a.bin", len(data), sha(data))

    async def test_localhostName(self) -> None:
        """The certificate's DNS name works: https://localhost:PORT verifies and uploads."""
        self.startTLSServer()
        response = await self.http.client.put(
            f"https://localhost:{self.server.port}/tls/b.bin", data=b"hello"
        )
        body = await treq.content(response)
        self.assertEqual(response.code, 201, body)
        self.assertEqual(json.loads(body)["size"], 5)

    async def test_otherCARefused(self) -> None:
        """A client that trusts another CA fails the handshake with a verify error and stores nothing."""
        self.startTLSServer()
        other = makePKI(os.path.abspath(self.mktemp()), caName="another CA")
        http = ServerRequests(
            self, self.server, contextFactory=BrowserLikePolicyForHTTPS(other.caCertificate())
        )
        failure: Any = await self.assertFailure(
            ensureDeferred(http.request("PUT", "/tls/c.bin", None, b"secret")),
            ResponseNeverReceived,
            RequestTransmissionFailed,
        )
        [reason] = failure.reasons
        self.assertTrue(reason.check(SSL.Error), reason)
        self.assertIn("certificate verify failed", str(reason.value))
        self.assertFalse(os.path.exists(self.storedPath("tls/c.bin")))

    async def test_wrongHostnameRefused(self) -> None:
        """A certificate that does not name the host the client expects fails with a VerificationError."""
        self.startTLSServer()
        http = ServerRequests(
            self, self.server, contextFactory=ExpectName("uploads.example", self.pki.caCertificate())
        )
        failure: Any = await self.assertFailure(
            ensureDeferred(http.request("PUT", "/tls/d.bin", None, b"secret")),
            ResponseNeverReceived,
            RequestTransmissionFailed,
        )
        [reason] = failure.reasons
        self.assertTrue(reason.check(VerificationError), reason)
        self.assertIn("uploads.example", str(reason.value))
        self.assertFalse(os.path.exists(self.storedPath("tls/d.bin")))


# -- HTTP/2 ------------------------------------------------------------------------


@attr.s(auto_attribs=True)
class H2Response:
    """
    What one stream got back.
    """

    status: int = 0
    headers: dict[bytes, bytes] = attr.Factory(dict)
    body: bytes = b""
    ended: bool = False
    reset: int | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class BlockingH2Client:
    """
    A small blocking HTTP/2 client (the C{h2} library over an C{ssl}
    socket with ALPN C{h2}) that sends bodies as fast as the server's
    flow-control windows allow, interleaving streams.
    """

    def __init__(self, port: int, caPath: str, hostname: str = "localhost", timeout: float = 60) -> None:
        context = ssl.create_default_context(cafile=caPath)
        context.set_alpn_protocols(["h2", "http/1.1"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname=hostname)
        self.alpn = self.sock.selected_alpn_protocol()
        self.deadline = time.monotonic() + timeout
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.responses: dict[int, H2Response] = {}
        self.windowUpdates: dict[int, int] = {}
        self._flush()

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self._flush()
        except (OSError, h2.exceptions.ProtocolError):
            pass  # the server went first
        finally:
            self.sock.close()

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def _read(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError("HTTP/2 exchange took too long")
        data = self.sock.recv(256 * 1024)
        if not data:
            raise ConnectionError("server closed the connection")
        for event in self.conn.receive_data(data):
            sid = getattr(event, "stream_id", None)
            response = self.responses.get(sid) if sid else None
            if isinstance(event, h2.events.ResponseReceived) and response is not None:
                response.headers = dict(event.headers)
                response.status = int(response.headers[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                if response is not None:
                    response.body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and response is not None:
                response.ended = True
            elif isinstance(event, h2.events.StreamReset) and response is not None:
                response.reset = event.error_code
            elif isinstance(event, h2.events.WindowUpdated):
                self.windowUpdates[event.stream_id] = self.windowUpdates.get(event.stream_id, 0) + 1
        self._flush()

    def start(self, method: str, path: str, headers: dict[str, str] | None = None, end: bool = False) -> int:
        """
        Open a stream with a request's headers.
        """
        sid = self.conn.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
        ] + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self.responses[sid] = H2Response()
        self.conn.send_headers(sid, fields, end_stream=end)
        self._flush()
        return sid

    def send(self, bodies: dict[int, bytes], end: bool = True) -> None:
        """
        Send each stream its body (interleaved, a frame at a time), then
        end it unless C{end} is false; a stream the server answered or reset
        stops being sent to.
        """
        offsets = {sid: 0 for sid in bodies}
        while offsets:
            progressed = False
            for sid in list(offsets):
                if self.responses[sid].done:
                    del offsets[sid]
                    continue
                body, offset = bodies[sid], offsets[sid]
                room = min(
                    self.conn.local_flow_control_window(sid),
                    self.conn.max_outbound_frame_size,
                    len(body) - offset,
                )
                if room > 0:
                    self.conn.send_data(sid, body[offset : offset + room])
                    offsets[sid] = offset + room
                    progressed = True
                if offsets[sid] == len(body):
                    if end:
                        self.conn.end_stream(sid)
                    del offsets[sid]
                    progressed = True
            self._flush()
            if not progressed:
                self._read()

    def wait(self, sid: int) -> H2Response:
        """
        Read until stream C{sid} has its whole answer (or was reset).
        """
        while not self.responses[sid].done:
            self._read()
        return self.responses[sid]


class HTTP2Tests(TLSServerMixin, TestCase):
    """
    HTTP/2, negotiated by ALPN, streams bodies to disk and keeps the upload
    protocol.
    """

    timeout = 120

    if not H2_ENABLED:
        skip = "the h2 package is not installed"

    def _h2(self) -> BlockingH2Client:
        client = BlockingH2Client(self.server.port, self.pki.caPath)
        self.addCleanup(client.close)
        return client

    async def test_curlHTTP2(self) -> None:
        """curl --http2 negotiates h2 and uploads a multi-MiB file that is stored byte-identical."""
        self.startTLSServer()
        source = os.path.abspath(self.mktemp())
        data = patternBytes(82, 0, 9 * MiB + 7)
        with open(source, "wb") as f:
            f.write(data)
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        out, err, code = await getProcessOutputAndValue(
            self.curlPath,
            [
                "-sS", "--noproxy", "*", "--max-time", "100", "--http2",
                "--cacert", self.pki.caPath, "-T", source,
                "-o", os.path.join(work, "body"), "-w", "%{http_version} %{http_code}",
                f"https://localhost:{self.server.port}/h2/curl.bin",
            ],
            env=env,
            reactor=reactor,
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(out.split(), [b"2", b"201"], err)
        self.assertEqual(fileSha256(self.storedPath("h2/curl.bin")), sha(data))

    async def test_h2UploadResumeAndMultiplex(self) -> None:
        """
        On one HTTP/2 connection, two uploads run interleaved on two streams,
        one stops at a Content-Range boundary and a third stream completes
        it; both files are stored byte-identical.
        """
        self.startTLSServer()
        a = patternBytes(83, 0, 6 * MiB + 3)
        b = patternBytes(84, 0, 4 * MiB + 1)
        half = 2 * MiB + 77

        def run() -> tuple[H2Response, H2Response, H2Response, str | None, dict[int, int]]:
            client = self._h2()
            first = client.start(
                "PUT", "/h2/a.bin", {"content-range": f"bytes 0-{half - 1}/{len(a)}"}
            )
            other = client.start("PUT", "/h2/b.bin", {"content-length": str(len(b))})
            client.send({first: a[:half], other: b})
            r1, r2 = client.wait(first), client.wait(other)
            rest = client.start(
                "PUT", "/h2/a.bin", {"content-range": f"bytes {half}-{len(a) - 1}/{len(a)}"}
            )
            client.send({rest: a[half:]})
            return r1, r2, client.wait(rest), client.alpn, client.windowUpdates

        r1, r2, r3, alpn, updates = await deferToThread(run)
        self.assertEqual(alpn, "h2")
        self.assertEqual((r1.status, r1.headers.get(b"upload-offset")), (204, str(half).encode()))
        self.assertEqual(r2.status, 201, r2.body)
        self.assertEqual(r3.status, 201, r3.body)
        self.assertEqual(json.loads(r3.body)["sha256"], sha(a))
        self.assertEqual(fileSha256(self.storedPath("h2/a.bin")), sha(a))
        self.assertEqual(fileSha256(self.storedPath("h2/b.bin")), sha(b))
        # Multi-MiB bodies cannot pass 256 KiB windows without the server
        # granting more as it stores them.
        self.assertTrue(updates.get(0))

    async def test_h2RefusalResetsStream(self) -> None:
        """
        An upload refused from its headers (409: the file is complete) gets
        its answer and a NO_ERROR reset while the body is unsent, and the
        connection serves the next request.
        """
        self.startTLSServer()
        answer = await self.http.request("PUT", "/h2/done.bin", None, b"complete")
        self.assertEqual(answer.status, 201)

        def run() -> tuple[H2Response, H2Response]:
            client = self._h2()
            sid = client.start("PUT", "/h2/done.bin", {"content-length": str(4 * MiB)})
            refused = client.wait(sid)
            while refused.reset is None:
                client._read()
            head = client.start("HEAD", "/h2/done.bin", end=True)
            return refused, client.wait(head)

        refused, head = await deferToThread(run)
        self.assertEqual(refused.status, 409, refused.body)
        self.assertTrue(refused.ended)
        self.assertEqual(refused.reset, ErrorCodes.NO_ERROR)
        self.assertEqual(head.status, 200)
        self.assertEqual(head.headers.get(b"upload-offset"), b"8")
        with open(self.storedPath("h2/done.bin"), "rb") as f:
            self.assertEqual(f.read(), b"complete")

    async def test_h2Takeover(self) -> None:
        """
        While an HTTP/2 upload stalls mid-body, a Content-Range PUT on
        another stream of the same connection takes it over: the stalled
        stream is reset with CANCEL, the file completes byte-identical, and
        the connection goes on.
        """
        self.startTLSServer("--idle-timeout", "300")
        size = 3 * MiB
        data = patternBytes(85, 0, size)

        def run() -> tuple[H2Response, H2Response, H2Response]:
            client = self._h2()
            stalled = client.start("PUT", "/h2/t.bin", {"content-length": str(size)})
            client.send({stalled: data[:MiB]}, end=False)
            deadline = time.monotonic() + 10
            while True:
                head = client.wait(client.start("HEAD", "/h2/t.bin", end=True))
                if head.headers.get(b"upload-offset") == b"%d" % MiB or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            second = client.start(
                "PUT", "/h2/t.bin", {"content-range": f"bytes {MiB}-{size - 1}/{size}"}
            )
            client.send({second: data[MiB:]})
            final = client.wait(second)
            return head, client.wait(stalled), final

        head, stalled, final = await deferToThread(run)
        self.assertEqual(head.headers.get(b"upload-offset"), b"%d" % MiB)
        self.assertEqual(stalled.reset, ErrorCodes.CANCEL)
        self.assertEqual(final.status, 201, final.body)
        self.assertEqual(fileSha256(self.storedPath("h2/t.bin")), sha(data))
