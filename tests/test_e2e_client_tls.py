"""
The client over https against a real C{twistd uploadsvc} listening with
C{ssl:} and a certificate from a test CA made in the test.
"""

from __future__ import annotations

import os
import random
import sys

from twisted.internet import reactor
from twisted.internet.task import Cooperator
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.support.pki import TemporaryCA
from tests.support.tlsfiles import TLSFilesMixin
from tests.test_e2e_client import MiB, sha256File
from uploadsvc.client.backoff import RetryPolicy
from uploadsvc.client.http import makeHTTPClient
from uploadsvc.client.jobs import UploadJob, UploadResult
from uploadsvc.client.uploader import Uploader
from tests.support.server import REPO_ROOT, ServerProcess


class TLSEndToEndTests(TLSFilesMixin, TestCase):
    """
    Certificate checks against the real server.
    """

    timeout = 120

    def setUp(self) -> None:
        self.setUpFiles(3 * MiB)

    def startTLSServer(self, issuer: TemporaryCA, names: list[str], ips: list[str]) -> ServerProcess:
        return self.serveTLS(*issuer.issue(names, ips))

    async def upload(self, url: str) -> UploadResult:
        connection = makeHTTPClient(reactor, caFile=self.caFile)
        self.addCleanup(connection.close)
        cooperator = Cooperator(scheduler=lambda f: reactor.callLater(0, f))
        self.addCleanup(cooperator.stop)
        uploader = Uploader(
            connection.http,
            reactor,
            cooperator,
            retry=RetryPolicy(initialDelay=0.05, maxAttempts=5),
            rng=random.Random(0),
        )
        return await uploader.upload(UploadJob(self.source, url))

    async def test_goodCertificateWithCommandLine(self) -> None:
        """
        C{uploadsvc-upload --cacert} with the test CA uploads over https to
        the server's certificate for C{localhost}.
        """
        server = self.startTLSServer(self.ca, ["localhost"], ["127.0.0.1"])
        environ = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        environ["PYTHONPATH"] = REPO_ROOT
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            [
                "-c", "from uploadsvc.client.cli import main; main()",
                "--quiet", "--cacert", self.caFile, self.source,
                f"https://localhost:{server.port}/secure/",
            ],
            env=environ,
            reactor=reactor,
        )
        self.assertEqual(code, 0, (out + err).decode())
        stored = os.path.join(server.root, "secure", "photo.jpg")
        self.assertEqual(sha256File(stored), sha256File(self.source))

    async def test_goodCertificateByAddress(self) -> None:
        """
        The API uploads to C{https://127.0.0.1} when the certificate names
        that address.
        """
        server = self.startTLSServer(self.ca, ["localhost"], ["127.0.0.1"])
        result = await self.upload(f"https://127.0.0.1:{server.port}/a/photo.jpg")
        self.assertEqual((result.ok, result.error), (True, None))
        self.assertEqual(
            sha256File(os.path.join(server.root, "a", "photo.jpg")), sha256File(self.source)
        )

    async def test_untrustedCertificate(self) -> None:
        """
        A server certificate from an unknown CA fails clearly, at once, and
        nothing is stored.
        """
        server = self.startTLSServer(TemporaryCA("not trusted"), ["localhost"], ["127.0.0.1"])
        result = await self.upload(f"https://localhost:{server.port}/a/photo.jpg")
        self.assertFalse(result.ok)
        self.assertIn("TLS certificate verification failed", result.error)
        self.assertIn("certificate verify failed", result.error)
        self.assertEqual(result.requests, 0)
        self.assertFalse(os.path.exists(os.path.join(server.root, "a")))

    async def test_wrongHostName(self) -> None:
        """
        A certificate from the trusted CA for another name fails clearly.
        """
        server = self.startTLSServer(self.ca, ["uploads.example"], [])
        result = await self.upload(f"https://localhost:{server.port}/a/photo.jpg")
        self.assertFalse(result.ok)
        self.assertIn("does not match the host name 'localhost'", result.error)
        self.assertEqual(result.requests, 0)
