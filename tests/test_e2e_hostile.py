"""
Hostile request paths against a real C{twistd uploadsvc} (docs/protocol.md
section 1): each gets the status docs/protocol.md gives (400 for a path that
breaks a rule, 403 for a path through a symbolic link, 409 for a link at the
destination, 201 for names that only look dangerous), and nothing is ever
written outside the storage root.

The root sits in a folder of the test's own next to an C{outside} folder
that the links point at; everything outside the root is listed before and
after, and must not change.
"""

from __future__ import annotations

import os
from typing import Iterable

from twisted.trial.unittest import TestCase

from tests.support import rawhttp
from tests.support.rawhttp import patternBytes
from tests.support.server import ServerTestMixin

BODY = b"evil"

#: Paths our own parser refuses with 400 and a one-line reason.
REFUSED: list[bytes] = [
    # dots, plain and encoded
    b"/a/../b.bin",
    b"/a/./b.bin",
    b"/a/%2e%2e/b.bin",
    b"/a/%2E%2E/b.bin",
    b"/a/.%2e/b.bin",
    b"/a/%2e./b.bin",
    b"/a/%2e/b.bin",
    b"/%2e%2e/%2e%2e/etc/passwd",
    b"/..",
    # encoded slashes and backslashes
    b"/a%2fb.bin",
    b"/a%2Fb.bin",
    b"/..%2f..%2fetc%2fpasswd",
    b"/a/%2e%2e%2fb.bin",
    b"/a/%252e%252e%2fb.bin",
    b"/a%5c..%5cb.bin",
    b"/..%5C..%5Cwin.ini",
    b"/a\\b.bin",
    # malformed escapes
    b"/bad%zz.bin",
    b"/bad%u002e.bin",
    b"/trailing%",
    b"/trailing%2",
    b"/%%2e%2e",
    # NUL and control characters
    b"/nul%00.bin",
    b"/nul%00/../x.bin",
    b"/soh%01.bin",
    b"/tab%09.bin",
    b"/lf%0a.bin",
    b"/cr%0D.bin",
    b"/esc%1b.bin",
    b"/del%7f.bin",
    b"/c1%c2%80.bin",
    b"/nel%c2%85.bin",
    b"/apc%c2%9f.bin",
    # NFD and other non-NFC forms
    b"/nfd/cafe%cc%81.bin",
    b"/nfd/A%CC%8A.bin",
    b"/angstrom%e2%84%ab.bin",
    b"/hangul%e1%84%80%e1%85%a1.bin",
    # overlong and invalid UTF-8
    b"/overlong%c0%ae%c0%ae/x.bin",
    b"/overlong%c0%af.bin",
    b"/overlong%e0%80%ae.bin",
    b"/overlong%f0%80%80%ae.bin",
    b"/bad%ff.bin",
    b"/bad%fe%ff.bin",
    b"/lone%80.bin",
    b"/truncated%c3.bin",
    b"/surrogate%ed%a0%80.bin",
    b"/beyond%f4%90%80%80.bin",
    # empty, reserved and relative forms
    b"/",
    b"/a//b.bin",
    b"//etc/passwd",
    b"/.hidden.bin",
    b"/.uploadsvc/uploads/x.bin",
    b"/a/.git/config",
    b"http://evil.example/a.bin",
    # lengths
    b"/" + b"x" * 256,
    b"/" + b"%c3%a9" * 128,
    b"/" + b"%f0%9f%98%80" * 64,
    b"/" + b"/".join([b"d"] * 33),
    b"/" + b"/".join([b"n" * 205] * 5),
    b"/" + b"y" * 10_000,
]

#: Paths Twisted itself refuses (a bare C{400}): bytes that may not appear
#: raw in a request line.
REFUSED_BY_TWISTED: list[bytes] = [
    b"/nul\x00.bin",
    b"/del\x7f.bin",
    b"/bad\xff.bin",
    b"/nfd/cafe\xcc\x81.bin",
    b"/tab\t.bin",
]

