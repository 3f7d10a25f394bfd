"""
The upload page at C{/.upload/} (docs/browsers.md) in a real headless
Chromium, driven with selenium, uploading through the fault proxy to a real
C{twistd uploadsvc}: files and folders picked, connections cut mid-upload,
a reload mid-upload, pause and resume, and every file byte-identical on
disk.

The browser's calls block, so they run in a thread (C{deferToThread}) while
this reactor carries the proxy's traffic; waits are bounded loops.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import TestCase

from tests.support.browser import BrowserTestMixin, HeadlessChromium
from tests.support.rawhttp import patternBytes
from tests.support.server import ServerTestMixin
from uploadsvc.testing.faultproxy import FaultPlan

KiB = 1 << 10
MiB = 1 << 20

#: Bytes of request headers the page may send after a reload besides the
#: file's remaining bytes (a HEAD and a PUT: well under this).
HEADER_SLACK = 16 * KiB


def writePattern(path: str, seed: int, size: int) -> bytes:
    """
    Write C{size} bytes of a pattern to C{path} (folders made) and return them.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = patternBytes(seed, 0, size)
    with open(path, "wb") as f:
        f.write(data)
    return data


class UploadPageTests(BrowserTestMixin, ServerTestMixin, TestCase):
    """
    The upload page survives what real links do to uploads.
    """

    timeout = 300

    def setUp(self) -> None:
        self.browser = HeadlessChromium(self)
        self.picks = os.path.abspath(self.mktemp())

    async def serverOffset(self, path: str) -> int:
        """
        The server's offset for C{path}, asked directly (not through the proxy).
        """
        answer = await self.http.request("HEAD", "/" + path)
        return int(answer.header("upload-offset") or 0)

    async def openPage(self, url: str) -> None:
        await self.inBrowser(self.browser.driver.get, url)
        await self.inBrowser(self.pageReady)

    def pageReady(self) -> None:
        self.browser.waitFor(
            "the page's script", lambda: self.browser.find("#overall").get_attribute("data-state")
        )

    async def pick(self, inputId: str, *paths: str) -> None:
        await self.inBrowser(self.browser.find(f"#{inputId}").send_keys, "\n".join(paths))

    async def allDone(self) -> None:
        def done() -> bool:
            state = self.browser.find("#overall").get_attribute("data-state")
            if state == "failed":
                raise AssertionError(f"an upload failed:\n{self.browser.pageText()}")
            return state == "done"

        await self.inBrowser(self.browser.waitFor, "every upload to finish", done, 180.0)

    def row(self, path: str) -> Any:
        rows = [r for r in self.browser.findAll("#queue li") if r.get_attribute("data-path") == path]
        self.assertEqual(len(rows), 1, self.browser.pageText())
        return rows[0]

    def assertStored(self, relpath: str, data: bytes) -> None:
        with open(self.storedPath(relpath), "rb") as f:
            self.assertTrue(f.read() == data, f"{relpath} differs from what was picked")

    async def test_cutAndResumed(self) -> None:
        """
        Files and a folder picked on the page arrive byte-identical through
        a proxy that cuts every connection after a few hundred KiB: the page
        asks the server for its offset and goes on from there.
        """
        self.startUploadServer()
        big = writePattern(os.path.join(self.picks, "big.bin"), 1, 3 * MiB)
        photos = os.path.join(self.picks, "photos")
        inFolder = {
            "photos/a b.jpg": writePattern(os.path.join(photos, "a b.jpg"), 2, MiB + 7),
            "photos/sub/\u00fc.txt": writePattern(os.path.join(photos, "sub", "\u00fc.txt"), 3, 10),
            "photos/sub/empty": writePattern(os.path.join(photos, "sub", "empty"), 4, 0),
        }
        proxy = self.startProxy(FaultPlan(cutAfter=(256 * KiB, 768 * KiB)))
        await self.openPage(proxy.url("/.upload/"))
        await self.pick("files", os.path.join(self.picks, "big.bin"))
        await self.pick("dir", photos)
        await self.allDone()
        self.assertStored("big.bin", big)
        for relpath, data in inFolder.items():
            self.assertStored(relpath, data)
        self.assertGreaterEqual(proxy.stats.cuts, 3)
        resumed = await self.inBrowser(
            lambda: [int(self.row(p).get_attribute("data-resumed-from") or 0)
                     for p in ("big.bin", "photos/a b.jpg")]
        )
        self.assertTrue(all(r > 0 for r in resumed), resumed)
        text = await self.inBrowser(lambda: self.browser.find("#overallText").text)
        self.assertIn("4 of 4 files", text)
        errors = await self.inBrowser(self.browser.consoleErrors)
        self.assertEqual([e for e in errors if "Content Security Policy" in e], [])

    async def test_reloadResumesWithoutResending(self) -> None:
        """
        After a reload in the middle of an upload, picking the same file
        again resumes it at the server's offset: the page lists it as
        unfinished, sends only the bytes the server lacks (counted by the
        proxy), and the file arrives byte-identical.
        """
        self.startUploadServer()
        size = 4 * MiB
        data = writePattern(os.path.join(self.picks, "r.bin"), 5, size)
        proxy = self.startProxy(FaultPlan())
        await self.openPage(proxy.url("/.upload/"))
        # The upload gets a connection of its own, which stalls (a
        # half-dead link) after 1.5 MiB.
        for connection in proxy.connections:
            connection.abort()
        proxy.setPlan(FaultPlan(cutAfter=(1536 * KiB, 1536 * KiB), cut=0.0, stall=1.0))
        await self.pick("files", os.path.join(self.picks, "r.bin"))
        await self.until("the upload to stall", lambda: proxy.stats.stalls >= 1)
        proxy.setPlan(FaultPlan())
        for connection in proxy.connections:
            if not connection.stalled:
                connection.abort()

        async def serverHasSome() -> bool:
            return await self.serverOffset("r.bin") >= MiB

        await self.until("the server to store the first MiB", serverHasSome)
        await self.inBrowser(self.browser.driver.refresh)
        await self.inBrowser(self.pageReady)
        unfinished = await self.inBrowser(lambda: self.browser.find("#unfinished").text)
        self.assertIn("r.bin", unfinished)

        offset = await self.serverOffset("r.bin")
        sentBefore = proxy.stats.bytesToServer
        await self.pick("files", os.path.join(self.picks, "r.bin"))
        await self.allDone()
        self.assertStored("r.bin", data)
        sent = proxy.stats.bytesToServer - sentBefore
        self.assertLessEqual(sent, size - offset + HEADER_SLACK)
        resumedFrom = await self.inBrowser(
            lambda: int(self.row("r.bin").get_attribute("data-resumed-from") or 0)
        )
        self.assertGreaterEqual(resumedFrom, offset)

    async def test_pauseResumeWithToken(self) -> None:
        """
        With credentials required, the page sends the token typed into it;
        an upload paused mid-way (on a link that stalled) and resumed goes
        on from the server's offset and arrives byte-identical.
        """
        tokens = os.path.abspath(self.mktemp())
        with open(tokens, "w") as f:
            f.write("page-test-token-0123456789\n")
        self.startUploadServer("--auth-tokens", tokens)
        data = writePattern(os.path.join(self.picks, "p.bin"), 6, 3 * MiB)
        proxy = self.startProxy(FaultPlan())
        await self.openPage(proxy.url("/.upload/"))
        await self.inBrowser(self.browser.find("#token").send_keys, "page-test-token-0123456789")
        for connection in proxy.connections:
            connection.abort()
        proxy.setPlan(FaultPlan(cutAfter=(MiB, MiB), cut=0.0, stall=1.0))
        await self.pick("files", os.path.join(self.picks, "p.bin"))
        await self.until("the upload to stall", lambda: proxy.stats.stalls >= 1)
        proxy.setPlan(FaultPlan())

        async def started() -> bool:
            answer = await self.http.request(
                "HEAD", "/p.bin", {"Authorization": "Bearer page-test-token-0123456789"}
            )
            return int(answer.header("upload-offset") or 0) > 256 * KiB

        await self.until("the server to store some of it", started)
        await self.inBrowser(lambda: self.row("p.bin").find_element("css selector", "button").click())
        await self.inBrowser(
            self.browser.waitFor, "the pause",
            lambda: self.row("p.bin").get_attribute("data-state") == "paused",
        )
        await self.inBrowser(lambda: self.row("p.bin").find_element("css selector", "button").click())
        await self.allDone()
        self.assertStored("p.bin", data)
        resumedFrom = await self.inBrowser(
            lambda: int(self.row("p.bin").get_attribute("data-resumed-from") or 0)
        )
        self.assertGreater(resumedFrom, 256 * KiB)

    async def test_tokenMissing(self) -> None:
        """
        Without the token the server wants, the file's row fails with the
        server's 401 reason and a hint to enter one; nothing is stored.
        """
        tokens = os.path.abspath(self.mktemp())
        with open(tokens, "w") as f:
            f.write("page-test-token-0123456789\n")
        self.startUploadServer("--auth-tokens", tokens)
        writePattern(os.path.join(self.picks, "n.bin"), 8, 1000)
        await self.openPage(self.server.url("/.upload/"))
        await self.pick("files", os.path.join(self.picks, "n.bin"))
        await self.inBrowser(
            self.browser.waitFor, "the refusal",
            lambda: self.row("n.bin").get_attribute("data-state") == "failed",
        )
        status = await self.inBrowser(lambda: self.row("n.bin").text)
        self.assertIn("401", status)
        self.assertIn("access token", status)
        self.assertFalse(os.path.exists(self.storedPath("n.bin")))

    async def test_dropped(self) -> None:
        """
        Files dropped on the page (a drop event carrying them) upload like
        picked ones, into the folder typed into the page.
        """
        self.startUploadServer()
        await self.openPage(self.server.url("/.upload/"))
        await self.inBrowser(self.browser.find("#folder").send_keys, "dropped/here")
        await self.inBrowser(self.browser.driver.execute_script, DROP, 200000)
        await self.allDone()
        self.assertStored("dropped/here/d.bin", bytes(i % 251 for i in range(200000)))


#: Drop a file of C{arguments[0]} bytes (byte i is i % 251) on the drop zone.
DROP = """
const size = arguments[0];
const bytes = new Uint8Array(size);
for (let i = 0; i < size; i++) bytes[i] = i % 251;
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], "d.bin"));
document.getElementById("drop").dispatchEvent(
    new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
"""
