"""
The client's security against a real C{twistd uploadsvc} (issue 8, items 13
and 14), through the C{uploadsvc-upload} script run as a process: every
kind of bad certificate is refused before anything is sent, with one line
and no traceback, and never retried; credentials in the URL work as HTTP
Basic through a front end that checks them, are never printed, and a 401 or
403 is not retried.
"""

from __future__ import annotations

import base64
import datetime
import os
import shutil
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests.support.pki import TemporaryCA, selfSigned
from tests.support.tlsfiles import TLSFilesMixin
from tests.test_e2e_client import MiB, sha256File, writeRandomFile
from tests.support.server import ServerProcess, startServer
from tests.support.programs import runUploadCLI

#: Options that would make a retried failure show: a line per retry, and a
#: bounded number of attempts, so that a broken client ends the test.
RETRY_FAST = ("--max-attempts", "3", "--retry-delay", "0.01")

DAY = datetime.timedelta(days=1)


async def runClient(cwd: str, *args: str) -> tuple[str, int]:
    """
    Run C{uploadsvc-upload} with C{args} (not quiet: stderr is not a
    terminal, so each retry and failure is a line).

    @return: stdout and stderr together, and the exit status.
    """
    out, err, code = await runUploadCLI(cwd, *args)
    return out + err, code


def storedFiles(root: str) -> list[str]:
    """
    Every file under C{root}, the server's state folder included (a staged
    upload would show there) but for its lock file.
    """
    found = []
    for folder, _, files in os.walk(root):
        found += [os.path.relpath(os.path.join(folder, f), root) for f in files]
    return sorted(set(found) - {os.path.join(".uploadsvc", "lock")})


