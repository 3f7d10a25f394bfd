"""
Metrics and logs of a real C{twistd uploadsvc} on loopback: scrape
C{/metrics} on the admin listener after known uploads and check the values
(one process, and C{--workers 2} summed in one scrape), and JSON log lines
in twistd's C{--logfile}, rotated by C{SIGUSR1}.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import tempfile
import time
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import TestCase

from tests.support import rawhttp
from tests.support.rawhttp import exchange, patternBytes
from tests.support.server import TWISTD, ServerProcess, freePort, startServer
from tests.test_workers import children

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(port: int) -> Samples:
    """
    GET /metrics on the admin listener, parsed.
    """
    _, answer = exchange(port, "GET", "/metrics", timeout=20)
    assert answer.status == 200, answer.raw
    assert (answer.header("content-type") or "").startswith("text/plain; version=")
    return parse(answer.body.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def waitFor(check: Any, timeout: float = 15.0) -> Any:
    """
    Call C{check} every 50 ms until it returns something true (at most
    C{timeout} seconds); return its last result.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def put(port: int, path: str, data: bytes, *headers: tuple[str, str]) -> rawhttp.Answer:
    _, answer = exchange(
        port, "PUT", path, [("Content-Length", str(len(data))), *headers], data, timeout=30
    )
    return answer


class SingleProcessTests(TestCase):
    timeout = 120

    def test_valuesAfterKnownUploads(self) -> None:
        """
        After a whole upload, one in two pieces, a cancelled one and one
        taken over by a newer request, the scrape counts each of them:
        requests by method and status, bytes written, lifecycle events,
        latencies; the gauges fall back to zero once everything is done.
        """
        admin = freePort()
        base = os.path.abspath(self.mktemp())
        server = startServer(
            self, os.path.join(base, "root"), "--admin-listen",
            f"tcp:{admin}:interface=127.0.0.1", "--idle-timeout", "300",
        )
        port = server.port
        self.assertEqual(put(port, "/m/whole.bin", b"w" * 1000).status, 201)
        self.assertEqual(put(port, "/m/two.bin", b"a" * 100, ("Content-Range", "bytes 0-99/300")).status, 204)
        self.assertEqual(put(port, "/m/two.bin", b"b" * 200, ("Content-Range", "bytes 100-299/300")).status, 201)
        self.assertEqual(put(port, "/m/gone.bin", b"c" * 50, ("Content-Range", "bytes 0-49/500")).status, 204)
        _, answer = exchange(port, "DELETE", "/m/gone.bin", timeout=20)
        self.assertEqual(answer.status, 204)

        # An upload whose request stalls mid-body, then a newer one takes over.
        data = patternBytes(7, 0, 200_000)
        stalled = rawhttp.connect(port)
        self.addCleanup(stalled.close)
        stalled.sendall(rawhttp.requestHead("PUT", "/m/taken.bin", [("Content-Length", str(len(data)))]))
        stalled.sendall(data[:1000])

        def staged() -> bool:
            _, head = exchange(port, "HEAD", "/m/taken.bin", timeout=20)
            return head.status == 204 and int(head.header("upload-offset") or 0) == 1000

        self.assertTrue(waitFor(staged))
        self.assertEqual(put(port, "/m/taken.bin", data).status, 201)

        def settled() -> Samples:
            samples = scrape(admin)
            done = (
                value(samples, "uploadsvc_connections_open") == 0
                and value(samples, "uploadsvc_uploads_open") == 0
                and value(samples, "uploadsvc_requests_total", method="PUT", status="lost") == 1
            )
            return samples if done else {}

        rawhttp.ResponseReader(stalled).waitClosed(10)
        samples = waitFor(settled) or scrape(admin)
        events = {
            kind: value(samples, "uploadsvc_upload_events_total", event=kind)
            for kind in ("created", "resumed", "completed", "cancelled", "taken-over", "expired")
        }
        self.assertEqual(
            events,
            # created: whole, two, gone, taken (stalled), taken (plain PUT starts over)
            {"created": 5, "resumed": 1, "completed": 3, "cancelled": 1, "taken-over": 1,
             "expired": 0},
        )
        requests = {
            (s[1][0][1], s[1][1][1]): v for s, v in samples.items()
            if s[0] == "uploadsvc_requests_total"
        }
        # HEAD polls: as many as it took to see the stalled bytes (404 first, perhaps).
        heads = {k: requests.pop(k) for k in list(requests) if k[0] == "HEAD"}
        self.assertGreaterEqual(heads.get(("HEAD", "204"), 0), 1, heads)
        self.assertEqual(
            requests,
            {("DELETE", "204"): 1, ("PUT", "201"): 3, ("PUT", "204"): 2, ("PUT", "lost"): 1},
        )
        self.assertEqual(
            value(samples, "uploadsvc_upload_bytes_total"), 1000 + 300 + 50 + 1000 + len(data)
        )
        self.assertEqual(value(samples, "uploadsvc_completion_seconds_count"), 3)
        # Made durable without completing: the two first pieces and the stalled request.
        self.assertEqual(value(samples, "uploadsvc_fsync_seconds_count"), 3)
        self.assertEqual(value(samples, "uploadsvc_connections_open"), 0)
        self.assertEqual(value(samples, "uploadsvc_uploads_open"), 0)
        self.assertEqual(value(samples, "uploadsvc_disk_queue_depth"), 0)

    def test_adminNotOnPublicListener(self) -> None:
        """/metrics is not served on the public listener."""
        admin = freePort()
        base = os.path.abspath(self.mktemp())
        server = startServer(
            self, os.path.join(base, "root"), "--admin-listen", f"tcp:{admin}:interface=127.0.0.1"
        )
        _, answer = exchange(server.port, "GET", "/metrics", timeout=20)
        self.assertNotEqual(answer.status, 200)
        self.assertNotIn(b"uploadsvc_requests", answer.body)


