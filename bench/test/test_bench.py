"""
Tests for the load generator, the verifier, the /proc readers and the server
launchers of L{bench}.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench import procfs, servers
from bench.loadgen import Load, Pacing, ResponseParser, Upload, runLoad
from bench.scenarios import median, percentile
from bench.source import Verifier, ensureSource


class ResponseParserTests(SynchronousTestCase):
    """
    L{ResponseParser} reads a response as far as status, length and body.
    """

    def test_contentLengthAcrossFeeds(self) -> None:
        """
        A body delimited by Content-Length completes only when its last byte
        arrives, however the bytes are split.
        """
        parser = ResponseParser()
        parser.feed(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nab")
        self.assertEqual((parser.status, parser.done), (201, False))
        parser.feed(b"cde")
        self.assertEqual((parser.done, bytes(parser.body), parser.keepAlive),
                         (True, b"abcde", True))

    def test_chunkedWithTrailer(self) -> None:
        """
        A chunked body is joined, and trailers after the last chunk are
        skipped.
        """
        parser = ResponseParser()
        parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        self.assertFalse(parser.done)
        parser.feed(b"2;x=y\r\nde\r\n0\r\nX-T: 1\r\n\r\n")
        self.assertEqual((parser.done, bytes(parser.body)), (True, b"abcde"))

    def test_interimSkipped(self) -> None:
        """
        A 100 Continue before the final response is skipped.
        """
        parser = ResponseParser()
        parser.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual((parser.status, parser.done), (204, True))

    def test_untilClose(self) -> None:
        """
        A response with no length ends at EOF and leaves the connection
        unusable.
        """
        parser = ResponseParser()
        parser.feed(b"HTTP/1.1 201 Created\r\n\r\nhello")
        self.assertFalse(parser.done)
        parser.eof()
        self.assertEqual((parser.done, bytes(parser.body), parser.keepAlive),
                         (True, b"hello", False))

    def test_connectionClose(self) -> None:
        """
        C{Connection: close} and HTTP/1.0 both end keep-alive.
        """
        for head in (b"HTTP/1.1 201 Created\r\nConnection: close\r\n",
                     b"HTTP/1.0 201 Created\r\n"):
            parser = ResponseParser()
            parser.feed(head + b"Content-Length: 0\r\n\r\n")
            self.assertEqual((parser.done, parser.keepAlive), (True, False))

    def test_malformed(self) -> None:
        """
        A status line that is not HTTP/1.x, or an EOF before the end of the
        body, is an error.
        """
        self.assertRaises(ValueError, ResponseParser().feed, b"SSH-2.0-x\r\n\r\n")
        parser = ResponseParser()
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab")
        self.assertRaises(ValueError, parser.eof)


class PacingTests(SynchronousTestCase):
    """
    L{Pacing} allows C{initial} bytes, then C{rate} per second in steps.
    """

    def test_schedule(self) -> None:
        """
        A paced client may send its initial bytes at once, then one step per
        interval, never beyond the body size.
        """
        pacing = Pacing(initial=100, rate=10.0, quantum=5)
        self.assertEqual(pacing.interval, 0.5)
        self.assertEqual(pacing.first(7.0, 1000), (100, 7.5))
        self.assertEqual(pacing.first(7.0, 50), (50, 7.5))
        self.assertEqual(pacing.step(100, 7.5, 7.4, 1000), (100, 7.5))
        self.assertEqual(pacing.step(100, 7.5, 7.5, 1000), (105, 8.0))
        self.assertEqual(pacing.step(1000, 7.5, 9.0, 1000), (1000, 7.5))
        self.assertEqual(pacing.step(998, 7.5, 7.6, 1000), (1000, 8.0))

    def test_lateClientDoesNotCatchUp(self) -> None:
        """
        A step taken late by less than an interval keeps the schedule; one
        taken later than that restarts it from now, so stalled time is lost.
        """
        pacing = Pacing(initial=0, rate=10.0, quantum=5)
        self.assertEqual(pacing.step(0, 1.0, 1.3, 100), (5, 1.5))
        self.assertEqual(pacing.step(0, 1.0, 4.0, 100), (5, 4.5))


class StatisticsTests(SynchronousTestCase):
    """
    Nearest-rank percentiles and medians.
    """

    def test_percentile(self) -> None:
        """
        p50 and p99 of 1..100 are 50 and 99; an empty list gives NaN.
        """
        values = list(range(100, 0, -1))
        self.assertEqual((percentile(values, 50), percentile(values, 99)), (50, 99))
        self.assertNotEqual(percentile([], 50), percentile([], 50))

    def test_median(self) -> None:
        """
        The median ignores NaN and averages the middle pair.
        """
        self.assertEqual(median([4.0, float("nan"), 1.0, 3.0, 2.0]), 2.5)


class VerifierTests(SynchronousTestCase):
    """
    L{Verifier} compares stored files with source regions.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.source = self.folder / "source.bin"
        ensureSource(self.source, 1 << 16)
        self.verifier = Verifier(self.source)
        self.addCleanup(self.verifier.close)

    def test_equalAndDifferent(self) -> None:
        """
        A copy of the region passes; one changed byte, a short file or a
        missing file is reported.
        """
        region = self.source.read_bytes()[1000:3000]
        stored = self.folder / "stored"
        stored.write_bytes(region)
        self.assertIsNone(self.verifier.check(stored, 1000, 2000))
        stored.write_bytes(region[:-1] + bytes([region[-1] ^ 1]))
        self.assertEqual(self.verifier.check(stored, 1000, 2000), "content differs")
        stored.write_bytes(region[:-1])
        self.assertIn("size", self.verifier.check(stored, 1000, 2000) or "")
        self.assertIn("missing", self.verifier.check(self.folder / "nope", 0, 1) or "")


