"""
Tests for L{uploadsvc.web.accesslog}: access log lines without secrets, from
a Site on a StringTransport and from a real C{twistd uploadsvc}.
"""

from __future__ import annotations

import os
import time

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from uploadsvc.sign import signedURL
from tests.support.rawhttp import exchange
from tests.support.server import startServer
from uploadsvc.web.accesslog import REDACTED, redactedLogFormatter, redactQuery, redactURI


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        return b"hello"


class RedactTests(SynchronousTestCase):
    """
    L{redactURI} and L{redactQuery}.
    """

    def test_signedURL(self) -> None:
        """A signed URL keeps its path and expiry; its signature is replaced."""
        self.assertEqual(
            redactURI(b"/a/b.jpg?expires=1767225600&sig=0123abcd"),
            b"/a/b.jpg?expires=1767225600&sig=" + REDACTED,
        )

    def test_everyOtherValueHidden(self) -> None:
        """Tokens and any parameter not known to be harmless lose their values, whatever their case or encoding."""
        self.assertEqual(
            redactQuery(b"token=t1&ACCESS_TOKEN=t2&%73ig=t3&x=4&&bare"),
            b"token=REDACTED&ACCESS_TOKEN=REDACTED&%73ig=REDACTED&x=REDACTED&&REDACTED",
        )

    def test_userinfoAndFragment(self) -> None:
        """Credentials in an absolute URI and a fragment are not logged."""
        self.assertEqual(
            redactURI(b"http://alice:p@ss@up.example/f?token=x#sig=y"),
            b"http://REDACTED@up.example/f?token=REDACTED",
        )

    def test_plainPathUnchanged(self) -> None:
        """A URI without query or credentials is logged as sent."""
        self.assertEqual(redactURI(b"/photos/a%20b.jpg"), b"/photos/a%20b.jpg")


class FormatterTests(SynchronousTestCase):
    """
    L{redactedLogFormatter} given to a Site.
    """

    def logLine(self, request: bytes) -> str:
        logPath = self.mktemp()
        site = Site(_Hello(), logPath=logPath, logFormatter=redactedLogFormatter, reactor=Clock())
        site.startFactory()
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        channel.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1234)))
        channel.dataReceived(request)
        site.stopFactory()
        with open(logPath, encoding="utf-8") as f:
            return f.read()

    def test_noSecretsInLine(self) -> None:
        """The Site's log line has the path, status and expiry, but no signature, token or Referer secret."""
        line = self.logLine(
            b"GET /a.bin?expires=99&sig=SECRETSIG&access_token=SECRETTOKEN HTTP/1.1\r\n"
            b"Host: x\r\nAuthorization: Bearer SECRETBEARER\r\n"
            b"Referer: https://app.example/page?token=SECRETREF\r\n\r\n"
        )
        self.assertIn('"GET /a.bin?expires=99&sig=REDACTED&access_token=REDACTED HTTP/1.1" 200', line)
        self.assertIn('"https://app.example/page?token=REDACTED"', line)
        self.assertNotIn("SECRET", line)


class RealServerTests(TestCase):
    """
    The access log of a real C{twistd uploadsvc}.
    """

    timeout = 60

    def test_signatureNeverLogged(self) -> None:
        """A signed URL's signature, valid or not, and a query token never reach the server's log file."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        keyFile = os.path.join(base, "signing.key")
        key = b"k" * 32
        with open(keyFile, "wb") as f:
            f.write(key + b"\n")
        server = startServer(self, os.path.join(base, "root"), "--signing-key-file", keyFile)
        url = signedURL(key, "PUT", "/logged/a.bin", int(time.time()) + 600)
        signature = url.rpartition("sig=")[2]
        _, answer = exchange(server.port, "PUT", url, [("Content-Length", "5")], b"hello", timeout=20)
        self.assertEqual(answer.status, 201, answer.raw)
        forged = url.replace(signature, "f" * len(signature))
        _, answer = exchange(server.port, "HEAD", forged + "&access_token=QUERYTOKEN", timeout=20)
        self.assertEqual(answer.status, 401, answer.raw)
        # The access log line is written when the response is finished;
        # look until both requests are in (bounded).
        deadline = time.monotonic() + 10
        while server.logText().count("/logged/a.bin?expires=") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        text = server.logText()
        self.assertEqual(text.count("/logged/a.bin?expires="), 2, text[-3000:])
        self.assertIn("sig=REDACTED", text)
        for secret in (signature, "f" * len(signature), "QUERYTOKEN"):
            self.assertNotIn(secret, text)
