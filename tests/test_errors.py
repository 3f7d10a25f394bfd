"""
L{uploadsvc.errors.storageRefusal}: which errors of the storage are answered
with a status and one line (no traceback), and which are bugs.
"""

from __future__ import annotations

import errno
import os

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import StorageUnavailable, storageRefusal


class StorageRefusalTests(SynchronousTestCase):
    def test_notConnected(self) -> None:
        """
        C{ENOTCONN} (a FUSE mount whose client died: "Transport endpoint is
        not connected") is storage that is not there now: 503 with a
        one-line reason and C{Retry-After}, the system's message kept for
        the operator's log.
        """
        error = OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN), "/srv/uploads/a.bin")
        refusal = storageRefusal(error)
        assert isinstance(refusal, StorageUnavailable)
        self.assertEqual(refusal.status, 503)
        self.assertEqual(refusal.code, "storage-not-connected")
        self.assertNotIn("\n", refusal.reason)
        self.assertNotIn("/srv/uploads", refusal.reason)
        self.assertIn(b"Retry-After", refusal.headers)
        self.assertGreater(int(refusal.headers[b"Retry-After"]), 0)
        self.assertIn("Transport endpoint is not connected", refusal.detail)
        self.assertIn("/srv/uploads/a.bin", refusal.detail)

    def test_readOnlyStill503(self) -> None:
        """
        The storage-unavailable errors that were mapped before keep their
        answers.
        """
        refusal = storageRefusal(OSError(errno.EROFS, "Read-only file system"))
        assert refusal is not None
        self.assertEqual((refusal.status, refusal.code), (503, "read-only"))

    def test_otherErrorsAreBugs(self) -> None:
        """
        An error that is not the storage's (C{EBADF}, a non-OS error, an
        C{OSError} without errno) is not mapped: the caller answers 500 with
        a traceback in the log.
        """
        self.assertIsNone(storageRefusal(OSError(errno.EBADF, "Bad file descriptor")))
        self.assertIsNone(storageRefusal(OSError("no errno")))
        self.assertIsNone(storageRefusal(ValueError("x")))
