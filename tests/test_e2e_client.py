"""
End-to-end tests of the resuming client against a real C{twistd uploadsvc},
through the fault proxy: a flaky link (cuts every 256 KiB-4 MiB and some
stalls) for 16 files of 32 MiB and for one file of 512 MiB, a stalled
request taken over by the next attempt, and the command-line script.

The fault seed can be changed for a replay with C{UPLOADSVC_FAULT_SEED}.
The figures of each flaky-link run (resumes, bytes, time) go to the trial
log (C{_trial_temp/test.log}).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from uploadsvc.client.backoff import RetryPolicy
from uploadsvc.client.http import makeHTTPClient
from uploadsvc.client.producer import FileRangeProducer
from uploadsvc.client.jobs import UploadJob, UploadResult
from uploadsvc.client.uploader import Uploader
from uploadsvc.testing.faultproxy import FaultPlan, FaultProxy
from tests.support.polling import waitUntil
from tests.support.server import startServer
from tests.support.programs import runUploadCLI

MiB = 1024 * 1024
SEED = int(os.environ.get("UPLOADSVC_FAULT_SEED", "11"))
FLAKY = FaultPlan(cutAfter=(256 * 1024, 4 * MiB), cut=9, stall=1)

log = Logger()


def writeRandomFile(path: str, size: int, seed: int) -> None:
    """
    Write C{size} pseudo-random bytes (a multiple of 1 MiB) to C{path}.
    """
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(rng.randbytes(MiB))


def sha256File(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


class ClientE2EMixin(_Base):
    """
    A server, a fault proxy in front of it, and an uploader going through
    the proxy.
    """

    def setUpServer(self, *serverArgs: str) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.base, "src"))
        # The data is large: do not leave it in _trial_temp.
        self.addCleanup(shutil.rmtree, self.base, True)
        self.server = startServer(self, os.path.join(self.base, "root"), *serverArgs)

    def startProxy(self, plan: FaultPlan) -> FaultProxy:
        proxy = FaultProxy(reactor, ("127.0.0.1", self.server.port), plan, seed=SEED)
        proxy.listen()
        self.addCleanup(proxy.stop)
        return proxy

    def uploader(self, parallel: int = 4, stallTimeout: float = 2.0) -> Uploader:
        connection = makeHTTPClient(reactor, maxPerHost=parallel)
        self.addCleanup(connection.close)
        cooperator = Cooperator(scheduler=lambda f: reactor.callLater(0, f))
        self.addCleanup(cooperator.stop)
        return Uploader(
            connection.http,
            reactor,
            cooperator,
            retry=RetryPolicy(initialDelay=0.1, maxDelay=2.0, maxAttempts=10),
            stallTimeout=stallTimeout,
            rng=random.Random(SEED),
        )

    def makeFiles(self, count: int, size: int) -> list[str]:
        paths = []
        for i in range(count):
            path = os.path.join(self.base, "src", f"f{i:02d}.bin")
            writeRandomFile(path, size, SEED * 1000 + i)
            paths.append(path)
        return paths

    def assertAllThere(self, results: list[UploadResult], paths: list[str], folder: str) -> None:
        """
        Every upload succeeded, the stored files are byte-identical to the
        sources, and no upload started over from zero.
        """
        self.assertEqual([(r.ok, r.error) for r in results], [(True, None)] * len(paths))
        for result, path in zip(results, paths):
            stored = os.path.join(self.server.root, folder, os.path.basename(path))
            self.assertEqual(sha256File(stored), sha256File(path), path)
            self.assertEqual(result.sha256, sha256File(path))
            offsets = result.startOffsets
            self.assertEqual(offsets[0], 0)
            self.assertNotIn(0, offsets[1:], f"{path} restarted from zero: {offsets}")
            self.assertEqual(list(offsets), sorted(offsets), f"{path} went back: {offsets}")

    def report(self, name: str, results: list[UploadResult], proxy: FaultProxy, elapsed: float) -> dict[str, Any]:
        payload = sum(r.size for r in results)
        figures = {
            "files": len(results),
            "payload": payload,
            "resumes": sum(r.resumes for r in results),
            "requests": sum(r.requests for r in results),
            "cuts": proxy.stats.cuts,
            "stalls": proxy.stats.stalls,
            "connections": proxy.stats.connections,
            "wire/payload": round(proxy.stats.bytesFromClient / payload, 4),
            "forwarded/payload": round(proxy.stats.bytesToServer / payload, 4),
            "clientWritten/payload": round(sum(r.bytesSent for r in results) / payload, 4),
            "seconds": round(elapsed, 1),
            "seed": SEED,
        }
        log.info("flaky-link figures {name}: {figures}", name=name, figures=figures)
        return figures


class FlakyLinkTests(ClientE2EMixin, TestCase):
    """
    Whole uploads over a link that keeps failing.
    """

    timeout = 900

    async def flakyRun(self, name: str, count: int, size: int) -> None:
        self.setUpServer()
        paths = self.makeFiles(count, size)
        proxy = self.startProxy(FLAKY)
        uploader = self.uploader()
        jobs = [UploadJob(p, proxy.url(f"/{name}/{os.path.basename(p)}")) for p in paths]
        started = time.monotonic()
        results = await uploader.uploadMany(jobs, parallel=4)
        figures = self.report(name, results, proxy, time.monotonic() - started)
        self.assertAllThere(results, paths, name)
        # The link really was bad, in both ways...
        self.assertGreater(proxy.stats.cuts, count)
        self.assertGreater(proxy.stats.stalls, 0)
        self.assertGreater(figures["resumes"], count)
        # ...and yet little was sent twice over it.
        self.assertLessEqual(proxy.stats.bytesFromClient, 1.2 * figures["payload"])

    async def test_sixteenFiles(self) -> None:
        """
        16 files of 32 MiB over a link cut every 256 KiB-4 MiB, with some
        stalls, all arrive byte-identical, none restarted from zero, with at
        most 1.2 times the payload sent over the link.
        """
        await self.flakyRun("sixteen", 16, 32 * MiB)

    async def test_oneLargeFile(self) -> None:
        """
        One file of 512 MiB over the same link arrives byte-identical, never
        restarted, with at most 1.2 times its size sent.
        """
        await self.flakyRun("large", 1, 512 * MiB)


class TakeoverTests(ClientE2EMixin, TestCase):
    """
    docs/protocol.md section 5 seen from the client.
    """

    timeout = 120

    async def test_stalledRequestTakenOver(self) -> None:
        """
        When a request stalls on a half-dead link, the client's next attempt
        resumes at what the server kept and is served (the server ends the
        stalled request), long before the server's idle timeout would have
        freed it.
        """
        self.setUpServer("--no-fsync", "--idle-timeout", "600")
        (path,) = self.makeFiles(1, 8 * MiB)
        proxy = self.startProxy(FaultPlan(cutAfter=(MiB, MiB), cut=0, stall=1))
        uploader = self.uploader(stallTimeout=2.0)
        pending = uploader.upload(UploadJob(path, proxy.url("/takeover/f00.bin")))
        await waitUntil(lambda: proxy.stats.connections >= 1, "the first connection")
        proxy.setPlan(FaultPlan())
        result = await pending
        self.assertAllThere([result], [path], "takeover")
        self.assertEqual(proxy.stats.stalls, 1)
        self.assertEqual(result.resumes, 1)
        resumedAt = result.startOffsets[1]
        # What the stalled request had delivered (its threshold less the
        # HEAD and the request head) was kept and not sent again.
        self.assertGreater(resumedAt, MiB - 4096)
        self.assertLessEqual(resumedAt, MiB)
        # The server let go of the stalled connection itself.
        await waitUntil(lambda: proxy.connections[0].serverLost.called, "the server closed it")


class ServerIdleTimeoutTests(ClientE2EMixin, TestCase):
    """
    The server's side of stall detection (issue 3, item 5), against a real
    stall.
    """

    timeout = 120

    async def test_idleTimeoutKeepsWhatArrived(self) -> None:
        """
        A request whose link goes dead is disconnected by the server's idle
        timeout, every byte that arrived is kept, and the client resumes
        from there.
        """
        self.setUpServer("--no-fsync", "--idle-timeout", "2")
        (path,) = self.makeFiles(1, 8 * MiB)
        size = 8 * MiB
        proxy = self.startProxy(FaultPlan(cutAfter=(MiB, MiB), cut=0, stall=1))
        connection = makeHTTPClient(reactor)
        self.addCleanup(connection.close)
        cooperator = Cooperator(scheduler=lambda f: reactor.callLater(0, f))
        self.addCleanup(cooperator.stop)
        source = open(path, "rb")
        self.addCleanup(source.close)
        body = FileRangeProducer(source, 0, size, cooperator)
        stalled = connection.http.request(
            "PUT",
            proxy.url("/idle/f00.bin"),
            headers={"Content-Range": f"bytes 0-{size - 1}/{size}"},
            data=body,
            reactor=reactor,
        )
        stalled.addErrback(lambda f: None)
        # Only the server can end this: the proxy never closes a stalled link.
        await waitUntil(
            lambda: bool(proxy.connections) and proxy.connections[0].serverLost.called,
            "the server timed it out",
        )
        self.assertEqual(proxy.stats.stalls, 1)
        stalled.cancel()
        # What arrived is kept: the upload resumes from it, straight to the
        # server this time.
        result = await self.uploader().upload(UploadJob(path, self.server.url("/idle/f00.bin")))
        self.assertEqual((result.ok, result.error), (True, None))
        kept = result.startOffsets[0]
        self.assertGreater(kept, MiB - 4096)
        self.assertLessEqual(kept, MiB)
        self.assertEqual(result.bytesSent, size - kept)
        stored = os.path.join(self.server.root, "idle", "f00.bin")
        self.assertEqual(sha256File(stored), sha256File(path))


class CommandLineTests(ClientE2EMixin, TestCase):
    """
    The C{uploadsvc-upload} script, run as a process.
    """

    timeout = 120

    async def runCLI(self, *args: str, env: dict[str, str] | None = None) -> tuple[str, str, int]:
        return await runUploadCLI(self.base, *args, env=env)

    async def test_directoryTree(self) -> None:
        """
        A directory and a file go to URL + their names with the tree kept;
        the script exits 0 and its summary says so, and lists the skipped
        dot-file.
        """
        self.setUpServer("--no-fsync")
        tree = os.path.join(self.base, "photos")
        os.makedirs(os.path.join(tree, "2026", "may"))
        writeRandomFile(os.path.join(tree, "2026", "may", "a.jpg"), MiB, 1)
        writeRandomFile(os.path.join(tree, "b é.jpg"), 2 * MiB, 2)
        with open(os.path.join(tree, ".DS_Store"), "wb") as f:
            f.write(b"x")
        single = os.path.join(self.base, "notes.txt")
        with open(single, "wb") as f:
            f.write(b"hello\n")
        out, err, code = await self.runCLI(
            "--quiet", "--chunk-size", "512K", tree, single, self.server.url("/in/"),
            env={"UPLOADSVC_TOKEN": "abc"},
        )
        self.assertEqual(code, 0, out + err)
        self.assertIn("3 of 3 files uploaded", out)
        self.assertIn(".DS_Store: names starting with a dot are reserved", out)
        root = self.server.root
        for rel, source in [
            ("in/photos/2026/may/a.jpg", os.path.join(tree, "2026", "may", "a.jpg")),
            ("in/photos/b é.jpg", os.path.join(tree, "b é.jpg")),
            ("in/notes.txt", single),
        ]:
            self.assertEqual(sha256File(os.path.join(root, rel)), sha256File(source), rel)

    async def test_failureExitStatus(self) -> None:
        """
        When a file cannot be stored (a different file is already there) the
        script exits 1 and names it; the other file still goes up.
        """
        self.setUpServer("--no-fsync")
        one = os.path.join(self.base, "one.bin")
        two = os.path.join(self.base, "two.bin")
        writeRandomFile(one, MiB, 1)
        writeRandomFile(two, MiB, 2)
        os.makedirs(os.path.join(self.server.root, "up"))
        writeRandomFile(os.path.join(self.server.root, "up", "one.bin"), MiB, 99)
        out, err, code = await self.runCLI("--quiet", one, two, self.server.url("/up/"))
        self.assertEqual(code, 1, out + err)
        self.assertIn("FAILED  one.bin: HTTP 409", out)
        self.assertIn("1 of 2 files uploaded", out)
        self.assertEqual(
            sha256File(os.path.join(self.server.root, "up", "two.bin")), sha256File(two)
        )

    async def test_usageError(self) -> None:
        """
        A directory with a URL that does not end with / is a usage error:
        exit status 2 and a message.
        """
        self.setUpServer("--no-fsync")
        out, err, code = await self.runCLI(self.base, self.server.url("/x"))
        self.assertEqual(code, 2)
        self.assertIn("need a URL that ends with /", err)
