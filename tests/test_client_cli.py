"""
Tests for the command line (L{uploadsvc.client.cli}), the token and CA
settings (L{uploadsvc.client.http}), the display (L{uploadsvc.client.progress})
and the sorting of failures (L{uploadsvc.client.errors}).
"""

from __future__ import annotations

import base64
import io

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseNeverReceived

from uploadsvc.client.cli import Options, parseSize
from uploadsvc.client.errors import Fatal, Retryable, classifyFailure
from uploadsvc.client.http import (
    ConfigError,
    authorizationHeaders,
    checkSendable,
    splitCredentials,
)
from uploadsvc.client.progress import LineDisplay, ProgressDisplay, formatSummary
from uploadsvc.client.jobs import UploadJob, UploadResult


class ParseSizeTests(SynchronousTestCase):
    """
    L{parseSize}.
    """

    def test_sizes(self) -> None:
        """
        Plain numbers and K/M/G suffixes (powers of 1024, optional iB/B).
        """
        self.assertEqual(
            [parseSize(s) for s in ("4096", "256K", "8M", "8MiB", "1g", "2kb")],
            [4096, 256 * 1024, 8 << 20, 8 << 20, 1 << 30, 2048],
        )

    def test_bad(self) -> None:
        """
        Anything else, and zero, is refused.
        """
        for text in ("", "0", "-1", "1.5M", "12T", "K"):
            self.assertRaises(ValueError, parseSize, text)


class OptionsTests(SynchronousTestCase):
    """
    L{Options}.
    """

    def test_sourcesAndURL(self) -> None:
        """
        The last argument is the URL, the others are sources; options map to
        the retry policy.
        """
        options = Options()
        options.parseOptions(
            ["-p", "8", "--chunk-size", "4M", "--max-attempts", "0", "--give-up-after", "600", "a", "b", "http://h/"]
        )
        self.assertEqual((options["sources"], options["url"]), (["a", "b"], "http://h/"))
        self.assertEqual((options["parallel"], options["chunk-size"]), (8, 4 << 20))
        policy = options.retryPolicy()
        self.assertEqual((policy.maxAttempts, policy.giveUpAfter), (None, 600.0))

    def test_usageErrors(self) -> None:
        """
        Missing arguments and impossible values are usage errors.
        """
        for argv in (["only-url"], ["-p", "0", "a", "http://h/"], ["--chunk-size", "0", "a", "u"],
                     ["--stall-timeout", "0", "a", "u"], ["--max-attempts", "-1", "a", "u"]):
            self.assertRaises(UsageError, Options().parseOptions, argv)

    def test_startOfANameRefused(self) -> None:
        """
        The start of an option's name is an unknown option, not that option
        (getopt would take C{--par 2} for C{--parallel 2}); whole names work.
        """
        for start in ("--par", "--chunk", "--max-att"):
            e = self.assertRaises(UsageError, Options().parseOptions, [start, "2", "a", "http://h/"])
            self.assertEqual(str(e), f"unknown option {start}")
        options = Options()
        options.parseOptions(["--parallel", "2", "a", "http://h/"])
        self.assertEqual(options["parallel"], 2)


