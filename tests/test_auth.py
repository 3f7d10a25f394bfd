"""
Tests for authentication: signed URLs (L{uploadsvc.protocol.signing}), secret
files and the credentials check (L{uploadsvc.web.auth}), the app's 401
answers, the C{twistd uploadsvc} options that configure them, and the
C{python -m uploadsvc.sign} helper.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from contextlib import redirect_stderr, redirect_stdout
from typing import Any
from urllib.parse import urlsplit

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc import sign
from uploadsvc.errors import Unauthorized
from uploadsvc.protocol.signing import checkSignature, signQuery, signature
from uploadsvc.storage.filestore import FileStore
from uploadsvc.tap import Options, isLoopbackEndpoint, makeService
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp
from uploadsvc.web.auth import (
    Authenticator,
    ReloadOnSignal,
    SecretFile,
    SecretFileError,
    readSecrets,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
TOKEN = b"t0ken-0123456789abcdef"
NOW = 1_800_000_000


def writeFile(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


class SigningTests(SynchronousTestCase):
    """
    Tests for L{uploadsvc.protocol.signing}.
    """

    def check(
        self, method: bytes, path: bytes, query: bytes, now: float = NOW, keys: Any = (KEY,)
    ) -> None:
        checkSignature(list(keys), method, path, query, now)

    def refused(self, *args: Any, **kwargs: Any) -> Unauthorized:
        return self.assertRaises(Unauthorized, self.check, *args, **kwargs)

    def test_roundTrip(self) -> None:
        """A query made by signQuery verifies for the same method, path and time."""
        self.check(b"PUT", b"/a/b.bin", signQuery(KEY, b"PUT", b"/a/b.bin", NOW + 60))

    def test_pathBound(self) -> None:
        """A signature for one path does not open another."""
        query = signQuery(KEY, b"PUT", b"/a/b.bin", NOW + 60)
        self.assertEqual(self.refused(b"PUT", b"/a/c.bin", query).code, "bad-signature")
        self.refused(b"PUT", b"/a/b.bin/", query)
        self.refused(b"PUT", b"/a/b%2Ebin", query)

    def test_methodBound(self) -> None:
        """A PUT signature allows PUT, POST and HEAD but not DELETE; a HEAD one only HEAD."""
        put = signQuery(KEY, b"PUT", b"/x", NOW + 60)
        for method in (b"PUT", b"POST", b"HEAD", b"put"):
            self.check(method, b"/x", put)
        self.refused(b"DELETE", b"/x", put)
        head = signQuery(KEY, b"HEAD", b"/x", NOW + 60)
        self.check(b"HEAD", b"/x", head)
        self.refused(b"PUT", b"/x", head)
        delete = signQuery(KEY, b"DELETE", b"/x", NOW + 60)
        self.check(b"DELETE", b"/x", delete)
        self.refused(b"PUT", b"/x", delete)

    def test_postSignatureIsPut(self) -> None:
        """POST is signed as PUT, so either name mints the same signature."""
        self.assertEqual(signature(KEY, b"POST", b"/x", 5), signature(KEY, b"PUT", b"/x", 5))

    def test_expiry(self) -> None:
        """A URL is good up to and including its expiry second, refused after."""
        query = signQuery(KEY, b"PUT", b"/x", NOW)
        self.check(b"PUT", b"/x", query, now=NOW)
        self.assertEqual(
            self.refused(b"PUT", b"/x", query, now=NOW + 1).code, "signature-expired"
        )

    def test_expiryBound(self) -> None:
        """Changing the expiry of a signed URL breaks its signature."""
        query = signQuery(KEY, b"PUT", b"/x", NOW + 60)
        forged = query.replace(b"expires=%d" % (NOW + 60), b"expires=%d" % (NOW + 6000))
        self.assertEqual(self.refused(b"PUT", b"/x", forged).code, "bad-signature")

    def test_keyBound(self) -> None:
        """A signature made with another key is refused; any configured key verifies."""
        query = signQuery(OTHER_KEY, b"PUT", b"/x", NOW + 60)
        self.refused(b"PUT", b"/x", query)
        self.check(b"PUT", b"/x", query, keys=(KEY, OTHER_KEY))

    def test_malformed(self) -> None:
        """Missing, repeated or malformed parameters are refused."""
        good = signQuery(KEY, b"PUT", b"/x", NOW + 60)
        sig = good.split(b"sig=")[1]
        for query in [
            b"",
            b"sig=" + sig,
            b"expires=%d" % (NOW + 60),
            good + b"&sig=" + sig,
            good + b"&expires=1",
            b"expires=-5&sig=" + sig,
            b"expires=1e9&sig=" + sig,
            b"expires=%d&sig=%s" % (NOW + 60, sig[:-1]),
            b"expires=%d&sig=%sg" % (NOW + 60, sig[:-1]),
            b"expires=%d&sig=%s" % (NOW + 60, b"0" * 64),
        ]:
            self.refused(b"PUT", b"/x", query)

    def test_upperCaseHexAndOtherParameters(self) -> None:
        """Upper-case hex is accepted, and unrelated query parameters are ignored."""
        good = signQuery(KEY, b"PUT", b"/x", NOW + 60)
        expires, sig = good.split(b"&")
        self.check(b"PUT", b"/x", b"a=1&" + sig.upper().replace(b"SIG=", b"sig=") + b"&" + expires)


class SecretFileTests(SynchronousTestCase):
    """
    Tests for L{readSecrets} and L{SecretFile}.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(1000)

    def test_readSecrets(self) -> None:
        """One secret per line, stripped; blank, comment and too-short lines skipped."""
        writeFile(
            self.path,
            "# tokens for the field laptops\n\n  " + TOKEN.decode() + "  \r\nshort\n"
            "#" + "x" * 20 + "\nsecond-token-0123456789\n",
        )
        self.assertEqual(readSecrets(self.path), [TOKEN, b"second-token-0123456789"])

    def test_unreadable(self) -> None:
        """A missing file is an error at start-up."""
        self.assertRaises(SecretFileError, readSecrets, self.path)
        self.assertRaises(SecretFileError, SecretFile, self.path, self.clock)

    def test_empty(self) -> None:
        """A file with no usable secret is an error at start-up."""
        writeFile(self.path, "# nothing yet\nshort\n")
        self.assertRaises(SecretFileError, SecretFile, self.path, self.clock)

    def test_reloadedWhenChanged(self) -> None:
        """A changed file is re-read at the first look a second or more later."""
        writeFile(self.path, TOKEN.decode() + "\n")
        secrets = SecretFile(self.path, self.clock)
        writeFile(self.path, "replacement-token-123456\n")
        self.clock.advance(0.5)
        self.assertEqual(secrets.current(), [TOKEN])
        self.clock.advance(0.5)
        self.assertEqual(secrets.current(), [b"replacement-token-123456"])

    def test_notReadWhenUnchanged(self) -> None:
        """An unchanged file is not read again (its stat is all that is looked at)."""
        writeFile(self.path, TOKEN.decode() + "\n")
        secrets = SecretFile(self.path, self.clock)
        reads = []
        original = secrets.reload
        secrets.reload = lambda: (reads.append(1), original())[1]  # type: ignore[method-assign]
        for _ in range(5):
            self.clock.advance(2)
            secrets.current()
        self.assertEqual(reads, [])

    def test_explicitReload(self) -> None:
        """reload() re-reads at once, even when the stat looks the same."""
        writeFile(self.path, TOKEN.decode() + "\n")
        st = os.stat(self.path)
        secrets = SecretFile(self.path, self.clock)
        writeFile(self.path, TOKEN.decode().upper() + "\n")
        os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns))
        self.clock.advance(5)
        self.assertEqual(secrets.current(), [TOKEN])
        secrets.reload()
        self.assertEqual(secrets.current(), [TOKEN.upper()])

    def test_failClosed(self) -> None:
        """A file that disappears leaves no valid secret until it is back."""
        writeFile(self.path, TOKEN.decode() + "\n")
        secrets = SecretFile(self.path, self.clock)
        os.unlink(self.path)
        self.clock.advance(1)
        self.assertEqual(secrets.current(), [])
        self.flushLoggedErrors()
        writeFile(self.path, TOKEN.decode() + "\n")
        self.clock.advance(1)
        self.assertEqual(secrets.current(), [TOKEN])


