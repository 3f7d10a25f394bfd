"""
The store's C{create} with an id made beforehand (so that a pre-create hook
is told the id the upload will have), in both stores.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import Conflict
from uploadsvc.protocol.paths import parseRelativePath
from uploadsvc.storage.filestore import FileStore
from uploadsvc.storage.interfaces import newUploadId
from uploadsvc.storage.memory import MemoryStore


class _CreateWithId:
    def makeStore(self) -> Any:
        raise NotImplementedError

    def test_givenId(self) -> None:
        """The upload gets the id given, found by it; unnamed, it lands at incoming/<that id>."""
        store = self.makeStore()
        uploadId = newUploadId()
        self.assertEqual(store.create(None, 5, None, False, uploadId), uploadId)  # type: ignore[attr-defined]
        entry = store.describe(uploadId)
        self.assertEqual((entry.path, entry.total), (f"incoming/{uploadId.value}", 5))  # type: ignore[attr-defined]

    def test_idTaken(self) -> None:
        """An id already in use is refused (409), the upload that has it left as it was."""
        store = self.makeStore()
        uploadId = store.create(parseRelativePath("a.bin"), 3)
        error = self.assertRaises(  # type: ignore[attr-defined]
            Conflict, store.create, parseRelativePath("b.bin"), 9, None, False, uploadId
        )
        self.assertEqual(error.code, "id-taken")  # type: ignore[attr-defined]
        entry = store.describe(uploadId)
        self.assertEqual((entry.path, entry.total), ("a.bin", 3))  # type: ignore[attr-defined]


class FileStoreCreateTests(_CreateWithId, SynchronousTestCase):
    def makeStore(self) -> Any:
        store = FileStore(os.path.abspath(self.mktemp()), fsync=False)
        self.addCleanup(store.close)
        return store


class MemoryStoreCreateTests(_CreateWithId, SynchronousTestCase):
    def makeStore(self) -> Any:
        return MemoryStore()