class AuthorizationTests(SynchronousTestCase):
    """
    L{authorizationHeaders}.
    """

    def tokenFile(self, content: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(content)
        return path

    def test_fromFile(self) -> None:
        """
        The first line of the token file, stripped, is the bearer token; the
        file wins over the environment.
        """
        path = self.tokenFile(b"  s3cr3t \nignored\n")
        self.assertEqual(
            authorizationHeaders(path, {"UPLOADSVC_TOKEN": "env"}), {"Authorization": "Bearer s3cr3t"}
        )

    def test_fromEnvironment(self) -> None:
        """
        Without a file, C{UPLOADSVC_TOKEN} is used; without either, no header.
        """
        self.assertEqual(authorizationHeaders(None, {"UPLOADSVC_TOKEN": "abc"}), {"Authorization": "Bearer abc"})
        self.assertEqual(authorizationHeaders(None, {}), {})

    def test_bad(self) -> None:
        """
        A missing or empty file, or a token with spaces or controls, is a
        configuration error.
        """
        self.assertRaises(ConfigError, authorizationHeaders, self.mktemp(), {})
        self.assertRaises(ConfigError, authorizationHeaders, self.tokenFile(b"\n"), {})
        self.assertRaises(ConfigError, authorizationHeaders, self.tokenFile(b"a b\n"), {})
        self.assertRaises(ConfigError, authorizationHeaders, None, {"UPLOADSVC_TOKEN": "a\rb"})


class SplitCredentialsTests(SynchronousTestCase):
    """
    L{splitCredentials}: C{user:password@} in a URL becomes HTTP Basic.
    """

    def test_none(self) -> None:
        """
        A URL without credentials is unchanged and adds no header.
        """
        for url in ("https://h/x", "http://h:8080/a@b", "https://[::1]:8443/"):
            self.assertEqual(splitCredentials(url), (url, {}))
        self.assertEqual(splitCredentials("https://@h/x"), ("https://h/x", {}))

    def test_basic(self) -> None:
        """
        The user information leaves the URL and is sent as Basic, its
        percent-encoding undone and encoded as UTF-8; a raw C{@} in the
        password is tolerated, and a missing password is empty.
        """
        cases = [
            ("https://alice:pw@h:8443/in/", "https://h:8443/in/", "alice:pw"),
            ("https://alice:p%40ss%3Aw%2F@h/", "https://h/", "alice:p@ss:w/"),
            ("https://alice:p@ss@h/", "https://h/", "alice:p@ss"),
            ("https://%C3%A9l%C3%A8ve:%E2%82%AC@h/", "https://h/", "\u00e9l\u00e8ve:\u20ac"),
            ("https://alice@h/", "https://h/", "alice:"),
        ]
        for url, clean, pair in cases:
            token = base64.b64encode(pair.encode("utf-8")).decode()
            self.assertEqual(splitCredentials(url), (clean, {"Authorization": f"Basic {token}"}), url)

    def test_refused(self) -> None:
        """
        Credentials that Basic cannot carry are refused, and the message
        does not repeat the password.
        """
        for url in (
            "https://a%3Ab:hunter2@h/",
            "https://alice:hunter2%0A@h/",
            "https://alice:hunter2%FF@h/",
            "https://alice:hunter2@[::1/",
            "https://alice:hun/ter2@h/",
            "https://alice:hunter2/x@h/",
            "https://alice:hunter2?x@h/",
            "https://alice:hunter2#x@h/",
        ):
            error = self.assertRaises(ConfigError, splitCredentials, url)
            self.assertNotIn("hunter2", str(error))

    def test_sendable(self) -> None:
        """
        L{checkSendable} refuses what treq cannot encode and lets ordinary
        and internationalised host names through.
        """
        for url in ("https://h:8443/in/a%20b", "https://b\u00fccher.example/x", "http://127.0.0.1/"):
            checkSendable(url)
        for url in ("http://[::1]/", "http://bad_host.example/", "http://-x-.example/"):
            self.assertRaises(ConfigError, checkSendable, url)


class ClassifyTests(SynchronousTestCase):
    """
    L{classifyFailure}.
    """

    def test_networkRetryable(self) -> None:
        """
        Refused and lost connections are retried, named plainly.
        """
        refused = classifyFailure(Failure(ConnectionRefusedError()), "http://h/")
        self.assertIsInstance(refused, Retryable)
        self.assertEqual(refused.reason, "connection refused")
        lost = classifyFailure(
            Failure(ResponseNeverReceived([Failure(ConnectionLost())])), "http://h/"
        )
        self.assertEqual((type(lost), lost.reason), (Retryable, "connection lost"))

    def test_tlsFatal(self) -> None:
        """
        Certificate problems, however deeply wrapped, are fatal and say so.
        """
        ssl = classifyFailure(
            Failure(ResponseNeverReceived([Failure(SSL.Error([("SSL routines", "", "certificate verify failed")]))])),
            "https://h.example/a",
        )
        self.assertIsInstance(ssl, Fatal)
        self.assertEqual(
            ssl.reason,
            "TLS certificate verification failed for https://h.example/a:"
            " TLS handshake failed: certificate verify failed",
        )
        name = classifyFailure(Failure(VerificationError(errors=[])), "https://h.example/a")
        self.assertIsInstance(name, Fatal)
        self.assertIn("does not match the host name 'h.example'", name.reason)

    def test_localReadFatal(self) -> None:
        """
        An error reading the local file is not retried.
        """
        self.assertIsInstance(classifyFailure(Failure(PermissionError(13, "denied")), "u"), Fatal)


def _result(name: str, ok: bool, size: int = 100, resumes: int = 0, error: str | None = None) -> UploadResult:
    return UploadResult(UploadJob(name, "http://h/" + name, name), ok, size, error=error, resumes=resumes, bytesSent=size)


class DisplayTests(SynchronousTestCase):
    """
    L{formatSummary}, L{ProgressDisplay} and L{LineDisplay}.
    """

    def test_summary(self) -> None:
        """
        The summary lists failures and skips, then the totals.
        """
        text = formatSummary(
            [_result("a", True, 2048, 3), _result("b", False, 10, error="HTTP 409: exists")],
            [("x/.hidden", "reserved")],
            elapsed=1.25,
        )
        self.assertEqual(
            text.splitlines(),
            [
                "FAILED  b: HTTP 409: exists",
                "skipped x/.hidden: reserved",
                "1 of 2 files uploaded (2.0 KiB, 2.0 KiB sent, 3 resumes, 1.2 s)",
            ],
        )

    def test_progressDisplay(self) -> None:
        """
        The bars show progress, resumes and results as lines above them.
        """
        stream = io.StringIO()
        display = ProgressDisplay(200, 2, stream)
        job = UploadJob("a", "http://h/a", "a")
        display.started(job, 100)
        display.progress(job, 60)
        display.retrying(job, "connection lost", 0.5, 1)
        display.resumed(job, 40)
        display.progress(job, 100)
        display.finished(_result("a", True))
        display.close()
        out = stream.getvalue()
        self.assertIn("a: connection lost; retrying in 0.5 s (attempt 2)", out)
        self.assertIn("a: resuming at 40 B", out)
        self.assertIn("done a", out)
        self.assertIn("all (1/2)", out)

    def test_lineDisplay(self) -> None:
        """
        Without a terminal, one line per event.
        """
        stream = io.StringIO()
        display = LineDisplay(stream)
        job = UploadJob("a", "http://h/a", "a")
        display.retrying(job, "stalled", 1.0, 2)
        display.resumed(job, 2 * 1024 * 1024)
        display.finished(_result("a", False, error="gave up"))
        self.assertEqual(
            stream.getvalue().splitlines(),
            ["a: stalled; retrying in 1.0 s (attempt 3)", "a: resuming at 2.0 MiB", "FAILED a: gave up"],
        )