class AuthAppTests(SynchronousTestCase):
    """
    The app's answers with credentials required (treq's StubTreq in memory).
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(NOW)
        tokenFile = writeFile(os.path.abspath(self.mktemp()), TOKEN.decode() + "\n")
        keyFile = writeFile(os.path.abspath(self.mktemp()), KEY.decode() + "\n")
        self.auth = Authenticator(
            self.clock, SecretFile(tokenFile, self.clock), SecretFile(keyFile, self.clock)
        )
        self.store = FileStore(self.root, fsync=False)
        self.addCleanup(self.store.close)
        app = UploadApp(self.store, ImmediateRunner(), Config(), auth=self.auth)
        self.treq = StubTreq(app.resource())

    def request(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[Any, bytes]:
        hdrs = {k: [v] for k, v in (headers or {}).items()}
        response = self.successResultOf(
            self.treq.request(method, "http://example" + target, data=body or None, headers=hdrs)
        )
        return response, self.successResultOf(self.treq.content(response))

    def challenge(self, response: Any) -> str:
        values = response.headers.getRawHeaders("WWW-Authenticate") or []
        self.assertEqual(len(values), 1)
        return str(values[0])

    def test_noCredentials(self) -> None:
        """Without credentials every method is 401 with a Bearer challenge, nothing stored."""
        for method in ("PUT", "POST", "HEAD", "DELETE", "GET"):
            response, body = self.request(method, "/a.bin", b"data" if method in ("PUT", "POST") else b"")
            self.assertEqual(response.code, 401, method)
            self.assertEqual(self.challenge(response), 'Bearer realm="uploadsvc"')
        self.assertFalse(os.path.exists(os.path.join(self.root, "a.bin")))

    def test_badToken(self) -> None:
        """A wrong token, another scheme or two Authorization fields are 401 invalid_token."""
        for value in ["Bearer nope-nope-nope-nope", "Basic " + TOKEN.decode(), "Bearer"]:
            response, body = self.request("PUT", "/a.bin", b"x", {"Authorization": value})
            self.assertEqual(response.code, 401, value)
            self.assertIn('error="invalid_token"', self.challenge(response))
            self.assertEqual(body.count(b"\n"), 1)
        self.assertFalse(os.path.exists(os.path.join(self.root, "a.bin")))

    def test_goodToken(self) -> None:
        """The right token, whatever the scheme's case, lets the upload through."""
        response, _ = self.request(
            "PUT", "/a.bin", b"data", {"Authorization": "bearer " + TOKEN.decode()}
        )
        self.assertEqual(response.code, 201)

    def test_authBeforePath(self) -> None:
        """Credentials are checked before the path: a bad path without them is 401."""
        response, _ = self.request("PUT", "/a/%2e%2e/b", b"x")
        self.assertEqual(response.code, 401)
        response, _ = self.request(
            "PUT", "/a/%2e%2e/b", b"x", {"Authorization": "Bearer " + TOKEN.decode()}
        )
        self.assertEqual(response.code, 400)

    def test_signedURL(self) -> None:
        """A signed URL uploads without a token, and its PUT signature also answers HEAD."""
        query = signQuery(KEY, b"PUT", b"/s/a.bin", NOW + 900).decode()
        response, _ = self.request("PUT", "/s/a.bin?" + query, b"x" * 10,
                                   {"Content-Range": "bytes 0-9/20"})
        self.assertEqual(response.code, 204)
        response, _ = self.request("HEAD", "/s/a.bin?" + query)
        self.assertEqual((response.code, response.headers.getRawHeaders("Upload-Offset")), (204, ["10"]))
        response, _ = self.request("DELETE", "/s/a.bin?" + query)
        self.assertEqual(response.code, 401)
        response, _ = self.request("PUT", "/s/other.bin?" + query, b"x")
        self.assertEqual(response.code, 401)

    def test_signedURLExpires(self) -> None:
        """A signed URL stops working after its expiry."""
        query = signQuery(KEY, b"PUT", b"/e.bin", NOW + 10).decode()
        self.clock.advance(11)
        response, body = self.request("PUT", "/e.bin?" + query, b"x")
        self.assertEqual(response.code, 401)
        self.assertIn(b"expired", body)

    def test_badSignatureNotRescuedByToken(self) -> None:
        """A request with signed-URL parameters is judged by its signature alone."""
        query = signQuery(OTHER_KEY, b"PUT", b"/b.bin", NOW + 10).decode()
        response, _ = self.request(
            "PUT", "/b.bin?" + query, b"x", {"Authorization": "Bearer " + TOKEN.decode()}
        )
        self.assertEqual(response.code, 401)

    def test_tokenRevoked(self) -> None:
        """A token removed from the file stops working within a second."""
        assert self.auth.tokens is not None
        writeFile(self.auth.tokens.path, "other-token-0123456789\n")
        self.clock.advance(1)
        response, _ = self.request("PUT", "/r.bin", b"x", {"Authorization": "Bearer " + TOKEN.decode()})
        self.assertEqual(response.code, 401)
        response, _ = self.request("PUT", "/r.bin", b"x", {"Authorization": "Bearer other-token-0123456789"})
        self.assertEqual(response.code, 201)


