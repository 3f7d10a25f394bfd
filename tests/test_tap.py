"""
Tests for L{uploadsvc.tap} and the C{twistd uploadsvc} plugin: options,
the service tree on a memory reactor, and plugin discovery.
"""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace
from typing import Any

from twisted.application.service import IServiceMaker, MultiService, Service
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc import tap
from uploadsvc.commandline import formatSize, parseSize
from uploadsvc.endpoints import parseEndpoint
from uploadsvc.tap import (
    DEFAULT_BACKLOG,
    DEFAULT_LISTEN,
    Options,
    StartupError,
    makeService,
    withBacklog,
)
from uploadsvc.web.app import DEFAULT_MAX_UPLOAD

#: Every option of C{twistd uploadsvc}, by long name.
OPTIONS = [
    "root",
    "listen",
    "no-fsync",
    "allow-overwrite",
    "allow-delete",
    "max-upload-size",
    "idle-timeout",
    "prefix",
    "min-free",
    "max-uploads",
    "disk-threads",
    "read-size",
]


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    """
    Tests for L{Options}.
    """

    def test_defaults(self) -> None:
        """
        With no arguments the root is C{./uploads}, the server listens on
        loopback port 8080 only, fsync is on, overwrite and delete are off.
        """
        options = parse()
        self.assertEqual(options["root"], "./uploads")
        self.assertEqual(options["listen"], ["tcp:8080:interface=127.0.0.1"])
        self.assertEqual(DEFAULT_LISTEN, "tcp:8080:interface=127.0.0.1")
        self.assertFalse(options["no-fsync"])
        self.assertFalse(options["allow-overwrite"])
        self.assertFalse(options["allow-delete"])
        self.assertEqual(options["idle-timeout"], 60)
        self.assertEqual(options["prefix"], "")

    def test_defaultsNotShared(self) -> None:
        """
        Parsing one set of options does not change another's listen list.
        """
        parse("--listen", "tcp:1234:interface=127.0.0.1")
        self.assertEqual(parse()["listen"], [DEFAULT_LISTEN])

    def test_listenRepeatable(self) -> None:
        """
        C{--listen} may be given several times, replacing the default.
        """
        options = parse(
            "--listen", "tcp:8081:interface=127.0.0.1", "--listen", "unix:/tmp/u.sock"
        )
        self.assertEqual(
            options["listen"], ["tcp:8081:interface=127.0.0.1", "unix:/tmp/u.sock"]
        )

    def test_values(self) -> None:
        """
        Each option is parsed into its value and type.
        """
        options = parse(
            "--root", "/srv/up", "--no-fsync", "--allow-overwrite", "--allow-delete",
            "--max-upload-size", "1000", "--idle-timeout", "5", "--prefix", "/up/",
            "--min-free", "77", "--max-uploads", "3", "--disk-threads", "2",
            "--read-size", "65536",
        )
        self.assertEqual(
            {name: options[name] for name in OPTIONS if name != "listen"},
            {
                "root": "/srv/up",
                "no-fsync": True,
                "allow-overwrite": True,
                "allow-delete": True,
                "max-upload-size": 1000,
                "idle-timeout": 5,
                "prefix": "/up",
                "min-free": 77,
                "max-uploads": 3,
                "disk-threads": 2,
                "read-size": 65536,
            },
        )

    def test_shortRoot(self) -> None:
        """
        C{-r} is short for C{--root}.
        """
        self.assertEqual(parse("-r", "somewhere")["root"], "somewhere")

    def test_documented(self) -> None:
        """
        Every option appears in the usage text with a description.
        """
        usage = str(Options())
        for name in OPTIONS:
            self.assertIn("--" + name, usage)
        entries: list[Any] = [*Options.optFlags, *Options.optParameters]
        for entry in entries:
            name, _, *rest = entry
            doc = rest[0] if len(rest) == 1 else rest[1]
            self.assertTrue(str(doc).strip(), name)
        self.assertTrue((Options.opt_listen.__doc__ or "").strip())
        self.assertIn("fsync", usage)

    def test_badValues(self) -> None:
        """
        Malformed or out-of-range values are refused with L{UsageError}.
        """
        cases = [
            ["--max-upload-size", "-1"],
            ["--max-upload-size", "lots"],
            ["--idle-timeout", "x"],
            ["--idle-timeout", "-5"],
            ["--min-free", "-1"],
            ["--max-uploads", "-1"],
            ["--disk-threads", "0"],
            ["--read-size", "100"],
            ["--read-size", "10G"],
            ["--prefix", "up"],
            ["--no-such-option"],
        ]
        for argv in cases:
            self.assertRaises(UsageError, Options().parseOptions, argv)

    def test_sizes(self) -> None:
        """
        Byte options take K, M, G and T, powers of 1024, in either case and
        with an optional B or iB; their defaults are sizes too.
        """
        options = parse(
            "--max-upload-size", "10G", "--min-free", "1t", "--read-size", "256KiB",
            "--bench-write-rate", "2MB",
        )
        self.assertEqual(
            [options[n] for n in ("max-upload-size", "min-free", "read-size", "bench-write-rate")],
            [10 * 1024**3, 1024**4, 256 * 1024, 2 * 1024**2],
        )
        self.assertEqual(parse()["max-upload-size"], DEFAULT_MAX_UPLOAD)
        self.assertEqual(parse()["min-free"], 0)
        self.assertEqual(parse("--max-upload-size", "1000")["max-upload-size"], 1000)
        self.assertEqual([formatSize(n) for n in (0, 1000, 1024, 64 * 1024**3)], ["0", "1000", "1K", "64G"])

    def test_badSizes(self) -> None:
        """
        Anything but digits and one unit is refused, naming the option.
        """
        for text in ["10X", "-1", "1.5G", "G", "", "10 G", "1KK", "0x10"]:
            e = self.assertRaises(UsageError, parse, "--min-free", text)
            self.assertIn(f"--min-free {text}: not a size", str(e))
            self.assertRaises(ValueError, parseSize, text)

    def test_plainErrors(self) -> None:
        """
        Option mistakes are told in plain words that name the option.
        """
        cases = {
            ("--rot", "x"): "unknown option --rot",
            ("--root",): "--root needs a value",
            ("--no-fsync=yes",): "--no-fsync takes no value",
            ("--idle-timeout", "soon"): "--idle-timeout soon: give a number of 0 or more",
            ("stray",): "unexpected argument 'stray'",
        }
        for argv, message in cases.items():
            self.assertIn(message, str(self.assertRaises(UsageError, parse, *argv)))

    def test_prefixRefused(self) -> None:
        """
        Only whole long names are options: the start of one (which getopt
        takes for the whole name, or calls ambiguous) is an unknown option,
        while whole names, with = or not, short forms and values that look
        like options still work.
        """
        cases = {
            ("--disk-thread", "2"): "--disk-thread",
            ("--disk-thread=2",): "--disk-thread",
            ("--no-fs",): "--no-fs",
            ("--max-upload", "1G"): "--max-upload",
            ("--root", "x", "--he"): "--he",
        }
        for argv, name in cases.items():
            e = self.assertRaises(UsageError, parse, *argv)
            self.assertEqual(str(e), f"unknown option {name}")
        options = parse("--disk-threads", "2", "--max-uploads=3", "-r", "--pre", "--no-fsync")
        self.assertEqual(
            [options[n] for n in ("disk-threads", "max-uploads", "root", "no-fsync")],
            [2, 3, "--pre", 1],
        )
        self.assertEqual(parse("--root", "--no", "-rx")["root"], "x")

    def test_ietfVersions(self) -> None:
        """
        --ietf-versions takes the draft's interop versions served (default
        6, 8 and 10), or none; an unknown one is refused in one line naming
        the option and the known versions, and workers get the text as given.
        """
        self.assertEqual(parse()["ietfVersions"], (6, 8, 10))
        self.assertEqual(parse("--ietf-versions", "10,6")["ietfVersions"], (6, 10))
        self.assertEqual(parse("--ietf-versions", "none")["ietfVersions"], ())
        self.assertIn("--ietf-versions=10,6", parse("--ietf-versions", "10,6").workerArguments())
        self.assertNotIn("ietf", " ".join(parse().workerArguments()))
        for bad in ["5", "6,x", ""]:
            error = str(self.assertRaises(UsageError, parse, "--ietf-versions", bad))
            self.assertIn("--ietf-versions: unknown interop version", error)
            self.assertIn("known: 6, 7, 8, 9, 10", error)
            self.assertNotIn("\n", error)
        self.assertIn("--ietf-versions", str(Options()))

    def test_hiddenOptionsWork(self) -> None:
        """
        --inherit, --bench-write-rate and --restart-delay work but are not
        in --help.
        """
        options = parse(
            "--inherit", "5=tcp:8080:interface=127.0.0.1", "--bench-write-rate", "1M",
            "--restart-delay", "2.5",
        )
        self.assertEqual(options["inherit"], [(5, parseEndpoint("tcp:8080:interface=127.0.0.1"))])
        self.assertEqual((options["bench-write-rate"], options["restart-delay"]), (1024**2, 2.5))
        usage = str(Options())
        for name in ("inherit", "bench-write-rate", "restart-delay"):
            self.assertNotIn("--" + name, usage)

    def test_helpWrapsBetweenWords(self) -> None:
        """
        At any width, --help keeps every endpoint example and hyphenated
        word whole, and points at docs/protocol.md.
        """
        for width in (60, 80, 120):
            words = Options().getUsage(width).split()
            for word in (
                "tcp:8080:interface=127.0.0.1,",
                "ssl:8443:privateKey=k.pem:certKey=c.pem",
                "unix:/run/uploadsvc.sock",
                "Retry-After",
                "keep-alive",
                "docs/protocol.md.",
            ):
                self.assertIn(word, words, width)

    def test_badListen(self) -> None:
        """
        An endpoint description that cannot be parsed is refused with
        L{UsageError} when the options are parsed, not later.
        """
        self.assertRaises(
            UsageError, Options().parseOptions, ["--listen", "nonsense:8080"]
        )


