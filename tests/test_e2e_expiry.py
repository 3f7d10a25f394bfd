"""
Expiry end to end (issue 11, item 4): real C{twistd uploadsvc} processes
with a short C{--expire-after} empty the staging area of abandoned uploads,
keep the one that goes on receiving bytes, and, two of them on one root,
expire each upload once.

Every wait is a loop bounded in rounds and time; no duration is asserted.
"""

from __future__ import annotations

import glob
import os
import re
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import rawhttp
from tests.support.rawhttp import patternBytes
from tests.support.server import ServerProcess, startServer

#: Abandoned uploads per test.
ABANDONED = 50
#: Upper bound on every wait (seconds).
BOUND = 90.0
#: What a server logs for each expiry.
EXPIRED_LINE = re.compile(r"upload expired: (\S+) offset ")


def staged(root: str) -> list[str]:
    """
    The names of the files in the staging area of C{root}.
    """
    return sorted(
        os.path.basename(p)
        for p in glob.glob(os.path.join(root, ".uploadsvc", "uploads", "*", "*"))
    )


def abandon(server: ServerProcess, path: str) -> None:
    """
    Send the first 100 bytes of a 1000-byte upload and go away.
    """
    _, answer = rawhttp.exchange(
        server.port, "PUT", path,
        {"Content-Range": "bytes 0-99/1000", "Content-Length": "100"},
        patternBytes(len(path), 0, 100),
    )
    assert answer.status == 204, answer


def expiredPaths(server: ServerProcess) -> list[str]:
    """
    The paths of the uploads the server logged as expired, in order.
    """
    return EXPIRED_LINE.findall(server.logText())


class ExpiryEndToEndTests(SynchronousTestCase):
    def root(self) -> str:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        return os.path.join(base, "root")

    def test_abandonedRemovedActiveKept(self) -> None:
        """
        Fifty abandoned uploads leave the staging area, each logged once,
        their URLs answer 404; an upload that keeps receiving bytes (one
        small append after another) stays and completes.
        """
        server = startServer(self, self.root(), "--expire-after", "3s")
        for n in range(ABANDONED):
            abandon(server, f"/gone/{n}.bin")
        self.assertEqual(len([n for n in staged(server.root) if n.endswith(".data")]), ABANDONED)
        live = patternBytes(7, 0, 100_000)
        offset = 0
        step = 100
        deadline = time.monotonic() + BOUND
        liveFiles = None
        while time.monotonic() < deadline:
            _, answer = rawhttp.exchange(
                server.port, "PUT", "/live.bin",
                {"Content-Range": f"bytes {offset}-{offset + step - 1}/{len(live)}",
                 "Content-Length": str(step)},
                live[offset : offset + step],
            )
            self.assertEqual(answer.status, 204, answer)
            offset += step
            names = staged(server.root)
            if len(names) <= 2:  # the live upload's .data and .json only
                liveFiles = names
                break
            time.sleep(0.25)
        self.assertIsNotNone(liveFiles, f"staging not emptied: {len(staged(server.root))} files")
        self.assertEqual(len(expiredPaths(server)), ABANDONED)
        self.assertEqual(len(set(expiredPaths(server))), ABANDONED)
        for n in (0, ABANDONED - 1):
            _, head = rawhttp.exchange(server.port, "HEAD", f"/gone/{n}.bin")
            self.assertEqual(head.status, 404)
            _, resume = rawhttp.exchange(
                server.port, "PUT", f"/gone/{n}.bin",
                {"Content-Range": "bytes 100-199/1000", "Content-Length": "100"}, b"x" * 100,
            )
            self.assertEqual(resume.status, 409)  # nothing stored to append to
        _, head = rawhttp.exchange(server.port, "HEAD", "/live.bin")
        self.assertEqual((head.status, head.header("upload-offset")), (204, str(offset)))
        _, done = rawhttp.exchange(
            server.port, "PUT", "/live.bin",
            {"Content-Range": f"bytes {offset}-{len(live) - 1}/{len(live)}",
             "Content-Length": str(len(live) - offset)},
            live[offset:],
        )
        self.assertEqual(done.status, 201, done)
        with open(os.path.join(server.root, "live.bin"), "rb") as f:
            self.assertEqual(f.read(), live)

    def test_statusQueriesDoNotKeepAlive(self) -> None:
        """An upload that only gets status queries (recording its total) expires all the same."""
        server = startServer(self, self.root(), "--expire-after", "2s")
        abandon(server, "/queried.bin")
        deadline = time.monotonic() + BOUND
        while staged(server.root) and time.monotonic() < deadline:
            _, answer = rawhttp.exchange(
                server.port, "PUT", "/queried.bin", {"Content-Range": "bytes */1000"}
            )
            self.assertIn(answer.status, (204, 404), answer)
            time.sleep(0.2)
        self.assertEqual(staged(server.root), [])
        self.assertEqual(len(expiredPaths(server)), 1)

    def test_twoServersOneRoot(self) -> None:
        """Two servers sharing a root and expiring at once expire each upload exactly once between them."""
        root = self.root()
        first = startServer(self, root, "--expire-after", "2s")
        second = startServer(self, root, "--expire-after", "2s")
        for n in range(ABANDONED):
            abandon(first if n % 2 else second, f"/shared/{n}.bin")
        deadline = time.monotonic() + BOUND
        while staged(root) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(staged(root), [])
        paths = expiredPaths(first) + expiredPaths(second)
        self.assertEqual(len(paths), ABANDONED, (len(expiredPaths(first)), len(expiredPaths(second))))
        self.assertEqual(len(set(paths)), ABANDONED)

    def test_workers(self) -> None:
        """With --workers 2 both workers expire, and each abandoned upload is expired once."""
        server = startServer(self, self.root(), "--workers", "2", "--expire-after", "2s")
        for n in range(ABANDONED):
            abandon(server, f"/w/{n}.bin")
        deadline = time.monotonic() + BOUND
        while staged(server.root) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(staged(server.root), [])
        paths = expiredPaths(server)
        self.assertEqual((len(paths), len(set(paths))), (ABANDONED, ABANDONED))