class BadCertificateTests(TLSFilesMixin, TestCase):
    """
    C{uploadsvc-upload} against C{twistd uploadsvc --listen ssl:...} with a
    certificate that must not be trusted for the URL.
    """

    timeout = 120

    def setUp(self) -> None:
        self.setUpFiles(MiB)

    def serve(self, key: bytes, cert: bytes) -> ServerProcess:
        return self.serveTLS(key, cert)

    async def assertRefused(
        self, server: ServerProcess, url: str, expected: str, *options: str
    ) -> str:
        """
        The script fails for C{url} with exit status 1, naming the
        certificate problem C{expected} in one line, no traceback, no
        retry, and the server holds nothing.

        @return: the script's output.
        """
        output, code = await runClient(
            self.base, *RETRY_FAST, *options, self.source, url
        )
        self.assertEqual(code, 1, output)
        self.assertNotIn("Traceback", output)
        self.assertNotIn("retrying", output)
        self.assertIn("0 of 1 files uploaded", output)
        failures = [line for line in output.splitlines() if "FAILED" in line]
        # The progress line and the summary line, each one line with the
        # reason.
        self.assertEqual(len(failures), 2, output)
        for line in failures:
            self.assertIn("TLS certificate verification failed", line)
            self.assertIn(expected, line)
        self.assertEqual(storedFiles(server.root), [])
        return output

    async def test_noSubjectAltNameSelfSigned(self) -> None:
        """
        The issue's reproduction: a self-signed certificate for
        C{CN=somethingelse.example} without subjectAltName, trusted with
        C{--cacert}, for C{https://localhost}: refused.
        """
        key, cert = selfSigned("somethingelse.example")
        server = self.serve(key, cert)
        await self.assertRefused(
            server,
            f"https://localhost:{server.port}/in/",
            "cannot be checked against the host name 'localhost'",
            "--cacert",
            self.write("self.pem", cert),
        )

    async def test_noSubjectAltNameCommonNameMatches(self) -> None:
        """
        A certificate from the trusted CA with C{CN=localhost} but no
        subjectAltName is refused: the common name is not a host name
        check.
        """
        server = self.serve(*self.ca.issue(["localhost"], subjectAltName=False))
        await self.assertRefused(
            server,
            f"https://localhost:{server.port}/in/",
            "subjectAltName",
            "--cacert",
            self.caFile,
        )

    async def test_wrongSubjectAltName(self) -> None:
        """
        A certificate from the trusted CA for another host name is refused.
        """
        server = self.serve(*self.ca.issue(["uploads.example"], commonName="localhost"))
        await self.assertRefused(
            server,
            f"https://localhost:{server.port}/in/",
            "does not match the host name 'localhost'",
            "--cacert",
            self.caFile,
        )

    async def test_expired(self) -> None:
        """
        An expired certificate for the right name is refused.
        """
        server = self.serve(
            *self.ca.issue(
                ["localhost"],
                ["127.0.0.1"],
                notBefore=-DAY * 3,
                notAfter=-DAY,
            )
        )
        await self.assertRefused(
            server, f"https://localhost:{server.port}/in/", "has expired", "--cacert", self.caFile
        )

    async def test_notYetValid(self) -> None:
        """
        A certificate whose validity starts tomorrow is refused.
        """
        server = self.serve(
            *self.ca.issue(
                ["localhost"], ["127.0.0.1"], notBefore=DAY, notAfter=DAY * 2
            )
        )
        await self.assertRefused(
            server, f"https://localhost:{server.port}/in/", "not yet valid", "--cacert", self.caFile
        )

    async def test_wrongCA(self) -> None:
        """
        A certificate for the right name from a CA that is not the one
        given with C{--cacert} is refused.
        """
        server = self.serve(*TemporaryCA("someone else").issue(["localhost"], ["127.0.0.1"]))
        await self.assertRefused(
            server,
            f"https://localhost:{server.port}/in/",
            "not signed by a trusted CA",
            "--cacert",
            self.caFile,
        )

    async def test_selfSignedWithoutCACert(self) -> None:
        """
        Without C{--cacert} the system store decides, and a self-signed
        certificate for the right name is refused.
        """
        server = self.serve(*selfSigned("localhost", ["localhost"], ["127.0.0.1"]))
        await self.assertRefused(
            server, f"https://localhost:{server.port}/in/", "self-signed"
        )

    async def test_addressNotInCertificate(self) -> None:
        """
        C{https://127.0.0.1} with a certificate that names only
        C{DNS:localhost} is refused: an address is checked against IP
        address entries only.
        """
        server = self.serve(*self.ca.issue(["localhost"]))
        await self.assertRefused(
            server,
            f"https://127.0.0.1:{server.port}/in/",
            "does not match the host name '127.0.0.1'",
            "--cacert",
            self.caFile,
        )

    async def test_addressInCertificate(self) -> None:
        """
        C{https://127.0.0.1} with a certificate that has the IP address
        entry C{127.0.0.1} is accepted and the file arrives whole.
        """
        server = self.serve(*self.ca.issue(["localhost"], ["127.0.0.1"]))
        output, code = await runClient(
            self.base, "--cacert", self.caFile, self.source, f"https://127.0.0.1:{server.port}/in/"
        )
        self.assertEqual(code, 0, output)
        self.assertIn("1 of 1 files uploaded", output)
        self.assertEqual(
            sha256File(os.path.join(server.root, "in", "photo.jpg")), sha256File(self.source)
        )

    async def test_noInsecureOption(self) -> None:
        """
        There is no option to skip verification: C{--insecure} (as curl has
        it) is a usage error, exit status 2, and nothing is sent.
        """
        server = self.serve(*selfSigned("localhost", ["localhost"]))
        for option in ("--insecure", "-k", "--no-verify"):
            output, code = await runClient(
                self.base, option, self.source, f"https://localhost:{server.port}/in/"
            )
            self.assertEqual(code, 2, output)
            self.assertNotIn("Traceback", output)
            # The reason is the first line, not after a screen of help.
            self.assertEqual(
                output.splitlines()[0], f"uploadsvc-upload: unknown option {option}"
            )
            self.assertLess(len(output.splitlines()), 5, output)
        self.assertEqual(storedFiles(server.root), [])


