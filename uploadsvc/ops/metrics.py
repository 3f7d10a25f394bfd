"""
Prometheus metrics of one uploadsvc process (docs/operating.md),
and what serves them on the admin listener.

With C{--workers N} every worker writes its values into files of its own
under a folder that the supervisor makes and removes (prometheus_client's
multiprocess mode, L{MULTIPROC_ENV}); the supervisor serves C{/metrics} and
sums them (L{MultiProcessCollector}), so one scrape covers every worker,
and a worker that dies has its gauges dropped (L{markProcessDead}) while its
counters stay counted. Without workers the one process serves its own
registry.

Where the values come from: the lifecycle events (L{Metrics.eventHeard},
subscribed to L{uploadsvc.ops.events.Events}), each finished request
(L{Metrics.requestEnded}, from the site), the disk pool (L{MeteredRunner}),
the site's connections, the app's timings of fsync and completion
(L{Metrics.latency}), and the hooks (L{Metrics.hookCalled}).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Site

from uploadsvc.ops.events import (
    CANCELLED,
    COMPLETED,
    CREATED,
    EXPIRED,
    HOOK_FAILED,
    RESUMED,
    TAKEN_OVER,
    UploadEvent,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# prometheus_client is imported where it is used, not here: a process
# whose metrics nobody reads (no --admin-listen, no workers' folder)
# never loads it (tap.py makes no Metrics then).

#: The environment variable that puts prometheus_client in multiprocess
#: mode; read when prometheus_client is imported, so the supervisor sets it
#: in the workers' environment.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Methods counted under their own name; any other is counted as C{other},
#: so that a client cannot make up label values without end.
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"})

#: The lifecycle events counted in C{uploadsvc_upload_events_total}.
COUNTED_EVENTS = (CREATED, RESUMED, TAKEN_OVER, COMPLETED, CANCELLED, EXPIRED)

#: Seconds: from a millisecond (a page-cache fsync) to a minute (a large
#: file re-hashed at completion on a slow disk).
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)

#: What L{Metrics.latency} knows how to time.
FSYNC = "fsync"
COMPLETION = "completion"


class Metrics:
    """
    The metric families of one process, in a registry of their own.

    @ivar registry: where they are registered (what L{MetricsResource}
        serves without workers).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "uploadsvc_requests", "HTTP requests ended, by method and status "
            "(lost: the client went away before the answer).",
            ["method", "status"], registry=r,
        )
        self.uploadBytes = Counter(
            "uploadsvc_upload_bytes", "Body bytes written into uploads.", registry=r,
        )
        self.uploadEvents = Counter(
            "uploadsvc_upload_events", "Upload lifecycle events: created, resumed, "
            "taken-over, completed, cancelled, expired.", ["event"], registry=r,
        )
        for kind in COUNTED_EVENTS:
            self.uploadEvents.labels(kind)
        self.uploadsOpen = Gauge(
            "uploadsvc_uploads_open", "Uploads being written now.",
            registry=r, multiprocess_mode="livesum",
        )
        self.connectionsOpen = Gauge(
            "uploadsvc_connections_open", "Client connections open now.",
            registry=r, multiprocess_mode="livesum",
        )
        self.diskQueue = Gauge(
            "uploadsvc_disk_queue_depth", "Disk work waiting for a thread of the "
            "disk pool.", registry=r, multiprocess_mode="livesum",
        )
        self.fsyncSeconds = Histogram(
            "uploadsvc_fsync_seconds", "Time to make an interrupted or paused "
            "upload's bytes durable (fsync and state), disk-pool wait included.",
            registry=r, buckets=LATENCY_BUCKETS,
        )
        self.completionSeconds = Histogram(
            "uploadsvc_completion_seconds", "Time to move a complete upload into "
            "place (fsync, rename, folder fsync), disk-pool wait included; for a "
            "small body that arrived whole (<= 256 KiB), its write and hash too.",
            registry=r, buckets=LATENCY_BUCKETS,
        )
        self.hookCalls = Counter(
            "uploadsvc_hook_calls", "Hook calls, by hook and outcome.",
            ["hook", "outcome"], registry=r,
        )
        self.hookFailures = Counter(
            "uploadsvc_hook_failures", "Hook calls that failed (a blocking hook "
            "that failed, a notification that gave up), by hook: one per "
            "hook-failed event.", ["hook"], registry=r,
        )

    # -- what feeds them ----------------------------------------------------

    def eventHeard(self, event: UploadEvent) -> None:
        """
        Count a lifecycle event (an L{Events} listener).
        """
        if event.kind == HOOK_FAILED:
            self.hookFailures.labels(str(event.detail.get("hook", "unknown"))).inc()
        else:
            self.uploadEvents.labels(event.kind).inc()

    def requestEnded(self, method: bytes | str, status: int | str, bytesWritten: int) -> None:
        """
        Count one ended request.

        @param status: its status code, or C{"lost"}.
        @param bytesWritten: bytes it added to its upload.
        """
        if isinstance(method, bytes):
            method = method.decode("latin-1")
        self.requests.labels(method if method in METHODS else "other", str(status)).inc()
        if bytesWritten:
            self.uploadBytes.inc(bytesWritten)

    def latency(self, what: str, seconds: float) -> None:
        """
        Observe how long an fsync (L{FSYNC}) or a completion
        (L{COMPLETION}) took.
        """
        {FSYNC: self.fsyncSeconds, COMPLETION: self.completionSeconds}[what].observe(
            max(0.0, seconds)
        )

    def hookCalled(self, name: str, outcome: str) -> None:
        """
        Count a call of hook C{name} (e.g. C{pre-create}) that ended with
        C{outcome} (e.g. C{ok}, C{refused}, C{failed}, C{timeout}).
        Failures are counted apart, from C{hook-failed} events.
        """
        self.hookCalls.labels(name, outcome).inc()

    def connectionOpened(self) -> None:
        self.connectionsOpen.inc()

    def connectionClosed(self) -> None:
        self.connectionsOpen.dec()

    def sampleUploadsOpen(self, count: int) -> None:
        """
        Set how many uploads this process writes now.
        """
        self.uploadsOpen.set(count)


