"""
Tests for C{--zero-copy} (L{uploadsvc.tap}): parsed, validated, documented,
handed to the site's connections and passed on to workers.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.tap import Options, makeService
from uploadsvc.web.streaming import splice


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class ZeroCopyOptionTests(SynchronousTestCase):
    """
    C{--zero-copy auto|off}.
    """

    def test_default(self) -> None:
        """Without the option, bodies may be spliced (auto)."""
        self.assertEqual(parse()["zero-copy"], "auto")

    def test_values(self) -> None:
        """auto and off are accepted."""
        self.assertEqual(parse("--zero-copy", "off")["zero-copy"], "off")
        self.assertEqual(parse("--zero-copy=auto")["zero-copy"], "auto")

    def test_refused(self) -> None:
        """Any other value is refused with one line naming the choices."""
        for value in ["on", "", "OFF", "yes"]:
            e = self.assertRaises(UsageError, parse, "--zero-copy", value)
            self.assertEqual(str(e), f"--zero-copy must be one of auto, off, not {value!r}")

    def test_documented(self) -> None:
        """--help describes the option and its values."""
        usage = str(Options())
        self.assertIn("--zero-copy", usage)
        self.assertIn("splice(2)", usage)

    def test_workers(self) -> None:
        """A worker gets --zero-copy off when the parent has it, nothing for the default."""
        argv = ["--root", "/srv/u", "--workers", "2"]
        self.assertIn("--zero-copy=off", parse(*argv, "--zero-copy", "off").workerArguments())
        self.assertFalse(
            [a for a in parse(*argv).workerArguments() if a.startswith("--zero-copy")]
        )

    def _channelOf(self, *argv: str) -> Any:
        reactor = MemoryReactorClock()
        svc = makeService(parse("--root", self.mktemp(), *argv), reactor)
        assert isinstance(svc, MultiService)
        svc.startService()
        self.addCleanup(lambda: svc.running and svc.stopService())
        factory = reactor.tcpServers[0][1]
        protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
        for _ in range(4):  # (under the connection guard and the negotiation)
            protocol = getattr(protocol, "inner", None) or getattr(protocol, "_channel", protocol)
        return protocol

    def test_reachesTheChannel(self) -> None:
        """Each connection's HTTP/1.1 channel gets the option's value."""
        self.assertEqual(self._channelOf("--zero-copy", "off").zeroCopy, "off")
        self.assertEqual(self._channelOf().zeroCopy, "auto")

    def test_pumpsFitTheDiskPool(self) -> None:
        """
        The disk pool's size sets how many pumps may run: none with
        --disk-threads 2 (a pump and its digest lane would take every
        thread), two with the default 8.
        """
        self.patch(splice.PUMPS, "limit", splice.PUMPS.limit)
        self._channelOf("--disk-threads", "2")
        self.assertEqual(splice.PUMPS.limit, 0)
        self._channelOf()
        self.assertEqual(splice.PUMPS.limit, 2)
