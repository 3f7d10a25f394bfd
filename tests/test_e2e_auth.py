"""
Authentication end to end against a real C{twistd uploadsvc}: bearer tokens
from a file (reloaded on change and on SIGHUP), signed URLs minted with
C{python -m uploadsvc.sign}, the trust-the-front-end mode, and the refusal to
start exposed without any of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Sequence

from twisted.trial.unittest import TestCase

from uploadsvc.sign import signedURL
from tests.support import rawhttp
from tests.support.rawhttp import patternBytes, patternSha256
from tests.support.server import (
    REPO_ROOT,
    TWISTD,
    ServerFailed,
    ServerProcess,
    ServerTestMixin,
)

TOKEN = "field-laptop-7f3a9c2e41d8b6"
KEY = "signing-key-" + "5" * 40


def bearer(token: str = TOKEN) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


class AuthTestCase(ServerTestMixin, TestCase):
    timeout = 120

    def writeSecret(self, name: str, text: str) -> str:
        path = os.path.join(os.path.abspath(self.mktemp()) + "-" + name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def refused(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] = (),
        challenge: str = 'Bearer realm="uploadsvc"',
    ) -> rawhttp.Answer:
        """
        Send the headers of a request that announces a body and never send
        it (with C{Expect: 100-continue}); assert the answer is a 401 with
        C{challenge}, no C{100 Continue}, a one-line reason, and that the
        connection closes.
        """
        sent = list(headers) + [("Content-Length", "1000"), ("Expect", "100-continue")]
        with rawhttp.connect(self.server.port, timeout=10) as sock:
            sock.sendall(rawhttp.requestHead(method, target, sent))
            reader = rawhttp.ResponseReader(sock)
            interim, answer = reader.readFinal(method)
            where = f"{method} {target} {headers}: {answer.raw[:300]!r}"
            self.assertEqual(interim, [], where)
            self.assertEqual(answer.status, 401, where)
            self.assertEqual(answer.header("www-authenticate"), challenge, where)
            if method != "HEAD":
                self.assertEqual(answer.header("content-type"), "text/plain; charset=utf-8", where)
                self.assertEqual(answer.body.count(b"\n"), 1, where)
            self.assertIn("close", answer.header("connection") or "", where)
            self.assertEqual(reader.waitClosed(10), b"", where)
        return answer

    def put(self, target: str, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> rawhttp.Answer:
        headers = list(headers) + [("Content-Length", str(len(body)))]
        return rawhttp.exchange(self.server.port, "PUT", target, headers, body, timeout=15)[1]


class TokenTests(AuthTestCase):
    """
    Bearer tokens from C{--auth-tokens}.
    """

    def setUp(self) -> None:
        self.tokens = self.writeSecret("tokens", f"# uploaders\n{TOKEN}\n")
        self.startUploadServer("--auth-tokens", self.tokens)

    def test_refusedFromHeaders(self) -> None:
        """Without a token, or with a wrong one, a PUT is 401 before its body and nothing is stored."""
        self.refused("PUT", "/a.bin")
        self.refused("PUT", "/a.bin", [bearer("wrong-token-0123456789")],
                     'Bearer realm="uploadsvc", error="invalid_token"')
        self.refused("POST", "/a.bin", [("Authorization", "Basic " + TOKEN)],
                     'Bearer realm="uploadsvc", error="invalid_token"')
        self.assertEqual(os.listdir(self.server.root), [".uploadsvc"])

    def test_authComesFirst(self) -> None:
        """401 comes before a bad path (400), a bad method (405) and a size refusal (413)."""
        self.refused("PUT", "/.hidden")
        self.refused("PUT", "/a/../b")
        self.refused("GET", "/a.bin")
        _, answer = rawhttp.exchange(self.server.port, "HEAD", "/.hidden", timeout=10)
        self.assertEqual((answer.status, answer.body), (401, b""))

    def test_tokenUploads(self) -> None:
        """With the token the whole protocol works: upload, HEAD, resume, DELETE."""
        data = patternBytes(3, 0, 300_000)
        first = self.put("/t/r.bin", data[:100_000],
                         [bearer(), ("Content-Range", "bytes 0-99999/300000")])
        self.assertIncomplete(first, 100_000)
        _, head = rawhttp.exchange(self.server.port, "HEAD", "/t/r.bin", [bearer()], timeout=10)
        self.assertIncomplete(head, 100_000, 300_000, head=True)
        last = self.put("/t/r.bin", data[100_000:],
                        [bearer(), ("Content-Range", "bytes 100000-299999/300000")])
        self.assertCompleted(last, "t/r.bin", 300_000, patternSha256(3, 300_000))
        _, deleted = rawhttp.exchange(self.server.port, "DELETE", "/t/r.bin", [bearer()], timeout=10)
        self.assertEqual(deleted.status, 405)

    def test_fileChangeReloads(self) -> None:
        """A token added to the file works, and one removed stops working, within a few seconds."""
        time.sleep(0.05)
        with open(self.tokens, "w") as f:
            f.write("second-token-0123456789\n")
        deadline = time.monotonic() + 15
        while self.put("/n.bin", b"x", [bearer("second-token-0123456789")]).status == 401:
            self.assertLess(time.monotonic(), deadline, "new token never accepted")
            time.sleep(0.2)
        self.refused("PUT", "/o.bin", [bearer()], 'Bearer realm="uploadsvc", error="invalid_token"')

    def test_sighupReloads(self) -> None:
        """SIGHUP re-reads the file even when its size and modification time look unchanged."""
        st = os.stat(self.tokens)
        replacement = TOKEN[::-1]
        with open(self.tokens, "r+") as f:
            f.write(f"# uploaders\n{replacement}\n")
        os.utime(self.tokens, ns=(st.st_atime_ns, st.st_mtime_ns))
        self.assertEqual(os.stat(self.tokens).st_size, st.st_size)
        time.sleep(1.5)  # past the once-a-second look, which must see nothing
        self.assertEqual(self.put("/before.bin", b"x", [bearer()]).status, 201)
        os.kill(self.server.pid, signal.SIGHUP)
        deadline = time.monotonic() + 15
        while self.put("/after.bin", b"x", [bearer(replacement)]).status == 401:
            self.assertLess(time.monotonic(), deadline, "SIGHUP did not reload")
            time.sleep(0.1)
        self.assertTrue(self.server.running())
        self.refused("PUT", "/old.bin", [bearer()], 'Bearer realm="uploadsvc", error="invalid_token"')


class SignedURLTests(AuthTestCase):
    """
    Signed URLs from C{--signing-key-file}.
    """

    def setUp(self) -> None:
        self.keys = self.writeSecret("keys", KEY + "\n")
        self.startUploadServer("--signing-key-file", self.keys)

    def mint(self, path: str, method: str = "PUT", ttl: int = 900) -> str:
        """
        A signed path-and-query from C{python -m uploadsvc.sign}.
        """
        out = subprocess.run(
            [sys.executable, "-m", "uploadsvc.sign", "--key-file", self.keys, "--method", method,
             "--path", path, "--ttl", str(ttl)],
            capture_output=True, check=True, cwd=REPO_ROOT,
        ).stdout.decode().strip()
        self.assertTrue(out.startswith(path + "?"), out)
        return out

    def test_signedUploadAndResume(self) -> None:
        """A signed PUT URL uploads in pieces, and answers HEAD for the resume, with no token."""
        url = self.mint("/s/photo.jpg")
        data = patternBytes(5, 0, 200_000)
        first = self.put(url, data[:50_000], [("Content-Range", "bytes 0-49999/200000")])
        self.assertIncomplete(first, 50_000)
        _, head = rawhttp.exchange(self.server.port, "HEAD", url, timeout=10)
        self.assertIncomplete(head, 50_000, 200_000, head=True)
        last = self.put(url, data[50_000:], [("Content-Range", "bytes 50000-199999/200000")])
        self.assertCompleted(last, "s/photo.jpg", 200_000, patternSha256(5, 200_000))

    def test_boundToPathAndMethod(self) -> None:
        """A signed URL opens neither another path nor another method, and a tampered one nothing."""
        url = self.mint("/s/one.bin")
        query = url.split("?", 1)[1]
        self.refused("PUT", "/s/two.bin?" + query)
        self.refused("DELETE", url)
        self.refused("PUT", url[:-1] + ("0" if url[-1] != "0" else "1"))
        self.refused("PUT", "/s/one.bin")
        self.assertFalse(os.path.exists(self.storedPath("s")))

    def test_expired(self) -> None:
        """A signed URL past its expiry is refused."""
        url = signedURL(KEY.encode(), "PUT", "/s/late.bin", int(time.time()) - 1)
        answer = self.refused("PUT", url)
        self.assertIn(b"expired", answer.body)

    def test_deleteNeedsItsOwnSignature(self) -> None:
        """DELETE with a DELETE signature cancels an incomplete upload."""
        put = self.mint("/s/c.bin")
        self.assertIncomplete(self.put(put, b"abc", [("Content-Range", "bytes 0-2/10")]), 3)
        _, answer = rawhttp.exchange(self.server.port, "DELETE", self.mint("/s/c.bin", "DELETE"), timeout=10)
        self.assertEqual(answer.status, 204)


class ModeTests(AuthTestCase):
    """
    The trust-the-front-end mode and the refusal to start exposed.
    """

    def test_trustFrontEnd(self) -> None:
        """With --trust-front-end no credentials are asked for."""
        self.startUploadServer("--trust-front-end")
        self.assertEqual(self.put("/f.bin", b"data").status, 201)

    def test_exposedWithoutAuthRefusesToStart(self) -> None:
        """A non-loopback --listen without auth options makes twistd exit with a usage error."""
        base = os.path.abspath(self.mktemp())

        def command(server: ServerProcess) -> list[str]:
            # 192.0.2.1 (TEST-NET-1) is not on this host: even a server that
            # wrongly started could not listen there.
            return [*TWISTD, "-n", "--pidfile=", "uploadsvc", "--root", server.root,
                    "--listen", f"tcp:{server.port}:interface=192.0.2.1"]

        server = ServerProcess(os.path.join(base, "root"), command=command)
        server.startTimeout = 30
        self.addCleanup(server.stop)
        error = self.assertRaises(ServerFailed, server.start)
        self.assertIn("--insecure-no-auth", str(error))
        self.assertIn("reachable from the network", str(error))