class WorkersTests(TestCase):
    timeout = 180

    def test_oneScrapeSumsWorkers(self) -> None:
        """
        With --workers 2, one scrape of the supervisor's admin listener
        counts the uploads that both workers served (each worker's own
        count, read from its file, is part of the sum); a worker killed
        keeps its counts in the sum but its gauges are dropped, and its
        replacement adds to the same sums.
        """
        admin = freePort()
        base = os.path.abspath(self.mktemp())
        server = startServer(
            self, os.path.join(base, "root"), "--workers", "2", "--restart-delay", "0.1",
            "--admin-listen", f"tcp:{admin}:interface=127.0.0.1",
        )
        self.assertEqual(len(waitFor(lambda: len(children(server.pid)) == 2 and children(server.pid)) or []), 2)
        count = 40
        for i in range(count):  # a connection each: the kernel spreads them
            self.assertEqual(put(server.port, f"/w/{i}.bin", b"x" * (i + 1)).status, 201)
        total = count * (count + 1) // 2

        def counted(n: int) -> Any:
            s = scrape(admin)
            return s if value(s, "uploadsvc_upload_events_total", event="completed") == n else None

        samples = waitFor(lambda: counted(count))
        self.assertTrue(samples, "the scrape never counted every upload")
        self.assertEqual(value(samples, "uploadsvc_requests_total", method="PUT", status="201"), count)
        self.assertEqual(value(samples, "uploadsvc_upload_bytes_total"), total)

        # Each worker's own files: both served some, and they sum to the scrape.
        [folder] = glob.glob(os.path.join(server.tmpDir, "uploadsvc-metrics-*"))
        perWorker = {}
        for pid in children(server.pid):
            alone = tempfile.mkdtemp()
            self.addCleanup(shutil.rmtree, alone)
            for path in glob.glob(os.path.join(folder, f"*_{pid}.db")):
                shutil.copy(path, alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)
            perWorker[pid] = value(
                parse(generate_latest(registry).decode()), "uploadsvc_upload_events_total",
                event="completed",
            )
        self.assertEqual(sum(perWorker.values()), count, perWorker)
        self.assertTrue(all(perWorker.values()), perWorker)

        # A worker killed: its counts stay, its gauge files go.
        victim = children(server.pid)[0]
        self.assertTrue(glob.glob(os.path.join(folder, f"gauge_livesum_{victim}.db")))
        os.kill(victim, signal.SIGKILL)
        replaced = waitFor(
            lambda: len(children(server.pid)) == 2 and victim not in children(server.pid)
        )
        self.assertTrue(replaced)
        self.assertEqual(glob.glob(os.path.join(folder, f"gauge_livesum_{victim}.db")), [])
        for i in range(10):
            self.assertEqual(put(server.port, f"/w2/{i}.bin", b"y" * 10).status, 201)
        samples = waitFor(lambda: counted(count + 10))
        self.assertTrue(samples, "counts were lost with the killed worker")
        self.assertEqual(value(samples, "uploadsvc_upload_bytes_total"), total + 100)
        self.assertEqual(
            value(samples, "uploadsvc_requests_total", method="PUT", status="201"), count + 10
        )


