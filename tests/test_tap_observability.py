"""
The options of C{twistd uploadsvc} for metrics and logs (C{--admin-listen},
C{--admin-insecure}, C{--log-format}) and what makeService builds from
them, on a memory reactor.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from twisted.application.service import Application, MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.ops.expiry import ExpiryService
from uploadsvc.ops.metrics import MULTIPROC_ENV, AdminSite, MeteredRunner, Metrics
from uploadsvc.tap import Options, StartupError, makeService
from uploadsvc.web.observed import ObservedSite
from uploadsvc.workers import WorkerPool


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """No admin listener and text logs unless asked."""
        options = parse()
        self.assertIsNone(options["admin-listen"])
        self.assertEqual(options["log-format"], "text")

    def test_documented(self) -> None:
        """The three options are in --help."""
        usage = str(Options())
        for name in ("--admin-listen", "--admin-insecure", "--log-format"):
            self.assertIn(name, usage)

    def test_adminLoopback(self) -> None:
        """A loopback or UNIX admin listener is accepted as given."""
        for endpoint in ("tcp:9100:interface=127.0.0.1", "tcp6:9100:interface=\\:\\:1",
                         "unix:/run/uploadsvc-admin.sock"):
            self.assertEqual(parse("--admin-listen", endpoint)["admin-listen"], endpoint)

    def test_adminExposedRefused(self) -> None:
        """
        An admin listener reachable from the network is refused in one line
        that names the way out, unless --admin-insecure.
        """
        for endpoint in ("tcp:9100", "tcp:9100:interface=0.0.0.0", "tcp:9100:interface=10.1.2.3"):
            with self.assertRaises(UsageError) as caught:
                parse("--admin-listen", endpoint)
            message = str(caught.exception)
            self.assertIn("--admin-insecure", message)
            self.assertNotIn("\n", message)
            self.assertEqual(
                parse("--admin-listen", endpoint, "--admin-insecure")["admin-listen"], endpoint
            )

    def test_adminMalformed(self) -> None:
        """A malformed admin endpoint is refused in one line."""
        for endpoint in ("tcp:notaport", "nonsense:1", ""):
            with self.assertRaises(UsageError) as caught:
                parse("--admin-listen", endpoint)
            self.assertIn("--admin-listen", str(caught.exception))

    def test_logFormat(self) -> None:
        """--log-format takes text or json, and nothing else."""
        self.assertEqual(parse("--log-format", "json")["log-format"], "json")
        with self.assertRaises(UsageError) as caught:
            parse("--log-format", "xml")
        self.assertEqual(str(caught.exception), "--log-format xml: give text or json")

    def test_workersGetLogFormatNotAdmin(self) -> None:
        """Workers are told the log format, never the supervisor's admin listener."""
        args = parse(
            "--workers", "2", "--log-format", "json",
            "--admin-listen", "tcp:9100:interface=127.0.0.1",
        ).workerArguments()
        self.assertIn("--log-format=json", args)
        self.assertFalse([a for a in args if a.startswith("--admin-listen")], args)


class MakeServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.reactor = MemoryReactorClock()

    def start(self, svc: MultiService) -> None:
        svc.startService()
        self.addCleanup(lambda: svc.running and svc.stopService())

    def test_adminListener(self) -> None:
        """--admin-listen adds a listener serving the admin site beside the public one."""
        svc = makeService(
            parse("--root", self.root, "--admin-listen", "tcp:9100:interface=127.0.0.1"),
            self.reactor,
        )
        self.start(svc)
        servers = {port: factory for port, factory, _, _ in self.reactor.tcpServers}
        self.assertEqual(sorted(servers), [8080, 9100])
        self.assertIsInstance(servers[9100], AdminSite)
        self.assertNotIsInstance(servers[8080], AdminSite)

    def test_noAdminByDefault(self) -> None:
        """Without --admin-listen nothing but the public listener is opened."""
        self.start(makeService(parse("--root", self.root), self.reactor))
        self.assertEqual([entry[0] for entry in self.reactor.tcpServers], [8080])

    def _site(self, svc: MultiService) -> tuple[ObservedSite, object]:
        """
        The public site of C{svc} once started, and the disk runner its
        app (and expiry) use.
        """
        self.start(svc)
        [site] = [f for port, f, _, _ in self.reactor.tcpServers if port == 8080]
        assert isinstance(site, ObservedSite)
        [expiry] = [s for s in svc if isinstance(s, ExpiryService)]
        return site, expiry.runner

    def test_noMetricsUnread(self) -> None:
        """
        Without an admin listener (nor a supervisor's folder of metric
        files) nobody can read metrics, so none are kept: no counting per
        request, no wrapper around each disk job.
        """
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV})
        site, runner = self._site(makeService(parse("--root", self.root), self.reactor))
        self.assertIsNone(site.metrics)
        self.assertNotIsInstance(runner, MeteredRunner)

    def test_metricsRead(self) -> None:
        """
        With an admin listener, or as a worker of a supervisor that serves
        one (its folder of metric files in the environment), metrics are
        kept and the disk pool is metered.
        """
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV})
        site, runner = self._site(makeService(
            parse("--root", self.root, "--admin-listen", "tcp:9100:interface=127.0.0.1"),
            self.reactor,
        ))
        self.assertIsInstance(site.metrics, Metrics)
        self.assertIsInstance(runner, MeteredRunner)
        self.reactor = MemoryReactorClock()
        self.patch(os, "environ", {**os.environ, MULTIPROC_ENV: self.mktemp()})
        site, runner = self._site(makeService(parse("--root", self.mktemp()), self.reactor))
        self.assertIsInstance(site.metrics, Metrics)
        self.assertIsInstance(runner, MeteredRunner)

    def test_supervisorServesAdmin(self) -> None:
        """
        With --workers, the supervisor serves the admin listener and makes
        the folder of the workers' metric files, removed when it stops.
        """
        svc = makeService(
            parse("--root", self.root, "--workers", "2", "--admin-listen",
                  "tcp:9100:interface=127.0.0.1"),
            self.reactor,
        )
        [pool] = [s for s in svc if isinstance(s, WorkerPool)]
        folder = pool._metricsDir
        assert folder is not None
        self.assertTrue(os.path.isdir(folder))
        for child in svc:
            if not isinstance(child, WorkerPool):
                child.startService()
        self.assertEqual([entry[0] for entry in self.reactor.tcpServers], [9100])
        for child in svc:
            if not isinstance(child, WorkerPool):
                child.stopService()
        self.assertFalse(os.path.exists(folder))

    def test_jsonLogObserverForTwistd(self) -> None:
        """
        Under twistd, --log-format json gives the Application an
        ILogObserver that writes JSON lines to twistd's --logfile.
        """
        text, _ = self.loggedUnderTwistd("--log-format", "json")
        [line] = [json.loads(text) for text in text.splitlines()]
        self.assertEqual((line["message"], line["namespace"]), ("hello log", "t"))

    def loggedUnderTwistd(self, *args: str) -> tuple[str, Any]:
        """
        Make the service as twistd would (with C{--logfile}), log one line
        through the observer it gives the Application, and return the log
        file's text and the service.
        """
        hook, usr1 = sys.excepthook, signal.getsignal(signal.SIGUSR1)
        self.addCleanup(setattr, sys, "excepthook", hook)
        self.addCleanup(signal.signal, signal.SIGUSR1, usr1)
        logPath = os.path.abspath(self.mktemp())
        options = parse("--root", self.root, *args)
        options.parent = {"logfile": logPath, "nodaemon": False}  # type: ignore[assignment]
        svc = makeService(options, self.reactor)
        application = Application("uploadsvc")
        svc.setServiceParent(application)
        observer = ILogObserver(application)
        Logger(namespace="t", observer=observer).info("hello {who}", who="log")
        with open(logPath) as f:
            return f.read(), svc

    def test_textLogObserverForTwistd(self) -> None:
        """
        Under twistd, text logs (the default) give the Application an
        ILogObserver writing twistd's own text lines to its --logfile, and
        the server settles the garbage collector as it starts.
        """
        text, svc = self.loggedUnderTwistd()
        [line] = text.splitlines()
        self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[t#info\] hello log$")
        self.assertTrue(svc.settleCollector)  # type: ignore[attr-defined]

    def test_syslogKeepsTwistdObserver(self) -> None:
        """With twistd's --syslog, twistd keeps its own observer (no component is set)."""
        hook = sys.excepthook
        self.addCleanup(setattr, sys, "excepthook", hook)
        options = parse("--root", self.root)
        options.parent = {"logfile": "x.log", "nodaemon": False, "syslog": True}  # type: ignore[assignment]
        application = Application("uploadsvc")
        makeService(options, self.reactor).setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))

    def test_loggerOptionOpensNothing(self) -> None:
        """
        With twistd's --logger (whose observer twistd uses), no observer of
        ours is made: no log file opened, no SIGUSR1 handler installed.
        """
        hook, usr1 = sys.excepthook, signal.getsignal(signal.SIGUSR1)
        self.addCleanup(setattr, sys, "excepthook", hook)
        self.addCleanup(signal.signal, signal.SIGUSR1, usr1)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        logPath = os.path.abspath(self.mktemp())
        for form in ("text", "json"):
            options = parse("--root", self.root, "--log-format", form)
            options.parent = {  # type: ignore[assignment]
                "logfile": logPath, "nodaemon": False, "logger": lambda: None,
            }
            application = Application("uploadsvc")
            makeService(options, self.reactor).setServiceParent(application)
            self.assertIsNone(application.getComponent(ILogObserver, None))
        self.assertFalse(os.path.exists(logPath))
        self.assertEqual(signal.getsignal(signal.SIGUSR1), signal.SIG_DFL)

    def test_daemonToStdoutRefused(self) -> None:
        """
        As twistd itself: a daemon (no -n) cannot log to its standard output
        (--logfile -); it says so in one line instead of logging to nowhere.
        """
        hook = sys.excepthook
        self.addCleanup(setattr, sys, "excepthook", hook)
        for form in ("text", "json"):
            options = parse("--root", self.root, "--log-format", form)
            options.parent = {"logfile": "-", "nodaemon": False}  # type: ignore[assignment]
            with self.assertRaises(StartupError) as caught:
                makeService(options, self.reactor)
            self.assertEqual(
                str(caught.exception),
                "--logfile -: a daemon cannot log to its standard output; add -n",
            )
        options = parse("--root", self.root)
        options.parent = {"logfile": "-", "nodaemon": True}  # type: ignore[assignment]
        makeService(options, self.reactor)

    def test_inProcessLeavesCollector(self) -> None:
        """A service made outside twistd (a .tac, a test) leaves the collector alone."""
        svc = makeService(parse("--root", self.root), self.reactor)
        self.assertFalse(svc.settleCollector)  # type: ignore[attr-defined]
