"""
Run a real C{twistd uploadsvc} as a child process, for end-to-end tests.

The server runs exactly as a user would start it (C{python -m twisted -n
uploadsvc ...}) on a free loopback port, with its output captured to a log
file next to the storage root and its C{TMPDIR} pointed at a folder of its
own, so a test can prove that nothing was spooled to a temporary file.

L{ServerProcess} is synchronous (for scripts); L{startServer} and
L{ServerRequests} are the trial-friendly wrappers that clean up after a test.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import IO, Any, Callable, Sequence

import attr

import uploadsvc
from tests.support.rawhttp import Answer, exchange, fileSha256

#: The folder that holds the C{uploadsvc} package (and C{twisted/plugins}).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(uploadsvc.__file__)))


#: How to run C{twistd} with this interpreter. (C{python -m twisted} is the
#: C{twist} runner, which has no C{-n} or C{--pidfile}.)
TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.exit(run())"]


def freePort(host: str = "127.0.0.1") -> int:
    """
    Find a TCP port that is free on C{host} right now.

    @return: a port number that the kernel handed out for an ephemeral bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _procStatusBytes(pid: int, field: str) -> int:
    """
    Read one C{kB} field (e.g. C{VmHWM}) of C{/proc/<pid>/status}, in bytes.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(f"{field} not in /proc/{pid}/status")


def _accepts(host: str, port: int) -> bool:
    """
    Whether something accepts TCP connections at C{host:port} right now.
    """
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class ServerFailed(Exception):
    """
    The server process did not come up (or died); the message holds its log.
    """


class ServerProcess:
    """
    A C{twistd uploadsvc} child process serving C{root} on a loopback port.

    @ivar root: the storage root (absolute).
    @ivar port: the TCP port, fixed for the life of this object (kept by
        L{restart}).
    @ivar host: C{127.0.0.1}.
    @ivar extraArgs: the options after C{--root}/C{--listen}.
    @ivar listen: the C{--listen} endpoint string.
    @ivar scheme: C{https} for an C{ssl:} endpoint, else C{http}.
    @ivar logPath: the file that receives the server's stdout and stderr
        (appended to across restarts).
    @ivar tmpDir: the C{TMPDIR} of the server: L{tempfile.gettempdir} in the
        server names this folder, so anything it spools shows up here.
    @ivar process: the running L{subprocess.Popen}, or L{None}.
    """

    startTimeout = 20.0
    stopTimeout = 15.0

    def __init__(
        self,
        root: str,
        *extraArgs: str,
        port: int | None = None,
        command: Callable[[ServerProcess], Sequence[str]] | None = None,
        env: dict[str, str] | None = None,
        listenOptions: str = "",
        listen: str | None = None,
    ) -> None:
        """
        @param root: the storage root; created if missing.
        @param extraArgs: more C{twistd uploadsvc} options, e.g.
            C{"--allow-overwrite"}.
        @param port: a fixed port; a free one is picked when L{None}.
        @param command: builds the argument list instead of the default
            C{twistd uploadsvc} one (the harness's own tests use it to run
            C{twistd web}).
        @param env: extra environment variables for the child.
        @param listenOptions: more options for the C{--listen} endpoint
            string, e.g. C{"backlog=512"}.
        @param listen: the whole C{--listen} endpoint string instead of the
            C{tcp:} one, with C{{port}} and C{{host}} filled in, e.g.
            C{"ssl:{port}:privateKey=k.pem:certKey=c.pem:interface={host}"}
            (then L{url} says C{https}).
        """
        self.root = os.path.abspath(root)
        self.parent = os.path.dirname(self.root)
        self.host = "127.0.0.1"
        self.port = freePort(self.host) if port is None else port
        self.extraArgs = tuple(extraArgs)
        self._command = command
        self._env = dict(env or {})
        if listen is None:
            listen = "tcp:{port}:interface={host}"
        self.listen = listen.format(port=self.port, host=self.host) + (
            ":" + listenOptions if listenOptions else ""
        )
        self.scheme = "https" if self.listen.startswith("ssl:") else "http"
        name = os.path.basename(self.root)
        self.logPath = os.path.join(self.parent, f"{name}.server-{self.port}.log")
        self.tmpDir = os.path.join(self.parent, f"{name}.server-tmp")
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- what runs ---------------------------------------------------------

    def argv(self) -> list[str]:
        """
        The command line of the server.
        """
        if self._command is not None:
            return list(self._command(self))
        return [
            *TWISTD,
            "-n",
            "--pidfile=",
            "uploadsvc",
            "--root",
            self.root,
            "--listen",
            self.listen,
            *self.extraArgs,
        ]

    def environment(self) -> dict[str, str]:
        """
        The child's environment: ours, with L{REPO_ROOT} first on
        C{PYTHONPATH} and C{TMPDIR} set to L{tmpDir}.
        """
        env = dict(os.environ)
        oldPath = env.get("PYTHONPATH")
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + oldPath if oldPath else "")
        env["TMPDIR"] = self.tmpDir
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self._env)
        return env

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> ServerProcess:
        """
        Start the server and wait (at most L{startTimeout} seconds) until its
        port accepts connections.

        @raise ServerFailed: when it exits or does not listen in time; the
            message carries the end of its log.
        @return: C{self}
        """
        if self.running():
            raise ServerFailed("already running")
        os.makedirs(self.root, exist_ok=True)
        os.makedirs(self.tmpDir, exist_ok=True)
        if self._log is None:
            self._log = open(self.logPath, "ab")
        self._log.write(f"==== start {time.ctime()}: {self.argv()}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            self.argv(),
            cwd=self.parent,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.startTimeout
        while True:
            code = self.process.poll()
            if code is not None:
                self.process = None
                raise ServerFailed(
                    f"server exited with {code} before listening on port "
                    f"{self.port}; log {self.logPath}:\n{self.logTail()}"
                )
            if _accepts(self.host, self.port):
                return self
            if time.monotonic() > deadline:
                self.kill9()
                raise ServerFailed(
                    f"server not listening on port {self.port} after "
                    f"{self.startTimeout} s; log {self.logPath}:\n{self.logTail()}"
                )
            time.sleep(0.05)

    def running(self) -> bool:
        """
        Whether the child process is alive.
        """
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        """
        C{kill -9} the server and reap it.
        """
        if self.process is None:
            return
        try:
            self.process.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=self.stopTimeout)
        self.process = None

    def terminate(self, timeout: float | None = None) -> int | None:
        """
        Stop the server with C{SIGTERM}, waiting at most C{timeout} seconds
        before a C{SIGKILL}.

        @return: the exit status, or L{None} if it had to be killed (or was
            not running).
        """
        if self.process is None:
            return None
        process = self.process
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            code: int | None = process.wait(
                timeout=self.stopTimeout if timeout is None else timeout
            )
        except subprocess.TimeoutExpired:
            self.kill9()
            code = None
        self.process = None
        return code

    def restart(self) -> ServerProcess:
        """
        Stop the server if it runs, and start it again with the same port
        and arguments.
        """
        self.terminate()
        return self.start()

    def stop(self) -> None:
        """
        Stop the server (if running) and close the log file.
        """
        self.terminate()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests look at ------------------------------------------------

    @property
    def pid(self) -> int:
        """
        The server's process id.
        """
        if self.process is None:
            raise ServerFailed("not running")
        return self.process.pid

    def url(self, path: str = "/") -> str:
        """
        The C{http://} (or C{https://}) URL of C{path} (which is used as is,
        so it may carry percent-escapes and a query).
        """
        if not path.startswith("/"):
            path = "/" + path
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def peakRSS(self) -> int:
        """
        The peak resident set size of the server so far (C{VmHWM}), in bytes.
        """
        return _procStatusBytes(self.pid, "VmHWM")

    def rss(self) -> int:
        """
        The current resident set size of the server (C{VmRSS}), in bytes.
        """
        return _procStatusBytes(self.pid, "VmRSS")

    def openFiles(self) -> list[str]:
        """
        What the server's file descriptors point at right now (the targets
        of C{/proc/<pid>/fd/*}; sockets and pipes look like C{socket:[n]}).
        """
        fdDir = f"/proc/{self.pid}/fd"
        targets = []
        try:
            names = os.listdir(fdDir)
        except FileNotFoundError:
            return []
        for name in names:
            try:
                targets.append(os.readlink(os.path.join(fdDir, name)))
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ESRCH):
                    raise
        return targets

    def logText(self) -> str:
        """
        Everything the server wrote so far.
        """
        if self._log is not None:
            self._log.flush()
        try:
            with open(self.logPath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def logTail(self, lines: int = 60) -> str:
        """
        The last C{lines} lines of L{logText}.
        """
        return "\n".join(self.logText().splitlines()[-lines:])


#: The line a server logs when it splices its first request body (the
#: zero-copy path, L{uploadsvc.web.streaming.splice}).
SPLICED_LINE = "zero-copy: request bodies are spliced"
PUMPED_LINE = "zero-copy: a fast sender's body is moved by a disk thread"


def bodyPathArgs(testCase: Any) -> tuple[str, ...]:
    """
    The server options that pick the body path a test case runs on: none
    for the default (C{--zero-copy auto}), C{--zero-copy=off} for a case
    with L{ReadByPython} mixed in.
    """
    mode = getattr(testCase, "zeroCopy", None)
    return () if mode is None else (f"--zero-copy={mode}",)


class ReadByPython:
    """
    Mix into an end-to-end test case (before it) to run all of its tests
    again with C{--zero-copy off}: every body read by Python, the path the
    zero-copy one falls back to. L{assertBodyPath} checks which path ran.
    """

    zeroCopy: str | None = "off"


def assertBodyPath(testCase: Any, server: ServerProcess) -> None:
    """
    Check that C{server} took the body path C{testCase} runs on: bodies
    were spliced (its log says so) unless the case is L{ReadByPython},
    then none was. Call after a test sent a plain HTTP/1.1 body of at least
    L{uploadsvc.web.streaming.zerocopyplan.MIN_SPLICED_BODY} bytes.
    """
    spliced = SPLICED_LINE in server.logText()
    if getattr(testCase, "zeroCopy", None) == "off":
        testCase.assertFalse(spliced, "a body was spliced with --zero-copy off")
    else:
        testCase.assertTrue(spliced, f"no body was spliced; log:\n{server.logTail()}")


def assertPumped(testCase: Any, server: ServerProcess) -> None:
    """
    Check that a fast sender's body was moved by a pump (a disk thread
    looping socket -> pipe -> file), or by nothing of the zero-copy path
    when the case is L{ReadByPython}. Call after a test sent a large plain
    HTTP/1.1 body as fast as it could (tens of MiB or more).
    """
    pumped = PUMPED_LINE in server.logText()
    if getattr(testCase, "zeroCopy", None) == "off":
        testCase.assertFalse(pumped, "a body was pumped with --zero-copy off")
    else:
        testCase.assertTrue(pumped, f"no body was pumped; log:\n{server.logTail()}")


def startServer(testCase: Any, root: str, *extraArgs: str, **kw: Any) -> ServerProcess:
    """
    Start a L{ServerProcess} for a trial test and stop it in the test's
    cleanup.

    Start-up blocks the test (briefly, bounded by
    L{ServerProcess.startTimeout}); the server is a separate process, so
    nothing waits on this reactor.

    @param testCase: the running test; its C{addCleanup} stops the server.
    @param root: the storage root (relative paths are made absolute, since
        trial runs tests inside C{_trial_temp}).
    @return: the running server.
    """
    server = ServerProcess(os.path.abspath(root), *extraArgs, *bodyPathArgs(testCase), **kw)
    server.start()
    testCase.addCleanup(server.stop)
    return server


class ServerRequests:
    """
    treq requests to a L{ServerProcess} from a trial test, through a
    connection pool of the test's own that is closed in its cleanup (so the
    reactor is left clean).
    """

    def __init__(
        self,
        testCase: Any,
        server: ServerProcess,
        maxPersistent: int = 8,
        contextFactory: Any = None,
    ) -> None:
        """
        @param contextFactory: the agent's L{IPolicyForHTTPS} for an
            C{https} server, e.g. a C{BrowserLikePolicyForHTTPS} trusting a
            test CA (Twisted's default trusts the system's CAs).
        """
        from twisted.internet import reactor
        from twisted.web.client import Agent, HTTPConnectionPool

        import treq.client

        self.server = server
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = maxPersistent
        self.pool.retryAutomatically = False
        agent = (
            Agent(reactor, pool=self.pool)
            if contextFactory is None
            else Agent(reactor, contextFactory, pool=self.pool)
        )
        self.client = treq.client.HTTPClient(agent)
        testCase.addCleanup(self.pool.closeCachedConnections)

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        data: Any = None,
    ) -> Answer:
        """
        Send one request and read the whole answer.

        @param path: the request path, used as is.
        @param data: L{bytes}, an L{IBodyProducer} or L{None}.
        """
        import treq

        fields: dict[bytes | str, bytes | str] = {k: v for k, v in (headers or {}).items()}
        response = await self.client.request(
            method, self.server.url(path), headers=fields, data=data
        )
        body = await treq.content(response)
        pairs = tuple(
            (name.lower(), value)
            for name, values in response.headers.getAllRawHeaders()
            for value in values
        )
        return Answer(response.code, response.phrase, pairs, body)


@attr.s(frozen=True, auto_attribs=True)
class CurlResult:
    """
    What one C{curl} run got back: its exit status and stderr besides the
    answer, so not an L{Answer}; C{status}, C{header} and C{body} read the
    same way.

    @ivar exitCode: curl's exit status.
    @ivar interim: the statuses of interim responses (e.g. C{[100]}).
    @ivar status: the final status (0 when there was none).
    @ivar headers: the final response's headers, names lowercased (last
        value wins).
    @ivar body: the final response's body.
    @ivar stderr: what curl printed on stderr.
    """

    exitCode: int
    interim: list[int]
    status: int
    headers: dict[str, str]
    body: bytes
    stderr: bytes

    def header(self, name: str) -> str | None:
        """
        The value of header C{name}, or L{None}.
        """
        return self.headers.get(name.lower())


class ServerTestMixin:
    """
    For a trial C{TestCase}: start a real server for the test
    (L{startUploadServer}), talk to it with treq (C{self.http}) or C{curl}
    (L{curl}), and look at what it stored.

    @ivar server: the L{ServerProcess} of the test.
    @ivar http: a L{ServerRequests} bound to it.
    """

    server: ServerProcess
    http: ServerRequests
    curlPath = "/usr/bin/curl"

    def startUploadServer(
        self, *extraArgs: str, maxPersistent: int = 8, listenOptions: str = ""
    ) -> ServerProcess:
        """
        Start a server on a fresh root for this test (stopped in cleanup).

        @param extraArgs: more C{twistd uploadsvc} options.
        @param maxPersistent: how many idle connections C{self.http} keeps.
        @param listenOptions: more options for the C{--listen} endpoint.
        """
        base = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        os.makedirs(base)
        self.server = startServer(
            self, os.path.join(base, "root"), *extraArgs, listenOptions=listenOptions
        )
        self.http = ServerRequests(self, self.server, maxPersistent)
        return self.server

    def assertBodyPath(self) -> None:
        """
        L{assertBodyPath} for this test's server.
        """
        assertBodyPath(self, self.server)

    def storedPath(self, relpath: str) -> str:
        """
        Where C{relpath} (relative to the root) is on disk.
        """
        return os.path.join(self.server.root, *relpath.split("/"))

    async def curl(self, *args: str) -> CurlResult:
        """
        Run C{curl} (silent, no proxy) with C{args} plus the options that
        capture the final response's headers and body.
        """
        from twisted.internet import reactor
        from twisted.internet.utils import getProcessOutputAndValue

        work = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        os.makedirs(work)
        headerFile = os.path.join(work, "headers")
        bodyFile = os.path.join(work, "body")
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        out, err, code = await getProcessOutputAndValue(
            self.curlPath,
            ["-sS", "--noproxy", "*", "--max-time", "120", "-D", headerFile, "-o", bodyFile, *args],
            env=env,
            reactor=reactor,
        )
        blocks = []
        if os.path.exists(headerFile):
            with open(headerFile, "rb") as f:
                blocks = [b for b in f.read().split(b"\r\n\r\n") if b.strip()]
        statuses = [int(b.split(b"\r\n", 1)[0].split()[1]) for b in blocks]
        headers: dict[str, str] = {}
        for line in blocks[-1].split(b"\r\n")[1:] if blocks else []:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if os.path.exists(bodyFile):
            with open(bodyFile, "rb") as f:
                body = f.read()
        return CurlResult(
            code,
            statuses[:-1],
            statuses[-1] if statuses else 0,
            headers,
            body,
            err,
        )

    # -- docs/protocol.md assertions ----------------------------------------------

    def assertCompleted(
        self,
        answer: Any,
        relpath: str,
        size: int,
        sha256hex: str,
        status: int = 201,
        jsonBody: bool = True,
    ) -> None:
        """
        Assert that C{answer} reports the completion of C{relpath} the way
        docs/protocol.md section 2 says, and that the stored file has that digest.

        @param answer: an L{Answer} or a L{CurlResult}.
        @param jsonBody: whether to check the JSON body too.
        """
        t: Any = self
        where = f"answer {answer.status} {answer.body[:300]!r}"
        t.assertEqual(answer.status, status, where)
        t.assertEqual(answer.header("upload-offset"), str(size), where)
        t.assertEqual(answer.header("upload-complete"), "?1", where)
        t.assertEqual(answer.header("location"), "/" + relpath, where)
        t.assertEqual(reprDigestSha256(answer.header("repr-digest")), sha256hex, where)
        if jsonBody:
            document = json.loads(answer.body)
            t.assertEqual(
                {k: document.get(k) for k in ("path", "size", "sha256")},
                {"path": relpath, "size": size, "sha256": sha256hex},
            )
        t.assertEqual(os.path.getsize(self.storedPath(relpath)), size)
        t.assertEqual(fileSha256(self.storedPath(relpath)), sha256hex)

    def assertIncomplete(
        self, answer: Any, offset: int, total: int | None = None, head: bool = False
    ) -> None:
        """
        Assert that C{answer} is the C{204} of an incomplete upload at
        C{offset} (docs/protocol.md section 3).

        @param total: the C{Upload-Length} a status answer must carry.
        @param head: whether this answers a status query (HEAD or
            C{bytes */T}), which also carries C{Upload-Length} and
            C{Cache-Control: no-store}.
        """
        t: Any = self
        where = f"answer {answer.status} {answer.body[:300]!r}"
        t.assertEqual(answer.status, 204, where)
        t.assertEqual(answer.header("upload-offset"), str(offset), where)
        t.assertEqual(answer.header("upload-complete"), "?0", where)
        t.assertEqual(
            answer.header("range"), f"bytes=0-{offset - 1}" if offset else None, where
        )
        if head:
            t.assertEqual(answer.header("cache-control"), "no-store", where)
            if total is not None:
                t.assertEqual(answer.header("upload-length"), str(total), where)

    def headRaw(self, path: str) -> Any:
        """
        C{HEAD path} on a new raw connection (blocking).
        """
        return exchange(self.server.port, "HEAD", path, timeout=10)[1]

    def waitForOffset(self, path: str, offset: int, timeout: float = 15.0) -> Any:
        """
        Poll C{HEAD path} (blocking, every 50 ms, at most C{timeout} seconds)
        until it reports C{Upload-Offset: offset}.

        @return: the last HEAD answer (the caller asserts on it).
        """
        deadline = time.monotonic() + timeout
        while True:
            answer = self.headRaw(path)
            if answer.header("upload-offset") == str(offset) or time.monotonic() > deadline:
                return answer
            time.sleep(0.05)


def reprDigestSha256(value: str | None) -> str | None:
    """
    The SHA-256 (lowercase hex) carried by a C{Repr-Digest} field value, or
    L{None} when it has none.
    """
    if not value:
        return None
    for member in value.split(","):
        name, _, rest = member.strip().partition("=")
        if name.strip().lower() == "sha-256" and rest.startswith(":") and rest.endswith(":"):
            return base64.b64decode(rest[1:-1]).hex()
    return None
