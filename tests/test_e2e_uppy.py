"""
Uppy (the stock C{@uppy/core} + C{@uppy/dashboard} + C{@uppy/tus}) in a
real headless Chromium, driven with selenium, uploading over tus through the
fault proxy to a real C{twistd uploadsvc}: files and a folder picked in
Uppy's own Dashboard inputs, connections cut mid-upload, a page reload
mid-upload, and every file byte-identical on disk.

The page (C{tests/clients/node/uppy/}) is bundled by esbuild (from
C{tests/clients/node}, installed by C{npm ci}) into this test's temporary
folder and served by a static server on another loopback port: another
origin, so the upload server runs with C{--cors-origin} for it, as a site
embedding Uppy would.

The browser's calls block, so they run in a thread (C{deferToThread}) while
this reactor carries the proxy's and the static server's traffic; waits are
bounded loops.
"""

from __future__ import annotations

import os
import shutil
from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.server import Site
from twisted.web.static import File

from tests.support.browser import BrowserTestMixin, HeadlessChromium
from tests.support.server import ServerTestMixin
from tests.test_e2e_page import writePattern
from tests.test_e2e_tus_clients import NODE_DIR, requireNodeClient
from uploadsvc.testing.faultproxy import FaultPlan, FaultProxy

KiB = 1 << 10
MiB = 1 << 20

#: Bytes of request headers Uppy may send after a reload besides the file's
#: remaining bytes (a HEAD and a PATCH, and a preflight each: well under this).
HEADER_SLACK = 16 * KiB

#: What the page's C{window.uppyTest.state()} says.
STATE = "return window.uppyTest.state()"


