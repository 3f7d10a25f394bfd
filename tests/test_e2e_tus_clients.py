"""
Stock tus clients, unchanged, against a real C{twistd uploadsvc} (docs/protocol-tus.md,
section 8 of the protocol): tuspy (Python) and tus-js-client (under node), uploading in
chunks through the fault proxy, which cuts connections, and resuming; a
concatenation of parallel uploads; checksums. Every file must end
byte-identical on disk.

The clients block or run in a process of their own, so the fault proxy (on
this test's reactor) keeps forwarding: tuspy runs in a thread, node as a
child process. tus-js-client comes from C{tests/clients/node} (C{npm ci}
there; C{.ci/run} does it): without it the node tests skip on a developer's
machine and fail in CI, as L{tests.support.tools.requireTool} does.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from uploadsvc.testing.faultproxy import FaultPlan, FaultProxy
from tests.support.server import startServer
from tests.support.tools import requireTool

KiB = 1024
MiB = 1024 * KiB
SEED = int(os.environ.get("UPLOADSVC_FAULT_SEED", "7"))
#: Every connection is cut after 200 KiB to 1 MiB sent: an upload of a few
#: MiB must resume several times.
CUTTING = FaultPlan(cutAfter=(200 * KiB, 1 * MiB))
NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clients", "node")


def requireNodeClient() -> str:
    """
    The node binary, with tus-js-client installed in L{NODE_DIR}.

    @raise SkipTest: not installed, outside CI.
    @raise AssertionError: not installed, in CI (C{.ci/run} installs it).
    """
    node = requireTool("node")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "tus-js-client")):
        message = f"tus-js-client is not installed: run npm ci in {NODE_DIR} (.ci/run does)"
        if os.environ.get("CI"):
            raise AssertionError(message)
        raise SkipTest(message)
    return node


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class TusClientsMixin:
    """
    A server, a cutting proxy in front of it, and source files.
    """

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        os.makedirs(os.path.join(self.base, "src"))
        self.addCleanup(shutil.rmtree, self.base, True)  # type: ignore[attr-defined]
        self.server = startServer(self, os.path.join(self.base, "root"))

    def proxy(self, plan: FaultPlan = CUTTING) -> FaultProxy:
        proxy = FaultProxy(reactor, ("127.0.0.1", self.server.port), plan, seed=SEED)
        proxy.listen()
        self.addCleanup(proxy.stop)  # type: ignore[attr-defined]
        return proxy

    def source(self, name: str, size: int) -> str:
        path = os.path.join(self.base, "src", name)
        with open(path, "wb") as f:
            f.write(random.Random(f"{SEED}-{name}").randbytes(size))
        return path

    def stored(self, relative: str) -> str:
        return os.path.join(self.server.root, *relative.split("/"))

    def staged(self) -> list[str]:
        """
        Names of the staged uploads left in the state folder.
        """
        found = []
        uploads = os.path.join(self.server.root, ".uploadsvc", "uploads")
        for folder, _, names in os.walk(uploads):
            found += [name for name in names if name.endswith(".data")]
        return found

    def assertSame(self, source: str, relative: str) -> None:
        """
        The stored file is the source, byte for byte, and the server logged
        no traceback on the way.
        """
        self.assertEqual(sha256(self.stored(relative)), sha256(source))  # type: ignore[attr-defined]
        self.assertNotIn("Traceback", self.server.logText())  # type: ignore[attr-defined]

    async def node(self, **spec: Any) -> dict[str, Any]:
        """
        Run C{tests/clients/node/upload.js} (tus-js-client) with C{spec}
        and return the JSON line it ends with; it must have succeeded.
        """
        node = requireNodeClient()
        out, err, code = await getProcessOutputAndValue(
            node, [os.path.join(NODE_DIR, "upload.js"), json.dumps(spec)],
            env=dict(os.environ), path=NODE_DIR,
        )
        lines = out.decode().strip().splitlines()
        self.assertTrue(lines, err.decode())  # type: ignore[attr-defined]
        result: dict[str, Any] = json.loads(lines[-1])
        self.assertEqual((code, result.get("error")), (0, None), err.decode())  # type: ignore[attr-defined]
        return result


class TuspyTests(TusClientsMixin, TestCase):
    """
    tuspy (PyPI C{tuspy}): chunked uploads, resumed after cuts, checksums.
    """

    def upload(self, endpoint: str, path: str, **kw: Any) -> Any:
        from tusclient import client

        tus = client.TusClient(endpoint)
        uploader = tus.uploader(file_path=path, retries=50, retry_delay=0, **kw)
        uploader.upload()
        return uploader

    async def test_chunksResumedAfterCuts(self) -> None:
        """tuspy uploads in chunks through a cutting link and the file is byte-identical."""
        source = self.source("big.bin", 4 * MiB)
        proxy = self.proxy()
        uploader = await deferToThread(
            self.upload, proxy.url("/.tus/"), source, chunk_size=512 * KiB,
            metadata={"filename": "tuspy/big.bin"},
        )
        self.assertSame(source, "tuspy/big.bin")
        self.assertTrue(uploader.url.startswith(proxy.url("/.tus/")))
        self.assertGreater(sum(c.faulted for c in proxy.connections), 0)
        self.assertEqual(self.staged(), [])

    async def test_checksums(self) -> None:
        """tuspy's Upload-Checksum (sha1 per chunk) is checked and the file stored."""
        source = self.source("sum.bin", 1 * MiB + 5)
        await deferToThread(
            self.upload, self.server.url("/.tus/"), source, chunk_size=100 * KiB,
            metadata={"filename": "sum.bin"}, upload_checksum=True,
        )
        self.assertSame(source, "sum.bin")


