"""
The app's answers to browsers and behind proxies (docs/browsers.md), fast:
treq's StubTreq in memory (its peer is 127.0.0.1), a real store on a temp
folder. CORS, URLs from a trusted proxy's headers, and the upload page.
"""

from __future__ import annotations

import os
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support.stubapp import StubRequests
from uploadsvc.protocol.cors import CorsPolicy
from uploadsvc.protocol.forwarded import TrustedProxies
from uploadsvc.storage.filestore import FileStore
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp
from uploadsvc.web.auth import Authenticator, SecretFile
from uploadsvc.web.uploadpage import CSP, FILES, pageFile

APP = "https://app.example"
TOKEN = "browser-test-token-0123456789"


class _AppCase(StubRequests, SynchronousTestCase):
    def build(self, config: Config, auth: bool = False) -> None:
        root = os.path.abspath(self.mktemp())
        self.store = FileStore(root, fsync=False)
        self.addCleanup(self.store.close)
        authenticator = None
        if auth:
            clock = Clock()
            tokens = os.path.abspath(self.mktemp())
            with open(tokens, "w") as f:
                f.write(TOKEN + "\n")
            authenticator = Authenticator(clock, SecretFile(tokens, clock), None)
        self.app = UploadApp(self.store, ImmediateRunner(), config, auth=authenticator)
        self.treq = StubTreq(self.app.resource())

    def cors(self, response: Any) -> dict[str, str]:
        return {
            name.decode().lower(): values[0].decode()
            for name, values in response.headers.getAllRawHeaders()
            if name.lower().startswith(b"access-control-")
        }


class CorsAppTests(_AppCase):
    """
    CORS in front of every route, credentials required.
    """

    def setUp(self) -> None:
        self.build(Config(cors=CorsPolicy(frozenset({APP}))), auth=True)

    def test_preflightBeforeCredentials(self) -> None:
        """A preflight from a configured origin is answered 200 without credentials."""
        response, body = self.request(
            "OPTIONS", "/a/b.bin", Origin=APP, Access_Control_Request_Method="PUT",
            Access_Control_Request_Headers="authorization, content-range",
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"")
        cors = self.cors(response)
        self.assertEqual(cors["access-control-allow-origin"], APP)
        self.assertIn("PUT", cors["access-control-allow-methods"])
        self.assertIn("Authorization", cors["access-control-allow-headers"])
        self.assertEqual(self.header(response, "Vary"), "Origin")

    def test_preflightForeignOrigin(self) -> None:
        """A preflight from another origin: 403, one line, no CORS header."""
        response, body = self.request(
            "OPTIONS", "/a/b.bin", Origin="https://evil.example", Access_Control_Request_Method="PUT"
        )
        self.assertEqual(response.code, 403)
        self.assertEqual(self.cors(response), {})
        self.assertEqual(body, b"CORS: the origin https://evil.example is not allowed here\n")

    def test_plainOptionsNeedsCredentials(self) -> None:
        """An OPTIONS that is no preflight goes through the credentials check."""
        response, _ = self.request("OPTIONS", "/a/b.bin", Origin=APP)
        self.assertEqual(response.code, 401)
        self.assertEqual(self.cors(response)["access-control-allow-origin"], APP)

    def test_refusalsCarryHeaders(self) -> None:
        """
        Refusals to a configured origin (401, 400, 409) carry the origin and
        the exposed headers, so the page can read why.
        """
        auth = f"Bearer {TOKEN}"
        cases = [
            (401, self.request("PUT", "/a.bin", b"x", Origin=APP)),
            (400, self.request("PUT", "/.hidden", b"x", Origin=APP, Authorization=auth)),
        ]
        self.request("PUT", "/c.bin", b"x", Authorization=auth)
        cases.append((409, self.request("PUT", "/c.bin", b"y", Origin=APP, Authorization=auth)))
        for status, (response, body) in cases:
            self.assertEqual(response.code, status, body)
            cors = self.cors(response)
            self.assertEqual(cors["access-control-allow-origin"], APP)
            self.assertIn("WWW-Authenticate", cors["access-control-expose-headers"])
            self.assertIn("Upload-Offset", cors["access-control-expose-headers"])

    def test_successCarriesHeaders(self) -> None:
        """A 201 to a configured origin exposes Location and Upload-Offset."""
        response, _ = self.request(
            "PUT", "/d.bin", b"data", Origin=APP, Authorization=f"Bearer {TOKEN}"
        )
        self.assertEqual(response.code, 201)
        exposed = self.cors(response)["access-control-expose-headers"].split(", ")
        self.assertIn("Location", exposed)
        self.assertIn("Upload-Offset", exposed)

    def test_foreignOriginNoHeaders(self) -> None:
        """An answer to another origin names no origin (the browser hides it)."""
        response, _ = self.request(
            "PUT", "/e.bin", b"data", Origin="https://evil.example", Authorization=f"Bearer {TOKEN}"
        )
        self.assertEqual(self.cors(response), {})
        self.assertEqual(self.header(response, "Vary"), "Origin")