#: Response headers that belong to one connection, not to the answer.
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"host",
    b"content-length",
    b"date",
    b"server",
}


class BasicAuthFrontEnd(Resource):
    """
    A front end like nginx with C{auth_basic}: a request without the right
    C{Authorization: Basic} is answered 401 (as nginx does, in HTML); with
    it, the request is forwarded to the backend. Every request is counted.

    @ivar seen: C{(method, path, Authorization)} of every request.
    @ivar forbid: answer 403 to authenticated requests instead of
        forwarding them.
    """

    isLeaf = True

    def __init__(self, backend: str, user: str, password: str) -> None:
        super().__init__()
        self._backend = backend
        self._expected = b"Basic " + base64.b64encode(f"{user}:{password}".encode())
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self._agent = Agent(reactor, pool=self.pool)
        self.seen: list[tuple[bytes, bytes, bytes | None]] = []
        self.forbid = False

    def render(self, request: Any) -> Any:
        authorization = request.getHeader(b"authorization")
        self.seen.append((request.method, request.uri, authorization))
        if authorization != self._expected:
            request.setResponseCode(401)
            request.setHeader(b"WWW-Authenticate", b'Basic realm="uploads"')
            request.setHeader(b"Content-Type", b"text/html")
            return (
                b"<html>\r\n<head><title>401 Authorization Required</title></head>\r\n"
                b"<body>\r\n<center><h1>401 Authorization Required</h1></center>\r\n"
                b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            )
        if self.forbid:
            request.setResponseCode(403)
            request.setHeader(b"Content-Type", b"text/html")
            return b"<html>\r\n<head><title>403 Forbidden</title></head>\r\n</html>\r\n"
        Deferred.fromCoroutine(self._forward(request))
        return NOT_DONE_YET

    async def _forward(self, request: Any) -> None:
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() not in _HOP_BY_HOP:
                headers.setRawHeaders(name, values)
        request.content.seek(0)
        body = None
        if request.method == b"PUT":
            body = FileBodyProducer(request.content)
        response = await self._agent.request(
            request.method, self._backend.encode() + request.uri, headers, body
        )
        data = await readBody(response)
        request.setResponseCode(response.code)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() not in _HOP_BY_HOP:
                request.responseHeaders.setRawHeaders(name, values)
        if request.method == b"HEAD":
            length = response.headers.getRawHeaders(b"content-length")
            if length:
                request.responseHeaders.setRawHeaders(b"content-length", length)
        else:
            request.setHeader(b"content-length", b"%d" % len(data))
            request.write(data)
        request.finish()


