"""
The twistd plugin's options and service: C{twistd uploadsvc}.
"""

from __future__ import annotations

from typing import Any

from twisted.application import internet, service, strports
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from uploadsvc.runner import ThreadRunner
from uploadsvc.storage.filestore import FileStore
from uploadsvc.web.app import DEFAULT_MAX_UPLOAD, Config, UploadApp
from uploadsvc.web.streaming import DEFAULT_READ_SIZE, StreamingSite

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


def _positiveInt(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"{value} is negative")
    return number


class Options(usage.Options):
    """
    Command-line options of C{twistd uploadsvc}.
    """

    synopsis = "[options]"
    longdesc = (
        "Receive many uploads at once (PUT/POST a file to its path), stream each "
        "body to disk with flow control, and resume interrupted uploads with "
        "Content-Range. See PROTOCOL.md for the HTTP interface."
    )

    optFlags = [
        ["allow-overwrite", None, "Let an upload replace a complete file (default: 409)."],
        ["allow-delete", None, "Let DELETE remove complete files (default: 405)."],
        ["no-fsync", None, "Do not fsync: faster, but a crash or power loss may "
         "lose bytes that were acknowledged. Off by default."],
    ]
    optParameters = [
        ["root", "r", "./uploads", "Folder that receives the uploads (created if missing)."],
        ["max-upload-size", None, DEFAULT_MAX_UPLOAD,
         "Largest upload in bytes; larger ones get 413.", _positiveInt],
        ["idle-timeout", None, 60,
         "Seconds a client may send nothing before it is disconnected "
         "(what it sent is kept); 0 turns the timeout off.", _positiveInt],
        ["prefix", None, "", "URL path prefix that is stripped, e.g. /upload."],
        ["min-free", None, 0,
         "Free-space floor in bytes: data that would go below it gets 507.", _positiveInt],
        ["max-uploads", None, 0,
         "Uploads written at once before 503 + Retry-After (0: no limit).", _positiveInt],
        ["disk-threads", None, 8, "Threads that write to disk.", _positiveInt],
        ["read-size", None, DEFAULT_READ_SIZE, "Largest socket read in bytes.", _positiveInt],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Endpoint to listen on, repeatable: a Twisted endpoint string such as tcp:8080:interface=127.0.0.1, ssl:8443:privateKey=key.pem:certKey=cert.pem or unix:/run/uploadsvc.sock (default: tcp:8080:interface=127.0.0.1)."""
        try:
            serverFromString(None, endpoint)  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise usage.UsageError(f"bad --listen {endpoint!r}: {e}")
        self["listen"].append(endpoint)

    def postOptions(self) -> None:
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


def makeService(options: Options, reactor: Any = None) -> service.MultiService:
    """
    Build the uploadsvc service tree from parsed C{options}.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    top = service.MultiService()
    pool = ThreadPool(1, options["disk-threads"], "uploadsvc-disk")
    _ThreadPoolService(pool).setServiceParent(top)
    store = FileStore(options["root"], fsync=not options["no-fsync"])
    config = Config(
        allowOverwrite=options["allow-overwrite"],
        allowDelete=options["allow-delete"],
        maxUploadSize=options["max-upload-size"],
        prefix=options["prefix"].encode("utf-8"),
        minFreeBytes=options["min-free"],
        maxUploads=options["max-uploads"],
    )
    app = UploadApp(store, ThreadRunner(reactor, pool), config)
    site = StreamingSite(
        app.resource(),
        readSize=options["read-size"],
        timeout=options["idle-timeout"] or None,
        reactor=reactor,
    )
    # Another process (a worker, or a host sharing the root) may be waiting
    # for one of our uploads: look every half second.
    takeovers = internet.TimerService(TAKEOVER_POLL, app.checkTakeovers)
    takeovers.clock = reactor
    takeovers.setServiceParent(top)
    for description in options["listen"]:
        strports.service(withBacklog(description), site, reactor=reactor).setServiceParent(top)
    log.info(
        "uploadsvc storing into {root} (fsync {fsync}), listening on {listen}",
        root=store.root, fsync="off" if options["no-fsync"] else "on",
        listen=", ".join(options["listen"]),
    )
    return top
