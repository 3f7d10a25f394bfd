"""
The twistd plugin's options and service: C{twistd uploadsvc}.
"""

from __future__ import annotations

import errno
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from twisted.application import internet, service, strports
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python import usage

from uploadsvc import commandline
from uploadsvc.commandline import (
    countOption, durationOption, formatSize, parseDuration, parseSize, plainError, sizeOption,
)
from uploadsvc.endpoints import EndpointError, parseEndpoint
from uploadsvc.errors import StorageFault
from uploadsvc.ops.events import Events
from uploadsvc.ops.logs import FORMATS, jsonFileObserver, logEvent, textFileObserver
from uploadsvc.ops.metrics import (
    AdminSite,
    MeteredRunner,
    Metrics,
    MetricsResource,
    inMultiprocessMode,
    makeMultiprocDir,
    removeMultiprocDir,
)
from uploadsvc.protocol.ietf import DEFAULT_VERSIONS, KNOWN, parseVersionList
from uploadsvc.ops.hookoptions import HOOK_PARAMETERS, checkHookOptions, makeHooks
from uploadsvc.ops.expiry import ExpiryService
from uploadsvc.ops.collector import settle
from uploadsvc.ops.mallocarenas import TRIM_INTERVAL, freeMemoryTrimmer, limitArenas
from uploadsvc.ops.shutdown import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    GracefulShutdown,
    StopsFirst,
    exitZeroOnTerm,
    isRealReactor,
    stopTimeout,
)
from uploadsvc.protocol.cors import MAX_AGE_CAP, CorsPolicy, OriginError, parseOrigin
from uploadsvc.protocol.forwarded import TrustedProxies
from uploadsvc.runner import DiskThreads, ThreadRunner
from uploadsvc.storage.filestore import FileStore
from uploadsvc.storage.throttle import WriteThrottle
from uploadsvc.web.accesslog import redactedLogFormatter
from uploadsvc.web.app import DEFAULT_MAX_UPLOAD, Config, UploadApp
from uploadsvc.web.auth import (
    Authenticator,
    ReloadOnSignal,
    SecretFile,
    SecretFileError,
    readSecrets,
    readTokens,
    tokenFile,
)
from uploadsvc.web.limits import DEFAULT_HEADER_TIMEOUT
from uploadsvc.web.observed import ObservedSite
from uploadsvc.web.streaming import DEFAULT_READ_SIZE
from uploadsvc.web.streaming.zerocopyplan import MODES as ZERO_COPY_MODES
from uploadsvc.web.streaming.splice import setDiskThreads
from uploadsvc.workers import (
    RESTART_DELAY,
    WorkerPool,
    adoptedListener,
    checkSharable,
    followSupervisor,
    workerCommand,
    workerCount,
)

#: The largest --read-size: every socket read allocates that much at once.
MAX_READ_SIZE = 16 * 1024 * 1024

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"

#: Seconds between looks for takeover requests from other processes.
TAKEOVER_POLL = 0.5

#: Seconds between two samples of the uploads being written (a gauge).
METRICS_SAMPLE = 1.0

log = Logger()


#: Twisted listens with a backlog of 50; a crowd of phones reconnecting at
#: once overflows it and the kernel resets the extra connections.
DEFAULT_BACKLOG = 1024


def withBacklog(description: str) -> str:
    """
    Give a listening endpoint string L{DEFAULT_BACKLOG} unless it sets one.
    """
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6", "ssl", "unix") and "backlog=" not in description:
        return description + ":backlog=%d" % DEFAULT_BACKLOG
    return description


def isLoopbackEndpoint(description: str) -> bool:
    """
    Whether a listening endpoint string accepts connections from this host
    only (see L{ListenEndpoint.isLoopback}); a string that cannot be parsed
    counts as reachable from the network.
    """
    try:
        return parseEndpoint(description).isLoopback
    except EndpointError:
        return False


#: How the command line names itself in its one-line errors.
PROGRAM = "twistd uploadsvc"


class StartupError(Exception):
    """
    The server cannot start as configured (a port in use, a root that
    cannot be used): under twistd it ends the start with one line on
    stderr and exit status 1, not a traceback.
    """


