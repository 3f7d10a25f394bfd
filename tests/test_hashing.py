"""
Tests for the one hashing helper (L{uploadsvc.protocol.digests.digestAll})
and the storage side of it (L{uploadsvc.storage.hashing}).
"""

from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import BadRequest
from uploadsvc.protocol.digests import digestAll
from uploadsvc.storage.hashing import hashFD, verifyStaged


class DigestAllTests(SynchronousTestCase):
    def test_matchesHashlib(self) -> None:
        """Every algorithm digests the chunks as one byte string."""
        chunks = [b"ab", b"", b"cd"]
        self.assertEqual(
            digestAll(["sha-256", "sha-512"], chunks),
            {
                "sha-256": hashlib.sha256(b"abcd").digest(),
                "sha-512": hashlib.sha512(b"abcd").digest(),
            },
        )

    def test_unsupported(self) -> None:
        """An algorithm outside the supported set is refused, never looked up in hashlib."""
        self.assertRaises(ValueError, digestAll, ["md5"], [b"x"])
        self.assertRaises(ValueError, digestAll, ["sha256"], [b"x"])


class HashFDTests(SynchronousTestCase):
    def test_byPosition(self) -> None:
        """A file is digested from its start, whatever its descriptor's position."""
        path = self.mktemp()
        data = os.urandom(3 * 1024 * 1024 + 5)
        with open(path, "wb") as f:
            f.write(data)
        fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        os.lseek(fd, 7, os.SEEK_SET)
        self.assertEqual(hashFD(fd, ["sha-256"]), {"sha-256": hashlib.sha256(data).digest()})
        self.assertEqual(os.lseek(fd, 0, os.SEEK_CUR), 7)

    def test_sameAlgorithmsAsTheProtocol(self) -> None:
        """Stored files are digested with the protocol's algorithms only (no hashlib lookup)."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"x")
        fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        self.assertRaises(ValueError, hashFD, fd, ["md5"])


class VerifyStagedTests(SynchronousTestCase):
    def staged(self, hasher: Any) -> Any:
        return SimpleNamespace(hasher=hasher)

    def test_streamedUsed(self) -> None:
        """The running sha-256 is used as it is; only other algorithms are read back."""
        asked: list[set[str]] = []

        def hashStaged(staged: Any, algorithms: set[str]) -> dict[str, bytes]:
            asked.append(algorithms)
            return {"sha-512": hashlib.sha512(b"abc").digest()}

        computed = verifyStaged(
            self.staged(hashlib.sha256(b"abc")),
            {"sha-512": hashlib.sha512(b"abc").digest()},
            hashStaged,
        )
        self.assertEqual(asked, [{"sha-512"}])
        self.assertEqual(computed["sha-256"], hashlib.sha256(b"abc").digest())

    def test_readBackWithoutHasher(self) -> None:
        """Without a running hash the sha-256 is read back too."""
        asked: list[set[str]] = []

        def hashStaged(staged: Any, algorithms: set[str]) -> dict[str, bytes]:
            asked.append(algorithms)
            return {"sha-256": hashlib.sha256(b"abc").digest()}

        verifyStaged(self.staged(None), {}, hashStaged)
        self.assertEqual(asked, [{"sha-256"}])

    def test_mismatch(self) -> None:
        """A digest that differs is a 400 digest-mismatch naming the algorithm."""
        error = self.assertRaises(
            BadRequest, verifyStaged, self.staged(hashlib.sha256(b"abc")),
            {"sha-256": hashlib.sha256(b"abd").digest()}, lambda staged, algs: {},
        )
        self.assertEqual((error.status, error.code), (400, "digest-mismatch"))
        self.assertIn("sha-256", error.reason)