class MeteredRunner:
    """
    A disk runner (L{uploadsvc.sink.IDiskRunner}) that keeps
    L{Metrics.diskQueue} at the number of calls waiting for a thread.
    """

    def __init__(self, runner: Any, metrics: Metrics) -> None:
        self._runner = runner
        self._queue = metrics.diskQueue

    def _counted(self, f: Callable[..., object]) -> Callable[..., object]:
        self._queue.inc()

        def started(*args: object) -> object:
            self._queue.dec()
            return f(*args)

        return started

    def run(self, f: Callable[..., object], *args: object) -> Deferred:
        return self._runner.run(self._counted(f), *args)  # type: ignore[no-any-return]

    def callInThread(self, f: Callable[..., object], *args: object) -> None:
        self._runner.callInThread(self._counted(f), *args)

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        self._runner.callFromThread(f, *args)


# -- several processes ----------------------------------------------------------


def makeMultiprocDir() -> str:
    """
    A fresh, private folder for the workers' metric files.
    """
    return tempfile.mkdtemp(prefix="uploadsvc-metrics-")


def markProcessDead(pid: int, path: str) -> None:
    """
    Drop the gauges of a worker that ended (its counters stay summed).
    """
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, path)


def removeMultiprocDir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def inMultiprocessMode() -> bool:
    """
    Whether this process writes its values into a multiprocess folder.
    """
    return bool(os.environ.get(MULTIPROC_ENV))


# -- serving ---------------------------------------------------------------------


class MetricsResource(Resource):
    """
    C{GET /metrics}: the Prometheus text format of one registry, or of every
    worker's files in C{multiprocDir}. (Not a leaf: anything below it is
    a 404.)
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, multiprocDir: str | None = None
    ) -> None:
        super().__init__()
        self._registry = registry
        self._multiprocDir = multiprocDir

    def render_GET(self, request: Any) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = self._registry
        if self._multiprocDir is not None:
            # A registry per scrape, as prometheus_client's multiprocess
            # documentation asks: the files are read afresh each time.
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self._multiprocDir)
        assert registry is not None
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(registry)  # type: ignore[no-any-return]


class AdminSite(Site):
    """
    The admin listener's site: C{/metrics} only, and no access log line per
    scrape.
    """

    def __init__(self, metrics: MetricsResource, **kwargs: Any) -> None:
        root = Resource()
        root.putChild(b"metrics", metrics)
        super().__init__(root, **kwargs)

    def log(self, request: Any) -> None:
        pass