def _reportStartupErrorsInOneLine() -> None:
    """
    Make an uncaught L{StartupError} end this process with its one-line
    message: twistd lets an error at start-up through to Python's own
    report, a traceback (after removing its pid file, and in daemon mode
    after telling the parent).
    """
    previous = sys.excepthook
    if getattr(previous, "reportsStartupErrors", False):
        return

    def hook(kind: Any, value: Any, tb: Any) -> None:
        if isinstance(value, StartupError):
            (sys.__stderr__ or sys.stderr).write(f"{PROGRAM}: {value}\n")
        else:
            previous(kind, value, tb)

    hook.reportsStartupErrors = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def describeListenError(error: CannotListenError) -> str:
    """
    One line that says why a listener could not be opened, and what to do.
    """
    where = error.port if error.interface is None else f"{error.interface or '*'}:{error.port}"
    reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
    code = getattr(error.socketError, "errno", None)
    hint = {
        errno.EADDRINUSE: " (another server on that port?)",
        errno.EACCES: " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
        errno.EADDRNOTAVAIL: " (this host has no such address)",
    }.get(code or 0, "")
    return f"cannot listen on {where}: {reason[:1].lower()}{reason[1:]}{hint}"


@contextmanager
def _listenErrors() -> Iterator[None]:
    try:
        yield
    except CannotListenError as e:
        message = describeListenError(e)
        log.error("{message}", message=message)
        raise StartupError(message) from None


