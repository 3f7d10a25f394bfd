"""
The folder listing before a state file's open (L{freshness.isListed}) is
made only where the root is on a shared file system: on a local one the
name cache is the kernel's own and never stale, so the listing is skipped.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.protocol.paths import parseRelativePath
from uploadsvc.protocol.decisions import Stored
from uploadsvc.storage import filestore, freshness
from uploadsvc.storage.filestore import FileStore
from uploadsvc.storage.syscalls import SystemCalls

from tests.test_filestore import FileStoreTestsMixin


class StaleListing(SystemCalls):
    """
    Lists every folder without the names in C{hidden}, as a folder read
    lists them once another host renamed them away (while this host's
    name cache still opens them); counts the listings.
    """

    def __init__(self) -> None:
        self.hidden: set[str] = set()
        self.listings = 0

    def listdir(self, folderFD: int) -> list[str]:
        self.listings += 1
        return [name for name in os.listdir(folderFD) if name not in self.hidden]


class SharedRootTests(FileStoreTestsMixin, SynchronousTestCase):
    path = parseRelativePath("a/b.bin")

    def stageSome(self, store: FileStore) -> str:
        """
        Stage 3 bytes of L{path} (total 10); the key's data and metadata
        file names.
        """
        staged = self.openUpload(self.path, store, total=10)
        staged.writeChunks([b"abc"])
        staged.sync()
        staged.close()
        key = FileStore.keyFor(self.path)
        return key

    def test_sharedListsFirst(self) -> None:
        """
        On a shared root a staged file (and its metadata) that the folder no
        longer lists is not opened: the upload reads as nothing staged.
        """
        system = StaleListing()
        store = self.makeStore(system=system, shared=True)
        key = self.stageSome(store)
        self.assertGreater(system.listings, 0)
        self.assertEqual(store.inspect(self.path), Stored(offset=3, total=10, incomplete=True))
        system.hidden = {key + ".data", key + ".json"}
        self.assertEqual(store.inspect(self.path), Stored())

    def test_localOpensWithoutListing(self) -> None:
        """
        On a local root no folder is listed for a whole upload (begin, write,
        offset, completion), and state files open by name.
        """
        system = StaleListing()
        store = self.makeStore(system=system, shared=False)
        key = self.stageSome(store)
        system.hidden = {key + ".data", key + ".json"}
        self.assertEqual(store.inspect(self.path), Stored(offset=3, total=10, incomplete=True))
        staged = self.openUpload(self.path, store)
        staged.writeChunks([b"defghij"])
        store.complete(self.path, staged, False)
        self.assertEqual(self.readFile(self.root, "a", "b.bin"), b"abcdefghij")
        self.assertEqual(system.listings, 0)


class DetectionTests(FileStoreTestsMixin, SynchronousTestCase):
    path = parseRelativePath("a/b.bin")

    def test_localTypes(self) -> None:
        """
        Local file systems are local; FUSE, network and unknown types are
        shared.
        """
        for kind in ("ext4", "xfs", "btrfs", "tmpfs", "overlay"):
            self.assertTrue(freshness.isLocalType(kind), kind)
        for kind in ("fuse.glusterfs", "fuse", "nfs", "nfs4", "ceph", "cifs", "9p", None):
            self.assertFalse(freshness.isLocalType(kind), kind)

    def test_detectedLocal(self) -> None:
        """
        A store on this test's folder (a local file system) skips the
        listing; the same folder read as a FUSE mount lists first.
        """
        kind = freshness.rootMountType(self.root)
        self.assertTrue(freshness.isLocalType(kind), f"tests run on a local file system, not {kind}")
        self.assertFalse(self.store.shared)
        self.patch(filestore, "rootMountType", lambda path: "fuse.glusterfs")
        self.assertTrue(self.makeStore().shared)
        self.patch(filestore, "rootMountType", lambda path: None)
        self.assertTrue(self.makeStore().shared)


    def test_typeReadAgainWhenReopened(self) -> None:
        """
        A root opened again after it was replaced (a share mounted over it
        after the start) has its mount type read again: a store on a local
        root that finds a network mount there lists first from then on, and
        one that finds a FUSE mount stops splicing.
        """
        from uploadsvc.storage.staged import _UNSPLICEABLE

        self.assertFalse(self.store.shared)
        self.assertNotIn(self.store, _UNSPLICEABLE)
        self.patch(filestore, "rootMountType", lambda path: "fuse.glusterfs")
        os.rename(self.root, self.root + ".old")
        os.mkdir(self.root)
        self.store.inspect(self.path)  # notices the new root, opens it
        self.assertTrue(self.store.shared)
        self.assertIn(self.store, _UNSPLICEABLE)

    def test_givenStays(self) -> None:
        """
        C{shared} given to the store is never replaced by the mount type.
        """
        store = self.makeStore(shared=False)
        self.patch(filestore, "rootMountType", lambda path: "nfs4")
        os.rename(self.root, self.root + ".old")
        os.mkdir(self.root)
        store.inspect(self.path)
        self.assertFalse(store.shared)


class FreshOnceTests(FileStoreTestsMixin, SynchronousTestCase):
    def test_beginLooksOnce(self) -> None:
        """
        C{begin} and C{record} make sure the root and state folder are the
        ones held open once each (five system calls), not again for the
        C{inspect} inside them.
        """
        looks: list[None] = []
        fresh = self.store._fresh
        self.patch(self.store, "_fresh", lambda: (looks.append(None), fresh())[1])
        path = parseRelativePath("c.bin")
        self.openUpload(path, total=3).close()
        self.assertEqual(len(looks), 1)
        looks.clear()
        self.store.record(path, 3, {})
        self.assertEqual(len(looks), 1)
        looks.clear()
        self.store.inspect(path)
        self.assertEqual(len(looks), 1)