#: Names that only look dangerous: stored under the root, as named.
ALLOWED: list[tuple[bytes, str]] = [
    (b"/%252e%252e/x.bin", "%2e%2e/x.bin"),
    (b"/%25/x.bin", "%/x.bin"),
    (b"/%252f.bin", "%2f.bin"),
    (b"/caf%c3%a9.bin", "caf\u00e9.bin"),
    (b"/%ef%bc%8e%ef%bc%8e/x.bin", "\uff0e\uff0e/x.bin"),
    (b"/a..b/c...bin", "a..b/c...bin"),
    (b"/q.bin?../../outside/q.bin", "q.bin"),
    (b"/con/aux.bin", "con/aux.bin"),
    (b"/" + b"z" * 255, "z" * 255),
    (b"/" + b"/".join([b"e"] * 32), "/".join(["e"] * 32)),
]


def listTree(top: str, skip: str) -> set[str]:
    """
    Every path under C{top} (files, folders and links, relative), except
    those under C{skip}.
    """
    found = set()
    for folder, dirs, files in os.walk(top, followlinks=False):
        if os.path.abspath(folder).startswith(os.path.abspath(skip)):
            dirs[:] = []
            continue
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(folder, name), top))
    return found


class HostileTestCase(ServerTestMixin, TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.startUploadServer(*self.serverArgs())
        self.base = os.path.dirname(self.server.root)
        self.outside = os.path.join(self.base, "outside")
        os.makedirs(self.outside)
        with open(os.path.join(self.outside, "target.txt"), "wb") as f:
            f.write(b"precious")
        self.link("link-out", self.outside)
        os.makedirs(os.path.join(self.server.root, "a"))
        self.link("a/link-up", "../..")
        os.makedirs(os.path.join(self.server.root, "real"))
        self.link("link-in", "real")
        self.link("loop", "loop")
        self.link("dest-link.bin", os.path.join(self.outside, "target.txt"))
        self.link("dangling.bin", os.path.join(self.outside, "created-by-dangling.bin"))
        self.before = self.outsideTree()
        self.rootBefore = self.rootTree()

    def serverArgs(self) -> list[str]:
        return []

    def link(self, rel: str, target: str) -> None:
        os.symlink(target, os.path.join(self.server.root, rel))

    def outsideTree(self) -> set[str]:
        return listTree(self.base, self.server.root)

    def rootTree(self) -> set[str]:
        return listTree(self.server.root, os.path.join(self.server.root, ".uploadsvc"))

    def put(self, path: bytes, body: bytes = BODY, headers: Iterable[tuple[str, str]] = ()) -> rawhttp.Answer | None:
        """
        PUT C{body} to C{path} on a new connection, asking for C{100
        Continue} first; the final answer, or L{None} when the server
        closed the connection without one.
        """
        head = b"PUT " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for name, value in [("Content-Length", str(len(body))), ("Expect", "100-continue"), *headers]:
            head += f"{name}: {value}\r\n".encode("latin-1")
        with rawhttp.connect(self.server.port, timeout=15) as sock:
            sock.sendall(head + b"\r\n")
            reader = rawhttp.ResponseReader(sock)
            try:
                answer = reader.readResponse()
                if answer.status == 100:
                    sock.sendall(body)
                    answer = reader.readResponse()
            except ConnectionError:
                return None
            return answer

    def assertNothingOutside(self) -> None:
        self.assertEqual(self.outsideTree(), self.before)
        with open(os.path.join(self.outside, "target.txt"), "rb") as f:
            self.assertEqual(f.read(), b"precious")

    def assertRootUnchanged(self, where: object) -> None:
        self.assertEqual(self.rootTree() - self.rootBefore, set(), where)


class HostilePathTests(HostileTestCase):
    """
    Each hostile path gets its status and writes nothing outside the root.
    """

    def test_listIsLong(self) -> None:
        """The hostile list has at least 40 entries."""
        self.assertGreaterEqual(len(REFUSED) + len(REFUSED_BY_TWISTED) + len(ALLOWED), 40)

    def test_refused(self) -> None:
        """Paths that break a rule are 400 with a one-line plain-text reason and write nothing."""
        for path in REFUSED:
            answer = self.put(path)
            where = f"{path[:80]!r}: {answer and answer.raw[:300]!r}"
            self.assertIsNotNone(answer, where)
            assert answer is not None
            self.assertEqual(answer.status, 400, where)
            self.assertEqual(answer.header("content-type"), "text/plain; charset=utf-8", where)
            self.assertEqual(answer.body.count(b"\n"), 1, where)
            self.assertRootUnchanged(where)
        self.assertNothingOutside()

    def test_refusedByTwisted(self) -> None:
        """Raw bytes that may not appear in a request line are 400 from Twisted and write nothing."""
        for path in REFUSED_BY_TWISTED:
            answer = self.put(path)
            self.assertEqual(answer and answer.status, 400, path)
            self.assertRootUnchanged(path)
        self.assertNothingOutside()

    def test_overlongRequestLine(self) -> None:
        """A request line over the 16 KiB header block limit is answered 414."""
        answer = self.put(b"/" + b"w" * 20_000)
        self.assertEqual(answer and answer.status, 414)
        self.assertRootUnchanged("long line")
        self.assertNothingOutside()

    def test_allowed(self) -> None:
        """Names that only look dangerous are stored under the root, exactly as named."""
        for path, rel in ALLOWED:
            answer = self.put(path)
            where = f"{path[:80]!r}: {answer and answer.raw[:300]!r}"
            self.assertEqual(answer and answer.status, 201, where)
            with open(self.storedPath(rel), "rb") as f:
                self.assertEqual(f.read(), BODY, where)
        self.assertNothingOutside()

    def test_throughLinks(self) -> None:
        """A path through a folder link, pointing out of or into the root, is 403 for every method."""
        for path in [
            b"/link-out/x.bin",
            b"/link-out/new/x.bin",
            b"/a/link-up/x.bin",
            b"/a/link-up/outside/x.bin",
            b"/link-in/x.bin",
            b"/loop/x.bin",
        ]:
            answer = self.put(path)
            self.assertEqual(answer and answer.status, 403, path)
            for method in ("HEAD", "DELETE"):
                _, other = rawhttp.exchange(self.server.port, method, path.decode(), timeout=15)
                self.assertEqual(other.status, 403, (method, path))
        self.assertEqual(os.listdir(os.path.join(self.server.root, "real")), [])
        self.assertRootUnchanged("links")
        self.assertNothingOutside()

    def test_linkAtDestination(self) -> None:
        """A link at the destination, dangling or not, is an existing entry: 409, its target untouched."""
        for path in [b"/dest-link.bin", b"/dangling.bin"]:
            answer = self.put(path)
            self.assertEqual(answer and answer.status, 409, path)
        self.assertTrue(os.path.islink(self.storedPath("dest-link.bin")))
        self.assertRootUnchanged("destination links")
        self.assertNothingOutside()


class PlantedLinkTests(HostileTestCase):
    """
    Links planted while an upload is under way.
    """

    def test_parentReplacedBetweenPieces(self) -> None:
        """A parent folder replaced by a link between two pieces: the last piece is 403, nothing lands outside."""
        total = 20_000
        data = patternBytes(41, 0, total)
        os.makedirs(self.storedPath("up/deep"))
        first = self.put(
            b"/up/deep/file.bin", data[:10_000], [("Content-Range", f"bytes 0-9999/{total}")]
        )
        self.assertIncomplete(first, 10_000)
        os.rename(self.storedPath("up/deep"), self.storedPath("up/deep-moved"))
        os.symlink(self.outside, self.storedPath("up/deep"))
        last = self.put(
            b"/up/deep/file.bin", data[10_000:], [("Content-Range", f"bytes 10000-19999/{total}")]
        )
        self.assertEqual(last and last.status, 403)
        self.assertNothingOutside()
        self.assertFalse(os.path.exists(os.path.join(self.outside, "file.bin")))
        self.assertEqual(os.listdir(self.storedPath("up/deep-moved")), [])

    def test_missingParentPlantedBetweenPieces(self) -> None:
        """A link planted where the server would create a parent folder: the last piece is 403."""
        total = 20_000
        data = patternBytes(43, 0, total)
        first = self.put(
            b"/new/sub/file.bin", data[:10_000], [("Content-Range", f"bytes 0-9999/{total}")]
        )
        self.assertIncomplete(first, 10_000)
        os.symlink(self.outside, self.storedPath("new"))
        last = self.put(
            b"/new/sub/file.bin", data[10_000:], [("Content-Range", f"bytes 10000-19999/{total}")]
        )
        self.assertEqual(last and last.status, 403)
        self.assertNothingOutside()
        self.assertFalse(os.path.exists(os.path.join(self.outside, "sub")))

    def test_parentReplacedDuringLastPiece(self) -> None:
        """A link planted after the last piece was accepted, before its body: 403 at completion, nothing outside."""
        total = 20_000
        data = patternBytes(42, 0, total)
        os.makedirs(self.storedPath("up2/deep"))
        first = self.put(
            b"/up2/deep/file.bin", data[:10_000], [("Content-Range", f"bytes 0-9999/{total}")]
        )
        self.assertIncomplete(first, 10_000)
        head = rawhttp.requestHead(
            "PUT", "/up2/deep/file.bin",
            [("Content-Range", f"bytes 10000-19999/{total}"), ("Content-Length", "10000"),
             ("Expect", "100-continue")],
        )
        with rawhttp.connect(self.server.port, timeout=15) as sock:
            sock.sendall(head)
            reader = rawhttp.ResponseReader(sock)
            self.assertEqual(reader.readResponse().status, 100)
            os.rename(self.storedPath("up2/deep"), self.storedPath("up2/deep-moved"))
            os.symlink(self.outside, self.storedPath("up2/deep"))
            sock.sendall(data[10_000:])
            last = reader.readResponse()
        self.assertEqual(last.status, 403, last.raw[:300])
        self.assertNothingOutside()
        self.assertFalse(os.path.exists(os.path.join(self.outside, "file.bin")))
        self.assertEqual(os.listdir(self.storedPath("up2/deep-moved")), [])

    def test_rootLinkedAfterStart(self) -> None:
        """A first-level folder turned into a link after the server started is refused too."""
        os.makedirs(self.storedPath("late"))
        answer = self.put(b"/late/one.bin")
        self.assertEqual(answer and answer.status, 201)
        os.rename(self.storedPath("late"), self.storedPath("late-moved"))
        os.symlink(self.outside, self.storedPath("late"))
        answer = self.put(b"/late/two.bin")
        self.assertEqual(answer and answer.status, 403)
        self.assertNothingOutside()


class OverwriteLinkTests(HostileTestCase):
    """
    With overwrite on, a link at the destination is replaced, never its target.
    """

    def serverArgs(self) -> list[str]:
        return ["--allow-overwrite"]

    def test_linkReplacedNotTarget(self) -> None:
        """The upload replaces the link itself with a regular file; the file it pointed at is unchanged."""
        answer = self.put(b"/dest-link.bin", b"new content")
        self.assertEqual(answer and answer.status, 200, answer and answer.raw[:300])
        self.assertFalse(os.path.islink(self.storedPath("dest-link.bin")))
        with open(self.storedPath("dest-link.bin"), "rb") as f:
            self.assertEqual(f.read(), b"new content")
        answer = self.put(b"/dangling.bin", b"x")
        self.assertEqual(answer and answer.status, 200)
        self.assertNothingOutside()