class TusJsClientTests(TusClientsMixin, TestCase):
    """
    tus-js-client under node: upload, resume after cuts, parallel uploads
    concatenated.
    """

    async def test_resumedAfterCuts(self) -> None:
        """tus-js-client resumes through a cutting link; the file is byte-identical."""
        source = self.source("js.bin", 4 * MiB)
        proxy = self.proxy()
        result = await self.node(
            endpoint=proxy.url("/.tus/"), file=source,
            # What Uppy sends for a file picked alone: relativePath "null".
            metadata={"filename": "js/a.bin", "relativePath": "null"},
        )
        self.assertSame(source, "js/a.bin")
        self.assertGreater(result["events"]["retries"], 0)
        self.assertGreater(sum(c.faulted for c in proxy.connections), 0)
        self.assertEqual(self.staged(), [])

    async def test_chunked(self) -> None:
        """tus-js-client in chunks, with relativePath as Uppy sends it for a dropped folder."""
        source = self.source("chunks.bin", 2 * MiB + 3)
        await self.node(
            endpoint=self.server.url("/.tus/"), file=source, chunkSize=256 * KiB,
            metadata={"filename": "chunks.bin", "relativePath": "/album/chunks.bin"},
        )
        self.assertSame(source, "album/chunks.bin")

    async def test_parallelConcatenation(self) -> None:
        """parallelUploads: 3 through a cutting link: the final file is the parts in order."""
        source = self.source("par.bin", 3 * MiB + 7)
        proxy = self.proxy()
        await self.node(
            endpoint=proxy.url("/.tus/"), file=source, parallelUploads=3,
            metadata={"filename": "par.bin"},
        )
        self.assertSame(source, "par.bin")
        self.assertEqual(self.staged(), [])

    async def test_emptyFile(self) -> None:
        """An empty file (for which tus-js-client sends no PATCH) lands."""
        source = self.source("empty.bin", 0)
        await self.node(
            endpoint=self.server.url("/.tus/"), file=source, metadata={"filename": "empty.bin"}
        )
        self.assertSame(source, "empty.bin")

    async def test_deferredLength(self) -> None:
        """uploadLengthDeferred: the length told in the last PATCH completes the upload."""
        source = self.source("defer.bin", 700 * KiB)
        await self.node(
            endpoint=self.server.url("/.tus/"), file=source, chunkSize=256 * KiB,
            uploadLengthDeferred=True, metadata={"filename": "defer.bin"},
        )
        self.assertSame(source, "defer.bin")

    async def test_methodOverride(self) -> None:
        """overridePatchMethod (POST with X-HTTP-Method-Override: PATCH) uploads the same."""
        source = self.source("over.bin", 300 * KiB)
        await self.node(
            endpoint=self.server.url("/.tus/"), file=source, chunkSize=100 * KiB,
            overridePatchMethod=True, metadata={"filename": "over.bin"},
        )
        self.assertSame(source, "over.bin")


class TusJsClientDraftTests(TusClientsMixin, TestCase):
    """
    tus-js-client with C{protocol: 'ietf-draft-05'} (the IETF draft's interop
    version 6) against C{/.uploads/}: creation with C{Upload-Complete: ?0},
    PATCHes of C{application/partial-upload}, HEAD after a cut.
    """

    async def test_resumedAfterCuts(self) -> None:
        """Through a cutting link the draft client resumes from HEAD; the file lands byte-identical where its metadata says."""
        source = self.source("draft.bin", 4 * MiB)
        proxy = self.proxy()
        result = await self.node(
            endpoint=proxy.url("/.uploads/"), file=source, protocol="ietf-draft-05",
            metadata={"filename": "draft/a.bin"},
        )
        self.assertSame(source, "draft/a.bin")
        self.assertTrue(result["url"].startswith(proxy.url("/.uploads/")), result["url"])
        self.assertGreater(result["events"]["retries"], 0)
        self.assertGreater(sum(c.faulted for c in proxy.connections), 0)
        self.assertEqual(self.staged(), [])

    async def test_chunked(self) -> None:
        """In chunks (Upload-Complete ?0 on all but the last PATCH), with Uppy's relativePath for a folder."""
        source = self.source("draftchunks.bin", 1 * MiB + 3)
        await self.node(
            endpoint=self.server.url("/.uploads/"), file=source, protocol="ietf-draft-05",
            chunkSize=256 * KiB, metadata={"filename": "x.bin", "relativePath": "/album/d.bin"},
        )
        self.assertSame(source, "album/d.bin")
        self.assertEqual(self.staged(), [])