def checkRoot(root: str) -> None:
    """
    Refuse a storage root that this process could not use, before anything
    starts: one that is not a folder, is not writable, or cannot be created.

    @raise StartupError: saying which.
    """
    path = os.path.abspath(root)
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise StartupError(f"--root {root}: not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise StartupError(f"--root {root}: not writable by this user (uid {os.geteuid()})")
        return
    parent = os.path.dirname(path)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise StartupError(f"--root {root}: cannot be created: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StartupError(
            f"--root {root}: cannot be created: {parent} is not writable by this "
            f"user (uid {os.geteuid()})"
        )


class Options(commandline.Options):
    """
    Command-line options of C{twistd uploadsvc}.
    """

    synopsis = "[options]"
    longdesc = (
        "Receive many uploads at once (PUT/POST a file to its path), stream each "
        "body to disk with flow control, and resume interrupted uploads with "
        "Content-Range. The HTTP interface is described in docs/protocol.md."
    )

    #: Options for the project's own tools and tests: they work, but --help
    #: does not list them.
    hidden = frozenset({"inherit", "bench-write-rate", "restart-delay"})
    #: Options in bytes: their defaults are shown as sizes and parsed once
    #: options are read.
    sizes = ("max-upload-size", "min-free", "read-size", "bench-write-rate")
    #: Options in seconds with units (see L{parseDuration}), parsed likewise.
    durations = ("expire-after",)

    optFlags = [
        ["allow-overwrite", None, "Let an upload replace a complete file (default: 409)."],
        ["allow-delete", None, "Let DELETE remove complete files (default: 405)."],
        ["allow-download", None, "Serve complete files to GET (and HEAD), with Range, "
         "ETag and Last-Modified (default: GET is 405)."],
        ["no-fsync", None, "Do not fsync: faster, but a crash or power loss may "
         "lose bytes that were acknowledged. Off by default."],
        ["trust-front-end", None, "Check no credentials: a front end (e.g. nginx) "
         "authenticates every request before it gets here."],
        ["insecure-no-auth", None, "Allow listening on a non-loopback address with "
         "no authentication at all (anyone who can connect may upload)."],
        ["admin-insecure", None, "Allow --admin-listen on a non-loopback address "
         "(the metrics have no authentication)."],
        ["cors-credentials", None, "With --cors-origin: let browsers send credentials "
         "(cookies, HTTP authentication) cross-origin and read the answers."],
        ["no-upload-page", None, "Do not serve the upload page at /.upload/."],
    ]
    optParameters = [
        ["root", "r", "./uploads", "Folder that receives the uploads (created if missing)."],
        ["max-upload-size", None, formatSize(DEFAULT_MAX_UPLOAD),
         "Largest upload; larger ones get 413.", sizeOption("max-upload-size")],
        ["idle-timeout", None, 60,
         "Seconds a client may send nothing before it is disconnected "
         "(what it sent is kept); 0 turns the timeout off.", countOption("idle-timeout")],
        ["prefix", None, "", "URL path prefix that is stripped, e.g. /upload."],
        ["min-free", None, "0",
         "Free-space floor: data that would go below it gets 507.", sizeOption("min-free")],
        ["max-uploads", None, 0,
         "Uploads written at once before 503 + Retry-After (0: no limit).",
         countOption("max-uploads")],
        ["disk-threads", None, 8, "Threads that write to disk.", countOption("disk-threads")],
        ["read-size", None, formatSize(DEFAULT_READ_SIZE),
         "Largest socket read, over TLS too (the send buffer keeps Twisted's size).",
         sizeOption("read-size")],
        ["zero-copy", None, "auto",
         "auto: plain HTTP/1.1 bodies with Content-Length go socket -> pipe -> file with "
         "splice(2), never through Python (falling back by itself where splice cannot); "
         "off: every body is read by Python."],
        ["bench-write-rate", None, "0",
         "For benchmarks only: limit disk writes to this many bytes per second "
         "(a disk slower than the network); 0: no limit.", sizeOption("bench-write-rate")],
        ["restart-delay", None, RESTART_DELAY,
         "With --workers: seconds before a dead worker is first started again "
         "(for tests).", countOption("restart-delay", float)],
        ["auth-tokens", None, None,
         "File of bearer tokens, one per line (# comments), each optionally "
         "limited: <token> name=NAME prefix=FOLDER/ ops=upload,download,delete; "
         "requests need Authorization: Bearer <token>. Re-read on change and on "
         "SIGHUP (a bad line then keeps the tokens read before)."],
        ["signing-key-file", None, None,
         "File of HMAC keys (first line signs, all verify) for signed upload URLs "
         "(?expires=...&sig=...; see python -m uploadsvc.sign). Re-read on change "
         "and on SIGHUP."],
        ["max-connections-per-client", None, 0,
         "Open connections one client address may have; extra ones are closed "
         "at once (0: no limit).", countOption("max-connections-per-client")],
        ["admin-listen", None, None,
         "Endpoint of the admin listener serving GET /metrics (Prometheus), e.g. "
         "tcp:9100:interface=127.0.0.1; loopback only unless --admin-insecure "
         "(default: none). With --workers one scrape covers every worker."],
        ["log-format", None, "text",
         "Log lines as text, or json: one JSON object per line (an access line per "
         "request, a line per upload event), in twistd's --logfile too."],
        ["shutdown-timeout", None, DEFAULT_SHUTDOWN_TIMEOUT,
         "On SIGTERM: stop accepting at once, let requests in flight go on for up "
         "to this many seconds, then end the rest (they keep what they stored) "
         "and exit 0. With --workers the parent waits this long plus 15 s.",
         countOption("shutdown-timeout", float)],
        ["expire-after", None, "24h",
         "Remove incomplete uploads that received no byte for this long, in "
         "every process sharing the root; 0 keeps them for ever.",
         durationOption("expire-after")],
        ["header-timeout", None, DEFAULT_HEADER_TIMEOUT,
         "Seconds a client has to send a request's whole header block, however "
         "slowly it trickles (also closes idle keep-alive connections); 0: off.",
         countOption("header-timeout")],
        ["ietf-versions", None, ",".join(map(str, DEFAULT_VERSIONS)),
         "Interop versions of the IETF resumable-upload draft served, comma-separated "
         f"(known: {', '.join(map(str, KNOWN))}), or none to turn it off."],
        *HOOK_PARAMETERS,
        ["cors-max-age", None, 600,
         "With --cors-origin: seconds a browser may cache a preflight's answer.",
         countOption("cors-max-age")],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        #: The --listen strings, parsed (L{ListenEndpoint}), in order.
        self["endpoints"] = []
        self["inherit"] = []
        self["workers"] = 1
        self["cors-origin"] = []
        self["trusted-proxy"] = []

    def opt_cors_origin(self, value: str) -> None:
        """Browser origin that may upload from its pages (CORS), repeatable: scheme://host[:port], or * for any (not with --cors-credentials). Default: none (CORS off)."""
        self["cors-origin"].append(value)

    def opt_trusted_proxy(self, value: str) -> None:
        """Proxy whose Forwarded / X-Forwarded-Proto, -Host and -Prefix headers decide the URLs handed out (Location), repeatable: an IP address, a network (10.0.0.0/8), or unix for a front end on a unix socket. From anyone else those headers are ignored."""
        self["trusted-proxy"].append(value)

    def opt_workers(self, value: str) -> None:
        """Worker processes sharing the listening sockets: a number, or auto for one per core (default: 1, no separate worker)."""
        try:
            self["workers"] = workerCount(value)
        except ValueError:
            raise usage.UsageError(
                f"--workers {value}: give a number of 1 or more, or auto"
            ) from None

    def opt_inherit(self, value: str) -> None:
        """(internal) FD=ENDPOINT: serve the listening socket FD that the parent made from ENDPOINT."""
        fd, equals, description = value.partition("=")
        if not equals or not fd.isdigit():
            raise usage.UsageError(f"bad --inherit {value!r}")
        try:
            endpoint = parseEndpoint(description)
            checkSharable(endpoint)
        except ValueError as e:
            raise usage.UsageError(f"bad --inherit {value!r}: {e}")
        self["inherit"].append((int(fd), endpoint))

    def workerArguments(self) -> list[str]:
        """
        These options again, for a worker: everything but C{--workers},
        C{--listen}, C{--inherit} (the parent passes the listeners) and
        C{--restart-delay} (the parent's business).
        """
        flags: list[Any] = self.optFlags
        parameters: list[Any] = self.optParameters
        args = [f"--{flag[0]}" for flag in flags if self[flag[0]]]
        args += [f"--cors-origin={o}" for o in self["cors-origin"]]
        args += [f"--trusted-proxy={p}" for p in self["trusted-proxy"]]
        for parameter in parameters:
            name, default = parameter[0], parameter[2]
            if name in self.sizes:
                default = parseSize(str(default))
            if name in self.durations:
                default = parseDuration(str(default))
            # The supervisor's own business: its restarts, its admin listener.
            if name in ("restart-delay", "admin-listen"):
                continue
            if self[name] is not None and self[name] != default:
                args.append(f"--{name}={self[name]}")
        return args

    def opt_listen(self, endpoint: str) -> None:
        """Endpoint to listen on, repeatable: a Twisted endpoint string such as tcp:8080:interface=127.0.0.1, ssl:8443:privateKey=k.pem:certKey=c.pem or unix:/run/uploadsvc.sock (default: tcp:8080:interface=127.0.0.1)."""
        try:
            parsed = parseEndpoint(endpoint)
        except EndpointError as e:
            raise usage.UsageError(f"bad --listen {endpoint!r}: {e}")
        try:
            # Twisted's own check too: it reads the files of an ssl: endpoint
            # and knows the endpoint types of plugins.
            serverFromString(None, endpoint)  # type: ignore[arg-type]
        except Exception as e:
            raise usage.UsageError(f"bad --listen {endpoint!r}: {e}")
        self["listen"].append(endpoint)
        self["endpoints"].append(parsed)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{options}; a mistake raises L{usage.UsageError} in plain
        words. On the twistd command line it ends the process instead, with
        one line on stderr and exit status 1 (twistd would print all of
        --help first, then the error, both on stdout).
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            message = plainError(str(e))
            if self.parent is None:
                raise usage.UsageError(message) from None
            sys.stderr.write(f"{PROGRAM}: {message}; see --help\n")
            raise SystemExit(1)

    def parseArgs(self, *args: str) -> None:
        if args:
            raise usage.UsageError(f"unexpected argument {args[0]!r}: options start with --")

    def postOptions(self) -> None:
        for name in self.sizes:
            if isinstance(self[name], str):  # a default
                self[name] = parseSize(self[name])
        for name in self.durations:
            if isinstance(self[name], str):  # a default
                self[name] = parseDuration(self[name])
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
            self["endpoints"] = [parseEndpoint(DEFAULT_LISTEN)]
        if self["workers"] > 1 and not self["inherit"]:
            for endpoint in self["endpoints"]:
                try:
                    checkSharable(endpoint)
                except ValueError as e:
                    raise usage.UsageError(f"--listen {endpoint.description!r}: {e}")
        # Parsed beside the text, which workers are given as it was.
        if self["ietf-versions"].strip() == "none":
            self["ietfVersions"] = ()
        else:
            try:
                self["ietfVersions"] = parseVersionList(self["ietf-versions"])
            except ValueError as e:
                raise usage.UsageError(f"--ietf-versions: {e}") from None
        if self["disk-threads"] < 1:
            raise usage.UsageError("--disk-threads must be at least 1")
        if not 4096 <= self["read-size"] <= MAX_READ_SIZE:
            raise usage.UsageError(
                f"--read-size must be from 4K to {formatSize(MAX_READ_SIZE)}"
                " (each connection's reads take that much memory)"
            )
        if self["zero-copy"] not in ZERO_COPY_MODES:
            raise usage.UsageError(
                f"--zero-copy must be one of {', '.join(ZERO_COPY_MODES)}, not {self['zero-copy']!r}"
            )
        prefix = self["prefix"].rstrip("/")
        if prefix and not prefix.startswith("/"):
            raise usage.UsageError("--prefix must start with /")
        self["prefix"] = prefix
        if self["log-format"] not in FORMATS:
            raise usage.UsageError(
                f"--log-format {self['log-format']}: give {' or '.join(FORMATS)}"
            )
        self._checkAdmin()
        self._checkAuth()
        checkHookOptions(self)
        self._checkBrowsers()

    def _checkAdmin(self) -> None:
        admin = self["admin-listen"]
        if admin is None:
            return
        try:
            endpoint = parseEndpoint(admin)
            serverFromString(None, admin)  # type: ignore[arg-type]
        except Exception as e:
            raise usage.UsageError(f"bad --admin-listen {admin!r}: {e}")
        if not endpoint.isLoopback and not self["admin-insecure"]:
            raise usage.UsageError(
                f"--admin-listen {admin} is reachable from the network and the metrics "
                "have no authentication: listen on 127.0.0.1 or ::1 (or a UNIX "
                "socket), or give --admin-insecure"
            )

    def _checkBrowsers(self) -> None:
        """
        The CORS policy and the trusted proxies, as values for L{Config}.
        """
        origins = self["cors-origin"]
        if not origins and self["cors-credentials"]:
            raise usage.UsageError("--cors-credentials needs --cors-origin")
        if self["cors-max-age"] > MAX_AGE_CAP:
            raise usage.UsageError(
                f"--cors-max-age {self['cors-max-age']}: at most {MAX_AGE_CAP} (browsers cap it)"
            )
        if "*" in origins and self["cors-credentials"]:
            raise usage.UsageError(
                "--cors-origin * cannot go with --cors-credentials (browsers refuse "
                "credentials for any origin): list the origins instead"
            )
        if "*" in origins and len(origins) > 1:
            raise usage.UsageError("--cors-origin * already allows every origin: give it alone")
        try:
            parsed = frozenset(o if o == "*" else parseOrigin(o) for o in origins)
            self["cors"] = CorsPolicy(parsed, bool(self["cors-credentials"]), self["cors-max-age"])
        except OriginError as e:
            raise usage.UsageError(f"--cors-origin {e}") from None
        try:
            self["proxies"] = TrustedProxies.fromStrings(self["trusted-proxy"])
        except ValueError as e:
            raise usage.UsageError(f"--trusted-proxy {e}") from None

    def _checkAuth(self) -> None:
        files = [name for name in ("auth-tokens", "signing-key-file") if self[name]]
        for name in files:
            read = readTokens if name == "auth-tokens" else readSecrets
            try:
                if not read(self[name]):
                    raise SecretFileError(f"{self[name]} holds no usable secret")
            except SecretFileError as e:
                raise usage.UsageError(f"--{name}: {e}")
        modes = [f"--{name}" for name in files] + [
            f"--{name}" for name in ("trust-front-end", "insecure-no-auth") if self[name]
        ]
        # Tokens and signed URLs go together; the other modes exclude the rest.
        if len(modes) > 1 and len(modes) != len(files):
            raise usage.UsageError(f"{' and '.join(modes)} contradict each other")
        if modes:
            return
        # A worker listens on what it inherits, not on --listen.
        listening = [e for _, e in self["inherit"]] or self["endpoints"]
        exposed = [e for e in listening if not e.isLoopback]
        if exposed:
            raise usage.UsageError(
                f"--listen {exposed[0].description} is reachable from the network and no "
                "authentication is configured: give --auth-tokens and/or "
                "--signing-key-file, or --trust-front-end behind an authenticating "
                "proxy, or --insecure-no-auth to accept uploads from anyone"
            )


class _UploadService(StopsFirst):
    """
    The whole server: a listener that cannot be opened ends the start with
    a L{StartupError} that says why in one line; on stop, the listeners and
    the requests in flight (L{GracefulShutdown}, its C{first}) stop before
    the rest.

    @ivar logObserver: the log observer to hand twistd (C{--log-format
        json}), or L{None} for twistd's own.
    """

    logObserver: Any = None
    #: Whether starting settles the garbage collector (L{settle}): the
    #: twistd command line's server does; a test's in-process one does not.
    settleCollector = False

    def setServiceParent(self, parent: Any) -> Any:
        # twistd gives the plugin's service to a fresh Application and then
        # logs to the Application's ILogObserver, if it has one, instead of
        # its own text observer: the one public way for a plugin to choose
        # the log format.
        if self.logObserver is not None and isinstance(parent, Componentized):
            if parent.getComponent(ILogObserver, None) is None:
                parent.setComponent(ILogObserver, self.logObserver)
        return super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        with _listenErrors():
            super().privilegedStartService()

    def startService(self) -> None:
        with _listenErrors():
            super().startService()
        if self.settleCollector:
            settle()


#: Seconds the disk threads get, once the requests are ended, to finish
#: what is queued (docs/operating.md: a stop takes at most
#: --shutdown-timeout + 15 s, of which the requests' ends take 10).
DISK_STOP_WAIT = 2.0


class _DiskThreadsService(service.Service):
    """
    Starts the disk threads with the service; on shutdown, lets them finish
    what is queued for up to L{DISK_STOP_WAIT} seconds and joins them. What
    is left then belongs to requests already ended, whose clients were told
    nothing of it: the process exits as a C{kill -9} would leave it, every
    acknowledged byte being durable already.
    """

    def __init__(self, pool: DiskThreads, stopWait: float = DISK_STOP_WAIT) -> None:
        self.pool = pool
        self.stopWait = stopWait

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        busy = self.pool.stop(self.stopWait)
        if busy:
            log.warn(
                "{count} disk threads still busy {seconds} s after the requests ended "
                "(a slow disk): exiting without them; their uploads resume from "
                "what is on disk",
                count=len(busy), seconds=self.stopWait,
            )


def _authenticator(options: Options, reactor: Any) -> Authenticator | None:
    """
    The credentials check the options ask for, or L{None} for none.
    """
    if options["trust-front-end"]:
        log.info("checking no credentials: the front end authenticates")
        return None
    if options["insecure-no-auth"]:
        log.warn("checking no credentials (--insecure-no-auth): anyone who can connect may upload")
        return None
    if not (options["auth-tokens"] or options["signing-key-file"]):
        return None
    try:
        tokens = tokenFile(options["auth-tokens"], reactor) if options["auth-tokens"] else None
        keys: SecretFile[bytes] | None = (
            SecretFile(options["signing-key-file"], reactor)
            if options["signing-key-file"] else None
        )
    except SecretFileError as e:
        raise usage.UsageError(str(e))
    return Authenticator(reactor, tokens, keys)


class _MultiprocDirService(service.Service):
    """
    Removes the workers' metric files (L{uploadsvc.ops.metrics.MULTIPROC_ENV}) when the
    supervisor stops.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def stopService(self) -> None:
        super().stopService()
        removeMultiprocDir(self.path)


def _adminService(options: Options, metrics: MetricsResource, reactor: Any) -> service.Service:
    """
    The admin listener (C{--admin-listen}): C{GET /metrics}.
    """
    return strports.service(  # type: ignore[no-any-return]
        options["admin-listen"], AdminSite(metrics, reactor=reactor), reactor=reactor
    )


def makeService(options: Options, reactor: Any = None) -> service.MultiService:
    """
    Build the uploadsvc service tree from parsed C{options}.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    if options.parent is not None:  # the twistd command line
        _reportStartupErrorsInOneLine()
    checkRoot(options["root"])
    top = _UploadService()
    top.settleCollector = options.parent is not None
    twistdLog = options.parent
    if twistdLog is not None and twistdLog.get("logfile") == "-" and not twistdLog.get("nodaemon"):
        # (twistd's own check, which an observer of ours would skip.)
        raise StartupError("--logfile -: a daemon cannot log to its standard output; add -n")
    if twistdLog is not None and twistdLog.get("logger"):
        pass  # twistd's --logger observer wins: no file of ours is opened
    elif options["log-format"] == "text":
        # twistd's own lines, made cheaper (logs.ClassicText); syslog stays
        # twistd's.
        if twistdLog is not None and not twistdLog.get("syslog"):
            top.logObserver = textFileObserver(twistdLog)
    elif options["log-format"] == "json":
        if twistdLog is not None:
            top.logObserver = jsonFileObserver(twistdLog)
        else:
            # A .tac file: twistd's own options are not known here.
            log.warn(
                "--log-format json works on the twistd uploadsvc command line; "
                "a .tac file sets its application's ILogObserver itself "
                "(uploadsvc.ops.logs.jsonFileObserver)"
            )
    if options["workers"] > 1 and not options["inherit"]:
        metricsDir = None
        if options["admin-listen"]:
            metricsDir = makeMultiprocDir()
            _MultiprocDirService(metricsDir).setServiceParent(top)
            _adminService(options, MetricsResource(multiprocDir=metricsDir), reactor).setServiceParent(top)
        WorkerPool(
            reactor,
            options["workers"],
            [e.withDefaultBacklog(DEFAULT_BACKLOG) for e in options["endpoints"]],
            workerCommand(options.workerArguments()),
            restartDelay=options["restart-delay"],
            metricsDir=metricsDir,
            stopTimeout=stopTimeout(options["shutdown-timeout"]),
        ).setServiceParent(top)
        if isRealReactor(reactor):
            reactor.callWhenRunning(exitZeroOnTerm, reactor)
        return top
    # (Not the supervisor's: it waits for its workers as long as they may take.)
    top.clock = reactor
    # Before the disk threads start: see uploadsvc.ops.mallocarenas.
    log.info("{arenas}", arenas=limitArenas())
    pool = DiskThreads(options["disk-threads"], "uploadsvc-disk", reactor)
    setDiskThreads(options["disk-threads"])
    _DiskThreadsService(pool).setServiceParent(top)
    rate = options["bench-write-rate"]
    try:
        store = FileStore(
            options["root"],
            fsync=not options["no-fsync"],
            throttle=WriteThrottle(rate) if rate else None,
        )
    except OSError as e:
        raise StartupError(f"--root {options['root']}: {e.strerror or e}") from None
    except StorageFault as e:
        # A state folder that is a link, or another user's (see statedir).
        raise StartupError(f"--root {options['root']}: {e.detail}; {e.reason}") from None
    config = Config(
        allowOverwrite=options["allow-overwrite"],
        allowDelete=options["allow-delete"],
        allowDownload=options["allow-download"],
        maxUploadSize=options["max-upload-size"],
        prefix=options["prefix"].encode("utf-8"),
        minFreeBytes=options["min-free"],
        maxUploads=options["max-uploads"],
        ietfVersions=options["ietfVersions"],
        expireAfter=options["expire-after"],
        cors=options.get("cors", CorsPolicy()),
        proxies=options.get("proxies", TrustedProxies()),
        uploadPage=not options["no-upload-page"],
    )
    auth = _authenticator(options, reactor)
    if auth is not None:
        ReloadOnSignal(auth.reload, reactor).setServiceParent(top)
    events = Events()
    # Metrics only where someone can read them: this process's admin
    # listener, or the supervisor's (a worker writes into its folder).
    # Otherwise nothing counts per request, nor wraps each disk job.
    metrics = Metrics() if options["admin-listen"] or inMultiprocessMode() else None
    if metrics is not None:
        events.subscribe(metrics.eventHeard)
    events.subscribe(logEvent)
    hooks = makeHooks(options, reactor, events, top)
    if hooks is not None and metrics is not None:
        hooks.observe(metrics.hookCalled)
    runner: Any = ThreadRunner(reactor, pool)
    if metrics is not None:
        runner = MeteredRunner(runner, metrics)
    app = UploadApp(
        store, runner, config, auth=auth, clock=reactor, events=events,
        latency=metrics.latency if metrics is not None else None, hooks=hooks,
    )
    reactor.callWhenRunning(app.recoverStaged)  # finish uploads a crash left fully staged
    site = ObservedSite(
        app.resource(),
        metrics=metrics,
        readSize=options["read-size"],
        zeroCopy=options["zero-copy"],
        timeout=options["idle-timeout"] or None,
        reactor=reactor,
        maxConnectionsPerClient=options["max-connections-per-client"],
        headerTimeout=options["header-timeout"],
        logFormatter=redactedLogFormatter,
    )
    # Another process (a worker, or a host sharing the root) may be waiting
    # for one of our uploads: look every half second.
    takeovers = internet.TimerService(TAKEOVER_POLL, app.checkTakeovers)
    takeovers.clock = reactor
    takeovers.setServiceParent(top)
    if metrics is not None:
        sampler = internet.TimerService(
            METRICS_SAMPLE, lambda: metrics.sampleUploadsOpen(app.writers.busy())
        )
        sampler.clock = reactor
        sampler.setServiceParent(top)
    trimFreeMemory = freeMemoryTrimmer()
    if trimFreeMemory is not None:
        # See uploadsvc.ops.mallocarenas.
        trimmer = internet.TimerService(TRIM_INTERVAL, trimFreeMemory)
        trimmer.clock = reactor
        trimmer.setName("malloc-trim")
        trimmer.setServiceParent(top)
    if metrics is not None and options["admin-listen"] and not options["inherit"]:
        _adminService(options, MetricsResource(metrics.registry), reactor).setServiceParent(top)
    if config.expireAfter > 0:
        # Every process looks; the store makes each expiry happen once.
        ExpiryService(
            store, app.runner, reactor, config.expireAfter, events
        ).setServiceParent(top)
    # The listeners, and the drain of the requests in flight on SIGTERM.
    front = GracefulShutdown(site, app.writers.busy, reactor, options["shutdown-timeout"])
    front.setServiceParent(top)
    top.first = front
    if isRealReactor(reactor):
        reactor.callWhenRunning(exitZeroOnTerm, reactor)
    if options["inherit"]:
        followSupervisor()
        for fd, endpoint in options["inherit"]:
            try:
                adopted = adoptedListener(endpoint, fd, site, reactor)
            except (OSError, ValueError) as e:
                raise StartupError(f"--listen {endpoint.description}: {e}") from None
            adopted.setServiceParent(front)
    else:
        for description in options["listen"]:
            strports.service(withBacklog(description), site, reactor=reactor).setServiceParent(front)
    log.info(
        "uploadsvc storing into {root} (fsync {fsync}), listening on {listen}",
        root=store.root, fsync="off" if options["no-fsync"] else "on",
        listen=", ".join(
            [f"{e.description} (fd {fd})" for fd, e in options["inherit"]] or options["listen"]
        ),
    )
    return top