class CorsOffTests(_AppCase):
    """
    Without configured origins nothing of CORS shows.
    """

    def test_off(self) -> None:
        """A preflight is an ordinary OPTIONS (the draft's answer here), with no CORS header."""
        self.build(Config())
        response, _ = self.request(
            "OPTIONS", "/a.bin", Origin=APP, Access_Control_Request_Method="PUT"
        )
        self.assertEqual(response.code, 204)
        self.assertIsNotNone(self.header(response, "Upload-Limit"))
        self.assertEqual(self.cors(response), {})
        self.assertIsNone(self.header(response, "Vary"))


class ForwardedAppTests(_AppCase):
    """
    C{Location} from a trusted proxy's headers, and from nobody else's.
    """

    FORWARDED = {
        "X_Forwarded_Proto": "https",
        "X_Forwarded_Host": "up.example.org",
        "X_Forwarded_Prefix": "/files",
    }

    def test_trusted(self) -> None:
        """From a trusted peer the URL is the proxy's scheme, host and prefix."""
        self.build(Config(proxies=TrustedProxies.fromStrings(["127.0.0.1"])))
        response, _ = self.request("PUT", "/a%20b/c.bin", b"x", **self.FORWARDED)
        self.assertEqual(response.code, 201)
        self.assertEqual(self.header(response, "Location"), "https://up.example.org/files/a%20b/c.bin")

    def test_forwardedHeader(self) -> None:
        """RFC 7239's Forwarded: the last element counts; the Host fills in."""
        self.build(Config(proxies=TrustedProxies.fromStrings(["127.0.0.0/8"])))
        response, _ = self.request(
            "PUT", "/f.bin", b"x", Forwarded="for=1.2.3.4;host=evil.example, for=5.6.7.8;proto=https"
        )
        self.assertEqual(self.header(response, "Location"), "https://example/f.bin")

    def test_mountPrefixReplaced(self) -> None:
        """The proxy's prefix replaces the server's own mount prefix."""
        self.build(Config(prefix=b"/up", proxies=TrustedProxies.fromStrings(["127.0.0.1"])))
        response, _ = self.request("PUT", "/up/g.bin", b"x", **self.FORWARDED)
        self.assertEqual(self.header(response, "Location"), "https://up.example.org/files/g.bin")

    def test_publicBaseForHandlers(self) -> None:
        """
        A handler reads the proxy's word with publicBase and builds its own
        URLs with absoluteURL (as the tus and IETF endpoints do).
        """
        from twisted.web.server import Request
        from twisted.web.test.requesthelper import DummyChannel

        from uploadsvc.protocol.forwarded import PublicBase
        from uploadsvc.web.forwarded import absoluteURL, notePublicBase, publicBase

        def request() -> Request:
            made = Request(DummyChannel())  # its peer: 192.168.1.1
            made.requestHeaders.setRawHeaders(b"X-Forwarded-Proto", [b"https"])
            made.requestHeaders.setRawHeaders(b"X-Forwarded-Host", [b"h.example"])
            return made

        untrusted = request()
        notePublicBase(untrusted, TrustedProxies.fromStrings(["192.168.1.2"]), b"/up")
        self.assertEqual(publicBase(untrusted), PublicBase())
        self.assertEqual(absoluteURL(untrusted, b"/up/.tus/abc"), b"/up/.tus/abc")
        trusted = request()
        notePublicBase(trusted, TrustedProxies.fromStrings(["192.168.1.1"]), b"/up")
        self.assertEqual(publicBase(trusted), PublicBase("https", "h.example", None))
        self.assertEqual(absoluteURL(trusted, b"/up/.tus/abc"), b"https://h.example/up/.tus/abc")

    def test_untrusted(self) -> None:
        """From a peer not trusted the headers change nothing."""
        for proxies in [TrustedProxies(), TrustedProxies.fromStrings(["10.0.0.0/8", "unix"])]:
            self.build(Config(proxies=proxies))
            response, _ = self.request("PUT", "/h.bin", b"x", **self.FORWARDED)
            self.assertEqual(response.code, 201)
            self.assertEqual(self.header(response, "Location"), "/h.bin")

    def test_untrustedBadIgnored(self) -> None:
        """Junk in those headers from a peer not trusted is ignored too."""
        self.build(Config(proxies=TrustedProxies.fromStrings(["10.0.0.1"])))
        response, _ = self.request("PUT", "/i.bin", b"x", X_Forwarded_Host="a/b", Forwarded=";;")
        self.assertEqual(response.code, 201)

    def test_hostNeeded(self) -> None:
        """A scheme from the proxy and a Host that is no host name: 400 naming Host."""
        self.build(Config(proxies=TrustedProxies.fromStrings(["127.0.0.1"])))
        response, body = self.request("PUT", "/k.bin", b"x", X_Forwarded_Proto="https", Host="a b")
        self.assertEqual(response.code, 400)
        self.assertEqual(body, b"from the trusted proxy: Host: 'a b' is not a host name\n")

    def test_trustedBad(self) -> None:
        """A bad value from the trusted proxy is refused 400 from the headers, nothing stored."""
        self.build(Config(proxies=TrustedProxies.fromStrings(["127.0.0.1"])))
        response, body = self.request("PUT", "/j.bin", b"x", X_Forwarded_Host="evil.example/x")
        self.assertEqual(response.code, 400)
        self.assertEqual(
            body, b"from the trusted proxy: X-Forwarded-Host: 'evil.example/x' is not a host name\n"
        )
        response, _ = self.request("HEAD", "/j.bin")
        self.assertEqual(response.code, 404)


