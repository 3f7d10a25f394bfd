"""
Tests for the client's TLS: certificates checked against the given CA (or
the system store), host name included, with a clear failure and no retry on
a bad certificate. A small in-process HTTPS server stands in for uploadsvc
(HEAD 404, a whole-file PUT answered with its digest); the same checks
against a real C{twistd uploadsvc} are in L{tests.test_e2e_client_tls}.
"""

from __future__ import annotations

import hashlib
import base64
import random
from typing import Any, cast

from cryptography import x509
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IReactorSSL
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.task import Cooperator
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.support.pki import TemporaryCA, selfSigned
from uploadsvc.client.backoff import RetryPolicy
from uploadsvc.client.http import ConfigError, makeHTTPClient
from uploadsvc.client.tls import CertificateRefused, checkHostName
from uploadsvc.client.jobs import UploadJob
from uploadsvc.client.uploader import Uploader


class WholeFileResource(Resource):
    """
    Enough of uploadsvc for a one-request upload: HEAD is 404, a PUT is
    stored and answered 201 with its Repr-Digest.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.stored: dict[bytes, bytes] = {}
        self.authorizations: list[bytes | None] = []

    def render_HEAD(self, request: Any) -> bytes:
        self.authorizations.append(request.getHeader(b"authorization"))
        request.setResponseCode(404)
        return b""

    def render_PUT(self, request: Any) -> bytes:
        self.authorizations.append(request.getHeader(b"authorization"))
        body = request.content.read()
        self.stored[request.path] = body
        request.setResponseCode(201)
        request.setHeader(b"Upload-Offset", b"%d" % len(body))
        request.setHeader(b"Upload-Complete", b"?1")
        request.setHeader(
            b"Repr-Digest", b"sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()) + b":"
        )
        return b'{"path": "x"}'


class TLSTests(TestCase):
    """
    Uploads over https to an in-process server with a test CA.
    """

    timeout = 60

    def setUp(self) -> None:
        self.ca = TemporaryCA()
        self.resource = WholeFileResource()
        self.content = random.Random(1).randbytes(5000)
        self.path = self.mktemp()
        with open(self.path, "wb") as f:
            f.write(self.content)

    def serve(self, keyPem: bytes, certPem: bytes) -> int:
        """
        Serve the resource over TLS with this key and certificate.

        @return: the port.
        """
        options = PrivateCertificate.loadPEM(keyPem + certPem).options()
        port = cast(IReactorSSL, reactor).listenSSL(0, Site(self.resource), options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return cast(IPv4Address, port.getHost()).port

    def caFile(self, pem: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(pem)
        return path

    async def upload(self, url: str, caFile: str | None, headers: dict[str, str] | None = None) -> Any:
        connection = makeHTTPClient(reactor, caFile=caFile)
        self.addCleanup(connection.close)
        cooperator = Cooperator(scheduler=lambda f: reactor.callLater(0, f))
        self.addCleanup(cooperator.stop)
        uploader = Uploader(
            connection.http,
            reactor,
            cooperator,
            retry=RetryPolicy(initialDelay=0.01, maxAttempts=5),
            stallTimeout=10.0,
            headers=headers,
        )
        return await uploader.upload(UploadJob(self.path, url))

    async def test_goodCertificate(self) -> None:
        """
        A certificate from the given CA for the host name in the URL is
        accepted, and the upload completes (with the token sent along).
        """
        port = self.serve(*self.ca.issue(["localhost"], ["127.0.0.1"]))
        result = await self.upload(
            f"https://localhost:{port}/a.bin", self.caFile(self.ca.certPem), {"Authorization": "Bearer t0k"}
        )
        self.assertEqual((result.ok, result.error), (True, None))
        self.assertEqual(self.resource.stored[b"/a.bin"], self.content)
        self.assertEqual(self.resource.authorizations, [b"Bearer t0k", b"Bearer t0k"])

    async def test_ipAddressCertificate(self) -> None:
        """
        An https URL with an IP address is checked against the certificate's
        IP address entries.
        """
        port = self.serve(*self.ca.issue(["localhost"], ["127.0.0.1"]))
        result = await self.upload(f"https://127.0.0.1:{port}/b.bin", self.caFile(self.ca.certPem))
        self.assertTrue(result.ok, result.error)

    async def test_unknownAuthority(self) -> None:
        """
        A certificate from a CA that is not trusted fails the upload at once,
        saying that verification failed, and nothing is retried or stored.
        """
        stranger = TemporaryCA("someone else")
        port = self.serve(*stranger.issue(["localhost"], ["127.0.0.1"]))
        result = await self.upload(f"https://localhost:{port}/a.bin", self.caFile(self.ca.certPem))
        self.assertFalse(result.ok)
        self.assertIn("TLS certificate verification failed", result.error)
        self.assertIn("certificate verify failed", result.error)
        self.assertEqual(result.resumes, 0)
        self.assertEqual(self.resource.stored, {})
        self.assertEqual(self.resource.authorizations, [])

    async def test_systemStoreRefusesTestCA(self) -> None:
        """
        Without a CA file the system trust store is used, which does not
        trust the test CA: a clear failure, not a silent fallback.
        """
        port = self.serve(*self.ca.issue(["localhost"], ["127.0.0.1"]))
        result = await self.upload(f"https://localhost:{port}/a.bin", None)
        self.assertFalse(result.ok)
        self.assertIn("TLS certificate verification failed", result.error)
        self.assertEqual(self.resource.stored, {})

    async def test_wrongHostName(self) -> None:
        """
        A certificate from the trusted CA but for another host name fails,
        saying so.
        """
        port = self.serve(*self.ca.issue(["other.example"]))
        result = await self.upload(f"https://localhost:{port}/a.bin", self.caFile(self.ca.certPem))
        self.assertFalse(result.ok)
        self.assertIn("TLS certificate verification failed", result.error)
        self.assertIn("does not match the host name", result.error)
        self.assertEqual(self.resource.stored, {})
        self.assertEqual(self.resource.authorizations, [])

    async def test_noSubjectAltName(self) -> None:
        """
        A certificate from the trusted CA whose common name is the host but
        that has no subjectAltName is refused, before any request is sent:
        service-identity raises C{CertificateError} for it, which Twisted's
        own check logs and lets through.
        """
        port = self.serve(*self.ca.issue(["localhost"], subjectAltName=False))
        result = await self.upload(f"https://localhost:{port}/a.bin", self.caFile(self.ca.certPem))
        self.assertFalse(result.ok)
        self.assertIn("TLS certificate verification failed", result.error)
        self.assertIn("subjectAltName", result.error)
        self.assertEqual(result.resumes, 0)
        self.assertEqual(self.resource.stored, {})
        self.assertEqual(self.resource.authorizations, [])

    async def test_selfSignedNoSubjectAltNameTrusted(self) -> None:
        """
        The issue's case: a self-signed certificate for another common name,
        no subjectAltName, given as the CA file: refused.
        """
        key, cert = selfSigned("somethingelse.example")
        port = self.serve(key, cert)
        result = await self.upload(f"https://localhost:{port}/a.bin", self.caFile(cert))
        self.assertFalse(result.ok)
        self.assertIn("cannot be checked against the host name 'localhost'", result.error)
        self.assertEqual(self.resource.authorizations, [])

    async def test_errorWhileCheckingRefuses(self) -> None:
        """
        Any unexpected error while checking the host name refuses the
        connection (fail closed) instead of letting it through.
        """
        from uploadsvc.client import tls

        def broken(cert: Any, host: str) -> None:
            raise RuntimeError("checker broke")

        self.patch(tls, "checkHostName", broken)
        port = self.serve(*self.ca.issue(["localhost"], ["127.0.0.1"]))
        result = await self.upload(f"https://localhost:{port}/a.bin", self.caFile(self.ca.certPem))
        self.assertFalse(result.ok)
        self.assertIn("TLS certificate verification failed", result.error)
        self.assertIn("checker broke", result.error)
        self.assertEqual(result.resumes, 0)
        self.assertEqual(self.resource.authorizations, [])

    def test_badCAFile(self) -> None:
        """
        A CA file without a certificate is a configuration error.
        """
        self.assertRaises(ConfigError, makeHTTPClient, reactor, caFile=self.caFile(b"nothing here"))
        self.assertRaises(ConfigError, makeHTTPClient, reactor, caFile=self.mktemp())


class CheckHostNameTests(SynchronousTestCase):
    """
    L{checkHostName}: the certificate must name the host in its
    subjectAltName, and anything else is a L{CertificateRefused}.
    """

    def cert(self, pem: bytes) -> Any:
        from OpenSSL.crypto import X509

        return X509.from_cryptography(x509.load_pem_x509_certificate(pem))

    def test_matches(self) -> None:
        """
        A DNS name entry matches a name, an IP address entry an address.
        """
        _, pem = TemporaryCA().issue(["localhost"], ["127.0.0.1", "::1"])
        for host in ("localhost", "LOCALHOST", "127.0.0.1", "::1"):
            checkHostName(self.cert(pem), host)

    def test_refusals(self) -> None:
        """
        Another name, an address given only as a DNS name, and a
        certificate without subjectAltName are all refused.
        """
        ca = TemporaryCA()
        cases = [
            (ca.issue(["localhost"])[1], "127.0.0.1", "does not match"),
            (ca.issue(["localhost"])[1], "other.example", "does not match"),
            (ca.issue(["127.0.0.1"], subjectAltName=False)[1], "127.0.0.1", "subjectAltName"),
            (ca.issue(["localhost"], subjectAltName=False)[1], "localhost", "subjectAltName"),
        ]
        for pem, host, words in cases:
            error = self.assertRaises(CertificateRefused, checkHostName, self.cert(pem), host)
            self.assertIn(words, error.reason)
            self.assertIn(repr(host), error.reason)