class MakeServiceTests(SynchronousTestCase):
    """
    Tests for L{makeService}.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.reactor = MemoryReactorClock()

    def service(self, *argv: str) -> MultiService:
        svc = makeService(parse("--root", self.root, *argv), self.reactor)
        self.assertIsInstance(svc, MultiService)
        return svc

    def start(self, svc: MultiService) -> None:
        svc.startService()
        self.addCleanup(lambda: svc.running and svc.stopService())

    def test_defaultListen(self) -> None:
        """
        Started, the service listens on TCP port 8080 on 127.0.0.1 only.
        """
        svc = self.service()
        self.assertEqual(self.reactor.tcpServers, [])
        self.start(svc)
        self.assertEqual(
            [(port, interface) for port, _, _, interface in self.reactor.tcpServers],
            [(8080, "127.0.0.1")],
        )
        self.assertEqual(self.reactor.unixServers, [])

    def test_rootCreated(self) -> None:
        """
        The storage root (and its state folder) is created.
        """
        self.service()
        self.assertTrue(os.path.isdir(os.path.join(self.root, ".uploadsvc")))

    def test_severalEndpoints(self) -> None:
        """
        Each C{--listen} becomes a listening service, TCP and UNIX alike.
        """
        sock = os.path.join(self.root, "u.sock")
        svc = self.service(
            "--listen", "tcp:8081:interface=127.0.0.1", "--listen", "unix:" + sock
        )
        self.start(svc)
        self.assertEqual(
            [(port, interface) for port, _, _, interface in self.reactor.tcpServers],
            [(8081, "127.0.0.1")],
        )
        self.assertEqual([entry[0] for entry in self.reactor.unixServers], [sock])
        tcpFactory = self.reactor.tcpServers[0][1]
        self.assertIs(self.reactor.unixServers[0][1], tcpFactory)

    def test_rootUnusable(self) -> None:
        """
        A root that is a file, or cannot be created, stops makeService with
        a L{StartupError} that says why.
        """
        afile = os.path.abspath(self.mktemp())
        open(afile, "w").close()
        for root, message in [
            (afile, f"--root {afile}: not a folder"),
            (os.path.join(afile, "sub"), f"cannot be created: {afile} is not a folder"),
        ]:
            e = self.assertRaises(
                StartupError, makeService, parse("--root", root), self.reactor
            )
            self.assertEqual(str(e).split(": ", 1)[0], f"--root {root}")
            self.assertIn(message, str(e))

    def test_listenErrorOneLine(self) -> None:
        """
        A listener that cannot be opened stops the start with a
        L{StartupError} naming the address and the reason.
        """

        class Busy(Service):
            def privilegedStartService(self) -> None:
                raise CannotListenError("127.0.0.1", 8080, OSError(errno.EADDRINUSE, "Address already in use"))

        svc = self.service()
        Busy().setServiceParent(svc)
        e = self.assertRaises(StartupError, svc.privilegedStartService)
        self.assertEqual(
            str(e),
            "cannot listen on 127.0.0.1:8080: address already in use (another server on that port?)",
        )

    def test_stopService(self) -> None:
        """
        C{stopService} stops every child and joins the disk thread pool.
        """
        svc = self.service()
        self.start(svc)
        self.assertTrue(all(child.running for child in svc))
        pools = [child.pool for child in svc if hasattr(child, "pool")]
        self.assertEqual(len(pools), 1)
        started = pools[0].threads
        self.assertEqual(len(started), 8)  # --disk-threads' default, all at start
        self.successResultOf(svc.stopService())
        self.assertFalse(svc.running)
        self.assertFalse(any(child.running for child in svc))
        self.assertEqual(pools[0].threads, [])
        self.assertFalse(any(t.is_alive() for t in started))


class DiskThreadsServiceTests(SynchronousTestCase):
    def test_stopDoesNotWaitForASlowDisk(self) -> None:
        """
        Stopping the disk threads' service waits only so long for calls
        still running (a slow disk), then says so in one line and returns.
        """
        from twisted.logger import globalLogPublisher
        import threading

        from uploadsvc.runner import DiskThreads
        from uploadsvc.tap import _DiskThreadsService

        seen: list[dict[str, object]] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        gate = threading.Event()
        self.addCleanup(gate.set)
        pool = DiskThreads(2, "test-stop", SimpleNamespace(callFromThread=print))  # type: ignore[arg-type]
        svc = _DiskThreadsService(pool, stopWait=0.1)
        svc.startService()
        pool.put((gate.wait, (30,), None))
        svc.stopService()
        warnings = [e for e in seen if "disk threads still busy" in str(e.get("log_format"))]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["count"], 1)


class PluginTests(SynchronousTestCase):
    """
    The twistd plugin.
    """

    def test_found(self) -> None:
        """
        The plugin is found as an L{IServiceMaker} named C{uploadsvc}, and
        points at L{uploadsvc.tap}.
        """
        makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "uploadsvc"]
        self.assertEqual(len(makers), 1)
        maker = makers[0]
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)
        self.assertTrue(maker.description)


class BacklogTests(SynchronousTestCase):
    """
    Listening endpoints get a backlog large enough for a crowd of clients.
    """

    def test_addedWhenMissing(self) -> None:
        """A tcp, ssl or unix endpoint without backlog= gets the default one."""


        self.assertEqual(
            withBacklog("tcp:8080:interface=127.0.0.1"),
            "tcp:8080:interface=127.0.0.1:backlog=%d" % DEFAULT_BACKLOG,
        )
        self.assertEqual(withBacklog("unix:/x.sock"), "unix:/x.sock:backlog=%d" % DEFAULT_BACKLOG)

    def test_keptWhenGiven(self) -> None:
        """An explicit backlog, or an endpoint type without one, is left alone."""


        self.assertEqual(withBacklog("tcp:80:backlog=5"), "tcp:80:backlog=5")
        self.assertEqual(withBacklog("systemd:domain=INET:index=0"), "systemd:domain=INET:index=0")

    def test_listeningWithBacklog(self) -> None:
        """makeService listens with the default backlog."""


        reactor = MemoryReactorClock()
        options = Options()
        options.parseOptions(["--root", self.mktemp()])
        service = makeService(options, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(reactor.tcpServers[0][2], DEFAULT_BACKLOG)
