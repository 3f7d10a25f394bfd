"""
Tests for L{uploadsvc.ops.metrics}: values after a known sequence, the disk
queue, and what the admin listener serves.
"""

from __future__ import annotations

import json
import os
import re

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.ops.events import Events, UploadEvent
from uploadsvc.ops.metrics import AdminSite, MeteredRunner, Metrics, MetricsResource
from uploadsvc.testing.runners import ManualRunner


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Every sample of a Prometheus text exposition, by name and labels.
    """
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(site: AdminSite, path: bytes = b"/metrics", method: bytes = b"GET") -> bytes:
    """
    One request to the admin site over a StringTransport; the raw answer.
    """
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    return transport.value()


class MetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.metrics = Metrics()
        self.site = AdminSite(MetricsResource(self.metrics.registry), reactor=Clock())

    def values(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        raw = scrape(self.site)
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])
        self.assertIn(b"content-type: text/plain; version=", head.lower())
        return samples(body.decode())

    def test_knownSequence(self) -> None:
        """
        After two uploads (one resumed), a cancel, a takeover, an expiry,
        requests and hooks, every family has exactly the counts they make.
        """
        m = self.metrics
        events = Events()
        events.subscribe(m.eventHeard)
        for kind in ("created", "completed", "created", "resumed", "completed", "created",
                     "cancelled", "taken-over", "expired"):
            events.emit(UploadEvent(kind, "p-x"))
        events.emit(UploadEvent("hook-failed", "p-x", detail={"hook": "post-finish"}))
        m.requestEnded(b"PUT", 201, 1000)
        m.requestEnded(b"PUT", 204, 300)
        m.requestEnded(b"PUT", 201, 700)
        m.requestEnded("HEAD", 204, 0)
        m.requestEnded(b"BREW", 405, 0)
        m.requestEnded(b"PUT", "lost", 50)
        m.latency("fsync", 0.003)
        m.latency("completion", 0.2)
        m.latency("completion", 7.0)
        m.hookCalled("pre-create", "ok")
        m.hookCalled("pre-create", "ok")
        m.hookCalled("post-finish", "failed")
        m.connectionOpened()
        m.connectionOpened()
        m.connectionClosed()
        m.sampleUploadsOpen(3)
        v = self.values()
        ev = lambda k: v[("uploadsvc_upload_events_total", (("event", k),))]  # noqa: E731
        self.assertEqual(
            [ev(k) for k in ("created", "resumed", "completed", "cancelled", "taken-over", "expired")],
            [3, 1, 2, 1, 1, 1],
        )
        req = lambda m_, s: v[("uploadsvc_requests_total", (("method", m_), ("status", s)))]  # noqa: E731
        self.assertEqual(
            [req("PUT", "201"), req("PUT", "204"), req("HEAD", "204"), req("other", "405"),
             req("PUT", "lost")],
            [2, 1, 1, 1, 1],
        )
        self.assertEqual(v[("uploadsvc_upload_bytes_total", ())], 2050)
        self.assertEqual(v[("uploadsvc_fsync_seconds_count", ())], 1)
        self.assertEqual(v[("uploadsvc_completion_seconds_count", ())], 2)
        self.assertAlmostEqual(v[("uploadsvc_completion_seconds_sum", ())], 7.2)
        self.assertEqual(v[("uploadsvc_completion_seconds_bucket", (("le", "0.25"),))], 1)
        self.assertEqual(v[("uploadsvc_completion_seconds_bucket", (("le", "+Inf"),))], 2)
        self.assertEqual(
            v[("uploadsvc_hook_calls_total", (("hook", "pre-create"), ("outcome", "ok")))], 2
        )
        self.assertEqual(
            v[("uploadsvc_hook_calls_total", (("hook", "post-finish"), ("outcome", "failed")))], 1
        )
        self.assertEqual(v[("uploadsvc_hook_failures_total", (("hook", "post-finish"),))], 1)
        self.assertEqual(v[("uploadsvc_connections_open", ())], 1)
        self.assertEqual(v[("uploadsvc_uploads_open", ())], 3)
        self.assertEqual(v[("uploadsvc_disk_queue_depth", ())], 0)

    def test_eventsZeroBeforeAny(self) -> None:
        """Every counted event kind is served, at zero, before it first happens."""
        v = self.values()
        for kind in ("created", "resumed", "completed", "cancelled", "taken-over", "expired"):
            self.assertEqual(v[("uploadsvc_upload_events_total", (("event", kind),))], 0)

    def test_diskQueue(self) -> None:
        """
        The disk queue depth counts calls given to the pool that no thread
        has started yet.
        """
        inner = ManualRunner()
        runner = MeteredRunner(inner, self.metrics)
        depth = lambda: self.values()[("uploadsvc_disk_queue_depth", ())]  # noqa: E731
        d1 = runner.run(lambda: 1)
        runner.run(lambda: 2)
        runner.callInThread(lambda: None)
        self.assertEqual(depth(), 3)
        inner.complete()
        self.assertEqual(self.successResultOf(d1), 1)
        self.assertEqual(depth(), 2)
        inner.complete(2)
        self.assertEqual(depth(), 0)

    def test_onlyMetricsPath(self) -> None:
        """The admin site answers 404 for other paths and 405 for other methods."""
        self.assertIn(b" 404 ", scrape(self.site, b"/").split(b"\r\n")[0])
        self.assertIn(b" 404 ", scrape(self.site, b"/metrics/x").split(b"\r\n")[0])
        self.assertIn(b" 405 ", scrape(self.site, method=b"POST").split(b"\r\n")[0])


class DashboardTests(SynchronousTestCase):
    def test_dashboardUsesServedFamilies(self) -> None:
        """
        The Grafana dashboard in tap-configs/ is JSON, and every uploadsvc
        series its queries name is one that /metrics serves.
        """
        path = os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            "tap-configs", "grafana-uploadsvc.json",
        )
        with open(path, encoding="utf-8") as f:
            dashboard = json.load(f)
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        used = {name for e in exprs for name in re.findall(r"uploadsvc_[a-z_]+", e)}
        served = {name for name, _ in samples(generate_latest(Metrics().registry).decode())}
        # Families without a sample yet (labelled, none seen) are served once counted.
        metrics = Metrics()
        metrics.requestEnded(b"PUT", 201, 1)
        metrics.hookCalled("pre-create", "ok")
        metrics.eventHeard(UploadEvent("hook-failed", "p-x", detail={"hook": "pre-create"}))
        metrics.latency("fsync", 0.1)
        served |= {name for name, _ in samples(generate_latest(metrics.registry).decode())}
        self.assertTrue(used)
        self.assertEqual(used - served, set())