class UppyTests(BrowserTestMixin, ServerTestMixin, TestCase):
    """
    Uppy's tus uploads survive what real links do to them.
    """

    timeout = 300

    async def setUp(self) -> None:  # type: ignore[override]
        requireNodeClient()
        page = os.path.abspath(self.mktemp())
        os.makedirs(page)
        shutil.copy(os.path.join(NODE_DIR, "uppy", "index.html"), page)
        # node_modules/.bin/esbuild: a node script, or esbuild's own binary
        # once its install script swapped it in; either runs as it is.
        out, err, code = await getProcessOutputAndValue(
            os.path.join(NODE_DIR, "node_modules", ".bin", "esbuild"),
            [os.path.join("uppy", "main.js"), "--bundle", "--format=iife", "--log-level=warning",
             "--outfile=" + os.path.join(page, "uppy.js")],
            env=dict(os.environ), path=NODE_DIR,
        )
        self.assertEqual(code, 0, (out + err).decode())
        listening = reactor.listenTCP(0, Site(File(page)), interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(listening.stopListening)
        self.origin = f"http://127.0.0.1:{listening.getHost().port}"  # type: ignore[attr-defined]
        self.startUploadServer("--cors-origin", self.origin)
        self.browser = HeadlessChromium(self)
        self.picks = os.path.abspath(self.mktemp())

    async def openPage(self, proxy: FaultProxy) -> None:
        url = f"{self.origin}/index.html?endpoint={quote(proxy.url('/.tus/'), safe='')}"
        await self.inBrowser(self.browser.driver.get, url)
        await self.inBrowser(
            self.browser.waitFor, "Uppy's Dashboard",
            lambda: self.browser.findAll("input.uppy-Dashboard-input[name='files[]']"),
        )

    async def pick(self, folder: bool, path: str) -> None:
        """
        Pick C{path} in the Dashboard's own file input (or folder input).
        """
        def send() -> None:
            inputs = [
                i for i in self.browser.findAll("input.uppy-Dashboard-input[name='files[]']")
                if (i.get_dom_attribute("webkitdirectory") is not None) == folder
            ]
            self.assertEqual(len(inputs), 1, self.browser.pageText())
            inputs[0].send_keys(path)

        await self.inBrowser(send)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.browser.driver.execute_script(STATE)
        if state["errors"]:
            raise AssertionError(f"Uppy reported errors: {state['errors']}")
        return state

    async def allDone(self, count: int) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            state = self.state()
            files = state["files"]
            return state if len(files) == count and all(f["complete"] for f in files) else None

        state: dict[str, Any] = await self.inBrowser(
            self.browser.waitFor, "every upload to finish", done, 180.0
        )
        return state

    def assertStored(self, relpath: str, data: bytes) -> None:
        with open(self.storedPath(relpath), "rb") as f:
            self.assertTrue(f.read() == data, f"{relpath} differs from what was picked")

    async def tusOffset(self, url: str) -> int:
        """
        The server's offset of the tus upload at C{url}, asked directly (not
        through the proxy).
        """
        answer = await self.http.request("HEAD", "/" + url.split("/", 3)[3], {"Tus-Resumable": "1.0.0"})
        self.assertEqual(answer.status, 200)
        return int(answer.header("upload-offset") or 0)

    async def test_folderThroughCuts(self) -> None:
        """
        A folder picked in Uppy's Dashboard arrives byte-identical through a
        proxy that cuts every connection after a few hundred KiB, each file
        where Uppy's relativePath puts it (the folder kept).
        """
        album = os.path.join(self.picks, "album")
        files = {
            "album/big.bin": writePattern(os.path.join(album, "big.bin"), 1, 3 * MiB),
            "album/a b.jpg": writePattern(os.path.join(album, "a b.jpg"), 2, MiB + 7),
            "album/sub/\u00fc.txt": writePattern(os.path.join(album, "sub", "\u00fc.txt"), 3, 10),
        }
        proxy = self.startProxy(FaultPlan(cutAfter=(256 * KiB, 768 * KiB)))
        await self.openPage(proxy)
        await self.pick(True, album)
        state = await self.allDone(len(files))
        self.assertEqual(sorted(f["relativePath"] for f in state["files"]), sorted(files))
        for relpath, data in files.items():
            self.assertStored(relpath, data)
        self.assertGreaterEqual(proxy.stats.cuts, 3)
        self.assertTrue(all(f["uploadURL"].startswith(proxy.url("/.tus/")) for f in state["files"]))
        self.assertNotIn("Traceback", self.server.logText())

    async def test_reloadResumesWithoutResending(self) -> None:
        """
        After a page reload in the middle of an upload, picking the same file
        again in Uppy resumes it (tus-js-client finds its upload URL in
        localStorage by Uppy's fingerprint): only the bytes the server lacks
        are sent (counted by the proxy), and the file arrives byte-identical
        at its name (Uppy's relativePath null for a file picked alone).
        """
        size = 4 * MiB
        data = writePattern(os.path.join(self.picks, "r.bin"), 5, size)
        proxy = self.startProxy(FaultPlan())
        await self.openPage(proxy)
        # The upload gets a connection of its own, which stalls (a
        # half-dead link) after 1.5 MiB.
        for connection in proxy.connections:
            connection.abort()
        proxy.setPlan(FaultPlan(cutAfter=(1536 * KiB, 1536 * KiB), cut=0.0, stall=1.0))
        await self.pick(False, os.path.join(self.picks, "r.bin"))
        await self.until("the upload to stall", lambda: proxy.stats.stalls >= 1)
        proxy.setPlan(FaultPlan())
        for connection in proxy.connections:
            if not connection.stalled:
                connection.abort()
        [url] = await self.inBrowser(
            self.browser.waitFor, "the upload URL in localStorage",
            lambda: self.browser.driver.execute_script(STORED_URLS),
        )

        async def serverHasSome() -> bool:
            return await self.tusOffset(url) >= MiB

        await self.until("the server to store the first MiB", serverHasSome)
        await self.inBrowser(self.browser.driver.refresh)
        await self.inBrowser(
            self.browser.waitFor, "Uppy's Dashboard after the reload",
            lambda: self.browser.findAll("input.uppy-Dashboard-input[name='files[]']"),
        )
        offset = await self.tusOffset(url)
        sentBefore = proxy.stats.bytesToServer
        await self.pick(False, os.path.join(self.picks, "r.bin"))
        state = await self.allDone(1)
        self.assertStored("r.bin", data)
        sent = proxy.stats.bytesToServer - sentBefore
        self.assertLessEqual(sent, size - offset + HEADER_SLACK)
        self.assertEqual(state["files"][0]["uploadURL"], url)
        self.assertIsNone(state["files"][0]["relativePath"])


#: The upload URLs tus-js-client keeps in localStorage (one per upload).
STORED_URLS = """
return Object.keys(localStorage).filter((k) => k.startsWith('tus::'))
    .map((k) => JSON.parse(localStorage.getItem(k)).uploadUrl);
"""
