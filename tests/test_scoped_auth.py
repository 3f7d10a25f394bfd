"""
Scoped credentials in the server: the token file (L{uploadsvc.web.auth.readTokens},
reloads that keep the old tokens on a bad line), the app's 403 C{out-of-scope}
answers and the credential's name on the request, and the options.
"""

from __future__ import annotations

import os
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from uploadsvc.ops.requestnotes import notesFor
from uploadsvc.protocol.scopes import Credential
from uploadsvc.storage.filestore import FileStore
from uploadsvc.tap import Options
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp
from uploadsvc.web.auth import Authenticator, BadTokenLine, SecretFileError, readTokens, tokenFile

ADMIN = "admin-token-0123456789"
ALICE = "alice-token-0123456789"
READER = "reader-token-0123456789"
UPLOADER = "uploader-token-0123456789"

TOKENS = f"""# who may do what
{ADMIN} name=admin
{ALICE} name=alice prefix=alice/ ops=upload,download
{READER} name=reader prefix=pub ops=download
{UPLOADER} name=up ops=upload
"""


def writeFile(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


class TokenFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(1000)

    def test_read(self) -> None:
        """Each line's token, name, prefix and operations are read; plain lines still work."""
        writeFile(self.path, TOKENS + "plain-token-0123456789\nshort name=s\n")
        credentials = readTokens(self.path)
        self.assertEqual(
            [(c.name, c.prefix, sorted(c.operations)) for c in credentials],
            [
                ("admin", (), ["delete", "download", "upload"]),
                ("alice", ("alice",), ["download", "upload"]),
                ("reader", ("pub",), ["download"]),
                ("up", (), ["upload"]),
                (None, (), ["delete", "download", "upload"]),
            ],
        )

    def test_badLineAtStart(self) -> None:
        """A bad line is one error naming the file and line, at start-up."""
        writeFile(self.path, TOKENS + f"{ALICE}x ops=upload,erase\n")
        error = self.assertRaises(BadTokenLine, tokenFile, self.path, self.clock)
        self.assertEqual(
            str(error),
            f"{self.path} line 6: unknown operation 'erase' in ops= (use upload, download, delete)",
        )

    def test_badLineOnReloadKeepsOldTokens(self) -> None:
        """A bad line in a changed file keeps the tokens read before, with one log line."""
        writeFile(self.path, TOKENS)
        tokens = tokenFile(self.path, self.clock)
        before = list(tokens.current())
        writeFile(self.path, TOKENS + "other-token-0123456789 name=alice\n")
        logged: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.clock.advance(2)
        self.assertEqual(tokens.current(), before)
        errors = [e for e in logged if e.get("log_level") is not None and e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        from twisted.logger import formatEvent

        self.assertEqual(
            formatEvent(errors[0]),
            f"{self.path} line 6: name 'alice' already used on line 3; keeping the 4 "
            "tokens read before until it is fixed",
        )
        tokens.reload()  # SIGHUP: the same
        self.assertEqual(tokens.current(), before)
        writeFile(self.path, f"{ADMIN} name=admin\n")
        tokens.reload()
        self.assertEqual([c.name for c in tokens.current()], ["admin"])

    def test_unreadableStillFailsClosed(self) -> None:
        """A file that disappears leaves no token, as before."""
        writeFile(self.path, TOKENS)
        tokens = tokenFile(self.path, self.clock)
        os.unlink(self.path)
        tokens.reload()
        self.assertEqual(tokens.current(), [])
        self.assertRaises(SecretFileError, readTokens, self.path)


class ScopedAppTests(SynchronousTestCase):
    """
    The app's answers to scoped tokens (StubTreq in memory).
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(1000)
        path = writeFile(os.path.abspath(self.mktemp()), TOKENS)
        self.auth = Authenticator(self.clock, tokenFile(path, self.clock))
        self.build(Config(allowDownload=True, allowDelete=True))

    def build(self, config: Config) -> None:
        self.store = FileStore(self.root, fsync=False)
        self.addCleanup(self.store.close)
        self.app = UploadApp(self.store, ImmediateRunner(), config, auth=self.auth)
        self.names: list[Any] = []
        inner = self.app.resource()
        names = self.names

        class Recorder(Resource):
            isLeaf = True

            def render(self, request: Any) -> Any:
                try:
                    return inner.render(request)
                finally:
                    names.append(notesFor(request).credential)

        self.treq = StubTreq(Recorder())

    def request(self, token: str, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, bytes]:
        fields = {k.replace("_", "-"): [v] for k, v in headers.items()}
        fields["Authorization"] = [f"Bearer {token}"]
        response = self.successResultOf(
            self.treq.request(method, "http://example" + path, data=body or None, headers=fields)
        )
        return response.code, self.successResultOf(self.treq.content(response))

    def test_insidePrefix(self) -> None:
        """alice uploads and downloads under alice/, and her name is on the request."""
        self.assertEqual(self.request(ALICE, "PUT", "/alice/a.bin", b"data")[0], 201)
        self.assertEqual(self.request(ALICE, "GET", "/alice/a.bin"), (200, b"data"))
        self.assertEqual(self.names, ["alice", "alice"])

    def test_outsidePrefix(self) -> None:
        """A path outside the prefix is 403 out-of-scope, with nothing stored."""
        for path in ("/bob/a.bin", "/alice2/a.bin", "/%61lice2/a", "/alice"):
            with self.subTest(path=path):
                code, body = self.request(ALICE, "PUT", path, b"data")
                self.assertEqual((code, body), (403, b"this path is outside this credential's folder\n"))
        self.assertEqual(os.listdir(self.root), [".uploadsvc"])

    def test_traversalRefusedByPathRules(self) -> None:
        """alice/../bob never reaches bob: the path rules refuse it first (400)."""
        for path in ("/alice/../bob/a", "/alice/%2e%2e/bob/a", "/alice%2f..%2fbob"):
            with self.subTest(path=path):
                self.assertEqual(self.request(ALICE, "PUT", path, b"data")[0], 400)

    def test_operationNotAllowed(self) -> None:
        """An operation the token lacks is 403, whatever is at the path."""
        self.request(ADMIN, "PUT", "/pub/f", b"public")
        self.assertEqual(self.request(READER, "GET", "/pub/f"), (200, b"public"))
        self.assertEqual(
            self.request(READER, "PUT", "/pub/g", b"x"), (403, b"this credential may not upload\n")
        )
        self.assertEqual(
            self.request(UPLOADER, "GET", "/pub/f"), (403, b"this credential may not download\n")
        )
        self.assertEqual(
            self.request(READER, "DELETE", "/pub/f"), (403, b"this credential may not delete\n")
        )
        self.assertEqual(self.names[-1], "reader")

    def test_uploaderCancelsButDoesNotDelete(self) -> None:
        """An upload-only token may cancel its incomplete upload, not delete a complete file."""
        self.request(UPLOADER, "PUT", "/u", b"ab", Content_Range="bytes 0-1/10")
        self.assertEqual(self.request(UPLOADER, "DELETE", "/u")[0], 204)
        self.request(UPLOADER, "PUT", "/done", b"abc")
        self.assertEqual(
            self.request(UPLOADER, "DELETE", "/done"), (403, b"this credential may not delete files\n")
        )
        self.assertTrue(os.path.exists(os.path.join(self.root, "done")))
        self.assertEqual(self.request(ADMIN, "DELETE", "/done")[0], 204)

    def test_headForReaders(self) -> None:
        """A download-only token's HEAD answers as GET: a complete file's headers, never an upload's offset."""
        self.request(ADMIN, "PUT", "/pub/f", b"public")
        self.request(ADMIN, "PUT", "/pub/part", b"ab", Content_Range="bytes 0-1/10")
        self.assertEqual(self.request(READER, "HEAD", "/pub/f")[0], 200)
        self.assertEqual(self.request(READER, "HEAD", "/pub/part")[0], 404)
        self.assertEqual(self.request(ADMIN, "HEAD", "/pub/part")[0], 204)

    def test_headForReadersWithoutDownloads(self) -> None:
        """With downloads off, a download-only token may do nothing: HEAD is 403, GET 405."""
        self.build(Config())
        self.assertEqual(self.request(READER, "HEAD", "/pub/f")[0], 403)
        self.assertEqual(self.request(READER, "GET", "/pub/f")[0], 405)

    def test_unauthorizedBeforeScope(self) -> None:
        """A wrong token is 401, and no name is put on the request."""
        code, _ = self.request("wrong-token-0123456789", "PUT", "/bob/a", b"x")
        self.assertEqual(code, 401)
        self.assertEqual(self.names, [None])

    def test_plainTokenFullAccess(self) -> None:
        """A plain token line may still do everything, anywhere."""
        path = writeFile(os.path.abspath(self.mktemp()), "plain-token-0123456789\n")
        self.auth = Authenticator(self.clock, tokenFile(path, self.clock))
        self.build(Config(allowDownload=True, allowDelete=True))
        token = "plain-token-0123456789"
        self.assertEqual(self.request(token, "PUT", "/any/f", b"x")[0], 201)
        self.assertEqual(self.request(token, "GET", "/any/f"), (200, b"x"))
        self.assertEqual(self.request(token, "DELETE", "/any/f")[0], 204)
        self.assertEqual(self.names, [None, None, None])


class ScopeOptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_badScopeLine(self) -> None:
        """A bad scope line stops the start with one line naming the option, file and line."""
        path = writeFile(os.path.abspath(self.mktemp()), f"{ALICE} prefix=../x\n")
        error = self.assertRaises(UsageError, self.parse, "--auth-tokens", path)
        self.assertEqual(
            str(error),
            f"--auth-tokens: {path} line 1: prefix '../x': path component . or .. not allowed",
        )

    def test_allowDownload(self) -> None:
        """--allow-download is in --help, off by default."""
        self.assertFalse(self.parse()["allow-download"])
        self.assertTrue(self.parse("--allow-download")["allow-download"])
        self.assertIn("--allow-download", str(Options()))
        self.assertIn("prefix=FOLDER/", str(Options()))

    def test_workersGetIt(self) -> None:
        """--allow-download reaches the workers."""
        self.assertIn("--allow-download", self.parse("--allow-download").workerArguments())


class CredentialReprTests(SynchronousTestCase):
    def test_noToken(self) -> None:
        """A credential never shows its token."""
        self.assertNotIn("secret-token", repr(Credential(b"secret-token-0123456789", "n")))