class ProcfsTests(SynchronousTestCase):
    """
    The /proc readers see a process and its descendants.
    """

    def test_tree(self) -> None:
        """
        A child process is part of our tree, and the tree has CPU time and
        RSS.
        """
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(30)"],
            stdout=subprocess.PIPE,
        )
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        assert child.stdout is not None
        self.addCleanup(child.stdout.close)
        # Wait until the child is done starting, so its RSS stays put.
        self.assertEqual(child.stdout.readline(), b"ready\n")
        self.assertIn(child.pid, procfs.processTree(os.getpid()))
        self.assertGreater(procfs.treeRss(os.getpid()), procfs.treeRss(child.pid))
        self.assertGreater(procfs.cpuSeconds(os.getpid()), 0)
        self.assertGreaterEqual(procfs.treeHighWaterMark(child.pid), procfs.treeRss(child.pid))
        self.assertIsNotNone(procfs.startTime(child.pid))


class EndToEndTests(SynchronousTestCase):
    """
    The load generator against real servers on loopback.
    """

    def setUp(self) -> None:
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir(parents=True)
        self.source = self.work / "source.bin"
        ensureSource(self.source, 4 << 20)
        self.fd = os.open(self.source, os.O_RDONLY)
        self.addCleanup(os.close, self.fd)
        self.verifier = Verifier(self.source)
        self.addCleanup(self.verifier.close)

    def _roundTrip(self, spec: servers.ServerSpec) -> None:
        root = self.work / "root"
        server = servers.start(spec, root, self.work / "run")
        self.addCleanup(server.stop)
        uploads = [
            Upload(f"/a/{i}.bin", i * 4096, 100_000 + i, group="fast") for i in range(20)
        ] + [
            Upload(f"/b/c/{i}.bin", 7 * i, 3000, group="paced",
                   pacing=Pacing(1024, 20000.0, 512))
            for i in range(5)
        ]
        result = runLoad(Load(uploads, 4, True, timeLimit=30), "127.0.0.1",
                         server.port, self.fd, sampler=lambda: procfs.treeRss(server.pid))
        self.assertEqual([o.error for o in result.outcomes if not o.ok], [])
        self.assertEqual(len(result.outcomes), 25)
        self.assertTrue(result.samples)
        for outcome in result.outcomes:
            upload = outcome.upload
            self.assertIsNone(self.verifier.check(
                root / upload.path.lstrip("/"), upload.offset, upload.size))
        paced = [o for o in result.outcomes if o.upload.group == "paced"]
        # 1024 bytes at once, then 512 every 25.6 ms up to 3000: 4 steps.
        self.assertTrue(all(o.latency >= 0.1 for o in paced))
        self.assertTrue(all(o.latency < 5 for o in paced))
        # The last byte went with the pacing's last step (the fourth, at
        # 102.4 ms), before the answer; on a reused connection, each
        # upload's own.
        for outcome in result.outcomes:
            self.assertLessEqual(outcome.start, outcome.sentAll)
            self.assertLessEqual(outcome.sentAll, outcome.end)
        self.assertTrue(all(o.sentAll - o.start >= 0.1 for o in paced))

    def test_aiohttp(self) -> None:
        """
        Uploads to the aiohttp baseline, several per keep-alive connection,
        are stored byte for byte.
        """
        self._roundTrip(servers.BUILTIN["aiohttp"])

    def test_nginx(self) -> None:
        """
        Uploads to nginx's WebDAV PUT are stored byte for byte.
        """
        if shutil.which("nginx") is None:
            raise self.skipTest("nginx is not installed")
        self._roundTrip(servers.BUILTIN["nginx"])

    def test_timeLimit(self) -> None:
        """
        Uploads still unfinished at the time limit fail with a reason.
        """
        server = servers.start(servers.BUILTIN["aiohttp"], self.work / "root", self.work / "r")
        self.addCleanup(server.stop)
        slow = Upload("/slow.bin", 0, 10_000, pacing=Pacing(0, 1000.0, 1000))
        result = runLoad(Load([slow, slow], 1, False, timeLimit=0.5), "127.0.0.1",
                         server.port, self.fd)
        self.assertEqual([o.error for o in result.outcomes], ["time limit"] * 2)
        self.assertTrue(all(math.isnan(o.sentAll) for o in result.outcomes))

    def test_refusedOption(self) -> None:
        """
        A server that cannot do what a scenario needs (nginx has no S6
        throttle) or exits at start (twistd refusing an option) is reported,
        not waited for.
        """
        self.assertRaises(servers.ServerFailed, servers.start,
                          servers.BUILTIN["nginx"], self.work / "root", self.work / "n",
                          slowDiskRate=1e6)
        broken = servers.ServerSpec("uploadsvc-broken", "uploadsvc", ("--no-such-option",))
        error = self.assertRaises(
            servers.ServerFailed, servers.start, broken, self.work / "root",
            self.work / "x")
        self.assertIn("exited", str(error))


class VariantTests(SynchronousTestCase):
    """
    L{servers.parseVariant} names extra uploadsvc servers.
    """

    def test_parse(self) -> None:
        """
        C{NAME=ARGS} gives an uploadsvc server with those arguments, durable
        unless they hold C{--no-fsync}.
        """
        spec = servers.parseVariant("uploadsvc-w2=--no-fsync --workers 2")
        self.assertEqual((spec.name, spec.kind, spec.args, spec.durable),
                         ("uploadsvc-w2", "uploadsvc", ("--no-fsync", "--workers", "2"), False))
        self.assertTrue(servers.parseVariant("uploadsvc-d=--workers 2").durable)
        self.assertRaises(ValueError, servers.parseVariant, "aiohttp=--x")
        self.assertRaises(ValueError, servers.parseVariant, "uploadsvc=--x")