class CredentialsInURLTests(TestCase):
    """
    C{https://user:password@host/} through a Basic-auth front end in front
    of the real server.
    """

    timeout = 120

    #: Percent-encoded in the URL: C{p@ss:w%rd/secret}.
    password = "p@ss:w%rd/secret"
    passwordInURL = "p%40ss:w%25rd%2Fsecret"

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.addCleanup(shutil.rmtree, self.base, True)
        self.server = startServer(self, os.path.join(self.base, "root"), "--no-fsync")
        self.front = BasicAuthFrontEnd(self.server.url("").rstrip("/"), "alice", self.password)
        port = reactor.listenTCP(0, Site(self.front), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(self.front.pool.closeCachedConnections)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.source = os.path.join(self.base, "notes.bin")
        writeRandomFile(self.source, MiB, 3)

    def url(self, userinfo: str, path: str = "/in/") -> str:
        return f"http://{userinfo}@127.0.0.1:{self.port}{path}"

    def assertNoSecret(self, output: str) -> None:
        """
        Neither form of the password shows in C{output}.
        """
        self.assertNotIn("secret", output)
        self.assertNotIn(self.passwordInURL, output)

    async def test_basicThroughFrontEnd(self) -> None:
        """
        The credentials go as C{Authorization: Basic} with every request
        (decoded from the URL's percent-encoding), the URL sent has no user
        information, the file arrives whole, and the password is printed
        nowhere.
        """
        output, code = await runClient(
            self.base,
            "--chunk-size",
            "256K",
            self.source,
            self.url(f"alice:{self.passwordInURL}"),
        )
        self.assertEqual(code, 0, output)
        self.assertIn("1 of 1 files uploaded", output)
        self.assertNoSecret(output)
        self.assertEqual(
            sha256File(os.path.join(self.server.root, "in", "notes.bin")), sha256File(self.source)
        )
        expected = b"Basic " + base64.b64encode(f"alice:{self.password}".encode())
        self.assertGreaterEqual(len(self.front.seen), 5)
        self.assertEqual({auth for _, _, auth in self.front.seen}, {expected})
        self.assertEqual({uri for _, uri, _ in self.front.seen}, {b"/in/notes.bin"})

    async def test_wrongPasswordNotRetried(self) -> None:
        """
        A 401 from the front end ends the upload after one request: exit
        status 1, one line that says so, no retry, no password printed.
        """
        output, code = await runClient(
            self.base, *RETRY_FAST, self.source, self.url("alice:wrong-secret")
        )
        self.assertEqual(code, 1, output)
        self.assertEqual(len(self.front.seen), 1)
        self.assertNotIn("retrying", output)
        self.assertNotIn("Traceback", output)
        self.assertIn("FAILED  notes.bin: HTTP 401: the server refused the credentials", output)
        self.assertNoSecret(output)
        self.assertEqual(storedFiles(os.path.join(self.server.root)), [])

    async def test_noCredentialsNotRetried(self) -> None:
        """
        Without credentials the 401 says that some are needed; one request,
        no retry.
        """
        output, code = await runClient(
            self.base, *RETRY_FAST, self.source, f"http://127.0.0.1:{self.port}/in/"
        )
        self.assertEqual(code, 1, output)
        self.assertEqual(len(self.front.seen), 1)
        self.assertNotIn("retrying", output)
        self.assertIn("HTTP 401: the server asks for credentials", output)

    async def test_forbiddenNotRetried(self) -> None:
        """
        A 403 ends the upload after one request, saying so, with no retry.
        """
        self.front.forbid = True
        output, code = await runClient(
            self.base, *RETRY_FAST, self.source, self.url(f"alice:{self.passwordInURL}")
        )
        self.assertEqual(code, 1, output)
        self.assertEqual(len(self.front.seen), 1)
        self.assertNotIn("retrying", output)
        self.assertIn("FAILED  notes.bin: HTTP 403: forbidden", output)
        self.assertNoSecret(output)

    async def test_secretNotInRetryLines(self) -> None:
        """
        When the host does not answer, the retry lines and the final error
        name the URL without its credentials.
        """
        url = f"http://alice:{self.passwordInURL}@127.0.0.1:1/in/"
        output, code = await runClient(self.base, *RETRY_FAST, self.source, url)
        self.assertEqual(code, 1, output)
        self.assertIn("retrying", output)
        self.assertIn("connection refused", output)
        self.assertNoSecret(output)

    async def test_credentialsAndTokenRefused(self) -> None:
        """
        Credentials in the URL and a bearer token cannot both be sent (one
        C{Authorization} header): refused at once, exit status 2, nothing
        sent.
        """
        tokenFile = os.path.join(self.base, "token")
        with open(tokenFile, "w") as f:
            f.write("0123456789abcdef0123\n")
        output, code = await runClient(
            self.base, "--token-file", tokenFile, self.source, self.url(f"alice:{self.passwordInURL}")
        )
        self.assertEqual(code, 2, output)
        self.assertIn("uploadsvc-upload: credentials in the URL and a bearer token", output)
        self.assertEqual(self.front.seen, [])
        self.assertNoSecret(output)
