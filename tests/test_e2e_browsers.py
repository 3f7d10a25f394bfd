"""
End-to-end tests of docs/protocol.md section 10 against a real C{twistd
uploadsvc}: CORS preflights and exposed headers (over the wire, and in a
real headless Chromium on another origin), and C{Location} from a trusted
proxy's headers versus anyone else's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from tests.support.browser import HeadlessChromium
from tests.support.server import ServerTestMixin

TOKEN = "browser-e2e-token-0123456789"
FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "uploads.example.org",
    "X-Forwarded-Prefix": "/files",
}


def tokenFile(testCase: TestCase) -> str:
    path = os.path.abspath(testCase.mktemp())
    with open(path, "w") as f:
        f.write(TOKEN + "\n")
    return path


class CorsWireTests(ServerTestMixin, TestCase):
    """
    CORS as a browser would see it, with credentials required.
    """

    timeout = 60
    origin = "https://app.example"

    def setUp(self) -> None:
        self.startUploadServer(
            "--auth-tokens", tokenFile(self), "--cors-origin", self.origin,
            "--cors-max-age", "120",
        )

    async def test_preflightAllowed(self) -> None:
        """
        A preflight from the configured origin is answered 200 before any
        credentials, with the methods, request headers and max age.
        """
        answer = await self.http.request("OPTIONS", "/a/b.bin", {
            "Origin": self.origin, "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization,content-range",
        })
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.header("access-control-allow-origin"), self.origin)
        self.assertEqual(answer.header("access-control-max-age"), "120")
        self.assertIn("PATCH", answer.header("access-control-allow-methods") or "")
        allowed = (answer.header("access-control-allow-headers") or "").lower()
        for name in ("authorization", "content-range", "repr-digest", "upload-offset"):
            self.assertIn(name, allowed)
        self.assertEqual(answer.header("vary"), "Origin")

    async def test_preflightDenied(self) -> None:
        """A preflight from another origin gets 403 and no CORS header."""
        answer = await self.http.request("OPTIONS", "/a/b.bin", {
            "Origin": "https://evil.example", "Access-Control-Request-Method": "PUT",
        })
        self.assertEqual(answer.status, 403)
        self.assertEqual([n for n, _ in answer.headers if n.startswith(b"access-control")], [])

    async def test_optionsNotPreflightNeedsCredentials(self) -> None:
        """An OPTIONS without Access-Control-Request-Method is checked like any request."""
        answer = await self.http.request("OPTIONS", "/a/b.bin", {"Origin": self.origin})
        self.assertEqual(answer.status, 401)

    async def test_exposedOnSuccessAndRefusal(self) -> None:
        """
        A 201 and a 409 to the configured origin carry the origin and expose
        Location, Upload-Offset and the rest.
        """
        headers = {"Origin": self.origin, "Authorization": f"Bearer {TOKEN}"}
        created = await self.http.request("PUT", "/c.bin", headers, b"hello")
        conflict = await self.http.request("PUT", "/c.bin", headers, b"again")
        unauthorized = await self.http.request("PUT", "/d.bin", {"Origin": self.origin}, b"x")
        for answer, status in [(created, 201), (conflict, 409), (unauthorized, 401)]:
            self.assertEqual(answer.status, status)
            self.assertEqual(answer.header("access-control-allow-origin"), self.origin)
            exposed = (answer.header("access-control-expose-headers") or "").split(", ")
            for name in ("Location", "Upload-Offset", "Upload-Complete", "Repr-Digest",
                         "Tus-Resumable", "Upload-Draft-Interop-Version", "WWW-Authenticate"):
                self.assertIn(name, exposed)


class ForwardedWireTests(ServerTestMixin, TestCase):
    """
    X-Forwarded-* from a trusted peer decide Location; from another they
    do not.
    """

    timeout = 60

    async def test_trustedPeer(self) -> None:
        """Trusting 127.0.0.1, the headers make Location the public URL."""
        self.startUploadServer("--trusted-proxy", "127.0.0.1", "--prefix", "/up")
        answer = await self.http.request("PUT", "/up/a/b.bin", FORWARDED, b"x")
        self.assertEqual(answer.status, 201)
        self.assertEqual(answer.header("location"), "https://uploads.example.org/files/a/b.bin")

    async def test_untrustedPeer(self) -> None:
        """Trusting another network, the same headers change nothing."""
        self.startUploadServer("--trusted-proxy", "10.0.0.0/8", "--prefix", "/up")
        answer = await self.http.request("PUT", "/up/a/b.bin", FORWARDED, b"x")
        self.assertEqual(answer.status, 201)
        self.assertEqual(answer.header("location"), "/up/a/b.bin")

    async def test_unixSocketFrontEnd(self) -> None:
        """
        With C{--trusted-proxy unix}, a front end on the unix socket is
        believed, and a client on TCP (127.0.0.1) is not.
        """
        # Short: a unix socket's path has room for about 100 bytes.
        folder = tempfile.mkdtemp(prefix="uploadsvc-")
        self.addCleanup(shutil.rmtree, folder, True)
        socketPath = os.path.join(folder, "s")
        self.startUploadServer("--listen", f"unix:{socketPath}", "--trusted-proxy", "unix")
        overUnix = await self.curl(
            "--unix-socket", socketPath, "-X", "PUT", "--data-binary", "x",
            *[arg for k, v in FORWARDED.items() for arg in ("-H", f"{k}: {v}")],
            "http://localhost/u.bin",
        )
        self.assertEqual(overUnix.status, 201, overUnix.stderr)
        self.assertEqual(overUnix.header("location"), "https://uploads.example.org/files/u.bin")
        overTCP = await self.http.request("PUT", "/t.bin", FORWARDED, b"x")
        self.assertEqual(overTCP.header("location"), "/t.bin")

    async def test_trustedGarbageRefused(self) -> None:
        """A malformed value from the trusted proxy is refused 400 with a reason; nothing stored."""
        self.startUploadServer("--trusted-proxy", "127.0.0.1")
        answer = await self.http.request(
            "PUT", "/g.bin", {"Forwarded": 'for=1.2.3.4;host="a b"'}, b"x"
        )
        self.assertEqual(answer.status, 400)
        self.assertEqual(answer.body, b"from the trusted proxy: Forwarded: 'a b' is not a host name\n")
        self.assertFalse(os.path.exists(self.storedPath("g.bin")))


#: Run in the browser: a cross-origin PUT with credentials and Content-Range
#: (so a preflight first), reporting what the script may read of the answer.
CROSS_ORIGIN_PUT = """
const done = arguments[arguments.length - 1];
const [url, token, body] = arguments;
fetch(url, {method: "PUT", body: body, headers: {
    "Authorization": "Bearer " + token,
    "Content-Range": "bytes 0-" + (body.length - 1) + "/" + body.length}})
  .then(async r => done(JSON.stringify({
      status: r.status, location: r.headers.get("Location"),
      offset: r.headers.get("Upload-Offset"), body: await r.text()})))
  .catch(e => done(JSON.stringify({error: String(e)})));