class ReloadOnSignalTests(SynchronousTestCase):
    """
    Tests for L{ReloadOnSignal}.
    """

    def test_sighupReloads(self) -> None:
        """While running, SIGHUP calls reload on the reactor; stopped, the old handler is back."""
        calls: list[Any] = []
        previous = signal.getsignal(signal.SIGHUP)

        class Reactor:
            def callFromThread(self, f: Any, *a: Any) -> None:
                calls.append("reactor")
                f(*a)

        service = ReloadOnSignal(lambda: calls.append("reload"), Reactor())
        service.startService()
        try:
            os.kill(os.getpid(), signal.SIGHUP)
        finally:
            service.stopService()
        self.assertEqual(calls, ["reactor", "reload"])
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class AuthOptionsTests(SynchronousTestCase):
    """
    The authentication options of C{twistd uploadsvc}.
    """

    def setUp(self) -> None:
        self.tokens = writeFile(os.path.abspath(self.mktemp()), TOKEN.decode() + "\n")
        self.keys = writeFile(os.path.abspath(self.mktemp()), KEY.decode() + "\n")

    def test_loopbackEndpoints(self) -> None:
        """Loopback TCP and UNIX sockets count as local; everything else as exposed."""
        for description in [
            "tcp:8080:interface=127.0.0.1",
            "tcp:8080:interface=127.1.2.3",
            "tcp:8080:interface=localhost",
            "tcp6:8080:interface=\\:\\:1",
            "tcp:8080:interface=\\:\\:ffff\\:127.0.0.1",
            "tcp:8080:127.0.0.1",
            "ssl:8443:privateKey=k.pem:certKey=c.pem:interface=127.0.0.1",
            "unix:/run/uploadsvc.sock",
            "unix:/tmp/a\\:b.sock:mode=600",
        ]:
            self.assertTrue(isLoopbackEndpoint(description), description)
        for description in [
            "tcp:8080",
            "tcp:8080:interface=0.0.0.0",
            "tcp:8080:interface=192.168.1.5",
            "tcp6:8080",
            "tcp6:8080:interface=\\:\\:",
            "ssl:8443:privateKey=k.pem",
            "systemd:domain=INET:index=0",
            "tcp:8080:interface=127.0.0.1.example.com",
        ]:
            self.assertFalse(isLoopbackEndpoint(description), description)

    def test_exposedWithoutAuthRefused(self) -> None:
        """A non-loopback --listen without any auth option refuses to start."""
        error = self.assertRaises(UsageError, parse, "--listen", "tcp:8080:interface=0.0.0.0")
        self.assertIn("--insecure-no-auth", str(error))
        self.assertRaises(
            UsageError, parse, "--listen", "tcp:8080:interface=127.0.0.1", "--listen", "tcp6:8080"
        )

    def test_exposedWithAuthAllowed(self) -> None:
        """Any of the auth modes, or --insecure-no-auth, allows a non-loopback --listen."""
        for extra in [
            ["--auth-tokens", self.tokens],
            ["--signing-key-file", self.keys],
            ["--auth-tokens", self.tokens, "--signing-key-file", self.keys],
            ["--trust-front-end"],
            ["--insecure-no-auth"],
        ]:
            parse("--listen", "tcp:8080", *extra)

    def test_loopbackNeedsNothing(self) -> None:
        """The default loopback listen needs no auth option."""
        options = parse()
        self.assertIsNone(options["auth-tokens"])
        self.assertFalse(options["trust-front-end"])
        self.assertFalse(options["insecure-no-auth"])

    def test_contradictions(self) -> None:
        """A secret file with --trust-front-end or --insecure-no-auth is refused."""
        for argv in [
            ["--auth-tokens", self.tokens, "--trust-front-end"],
            ["--signing-key-file", self.keys, "--insecure-no-auth"],
            ["--trust-front-end", "--insecure-no-auth"],
        ]:
            self.assertRaises(UsageError, parse, *argv)

    def test_badSecretFiles(self) -> None:
        """A missing or empty secret file is refused when the options are parsed."""
        empty = writeFile(os.path.abspath(self.mktemp()), "# none\n")
        for argv in [
            ["--auth-tokens", "/nonexistent/tokens"],
            ["--auth-tokens", empty],
            ["--signing-key-file", empty],
        ]:
            self.assertRaises(UsageError, parse, *argv)

    def makeService(self, *argv: str) -> tuple[Any, Any]:
        reactor = MemoryReactorClock()
        svc = makeService(parse("--root", os.path.abspath(self.mktemp()), *argv), reactor)
        svc.startService()
        self.addCleanup(svc.stopService)
        return svc, reactor.tcpServers[0][1]

    def status(self, site: Any, headers: bytes = b"") -> bytes:
        protocol = site.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        # A path the parser refuses: answered at once, no disk work.
        protocol.dataReceived(b"HEAD /.x HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        return transport.value().split(b"\r\n", 1)[0]

    def test_serviceWithAuth(self) -> None:
        """With secret files the served app asks for credentials, and SIGHUP reloads them."""
        svc, site = self.makeService("--auth-tokens", self.tokens, "--signing-key-file", self.keys)
        self.assertEqual(len([c for c in svc if isinstance(c, ReloadOnSignal)]), 1)
        self.assertEqual(self.status(site), b"HTTP/1.1 401 Unauthorized")
        self.assertEqual(
            self.status(site, b"Authorization: Bearer " + TOKEN + b"\r\n"), b"HTTP/1.1 400 Bad Request"
        )

    def test_serviceWithoutAuth(self) -> None:
        """With --trust-front-end nothing is asked for and there is no SIGHUP handler."""
        svc, site = self.makeService("--trust-front-end")
        self.assertEqual([c for c in svc if isinstance(c, ReloadOnSignal)], [])
        self.assertEqual(self.status(site), b"HTTP/1.1 400 Bad Request")


class SignCommandTests(SynchronousTestCase):
    """
    Tests for C{python -m uploadsvc.sign}.
    """

    def sign(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = sign.main(list(argv), now=NOW)
        return code, out.getvalue(), err.getvalue()

    def test_printsVerifiableURL(self) -> None:
        """The printed URL carries a signature the server accepts for that method and path."""
        keyFile = writeFile(os.path.abspath(self.mktemp()), f"# rotate yearly\n{KEY.decode()}\n{OTHER_KEY.decode()}\n")
        code, out, _ = self.sign(
            "--key-file", keyFile, "--method", "put", "--path", "/photos/café.jpg",
            "--ttl", "900", "--base-url", "https://up.example/",
        )
        self.assertEqual(code, 0)
        url = urlsplit(out.strip())
        self.assertEqual((url.scheme, url.netloc, url.path), ("https", "up.example", "/photos/caf%C3%A9.jpg"))
        checkSignature([KEY], b"PUT", url.path.encode(), url.query.encode(), NOW + 900)
        self.assertRaises(
            Unauthorized, checkSignature, [KEY], b"PUT", url.path.encode(), url.query.encode(), NOW + 901
        )

    def test_errors(self) -> None:
        """Missing options, a bad method or an unreadable key file exit with status 2."""
        keyFile = writeFile(os.path.abspath(self.mktemp()), KEY.decode() + "\n")
        for argv in [
            ["--path", "/a"],
            ["--key-file", keyFile],
            ["--key-file", keyFile, "--path", "/a", "--method", "GET"],
            ["--key-file", keyFile, "--path", "a"],
            ["--key-file", "/nonexistent", "--path", "/a"],
        ]:
            code, out, err = self.sign(*argv)
            self.assertEqual((code, out), (2, ""), argv)
            self.assertTrue(err, argv)

    def test_moduleRuns(self) -> None:
        """The module has a main guard, so python -m uploadsvc.sign runs it."""
        import subprocess

        keyFile = writeFile(os.path.abspath(self.mktemp()), KEY.decode() + "\n")
        out = subprocess.run(
            [sys.executable, "-m", "uploadsvc.sign", "--key-file", keyFile, "--path", "/a.bin"],
            capture_output=True, check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(sign.__file__))),
        ).stdout
        self.assertRegex(out.decode(), r"^/a\.bin\?expires=\d+&sig=[0-9a-f]{64}\n$")
