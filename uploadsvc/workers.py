"""
Several worker processes behind one set of listening sockets: C{--workers N}.

The parent binds every C{--listen} endpoint itself, then starts N copies of
C{twistd uploadsvc} that inherit the listening sockets (as descriptors 3, 4,
...) and accept from them; the kernel hands each new connection to one of
them. The parent serves nothing: it restarts a worker that dies, passes
SIGHUP on, and on shutdown closes its copies of the listening sockets, sends
SIGTERM and waits for the workers to finish (their graceful stop, see
L{uploadsvc.ops.shutdown}).
Workers share the storage root; an upload written by one worker is taken
over by another through the file store's locks and takeover markers.

Each worker has a C{SO_REUSEPORT} socket of its own for each TCP listener,
and the kernel keeps handing a socket its share of new connections for as
long as it is open, whether anyone accepts from it or not. So the parent
closes a dead worker's sockets as soon as it reaps it and binds fresh ones
for its replacement; the running workers take every new connection in
between, however long the restart back-off is. Connections that the kernel
queued on a dead worker's socket before it was closed (those that arrived
between the death and the reaping) are reset, so their clients retry at
once; with the sysctl C{net.ipv4.tcp_migrate_req=1} the kernel moves them
to a live worker's socket instead.

The sockets are made from the C{--listen} strings parsed once into
L{ListenEndpoint} values; no private attribute of a Twisted endpoint is read.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
from typing import Any, Callable, Sequence

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from uploadsvc.endpoints import TWISTED_BACKLOG, ListenEndpoint
from uploadsvc.ops.metrics import MULTIPROC_ENV, markProcessDead

log = Logger()

#: Seconds before a dead worker is started again; doubles while workers die
#: young, up to L{MAX_RESTART_DELAY}.
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
#: A worker that lived this long is healthy: the delay goes back down.
HEALTHY_AFTER = 10.0
#: Seconds the workers get to finish on shutdown before SIGKILL (by
#: default; C{twistd uploadsvc} gives its C{--shutdown-timeout} plus a
#: margin, see L{uploadsvc.ops.shutdown.stopTimeout}).
STOP_TIMEOUT = 20.0


#: The environment variable that tells a worker its supervisor's pid.
SUPERVISOR_PID = "UPLOADSVC_SUPERVISOR_PID"


def followSupervisor(environ: Any = os.environ) -> None:
    """
    In a worker: end (SIGTERM) when the supervisor dies, however it dies
    (even by SIGKILL), so that no orphan keeps serving its sockets. Linux'
    C{PR_SET_PDEATHSIG}; elsewhere nothing happens.
    """
    expected = environ.get(SUPERVISOR_PID)
    if not expected or not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(expected):
        # The supervisor died before the line above took effect.
        os.kill(os.getpid(), signal.SIGTERM)


def workerCount(value: str) -> int:
    """
    C{--workers}: a positive number, or C{auto} for one per core.
    """
    if value == "auto":
        return os.cpu_count() or 1
    count = int(value)
    if count < 1:
        raise ValueError("--workers must be at least 1")
    return count


#: The kinds of endpoint whose sockets the supervisor can make.
SHARABLE = frozenset({"tcp", "tcp6", "ssl", "unix"})


def checkSharable(endpoint: ListenEndpoint) -> None:
    """
    Refuse an endpoint whose socket the supervisor cannot make.

    @raise ValueError: saying which.
    """
    if endpoint.kind not in SHARABLE:
        raise ValueError(
            f"--workers cannot share a {endpoint.kind} endpoint "
            f"(only {', '.join(sorted(SHARABLE))})"
        )


def _bind(
    endpoint: ListenEndpoint, share: bool = False, port: int | None = None
) -> socket.socket:
    """
    Make the listening socket that C{endpoint} asks for.

    @param share: set C{SO_REUSEPORT} (TCP), so that several sockets, one per
        worker, listen on one address and the kernel spreads the connections
        over them; with one shared socket, the worker that happens to be
        awake takes nearly every connection.
    @param port: the TCP port instead of the endpoint's (to bind one more
        socket on the port that an endpoint with port 0 got).
    @raise CannotListenError: when the address cannot be bound (in use,
        not ours to bind, ...).
    @raise ValueError: for an endpoint of a kind not in L{SHARABLE}.
    """
    checkSharable(endpoint)
    backlog = TWISTED_BACKLOG if endpoint.backlog is None else endpoint.backlog
    family = endpoint.family
    assert family is not None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_UNIX:
            address: Any = endpoint.path
            _removeStaleSocket(address)
            sock.bind(address)
            os.chmod(address, endpoint.mode)
        else:
            address = (endpoint.interface, endpoint.port if port is None else port)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if share:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        if family == socket.AF_UNIX:
            raise CannotListenError(None, endpoint.path, e)
        raise CannotListenError(endpoint.interface, address[1], e)
    sock.setblocking(False)
    return sock


def _removeStaleSocket(path: str) -> None:
    """
    Remove the socket file a former run left at C{path} (anything else there
    is left alone, and binding fails).
    """
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def adoptedListener(
    endpoint: ListenEndpoint, fd: int, factory: Any, reactor: Any
) -> service.Service:
    """
    A service that serves C{factory} on the inherited listening socket C{fd},
    made by the parent from C{endpoint} (TLS is added here, in the worker,
    for C{ssl:} endpoints, with the context C{serverFromString} would make).

    @raise OSError: when the files of an C{ssl:} endpoint cannot be read.
    @raise ValueError: when they hold no usable key or certificate, or for
        an endpoint of a kind not in L{SHARABLE}.
    """
    checkSharable(endpoint)
    if endpoint.tls is not None:
        factory = TLSMemoryBIOFactory(endpoint.tls.contextFactory(), False, factory)
    family = endpoint.family
    assert family is not None
    return _Adopted(fd, family, factory, reactor)


class _Adopted(service.Service):
    def __init__(self, fd: int, family: int, factory: Any, reactor: Any) -> None:
        self._fd = fd
        self._family = family
        self._factory = factory
        self._reactor = reactor
        self._port: Any = None

    def startService(self) -> None:
        super().startService()
        self._port = self._reactor.adoptStreamPort(self._fd, self._family, self._factory)
        os.close(self._fd)  # the port holds its own duplicate

    def stopService(self) -> Any:
        super().stopService()
        if self._port is not None:
            return self._port.stopListening()
        return None


class _Worker(ProcessProtocol):
    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.started = 0.0
        self.pid: int | None = None
        self.ended: defer.Deferred = defer.Deferred()

    def processEnded(self, reason: Failure) -> None:
        self.pool._metricsOf(self)
        self.ended.callback(None)
        self.pool._ended(self, reason)


class WorkerPool(service.Service):
    """
    Starts C{count} workers on the listening sockets of C{listen} and keeps
    them running.

    @param listen: the endpoints to listen on, each of a kind in
        L{SHARABLE}.
    @param command: the worker's command line before its listeners, e.g.
        C{[python, -c, run-twistd, -n, --pidfile=, uploadsvc, --root, ...]};
        each listener is added as C{--inherit FD=DESCRIPTION}.
    @param restartDelay: seconds before the first restart of a dead worker
        (see L{RESTART_DELAY}).
    @param metricsDir: the folder where every worker writes its metrics
        (prometheus_client's multiprocess mode, told to the workers in
        L{MULTIPROC_ENV}), or L{None} when nobody reads them.
    @param stopTimeout: seconds the workers get to stop gracefully after
        SIGTERM before SIGKILL.
    """

    def __init__(
        self,
        reactor: Any,
        count: int,
        listen: Sequence[ListenEndpoint],
        command: Sequence[str],
        spawn: Callable[..., Any] | None = None,
        restartDelay: float = RESTART_DELAY,
        metricsDir: str | None = None,
        stopTimeout: float = STOP_TIMEOUT,
    ) -> None:
        self._reactor = reactor
        self._metricsDir = metricsDir
        self._stopTimeout = stopTimeout
        self._count = count
        self._listen = list(listen)
        self._command = list(command)
        self._spawn = spawn
        #: Per listener, per worker: its socket, or None once closed (a UNIX
        #: listener has one socket, shared by every worker).
        self._sockets: list[list[socket.socket | None]] = []
        self._ports: list[int] = []  # per listener: the port that all share
        self._workers: dict[int, tuple[_Worker, Any]] = {}
        self._restartDelay = restartDelay
        self._delay = restartDelay
        self._stopping = False
        self._previousHUP: Any = None

    def privilegedStartService(self) -> None:
        # Bind before dropping privileges, like twistd's own listeners.
        super().privilegedStartService()
        self._sockets = []
        self._ports = []
        try:
            for endpoint in self._listen:
                first = _bind(endpoint, share=True)
                self._sockets.append([first])
                if first.family == socket.AF_UNIX:
                    self._ports.append(0)
                    self._sockets[-1] *= self._count
                else:
                    port = first.getsockname()[1]  # the same port for all, even for :0
                    self._ports.append(port)
                    for _ in range(self._count - 1):
                        self._sockets[-1].append(self._bindAgain(len(self._ports) - 1))
        except BaseException:
            self._closeAll()
            raise

    def startService(self) -> None:
        if not self._sockets:
            self.privilegedStartService()
        super().startService()
        self._stopping = False
        for index in range(self._count):
            self._start(index)
        if self._reactor.__class__.__module__.startswith("twisted.internet."):
            self._previousHUP = signal.signal(
                signal.SIGHUP,
                lambda *_: self._reactor.callFromThread(self.signalAll, "HUP"),
            )
        log.info(
            "uploadsvc: {count} workers on {listen}",
            count=self._count, listen=", ".join(e.description for e in self._listen),
        )

    def _start(self, index: int) -> None:
        argv = list(self._command)
        childFDs: dict[int, Any] = {0: "w", 1: 1, 2: 2}
        for offset, endpoint in enumerate(self._listen):
            fd = 3 + offset
            childFDs[fd] = self._socketFor(offset, index).fileno()
            argv += ["--inherit", f"{fd}={endpoint.description}"]
        worker = _Worker(self, index)
        worker.started = self._reactor.seconds()
        spawn = self._spawn or self._reactor.spawnProcess
        env = {**os.environ, SUPERVISOR_PID: str(os.getpid())}
        env.pop(MULTIPROC_ENV, None)
        if self._metricsDir is not None:
            env[MULTIPROC_ENV] = self._metricsDir
        process = spawn(worker, argv[0], argv, env=env, childFDs=childFDs)
        worker.pid = process.pid
        self._workers[index] = (worker, process)
        log.info(
            "uploadsvc worker {index} started (pid {pid})", index=index, pid=process.pid
        )

    def _socketFor(self, offset: int, index: int) -> socket.socket:
        """
        The listening socket of listener C{offset} for worker C{index}: its
        own if still open, else one that no running worker uses (kept open
        while every worker was down: its queued connections are served
        now), else a fresh one, else (the port cannot be bound again, e.g.
        after twistd dropped the privileges of a port below 1024) a running
        worker's, shared.
        """
        sockets = self._sockets[offset]
        own = sockets[index]
        if own is not None:
            return own
        inUse = {id(sockets[i]) for i in self._workers}
        for i, idle in enumerate(sockets):
            if idle is not None and id(idle) not in inUse:
                sockets[index], sockets[i] = idle, None
                return idle
        fresh: socket.socket
        try:
            fresh = self._bindAgain(offset)
        except CannotListenError as e:
            fresh = next(s for s in sockets if s is not None)  # the last is never closed
            log.warn(
                "uploadsvc: cannot bind {listen} again ({why}); worker {index} "
                "shares a socket with another worker",
                listen=self._listen[offset].description, why=e.socketError, index=index,
            )
        sockets[index] = fresh
        return fresh

    def _bindAgain(self, offset: int) -> socket.socket:
        """
        One more socket for listener C{offset}, on the port all share.
        """
        return _bind(self._listen[offset], share=True, port=self._ports[offset])

    def _closeIdleSockets(self) -> None:
        """
        Close the listening sockets that no running worker accepts from, so
        that the kernel hands every new connection to a running worker.
        The last open socket of a listener stays open (and its connections
        wait for a restart), so the port stays ours while every worker is
        down.
        """
        for sockets in self._sockets:
            inUse = {id(sockets[i]) for i in self._workers}
            for sock in list(sockets):
                remaining = {id(s) for s in sockets if s is not None}
                if sock is None or id(sock) in inUse or id(sock) not in remaining:
                    continue
                if len(remaining) < 2:
                    break
                sock.close()
                sockets[:] = [None if s is sock else s for s in sockets]

    def _closeAll(self) -> None:
        closed: set[int] = set()
        for sockets in self._sockets:
            for sock in sockets:
                if sock is not None and id(sock) not in closed:
                    closed.add(id(sock))
                    sock.close()
        self._sockets = []

    def _metricsOf(self, worker: _Worker) -> None:
        """
        A worker ended: drop its gauges from the sums (its counters stay).
        """
        if self._metricsDir is not None and worker.pid is not None:
            try:
                markProcessDead(worker.pid, self._metricsDir)
            except OSError as e:
                log.warn("uploadsvc: dropping worker {pid}'s gauges: {e}", pid=worker.pid, e=e)

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        if self._workers.get(worker.index, (None,))[0] is not worker:
            return
        del self._workers[worker.index]
        if self._stopping:
            return
        self._closeIdleSockets()
        lived = self._reactor.seconds() - worker.started
        if lived >= HEALTHY_AFTER:
            self._delay = self._restartDelay
        log.warn(
            "uploadsvc worker {index} ended ({why}) after {lived:.1f} s; "
            "starting it again in {delay} s",
            index=worker.index, why=reason.value, lived=lived, delay=self._delay,
        )
        self._reactor.callLater(self._delay, self._restart, worker.index)
        self._delay = min(self._delay * 2, MAX_RESTART_DELAY)

    def _restart(self, index: int) -> None:
        if not self._stopping and index not in self._workers:
            self._start(index)

    def pids(self) -> list[int]:
        """
        The process ids of the running workers.
        """
        return [p.pid for _, p in self._workers.values() if p.pid is not None]

    def signalAll(self, name: str) -> None:
        for _, process in list(self._workers.values()):
            try:
                process.signalProcess(name)
            except Exception:  # already gone
                pass

    def stopService(self) -> defer.Deferred:
        super().stopService()
        self._stopping = True
        if self._previousHUP is not None:
            signal.signal(signal.SIGHUP, self._previousHUP)
            self._previousHUP = None
        waiting = [worker.ended for worker, _ in self._workers.values()]
        # Stop accepting at once: the workers close their copies of the
        # listening sockets as they get SIGTERM, and a socket that nobody
        # holds open any more refuses new connections (the parent's copies
        # must not keep the kernel queueing them during the drain).
        self._closeAll()
        self.signalAll("TERM")
        kill = self._reactor.callLater(self._stopTimeout, self._kill)

        def ended(_: object) -> None:
            if kill.active():
                kill.cancel()

        return defer.DeferredList(waiting).addCallback(ended)

    def _kill(self) -> None:
        log.warn(
            "uploadsvc: workers {pids} still running {timeout} s after SIGTERM: killing them",
            pids=self.pids(), timeout=self._stopTimeout,
        )
        self.signalAll("KILL")


def workerCommand(arguments: Sequence[str]) -> list[str]:
    """
    The command line of a worker: this Python running twistd in the
    foreground with the given C{uploadsvc} arguments.
    """
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "--nodaemon",
        "--pidfile=",
        "uploadsvc",
        *arguments,
    ]
