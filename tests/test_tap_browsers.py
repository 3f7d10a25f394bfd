"""
The options of C{twistd uploadsvc} for browsers and proxies (docs/browsers.md):
C{--cors-origin}, C{--cors-credentials}, C{--cors-max-age},
C{--trusted-proxy} and C{--no-upload-page}; their checks, their way into the
app's L{Config}, and into workers' command lines.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from tests.test_e2e_startup import StartupTestCase
from uploadsvc.protocol.cors import CorsPolicy
from uploadsvc.protocol.forwarded import TrustedProxies
from uploadsvc.tap import Options, makeService
from uploadsvc.web.app import Config


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class BrowserOptionsTests(SynchronousTestCase):
    """
    Parsing and checking the options.
    """

    def test_defaults(self) -> None:
        """CORS off, nobody trusted, the page served."""
        options = parse()
        self.assertEqual(options["cors"], CorsPolicy())
        self.assertEqual(options["proxies"], TrustedProxies())
        self.assertFalse(options["no-upload-page"])

    def test_values(self) -> None:
        """Repeatable origins and proxies, credentials, max age."""
        options = parse(
            "--cors-origin", "https://App.example:443", "--cors-origin", "http://localhost:3000",
            "--cors-credentials", "--cors-max-age", "60",
            "--trusted-proxy", "127.0.0.1", "--trusted-proxy", "10.0.0.0/8",
            "--trusted-proxy", "unix", "--no-upload-page",
        )
        self.assertEqual(
            options["cors"],
            CorsPolicy(frozenset({"https://app.example", "http://localhost:3000"}), True, 60),
        )
        self.assertEqual(
            options["proxies"],
            TrustedProxies(
                (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")), True
            ),
        )
        self.assertTrue(options["no-upload-page"])

    def test_anyOrigin(self) -> None:
        """* alone allows every origin."""
        self.assertTrue(parse("--cors-origin", "*")["cors"].anyOrigin)

    def test_documented(self) -> None:
        """Every one of them is in --help."""
        usage = str(Options())
        for name in ("cors-origin", "cors-credentials", "cors-max-age", "trusted-proxy",
                     "no-upload-page"):
            self.assertIn("--" + name, usage)

    def test_mistakes(self) -> None:
        """Each mistake is refused in one line that names the option."""
        cases = {
            ("--cors-origin", "https://app.example/"): "--cors-origin 'https://app.example/' is not an origin",
            ("--cors-origin", "app.example"): "--cors-origin 'app.example' is not an origin",
            ("--cors-origin", "*", "--cors-credentials"): "--cors-origin * cannot go with --cors-credentials",
            ("--cors-origin", "*", "--cors-origin", "https://a.example"): "--cors-origin * already allows",
            ("--cors-credentials",): "--cors-credentials needs --cors-origin",
            ("--cors-origin", "https://a.example", "--cors-max-age", "86401"): "--cors-max-age 86401: at most 86400",
            ("--cors-max-age", "-1"): "--cors-max-age -1: give a number of 0 or more",
            ("--trusted-proxy", "10.0.0.1/8"): "--trusted-proxy '10.0.0.1/8' is not an IP address",
            ("--trusted-proxy", "proxy.example"): "--trusted-proxy 'proxy.example' is not an IP address",
        }
        for argv, message in cases.items():
            error = self.assertRaises(UsageError, parse, *argv)
            self.assertIn(message, str(error))
            self.assertNotIn("\n", str(error))

    def test_workersGetThem(self) -> None:
        """Workers are started with the same origins and proxies."""
        args = parse(
            "--cors-origin", "https://a.example", "--cors-origin", "https://b.example",
            "--trusted-proxy", "unix", "--trusted-proxy", "::1", "--cors-credentials",
            "--cors-max-age", "5", "--no-upload-page",
        ).workerArguments()
        again = parse(*args)
        self.assertEqual(again["cors"].origins, frozenset({"https://a.example", "https://b.example"}))
        self.assertEqual(again["cors"].maxAge, 5)
        self.assertTrue(again["cors"].credentials)
        self.assertTrue(again["proxies"].unix)
        self.assertTrue(again["proxies"].trusts("::1"))
        self.assertTrue(again["no-upload-page"])

    def test_intoConfig(self) -> None:
        """makeService gives the app what the options say."""
        reactor = MemoryReactorClock()
        options = parse(
            "--root", self.mktemp(), "--cors-origin", "https://a.example",
            "--trusted-proxy", "127.0.0.1", "--no-upload-page",
        )
        service = makeService(options, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        config: Config = reactor.tcpServers[0][1].resource._config
        self.assertEqual(config.cors, options["cors"])
        self.assertEqual(config.proxies, options["proxies"])
        self.assertFalse(config.uploadPage)


class BrowserOptionsStartupTests(StartupTestCase):
    """
    On the real twistd command line.
    """

    def test_oneLine(self) -> None:
        """A bad origin or proxy ends twistd with one line, no traceback."""
        self.assertOneLine(
            self.twistd("--cors-origin", "https://app.example/path"),
            "--cors-origin 'https://app.example/path' is not an origin",
        )
        self.assertOneLine(
            self.twistd("--trusted-proxy", "localhost"),
            "--trusted-proxy 'localhost' is not an IP address",
        )
