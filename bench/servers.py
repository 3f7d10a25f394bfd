"""
Starting and stopping the servers under test, each on a free loopback port
with its own storage root.

The servers:
  - C{uploadsvc}: C{twistd -n uploadsvc --no-fsync} (like the baselines,
    no fsync), logging to its stdout as a user would run it;
  - C{uploadsvc-fsync}: C{twistd uploadsvc}, the durable default;
  - C{aiohttp}: L{bench.baseline_aiohttp}, the origin question's server;
  - C{nginx}: nginx's WebDAV PUT, one worker, when C{nginx} is installed.

More uploadsvc variants (e.g. C{--workers 2}) can be added by name with
L{parseVariant}; every server whose name starts with C{uploadsvc} is a
candidate that the report compares with the baselines.

Every server listens with a backlog of 1024, so a thousand connects at once
meet the same queue everywhere.  A server is stopped by its PID only: SIGTERM,
then SIGKILL after a grace period, then SIGKILL for any descendant recorded
at start that is still the same process.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import attr

from bench import procfs

SERVERS = ("uploadsvc", "uploadsvc-fsync", "aiohttp", "nginx")
BASELINES = ("aiohttp", "nginx")
BACKLOG = 1024
REPO = Path(__file__).resolve().parent.parent

# twistd with this interpreter; C{python -m twisted} is the C{twist} runner,
# which has no C{-n} or C{--pidfile}.
TWISTD = [
    sys.executable, "-c",
    "import sys; from twisted.scripts.twistd import run; sys.exit(run())",
]

# S6's slow disk for uploadsvc: "--bench-write-rate BYTES" makes the server
# write at most BYTES per second to storage, process-wide, by delaying writes
# in its writer threads as a slow disk would (uploadsvc.storage.throttle).
UPLOADSVC_SLOW_DISK_ARGS = ("--bench-write-rate", "{rate}")


@attr.s(auto_attribs=True, frozen=True)
class ServerSpec:
    """
    A server to measure.

    @ivar name: how it is called in the output, e.g. C{uploadsvc-w2}.
    @ivar kind: C{uploadsvc}, C{aiohttp} or C{nginx}.
    @ivar args: extra command-line arguments (uploadsvc only).
    """

    name: str
    kind: str
    args: tuple[str, ...] = ()

    @property
    def durable(self) -> bool:
        """
        Whether it fsyncs (an uploadsvc without C{--no-fsync}), so that its
        throughput is compared with the baselines' including a final sync.
        """
        return self.kind == "uploadsvc" and "--no-fsync" not in self.args


BUILTIN = {
    "uploadsvc": ServerSpec("uploadsvc", "uploadsvc", ("--no-fsync",)),
    "uploadsvc-fsync": ServerSpec("uploadsvc-fsync", "uploadsvc"),
    "aiohttp": ServerSpec("aiohttp", "aiohttp"),
    "nginx": ServerSpec("nginx", "nginx"),
}


def parseVariant(text: str) -> ServerSpec:
    """
    Parse C{NAME=ARGS}, an uploadsvc variant, e.g.
    C{uploadsvc-w2=--no-fsync --workers 2}.

    @raise ValueError: when the name does not start with C{uploadsvc} or
        clashes with a built-in server.
    """
    name, sep, args = text.partition("=")
    name = name.strip()
    if not sep or not name.startswith("uploadsvc") or name in BUILTIN:
        raise ValueError(
            f"{text!r}: want NAME=ARGS with a new NAME starting with 'uploadsvc'"
        )
    return ServerSpec(name, "uploadsvc", tuple(shlex.split(args)))


class ServerFailed(Exception):
    """
    A server did not start, or refused an option; the message says why.
    """


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unavailable(spec: ServerSpec) -> str | None:
    """
    Why server C{spec} cannot run here, or L{None} when it can.
    """
    if spec.kind == "nginx":
        if shutil.which("nginx") is None:
            return "nginx is not installed (e.g. apt-get install nginx-light); skipped"
        return None
    if spec.kind == "uploadsvc":
        try:
            probe = subprocess.run(
                [*TWISTD, "uploadsvc", "--help"],
                env=_uploadsvcEnvironment(),
                cwd=REPO,
                capture_output=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            return "`twistd uploadsvc --help` timed out; skipped"
        if probe.returncode != 0:
            tail = (probe.stderr or probe.stdout).decode(errors="replace").strip()
            tail = tail.splitlines()[-1] if tail else f"exit {probe.returncode}"
            return f"the uploadsvc twistd plugin is not usable ({tail}); skipped"
        return None
    if spec.kind == "aiohttp":
        return None
    return f"unknown kind of server {spec.kind!r}"


def _uploadsvcEnvironment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return env


def _nginxConfig(directory: Path, root: Path, port: int) -> Path:
    """
    Write an nginx configuration for a WebDAV PUT server into C{directory}.
    The request-body temporary folder is beside the root, on the same
    filesystem, so that a finished body is renamed into place, not copied.
    """
    bodies = directory / "client_body_temp"
    bodies.mkdir(parents=True, exist_ok=True)
    user = "user root root;\n" if os.geteuid() == 0 else ""
    config = directory / "nginx.conf"
    config.write_text(
        f"""{user}daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 8192;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {bodies};
    proxy_temp_path {directory}/proxy_temp;
    fastcgi_temp_path {directory}/fastcgi_temp;
    uwsgi_temp_path {directory}/uwsgi_temp;
    scgi_temp_path {directory}/scgi_temp;
    keepalive_requests 100000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port} backlog={BACKLOG};
        root {root};
        client_max_body_size 0;
        location / {{
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
    }}
}}
"""
    )
    return config


def command(
    spec: ServerSpec,
    root: Path,
    port: int,
    directory: Path,
    slowDiskRate: float | None,
    uploadsvcArgs: Sequence[str],
    slowDiskArgs: Sequence[str],
) -> list[str] | None:
    """
    The command line that starts server C{spec}, or L{None} when it has no
    way to emulate a slow disk and one was asked for.
    """
    if spec.kind == "aiohttp":
        argv = [
            sys.executable, "-m", "bench.baseline_aiohttp",
            "--root", str(root), "--port", str(port), "--backlog", str(BACKLOG),
        ]
        if slowDiskRate is not None:
            argv += ["--write-rate", str(int(slowDiskRate))]
        return argv
    if spec.kind == "nginx":
        if slowDiskRate is not None:
            return None
        config = _nginxConfig(directory, root, port)
        return [
            shutil.which("nginx") or "nginx",
            "-p", str(directory), "-c", str(config), "-e", str(directory / "error.log"),
        ]
    argv = [
        *TWISTD, "-n", "--pidfile=", "uploadsvc",
        "--root", str(root),
        "--listen", f"tcp:{port}:interface=127.0.0.1:backlog={BACKLOG}",
        "--max-upload-size", str(1 << 40),
    ]
    argv += list(spec.args) + list(uploadsvcArgs)
    if slowDiskRate is not None:
        argv += [a.format(rate=int(slowDiskRate)) for a in slowDiskArgs]
    return argv


@attr.s(auto_attribs=True)
class RunningServer:
    """
    A server process started by the benchmark.

    @ivar name: which server.
    @ivar process: the process the benchmark started (the tree's root).
    @ivar port: its loopback port.
    @ivar log: where its stdout and stderr go.
    @ivar members: PID and start time of each tree member seen so far, so
        that stopping kills only processes this benchmark started.
    """

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    members: dict[int, int | None] = attr.ib(factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def remember(self) -> None:
        """
        Record the current members of the process tree.
        """
        for member in procfs.processTree(self.pid):
            self.members.setdefault(member, procfs.startTime(member))

    def logTail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """
        SIGTERM the server, wait up to C{grace} seconds, then SIGKILL it and
        any recorded descendant that outlived it.
        """
        self.remember()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(grace)
        for member, started in self.members.items():
            if member != self.pid and started is not None:
                if procfs.startTime(member) == started:
                    try:
                        os.kill(member, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


def start(
    spec: ServerSpec,
    root: Path,
    directory: Path,
    slowDiskRate: float | None = None,
    uploadsvcArgs: Sequence[str] = (),
    slowDiskArgs: Sequence[str] = UPLOADSVC_SLOW_DISK_ARGS,
    timeout: float = 30.0,
) -> RunningServer:
    """
    Start server C{spec} storing under C{root}, with its configuration and
    log in C{directory}, and wait until it accepts connections.

    @raise ServerFailed: when it exits first, does not listen within
        C{timeout} seconds, or cannot emulate a slow disk.
    """
    port = freePort()
    directory.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    name = spec.name
    argv = command(spec, root, port, directory, slowDiskRate, uploadsvcArgs, slowDiskArgs)
    if argv is None:
        raise ServerFailed(f"{name} has no slow-disk emulation")
    log = directory / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=_uploadsvcEnvironment(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(name, process, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(
                f"{name} exited with {process.returncode}: {server.logTail(1)}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except OSError:
            time.sleep(0.05)
            continue
        server.remember()
        return server
    server.stop()
    raise ServerFailed(f"{name} did not listen within {timeout} s: {server.logTail()}")
