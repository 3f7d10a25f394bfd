"""
A real GlusterFS volume for a test: its own glusterd, two bricks in a temp
folder, and the volume mounted (FUSE) at several mount points, as separate
hosts would each mount it.

Everything lives under one folder of the test's: glusterd runs in the
foreground (C{-N}) from a C{glusterd.vol} of ours whose working, run and log
folders and CLI socket are in that folder, so the machine's own
C{/var/lib/glusterd} is never read or written. Only glusterd's TCP port is
shared: the brick processes it spawns always ask C{localhost:24007} for
their volume file (glusterd passes them no port), so the port must be
24007, and it must be free. Bricks are on the root file system, hence
C{force}. Each mount is a C{glusterfs -N} process of ours, with the
default mount options unless the test asks for others.

Start-up takes about 3 seconds (glusterd ~1 s, volume create and start
~1.5 s, mounts well under a second each); teardown about 3 s. The CLI
refuses C{127.0.0.1} and C{localhost} as a brick host by their spelling
only, so bricks are named on C{127.1}, which resolves to 127.0.0.1: all
traffic stays on the loopback interface.

Needs root (FUSE mounts) and C{/dev/fuse}. Under CI a missing GlusterFS is
a failure (L{tests.support.tools.requireTool}).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Sequence

from tests.support.tools import requireTool

#: The port glusterd must listen on (see the module docstring).
GLUSTERD_PORT = 24007

#: The volume's name.
VOLUME = "uploadsvc"

#: The brick host: 127.0.0.1 spelt so that the CLI accepts it.
BRICK_HOST = "127.1"

#: Seconds any one step (glusterd up, a CLI command, a mount) may take.
STEP = 30.0


class GlusterFailed(Exception):
    """
    A GlusterFS step failed; the message carries the end of its log.
    """


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError as e:
        return str(e)


def _portFree(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _stop(process: subprocess.Popen[bytes], limit: float = 10.0) -> None:
    """
    SIGTERM C{process} (ours, by its PID), SIGKILL if it lingers, and reap it.
    """
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(limit)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(limit)


class GlusterVolume:
    """
    A two-brick distributed volume served by a glusterd of our own, mounted
    at L{mounts}.

    @ivar base: the folder everything lives in.
    @ivar mounts: the mount points, in order.
    @ivar startSeconds: how long L{start} took (glusterd up to last mount).
    """

    def __init__(self, base: str, count: int = 3, mountOptions: Sequence[str] = ()) -> None:
        """
        @param count: how many mount points.
        @param mountOptions: extra C{glusterfs} options for every mount,
            e.g. C{"--attribute-timeout=0"} (none: the defaults).
        """
        self.base = os.path.abspath(base)
        self.count = count
        self.mountOptions = tuple(mountOptions)
        self.mounts: list[str] = []
        self.startSeconds = 0.0
        self._glusterd: subprocess.Popen[bytes] | None = None
        self._mountProcesses: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._volumeMade = False
        for sub in ("work", "run", "log", "bricks", "mnt"):
            os.makedirs(os.path.join(self.base, sub), exist_ok=True)
        # A unix socket's path must be short (108 bytes): not under the
        # test's folder, but in a folder of its own removed by stop().
        self._socketDir = tempfile.mkdtemp(prefix="uploadsvc-glusterd-")
        self.socketPath = os.path.join(self._socketDir, "glusterd.socket")
        self.logPath = os.path.join(self.base, "log", "glusterd.log")

    # -- start -------------------------------------------------------------

    def _volfile(self) -> str:
        path = os.path.join(self.base, "glusterd.vol")
        b = self.base
        with open(path, "w") as f:
            f.write(
                "volume management\n"
                "    type mgmt/glusterd\n"
                f"    option working-directory {b}/work\n"
                f"    option run-directory {b}/run\n"
                f"    option logging-directory {b}/log\n"
                f"    option glusterd-sockfile {self.socketPath}\n"
                "    option transport-type socket\n"
                f"    option transport.socket.listen-port {GLUSTERD_PORT}\n"
                "    option transport.socket.bind-address 127.0.0.1\n"
                "    option transport.address-family inet\n"
                "    option ping-timeout 0\n"
                "    option event-threads 1\n"
                "end-volume\n"
            )
        return path

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """
        Run C{gluster --mode=script} against our glusterd's socket.

        @raise GlusterFailed: it failed and C{check} is true.
        """
        argv = [
            self._gluster, "--mode=script", f"--glusterd-sock={self.socketPath}",
            f"--log-file={self.base}/log/cli.log", *args,
        ]
        result = subprocess.run(argv, capture_output=True, timeout=STEP)
        if check and result.returncode != 0:
            raise GlusterFailed(
                f"{' '.join(args)}: exit {result.returncode}: "
                f"{(result.stdout + result.stderr).decode('utf-8', 'replace').strip()}\n"
                f"glusterd log:\n{_tail(self.logPath)}"
            )
        return result

    def start(self) -> GlusterVolume:
        """
        Start glusterd, make and start the volume, and mount it L{count}
        times; bounded by L{STEP} per step.

        @raise GlusterFailed: a step failed (what is up stays up: call
            L{stop}, as L{startGluster} does in the test's cleanup).
        """
        began = time.monotonic()
        glusterd = requireTool("glusterd")
        self._gluster = requireTool("gluster")
        self._glusterfs = requireTool("glusterfs")
        if not os.path.exists("/dev/fuse"):
            raise GlusterFailed("/dev/fuse is missing: FUSE mounts cannot work here")
        if not _portFree(GLUSTERD_PORT):
            raise GlusterFailed(
                f"port {GLUSTERD_PORT} is taken (another glusterd?): the bricks can "
                "ask only that port for their volume file"
            )
        self._glusterd = subprocess.Popen(
            [glusterd, "-N", "-f", self._volfile(), "-l", self.logPath,
             "-p", os.path.join(self.base, "glusterd.pid")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STEP
        while True:
            if self._glusterd.poll() is not None:
                raise GlusterFailed(
                    f"glusterd exited with {self._glusterd.returncode}:\n{_tail(self.logPath)}"
                )
            if os.path.exists(self.socketPath) and self.cli("volume", "list", check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise GlusterFailed(f"glusterd not answering after {STEP} s:\n{_tail(self.logPath)}")
            time.sleep(0.1)
        bricks = []
        for i in (1, 2):
            brick = os.path.join(self.base, "bricks", f"b{i}")
            os.makedirs(brick, exist_ok=True)
            bricks.append(f"{BRICK_HOST}:{brick}")
        self.cli("volume", "create", VOLUME, *bricks, "force")
        self._volumeMade = True
        self.cli("volume", "start", VOLUME)
        for i in range(self.count):
            self.mounts.append(self._mount(i))
        self.startSeconds = time.monotonic() - began
        return self

    def _mount(self, index: int) -> str:
        point = os.path.join(self.base, "mnt", f"m{index}")
        os.makedirs(point, exist_ok=True)
        logPath = os.path.join(self.base, "log", f"mount-{index}.log")
        process = subprocess.Popen(
            [self._glusterfs, "-N", "--volfile-server=127.0.0.1", f"--volfile-id={VOLUME}",
             f"--log-file={logPath}", *self.mountOptions, point],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._mountProcesses.append((point, process))
        deadline = time.monotonic() + STEP
        while not os.path.ismount(point):
            if process.poll() is not None:
                raise GlusterFailed(f"mount {index} exited with {process.returncode}:\n{_tail(logPath)}")
            if time.monotonic() > deadline:
                raise GlusterFailed(f"{point} not mounted after {STEP} s:\n{_tail(logPath)}")
            time.sleep(0.05)
        # The first lookup of a new volume's root can find its layout not
        # yet set; one lookup per mount settles it before servers start.
        os.listdir(point)
        return point

    def remount(self, index: int) -> None:
        """
        End mount C{index}'s client process (C{SIGKILL}: a hung one answers
        nothing else), which fails every request still waiting on it, so a
        process blocked in the mount can exit; detach the mount point and
        mount it again.

        A GlusterFS 10 client can hang for good when a process is killed
        in a lock request (its event threads wait on the interrupt of that
        request; gluster/glusterfs#4371): this is the way out.
        """
        point = os.path.join(self.base, "mnt", f"m{index}")
        for i, (where, process) in enumerate(self._mountProcesses):
            if where == point:
                if process.poll() is None:
                    process.kill()
                    process.wait(STEP)
                del self._mountProcesses[i]
                break
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=STEP)
        self.mounts[index] = self._mount(index)

    # -- stop --------------------------------------------------------------

    def stop(self) -> None:
        """
        Unmount, stop and delete the volume, stop the bricks and glusterd;
        every step runs even when an earlier one failed. The first error is
        raised at the end.
        """
        errors: list[BaseException] = []

        def attempt(step: Any, *args: Any) -> None:
            try:
                step(*args)
            except BaseException as e:  # keep tearing down
                errors.append(e)

        sockets = [arg for argv in self._brickCommands().values() for arg in _socketArgs(argv)]
        for point, process in reversed(self._mountProcesses):
            attempt(self._unmount, point, process)
        self._mountProcesses = []
        if self._volumeMade and self._glusterd is not None and self._glusterd.poll() is None:
            attempt(self.cli, "volume", "stop", VOLUME, "force")
            attempt(self.cli, "volume", "delete", VOLUME)
            self._volumeMade = False
        attempt(self._killBricks)
        if self._glusterd is not None:
            attempt(_stop, self._glusterd)
            self._glusterd = None
        shutil.rmtree(self._socketDir, ignore_errors=True)
        for path in sockets:  # the bricks' sockets, left in /var/run/gluster
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if errors:
            raise errors[0]

    def _unmount(self, point: str, process: subprocess.Popen[bytes]) -> None:
        if os.path.ismount(point):
            result = subprocess.run(["umount", point], capture_output=True, timeout=STEP)
            if result.returncode != 0:
                # Busy (a server still had a file open): detach it.
                subprocess.run(["umount", "-l", point], capture_output=True, timeout=STEP)
        _stop(process)

    def _brickCommands(self) -> dict[int, list[str]]:
        """
        The brick processes alive now, by the PIDs in their pidfiles under
        our run folder: their command lines, if they name our folder.
        """
        found = {}
        for pidFile in glob.glob(os.path.join(self.base, "run", "vols", "*", "*.pid")):
            try:
                with open(pidFile) as f:
                    pid = int(f.read().strip() or 0)
                if pid <= 0:
                    continue
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
            except (OSError, ValueError):
                continue
            if any(self.base in arg for arg in argv):
                found[pid] = argv
        return found

    def _killBricks(self) -> None:
        """
        SIGKILL any brick process still alive (one that C{volume stop}
        did not stop), by its PID.
        """
        for pid in self._brickCommands():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _socketArgs(argv: list[str]) -> list[str]:
    """
    The unix socket a brick's command line names (C{-S PATH}).
    """
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-S"]


def startGluster(testCase: Any, count: int = 3, mountOptions: Sequence[str] = ()) -> GlusterVolume:
    """
    Start a L{GlusterVolume} in a folder of C{testCase}'s and tear it down in
    its cleanup (registered before the start, so a failed start is torn down
    too).
    """
    base = os.path.abspath(testCase.mktemp())
    volume = GlusterVolume(base, count, mountOptions)
    testCase.addCleanup(volume.stop)
    return volume.start()