"""


class CorsBrowserTests(ServerTestMixin, TestCase):
    """
    A page on another origin uploads with fetch() in a real Chromium.
    """

    timeout = 120

    def servePage(self) -> int:
        """
        A page of another origin (another port) on this reactor.
        """
        root = Resource()
        root.putChild(b"", Data(b"<!doctype html><title>elsewhere</title>", "text/html"))
        port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def fetchFrom(self, browser: HeadlessChromium, pagePort: int, path: str, body: str) -> Any:
        await deferToThread(browser.driver.get, f"http://127.0.0.1:{pagePort}/")
        result = await deferToThread(
            browser.driver.execute_async_script, CROSS_ORIGIN_PUT, self.server.url(path), TOKEN, body
        )
        return json.loads(result)

    async def test_allowedAndDenied(self) -> None:
        """
        From the configured origin the upload goes through and the script
        reads Location, Upload-Offset and a refusal's reason; from another
        origin the preflight fails and nothing is stored.
        """
        browser = HeadlessChromium(self)
        allowed, other = self.servePage(), self.servePage()
        self.startUploadServer(
            "--auth-tokens", tokenFile(self), "--cors-origin", f"http://127.0.0.1:{allowed}"
        )
        first = await self.fetchFrom(browser, allowed, "/x/a.bin", "hello")
        self.assertEqual(
            (first.get("status"), first.get("location"), first.get("offset")),
            (201, "/x/a.bin", "5"), first,
        )
        again = await self.fetchFrom(browser, allowed, "/x/a.bin", "other")
        self.assertEqual(again["status"], 200)  # a retried final request (section 3)
        conflict = await self.fetchFrom(browser, allowed, "/x/a.bin", "longer body")
        self.assertEqual(conflict["status"], 409)
        self.assertTrue(conflict["body"].strip())
        denied = await self.fetchFrom(browser, other, "/x/b.bin", "hello")
        self.assertIn("error", denied)
        self.assertFalse(os.path.exists(self.storedPath("x/b.bin")))