class JsonLogTests(TestCase):
    timeout = 120

    def test_jsonLinesInLogfile(self) -> None:
        """
        twistd --logfile x uploadsvc --log-format json writes only JSON
        lines to x: an access line per request and a line per lifecycle
        event, sharing the request id sent back as X-Request-Id, with no
        token or signature anywhere; SIGUSR1 rotates x and the next lines
        go to the new x, JSON still.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        logPath = os.path.join(base, "uploadsvc.log")
        tokens = os.path.join(base, "tokens")
        token = "tok-0123456789abcdefSECRET"
        with open(tokens, "w") as f:
            f.write(token + "\n")

        def argv(s: ServerProcess) -> list[str]:
            return [
                *TWISTD, "-n", "--pidfile=", "--logfile", logPath, "uploadsvc",
                "--root", s.root, "--listen", s.listen, "--log-format", "json",
                "--auth-tokens", tokens,
            ]

        server = ServerProcess(os.path.join(base, "root"), command=argv)
        server.start()
        self.addCleanup(server.stop)
        auth = ("Authorization", f"Bearer {token}")
        answer = put(server.port, "/j/a.bin?sig=SIGSECRET&token=QSECRET", b"z" * 123, auth)
        self.assertEqual(answer.status, 201, answer.raw)
        requestId = answer.header("x-request-id")
        self.assertTrue(requestId)

        def lines(path: str) -> list[dict[str, Any]]:
            with open(path, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]

        def accessLines(path: str, where: str) -> list[dict[str, Any]]:
            return [r for r in lines(path) if r.get("type") == "access" and r["path"] == where]

        [access] = waitFor(lambda: accessLines(logPath, "/j/a.bin"))
        self.assertEqual(
            {k: access[k] for k in ("requestId", "method", "status", "bytes", "offsetBefore",
                                    "offsetAfter", "client", "credential")},
            {"requestId": requestId, "method": "PUT", "status": 201, "bytes": 123,
             "offsetBefore": 0, "offsetAfter": 123, "client": "127.0.0.1", "credential": None},
        )
        self.assertIsInstance(access["duration"], float)
        events = [
            (r["event"], r["path"], r["offset"]) for r in lines(logPath)
            if r.get("type") == "event" and r["requestId"] == requestId
        ]
        self.assertEqual(events, [("created", "j/a.bin", 123), ("completed", "j/a.bin", 123)])
        self.assertTrue([r for r in lines(logPath) if r.get("type") == "log"])
        with open(logPath, encoding="utf-8") as f:
            text = f.read()
        for secret in (token, "SIGSECRET", "QSECRET"):
            self.assertNotIn(secret, text)

        os.kill(server.pid, signal.SIGUSR1)
        self.assertTrue(waitFor(lambda: os.path.exists(logPath + ".1")))
        self.assertEqual(put(server.port, "/j/b.bin", b"q" * 7, auth).status, 201)
        [after] = waitFor(lambda: os.path.exists(logPath) and accessLines(logPath, "/j/b.bin"))
        self.assertEqual(after["bytes"], 7)
        self.assertEqual(accessLines(logPath + ".1", "/j/b.bin"), [])