class UploadPageTests(_AppCase):
    """
    The page at C{/.upload/}.
    """

    def test_served(self) -> None:
        """Each of the page's files, with its type and a strict CSP."""
        self.build(Config(), auth=True)  # the page itself needs no credentials
        for name, (_, contentType) in FILES.items():
            response, body = self.request("GET", "/.upload/" + name.decode())
            self.assertEqual(response.code, 200)
            self.assertEqual(self.header(response, "Content-Type"), contentType.decode())
            self.assertEqual(self.header(response, "Content-Security-Policy"), CSP.decode())
            self.assertEqual(self.header(response, "X-Content-Type-Options"), "nosniff")
            self.assertEqual(body, pageFile(FILES[name][0]))
        self.assertIn(b"default-src 'none'", CSP)

    def test_head(self) -> None:
        """HEAD gives the headers and no body."""
        self.build(Config())
        response, body = self.request("HEAD", "/.upload/")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"")

    def test_redirect(self) -> None:
        """Without its slash the page's address redirects, under the mount prefix."""
        self.build(Config(prefix=b"/up"))
        response = self.successResultOf(
            self.treq.request("GET", "http://example/up/.upload", allow_redirects=False)
        )
        self.assertEqual(response.code, 301)
        self.assertEqual(self.header(response, "Location"), "/up/.upload/")
        response, _ = self.request("GET", "/up/.upload/")
        self.assertEqual(response.code, 200)

    def test_refusals(self) -> None:
        """Other methods get 405 with Allow; unknown files 404."""
        self.build(Config())
        response, body = self.request("PUT", "/.upload/", b"x")
        self.assertEqual(response.code, 405)
        self.assertEqual(self.header(response, "Allow"), "GET, HEAD")
        self.assertEqual(body.count(b"\n"), 1)
        response, _ = self.request("GET", "/.upload/secret")
        self.assertEqual(response.code, 404)
        response, _ = self.request("GET", "/.upload/../etc/passwd")
        self.assertNotEqual(response.code, 200)

    def test_otherDotEndpoints(self) -> None:
        """Names that only begin like the page's are not the page."""
        self.build(Config())
        for path in ["/.uploadx", "/.upload.js"]:
            response, _ = self.request("GET", path)
            self.assertEqual(response.code, 400, path)
        # The draft's own endpoint, which has no GET.
        response, _ = self.request("GET", "/.uploads/")
        self.assertEqual(response.code, 405)

    def test_disabled(self) -> None:
        """With the page off, /.upload/ is a reserved name like any other (400)."""
        self.build(Config(uploadPage=False))
        response, _ = self.request("GET", "/.upload/")
        self.assertEqual(response.code, 400)

    def test_selfContained(self) -> None:
        """
        The page loads nothing from elsewhere and has no inline script or
        style (which its CSP would block).
        """
        html = pageFile("index.html").decode()
        for text in (html, pageFile("app.js").decode(), pageFile("app.css").decode()):
            self.assertNotRegex(text, r"(?i)(src|href)\s*=\s*[\"']?(https?:)?//")
            self.assertNotRegex(text, r"(?i)@import|url\(\s*[\"']?(https?:)?//")
        self.assertNotRegex(html, r"<script(?![^>]*\bsrc=)[^>]*>")
        self.assertNotRegex(html, r"(?i)\son[a-z]+\s*=")
        self.assertNotRegex(html, r"(?i)\sstyle\s*=")
        self.assertNotRegex(html, r"(?i)<style")
