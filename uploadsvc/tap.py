"""
The twistd plugin's options and service: C{twistd uploadsvc}.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from twisted.application import internet, service, strports
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from uploadsvc import commandline
from uploadsvc.commandline import countOption, formatSize, parseSize, plainError, sizeOption
from uploadsvc.runner import ThreadRunner
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
)
from uploadsvc.web.limits import DEFAULT_HEADER_TIMEOUT, LimitedSite
from uploadsvc.web.streaming import DEFAULT_READ_SIZE
from uploadsvc.workers import (
    RESTART_DELAY,
    WorkerPool,
    adoptedListener,
    followSupervisor,
    workerCommand,
    workerCount,
)

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"

#: Seconds between looks for takeover requests from other processes.
TAKEOVER_POLL = 0.5

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


def _splitEndpoint(description: str) -> tuple[list[str], dict[str, str]]:
    """
    The positional and keyword arguments of an endpoint string (C{\\}
    escapes the next character, as in Twisted's own parser).
    """
    parts: list[str] = []
    current: list[str] = []
    chars = iter(description)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in parts:
        name, equals, value = part.partition("=")
        if equals:
            kwargs[name] = value
        else:
            args.append(part)
    return args, kwargs


#: Where the interface is among an endpoint type's positional arguments
#: (the type's name first); its keyword is C{interface}.
_INTERFACE_POSITION = {"tcp": 2, "ssl": 5, "tcp6": 3}


def isLoopbackEndpoint(description: str) -> bool:
    """
    Whether a listening endpoint string accepts connections from this host
    only: a UNIX socket, or TCP on a loopback interface (127.0.0.0/8,
    C{::1}, C{localhost}). An endpoint without an interface listens on every
    interface; an endpoint type not known here counts as reachable from the
    network.
    """
    args, kwargs = _splitEndpoint(description)
    kind = args[0].lower() if args else ""
    if kind == "unix":
        return True
    if kind not in _INTERFACE_POSITION:
        return False
    position = _INTERFACE_POSITION[kind]
    interface = kwargs.get("interface", args[position] if len(args) > position else "")
    if interface.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(interface.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


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

    optFlags = [
        ["allow-overwrite", None, "Let an upload replace a complete file (default: 409)."],
        ["allow-delete", None, "Let DELETE remove complete files (default: 405)."],
        ["no-fsync", None, "Do not fsync: faster, but a crash or power loss may "
         "lose bytes that were acknowledged. Off by default."],
        ["trust-front-end", None, "Check no credentials: a front end (e.g. nginx) "
         "authenticates every request before it gets here."],
        ["insecure-no-auth", None, "Allow listening on a non-loopback address with "
         "no authentication at all (anyone who can connect may upload)."],
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
        ["read-size", None, formatSize(DEFAULT_READ_SIZE), "Largest socket read.",
         sizeOption("read-size")],
        ["bench-write-rate", None, "0",
         "For benchmarks only: limit disk writes to this many bytes per second "
         "(a disk slower than the network); 0: no limit.", sizeOption("bench-write-rate")],
        ["restart-delay", None, RESTART_DELAY,
         "With --workers: seconds before a dead worker is first started again "
         "(for tests).", countOption("restart-delay", float)],
        ["auth-tokens", None, None,
         "File of bearer tokens, one per line (# comments); requests need "
         "Authorization: Bearer <token>. Re-read on change and on SIGHUP."],
        ["signing-key-file", None, None,
         "File of HMAC keys (first line signs, all verify) for signed upload URLs "
         "(?expires=...&sig=...; see python -m uploadsvc.sign). Re-read on change "
         "and on SIGHUP."],
        ["max-connections-per-client", None, 0,
         "Open connections one client address may have; extra ones are closed "
         "at once (0: no limit).", countOption("max-connections-per-client")],
        ["header-timeout", None, DEFAULT_HEADER_TIMEOUT,
         "Seconds a client has to send a request's whole header block, however "
         "slowly it trickles (also closes idle keep-alive connections); 0: off.",
         countOption("header-timeout")],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["inherit"] = []
        self["workers"] = 1

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
        self["inherit"].append((int(fd), description))

    def workerArguments(self) -> list[str]:
        """
        These options again, for a worker: everything but C{--workers},
        C{--listen}, C{--inherit} (the parent passes the listeners) and
        C{--restart-delay} (the parent's business).
        """
        flags: list[Any] = self.optFlags
        parameters: list[Any] = self.optParameters
        args = [f"--{flag[0]}" for flag in flags if self[flag[0]]]
        for parameter in parameters:
            name, default = parameter[0], parameter[2]
            if name in self.sizes:
                default = parseSize(str(default))
            if self[name] is not None and self[name] != default and name != "restart-delay":
                args.append(f"--{name}={self[name]}")
        return args

    def opt_listen(self, endpoint: str) -> None:
        """Endpoint to listen on, repeatable: a Twisted endpoint string such as tcp:8080:interface=127.0.0.1, ssl:8443:privateKey=k.pem:certKey=c.pem or unix:/run/uploadsvc.sock (default: tcp:8080:interface=127.0.0.1)."""
        try:
            serverFromString(None, endpoint)  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise usage.UsageError(f"bad --listen {endpoint!r}: {e}")
        self["listen"].append(endpoint)

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
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["disk-threads"] < 1:
            raise usage.UsageError("--disk-threads must be at least 1")
        if self["read-size"] < 4096:
            raise usage.UsageError("--read-size must be at least 4096")
        prefix = self["prefix"].rstrip("/")
        if prefix and not prefix.startswith("/"):
            raise usage.UsageError("--prefix must start with /")
        self["prefix"] = prefix
        self._checkAuth()

    def _checkAuth(self) -> None:
        files = [name for name in ("auth-tokens", "signing-key-file") if self[name]]
        for name in files:
            try:
                if not readSecrets(self[name]):
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
        exposed = [d for d in self["listen"] if not isLoopbackEndpoint(d)]
        if exposed:
            raise usage.UsageError(
                f"--listen {exposed[0]} is reachable from the network and no "
                "authentication is configured: give --auth-tokens and/or "
                "--signing-key-file, or --trust-front-end behind an authenticating "
                "proxy, or --insecure-no-auth to accept uploads from anyone"
            )


class _UploadService(service.MultiService):
    """
    The whole server: a listener that cannot be opened ends the start with
    a L{StartupError} that says why in one line.
    """

    def privilegedStartService(self) -> None:
        with _listenErrors():
            super().privilegedStartService()

    def startService(self) -> None:
        with _listenErrors():
            super().startService()


class _ThreadPoolService(service.Service):
    """
    Starts the disk thread pool with the service and joins it on shutdown.
    """

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


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
        tokens = SecretFile(options["auth-tokens"], reactor) if options["auth-tokens"] else None
        keys = (
            SecretFile(options["signing-key-file"], reactor)
            if options["signing-key-file"] else None
        )
    except SecretFileError as e:
        raise usage.UsageError(str(e))
    return Authenticator(reactor, tokens, keys)


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
    if options["workers"] > 1 and not options["inherit"]:
        WorkerPool(
            reactor,
            options["workers"],
            [withBacklog(d) for d in options["listen"]],
            workerCommand(options.workerArguments()),
            restartDelay=options["restart-delay"],
        ).setServiceParent(top)
        return top
    pool = ThreadPool(1, options["disk-threads"], "uploadsvc-disk")
    _ThreadPoolService(pool).setServiceParent(top)
    rate = options["bench-write-rate"]
    try:
        store = FileStore(
            options["root"],
            fsync=not options["no-fsync"],
            throttle=WriteThrottle(rate) if rate else None,
        )
    except OSError as e:
        raise StartupError(f"--root {options['root']}: {e.strerror or e}") from None
    config = Config(
        allowOverwrite=options["allow-overwrite"],
        allowDelete=options["allow-delete"],
        maxUploadSize=options["max-upload-size"],
        prefix=options["prefix"].encode("utf-8"),
        minFreeBytes=options["min-free"],
        maxUploads=options["max-uploads"],
    )
    auth = _authenticator(options, reactor)
    if auth is not None:
        ReloadOnSignal(auth.reload, reactor).setServiceParent(top)
    app = UploadApp(store, ThreadRunner(reactor, pool), config, auth=auth)
    reactor.callWhenRunning(app.recoverStaged)  # finish uploads a crash left fully staged
    site = LimitedSite(
        app.resource(),
        readSize=options["read-size"],
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
    if options["inherit"]:
        followSupervisor()
        for fd, description in options["inherit"]:
            adoptedListener(description, fd, site, reactor).setServiceParent(top)
    else:
        for description in options["listen"]:
            strports.service(withBacklog(description), site, reactor=reactor).setServiceParent(top)
    log.info(
        "uploadsvc storing into {root} (fsync {fsync}), listening on {listen}",
        root=store.root, fsync="off" if options["no-fsync"] else "on",
        listen=", ".join(
            [f"{d} (fd {fd})" for fd, d in options["inherit"]] or options["listen"]
        ),
    )
    return top
