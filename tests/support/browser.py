"""
A real headless Chromium (Debian's C{chromium} and C{chromium-driver})
driven with selenium, for end-to-end tests of pages the server serves.

Every call blocks on the browser: a trial test that also runs something on
its reactor (a L{uploadsvc.testing.faultproxy.FaultProxy} between browser
and server) makes its calls with C{deferToThread}, so the reactor goes on
carrying the browser's traffic meanwhile.
"""

from __future__ import annotations

import tempfile
import time
from inspect import isawaitable
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests.support.tools import requireTool
from uploadsvc.testing.faultproxy import FaultPlan, FaultProxy

#: The flags of a quiet, throw-away browser: no sandbox (containers), no
#: calls home, a fresh profile per test.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


class HeadlessChromium:
    """
    One Chromium with an empty profile, quit in the test's cleanup.

    @ivar driver: the selenium C{WebDriver}.
    """

    def __init__(self, testCase: Any) -> None:
        chromium = requireTool("chromium")
        chromedriver = requireTool("chromedriver")
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in FLAGS:
            options.add_argument(flag)
        profile = tempfile.mkdtemp(prefix="uploadsvc-chromium-")
        options.add_argument(f"--user-data-dir={profile}")
        self.driver = webdriver.Chrome(options=options, service=Service(chromedriver))
        testCase.addCleanup(self.quit)

    def quit(self) -> None:
        """
        End the browser and its driver (their own processes, by the PIDs
        selenium started).
        """
        self.driver.quit()

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def findAll(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def waitFor(self, what: str, check: Callable[[], Any], timeout: float = 120.0) -> Any:
        """
        Poll C{check} (at most C{timeout} seconds, at most 10 times a
        second) until it returns something true, and return that.

        @raise AssertionError: it never did; the message names C{what} and
            shows the page's text.
        """
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout * 10) + 1):
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise AssertionError(f"waited in vain for {what}; the page says:\n{self.pageText()}")

    def pageText(self) -> str:
        try:
            return str(self.find("body").text)
        except Exception as e:  # the page itself may be what broke
            return f"(no page text: {e})"

    def consoleErrors(self) -> list[str]:
        """
        What the page logged as errors (CSP violations included).
        """
        return [
            entry["message"] for entry in self.driver.get_log("browser")
            if entry.get("level") == "SEVERE"
        ]


class BrowserTestMixin:
    """
    For a trial test case that drives a page in L{HeadlessChromium} through
    a L{FaultProxy} in front of its server (L{tests.support.server}): the
    browser's blocking calls in a thread, the reactor free meanwhile.
    """

    def startProxy(self, plan: FaultPlan) -> FaultProxy:
        proxy = FaultProxy(reactor, ("127.0.0.1", self.server.port), plan, seed=7)  # type: ignore[attr-defined]
        proxy.listen()
        self.addCleanup(proxy.stop)  # type: ignore[attr-defined]
        return proxy

    async def inBrowser(self, f: Callable[..., Any], *args: Any) -> Any:
        return await deferToThread(f, *args)

    async def until(self, what: str, check: Callable[[], Any], tries: int = 600) -> Any:
        """
        Poll C{check} (maybe async) every tenth of a second on this reactor,
        at most C{tries} times, until it gives something true.
        """
        for _ in range(tries):
            result = check()
            if isawaitable(result):
                result = await result
            if result:
                return result
            await deferLater(reactor, 0.1, lambda: None)
        self.fail(f"waited in vain for {what}")  # type: ignore[attr-defined]
