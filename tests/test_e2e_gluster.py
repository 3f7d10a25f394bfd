"""
docs/protocol.md section 12 on a real distributed file system: three real
C{twistd uploadsvc} servers, each with its C{--root} on its own FUSE mount
of one GlusterFS volume (as three hosts would mount it), behind a real
nginx that sends each request to the next server in turn.

The volume is mounted with GlusterFS's default options (docs/scaling.md):
what the attribute and entry caches of a mount hide from the others must be
handled by the server, not by the mount.

Every wait is a loop bounded in rounds and time; the only duration asserted
is section 5's takeover bound (5 s across servers).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from typing import Sequence

from twisted.trial.unittest import SynchronousTestCase

from tests.support import rawhttp
from tests.support.cluster import writeNginxConf
from tests.support.gluster import startGluster
from tests.support.programs import startProgram
from tests.support.rawhttp import patternBytes
from tests.support.server import ServerProcess, freePort
from tests.test_e2e_takeover import takeOver
from tests.support.tools import requireTool
from uploadsvc.storage.freshness import dataSize
from uploadsvc.storage.locks import RegionLocks

MiB = 1024 * 1024
#: Upper bound on every wait (seconds).
BOUND = 60.0
#: What a server logs for each expiry.
EXPIRED_LINE = re.compile(r"upload expired: (\S+) offset ")
TUS = ("Tus-Resumable", "1.0.0")
STREAM = ("Content-Type", "application/offset+octet-stream")
DRAFT = ("Upload-Draft-Interop-Version", "8")
PARTIAL = ("Content-Type", "application/partial-upload")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class GlusterVolumeTests(SynchronousTestCase):
    """
    The fixture's volume carries what the servers rely on between mounts,
    and its teardown leaves nothing behind.
    """

    def test_locksAndBytesBetweenMounts(self) -> None:
        """
        A writer lock taken through one mount is refused through the others
        until it is let go, and bytes fsync'd through one mount are read
        through another, at the size SEEK_HOLE reports there.
        """
        volume = startGluster(self, count=3)
        locks = [RegionLocks(os.path.join(m, "lock")) for m in volume.mounts]
        for regionLocks in locks:
            self.addCleanup(regionLocks.close)
        held = locks[0].tryLock("p-upload")
        self.assertIsNotNone(held)
        self.assertIsNone(locks[1].tryLock("p-upload"))
        self.assertIsNone(locks[2].tryLock("p-upload"))
        assert held is not None
        held.release()
        other = locks[2].tryLock("p-upload")
        self.assertIsNotNone(other)
        assert other is not None
        other.release()
        data = patternBytes(3, 0, MiB + 3)
        with open(os.path.join(volume.mounts[1], "f"), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fd = os.open(os.path.join(volume.mounts[0], "f"), os.O_RDONLY)
        self.addCleanup(os.close, fd)
        self.assertEqual(dataSize(fd), len(data))
        with open(os.path.join(volume.mounts[2], "f"), "rb") as f:
            self.assertEqual(f.read(), data)

    def test_remount(self) -> None:
        """
        A mount made again (the way out of a hung client, used by
        bench/chaos.py) ends the old client process, lets go of the locks
        taken through it, and sees the volume as before; teardown still
        leaves nothing mounted.
        """
        volume = startGluster(self, count=2)
        with open(os.path.join(volume.mounts[0], "f"), "wb") as f:
            f.write(b"kept")
        old = volume._mountProcesses[1][1]
        locks = RegionLocks(os.path.join(volume.mounts[1], "lock"))
        held = locks.tryLock("p-upload")
        assert held is not None
        other = RegionLocks(os.path.join(volume.mounts[0], "lock"))
        self.assertIsNone(other.tryLock("p-upload"))
        volume.remount(1)
        self.assertIsNotNone(old.poll())
        self.assertTrue(os.path.ismount(volume.mounts[1]))
        with open(os.path.join(volume.mounts[1], "f"), "rb") as f:
            self.assertEqual(f.read(), b"kept")
        again = None
        deadline = time.monotonic() + BOUND
        while again is None and time.monotonic() < deadline:
            again = other.tryLock("p-upload")
            if again is None:
                time.sleep(0.2)
        self.assertIsNotNone(again)
        assert again is not None
        again.release()
        other.close()
        for closing in (held.release, locks.close):
            try:
                closing()
            except OSError:
                pass  # their mount's client is gone
        volume.stop()
        for point in volume.mounts:
            self.assertFalse(os.path.ismount(point), point)

    def test_teardown(self) -> None:
        """Stopping the volume unmounts every mount point and stops glusterd and the bricks."""
        volume = startGluster(self, count=2)
        glusterd = volume._glusterd
        assert glusterd is not None
        self.assertEqual(len(volume._brickCommands()), 2)
        volume.stop()
        for point in volume.mounts:
            self.assertFalse(os.path.ismount(point), point)
        self.assertIsNotNone(glusterd.poll())
        self.assertEqual(volume._brickCommands(), {})
        self.assertFalse(os.path.exists(volume.socketPath))


class GlusterClusterTests(SynchronousTestCase):
    """
    Uploads, offset queries, takeover, crashes, completion and expiry across
    three servers on one GlusterFS volume.
    """

    def setUp(self) -> None:
        self.volume = startGluster(self, count=3)

    # -- the cluster ---------------------------------------------------------

    def startCluster(self, *extraArgs: str) -> list[ServerProcess]:
        """
        Start one server per mount (C{<mount>/root}) and nginx in front;
        all are stopped (by PID) before the volume is torn down.
        """
        self.servers = []
        for mount in self.volume.mounts:
            server = ServerProcess(os.path.join(mount, "root"), *extraArgs)
            self.addCleanup(server.stop)
            server.start()
            self.servers.append(server)
        self.nginxPort = freePort()
        self._startNginx([s.port for s in self.servers])
        return self.servers

    def _startNginx(self, ports: Sequence[int]) -> None:
        nginx = requireTool("nginx")
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        conf, errorLog = writeNginxConf(tmp, self.nginxPort, ports)

        def errors() -> str:
            try:
                with open(errorLog) as f:
                    return f.read()[-4000:]
            except OSError as e:
                return str(e)

        startProgram(self, [nginx, "-p", tmp, "-c", conf, "-e", errorLog], self.nginxPort, errors)

    # -- requests ------------------------------------------------------------

    def send(
        self, port: int, method: str, path: str,
        headers: Sequence[tuple[str, str]] = (), body: bytes = b"",
    ) -> rawhttp.Answer:
        fields = list(headers)
        if body or method in ("PUT", "PATCH", "POST"):
            fields.append(("Content-Length", str(len(body))))
        return rawhttp.exchange(port, method, path, fields, body, timeout=BOUND)[1]

    def piece(self, port: int, path: str, data: bytes, start: int, end: int) -> rawhttp.Answer:
        """PUT bytes C{start..end-1} of C{data} at C{path}."""
        return self.send(
            port, "PUT", path,
            [("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")], data[start:end],
        )

    def assertStoredEverywhere(self, relpath: str, data: bytes) -> None:
        """
        Every server answers HEAD with the complete size, and the file read
        through every mount is C{data}.
        """
        for server in self.servers:
            head = self.send(server.port, "HEAD", "/" + relpath)
            self.assertEqual(
                (head.status, head.header("upload-complete"), head.header("content-length")),
                (200, "?1", str(len(data))), (server.port, head.raw, server.logTail()),
            )
            with open(os.path.join(server.root, relpath), "rb") as f:
                self.assertEqual(digest(f.read()), digest(data), server.root)

    # -- tests ---------------------------------------------------------------

    def test_resumedAcrossServersThroughNginx(self) -> None:
        """
        An upload sent in pieces through nginx, each piece after a HEAD that
        tells where to go on, lands on all three servers in turn and is
        stored byte-identical, visible through every mount.
        """
        self.startCluster()
        data = patternBytes(12, 0, 6 * MiB + 123)
        step = MiB + 7
        upstreams = set()
        offset = 0
        rounds = 0
        while rounds < 20:
            rounds += 1
            head = self.send(self.nginxPort, "HEAD", "/r/big.bin")
            upstreams.add(head.header("x-upstream"))
            if offset:
                self.assertEqual((head.status, head.header("upload-offset")), (204, str(offset)), head.raw)
            else:
                self.assertEqual(head.status, 404, head.raw)
            end = min(offset + step, len(data))
            answer = self.piece(self.nginxPort, "/r/big.bin", data, offset, end)
            upstreams.add(answer.header("x-upstream"))
            if end == len(data):
                self.assertEqual(answer.status, 201, answer.raw)
                self.assertEqual(json.loads(answer.body)["sha256"], digest(data))
                break
            self.assertEqual((answer.status, answer.header("upload-offset")), (204, str(end)), answer.raw)
            offset = end
        self.assertEqual(upstreams, {f"127.0.0.1:{s.port}" for s in self.servers})
        self.assertStoredEverywhere("r/big.bin", data)

    def test_offsetRightAfterWrite(self) -> None:
        """
        Right after one server stored a piece, the next server's offset
        query answers the true offset, every time (never the size its
        mount saw earlier), and the next piece sent there appends.
        """
        servers = self.startCluster()
        pieces = 9
        data = patternBytes(13, 0, pieces * MiB)
        for i in range(pieces):
            writer, reader = servers[i % 3], servers[(i + 1) % 3]
            answer = self.piece(writer.port, "/o/f.bin", data, i * MiB, (i + 1) * MiB)
            self.assertEqual(answer.status, 201 if i == pieces - 1 else 204, answer.raw)
            if i == pieces - 1:
                # Hashed by a server that saw two thirds of the bytes
                # written by others: it read them back through its mount.
                self.assertEqual(json.loads(answer.body)["sha256"], digest(data))
                break
            head = self.send(reader.port, "HEAD", "/o/f.bin")
            self.assertEqual(
                (head.status, head.header("upload-offset")), (204, str((i + 1) * MiB)),
                (i, head.raw, reader.logTail()),
            )
        self.assertStoredEverywhere("o/f.bin", data)

    def test_takeoverAcrossServers(self) -> None:
        """
        A request stalled on one server is taken over by a resume on another
        within 5 s (section 5), and the file is byte-identical everywhere.
        """
        servers = self.startCluster()
        _, _, data = takeOver(self, servers[0].port, servers[1].port, "/t/taken.bin", 5.0)
        self.assertStoredEverywhere("t/taken.bin", data)

    def test_serverKilledMidUpload(self) -> None:
        """
        A server C{kill -9}'d while it receives an upload loses nothing
        another server reports: the offset HEAD answers through nginx is
        where the client goes on, and the upload finishes through the
        others byte-identical.
        """
        servers = self.startCluster()
        size = 8 * MiB
        data = patternBytes(14, 0, size)
        victim = servers[0]
        sock = rawhttp.connect(victim.port)
        self.addCleanup(sock.close)
        sock.sendall(rawhttp.requestHead("PUT", "/k/crash.bin", [("Content-Length", str(size))]))
        sock.sendall(data[: 3 * MiB])
        deadline = time.monotonic() + BOUND
        offset = 0
        while offset < 3 * MiB and time.monotonic() < deadline:
            head = self.send(servers[1].port, "HEAD", "/k/crash.bin")
            offset = int(head.header("upload-offset") or 0)
            time.sleep(0.05)
        self.assertEqual(offset, 3 * MiB)
        victim.kill9()
        sock.close()
        # The client asks nginx where to go on; the dead server is skipped.
        head = self.send(self.nginxPort, "HEAD", "/k/crash.bin")
        self.assertEqual(head.status, 204, head.raw)
        offset = int(head.header("upload-offset") or -1)
        self.assertGreaterEqual(offset, 3 * MiB)
        self.assertLessEqual(offset, size)
        answer = self.piece(servers[2].port, "/k/crash.bin", data, offset, size)
        self.assertEqual(answer.status, 201, answer.raw)
        self.servers = servers[1:]
        self.assertStoredEverywhere("k/crash.bin", data)

    def test_completedOnOneVisibleOnAll(self) -> None:
        """
        An upload begun on one server and queried on all, completed on
        another, is at once complete on every server (200, its size; never
        500 nor 204 "incomplete"), and a new upload at the same path is
        refused there as a complete file is (409), leaving it as it was.
        """
        servers = self.startCluster()
        data = patternBytes(15, 0, 3 * MiB)
        for n in range(3):
            path = f"/c/{n}.bin"
            first, last = servers[n % 3], servers[(n + 1) % 3]
            answer = self.piece(first.port, path, data, 0, MiB)
            self.assertEqual(answer.status, 204, answer.raw)
            for server in servers:  # every mount has looked at the staged files
                head = self.send(server.port, "HEAD", path)
                self.assertEqual((head.status, head.header("upload-offset")), (204, str(MiB)))
            answer = self.piece(last.port, path, data, MiB, len(data))
            self.assertEqual(answer.status, 201, answer.raw)
            self.assertStoredEverywhere(path[1:], data)
            for server in servers:
                again = self.send(server.port, "PUT", path, [], b"another file")
                self.assertEqual(again.status, 409, (server.port, again.raw))
            self.assertStoredEverywhere(path[1:], data)

    def test_expiryRunsOnce(self) -> None:
        """
        Abandoned uploads spread over three servers with a short
        --expire-after leave the shared staging area, each expired by
        exactly one server.
        """
        servers = self.startCluster("--expire-after", "2s")
        count = 12
        for n in range(count):
            answer = self.piece(
                servers[n % 3].port, f"/e/{n}.bin", patternBytes(n, 0, 1000), 0, 100
            )
            self.assertEqual(answer.status, 204, answer.raw)
        staging = os.path.join(servers[0].root, ".uploadsvc", "uploads")

        def staged() -> list[str]:
            return [n for _, _, names in os.walk(staging) for n in names if not n.startswith(".")]

        deadline = time.monotonic() + BOUND
        while staged() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertEqual(staged(), [])
        expired = [k for s in servers for k in EXPIRED_LINE.findall(s.logText())]
        self.assertEqual((len(expired), len(set(expired))), (count, count), expired)
        for n in (0, count - 1):
            head = self.send(servers[(n + 1) % 3].port, "HEAD", f"/e/{n}.bin")
            self.assertEqual(head.status, 404, head.raw)

    def test_tusAcrossServers(self) -> None:
        """
        A tus upload created on one server, patched on the next, queried on
        the third and finished on the first is stored byte-identical.
        """
        servers = self.startCluster()
        data = patternBytes(16, 0, 3 * MiB + 5)
        name = base64.b64encode(b"tus.bin").decode()
        created = self.send(
            servers[0].port, "POST", "/.tus/",
            [TUS, ("Upload-Length", str(len(data))), ("Upload-Metadata", "filename " + name)],
        )
        self.assertEqual(created.status, 201, created.raw)
        url = created.header("location") or ""
        offset = 0
        for i, server in enumerate([servers[1], servers[2], servers[0], servers[1]]):
            head = self.send(server.port, "HEAD", url, [TUS])
            self.assertEqual((head.status, head.header("upload-offset")), (200, str(offset)), head.raw)
            end = min(offset + MiB, len(data))
            patch = self.send(
                servers[(i + 2) % 3].port, "PATCH", url,
                [TUS, STREAM, ("Upload-Offset", str(offset))], data[offset:end],
            )
            self.assertEqual((patch.status, patch.header("upload-offset")), (204, str(end)), patch.raw)
            offset = end
        self.assertEqual(offset, len(data))
        self.assertStoredEverywhere("tus.bin", data)

    def test_draftAcrossServers(self) -> None:
        """
        A draft upload (POST /.uploads/ with ?0) created on one server,
        appended on the others after each one's HEAD, is completed
        byte-identical.
        """
        servers = self.startCluster()
        data = patternBytes(17, 0, 3 * MiB + 9)
        created = self.send(
            servers[0].port, "POST", "/.uploads/",
            [DRAFT, ("Upload-Complete", "?0"), ("Upload-Length", str(len(data))),
             ("Content-Disposition", 'inline; filename="draft.bin"')], data[:MiB],
        )
        self.assertEqual((created.status, created.header("upload-offset")), (201, str(MiB)), created.raw)
        url = created.header("location") or ""
        offset = MiB
        i = 0
        while offset < len(data) and i < 10:
            i += 1
            head = self.send(servers[i % 3].port, "HEAD", url, [DRAFT])
            self.assertEqual(head.header("upload-offset"), str(offset), head.raw)
            end = min(offset + MiB, len(data))
            last = end == len(data)
            patch = self.send(
                servers[(i + 1) % 3].port, "PATCH", url,
                [DRAFT, PARTIAL, ("Upload-Offset", str(offset)),
                 ("Upload-Complete", "?1" if last else "?0")], data[offset:end],
            )
            self.assertEqual(patch.status, 201 if last else 204, patch.raw)
            offset = end
        self.assertStoredEverywhere("draft.bin", data)
