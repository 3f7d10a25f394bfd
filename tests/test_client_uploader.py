"""
Tests for L{uploadsvc.client.uploader}: the resume loop against a scripted
in-memory server, with deterministic time.
"""

from __future__ import annotations

import base64
import hashlib
import random
from typing import TYPE_CHECKING

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from uploadsvc.client.backoff import RetryPolicy
from uploadsvc.client.exchange import HTTPExchange
from uploadsvc.client.observer import IUploadObserver
from uploadsvc.client.testing import (
    Answer,
    CutAfter,
    FakeServer,
    Refuse,
    Simulation,
    StallAfter,
    StoredUpload,
    WrongDigest,
    b64digest,
)
from uploadsvc.client.jobs import UploadJob, UploadResult
from uploadsvc.client.putupload import PutFileUpload
from uploadsvc.client.uploader import Uploader, UploadSettings

SIZE = 10_000
FINAL = 500
READ = 1000
URL = "http://upload.example/a/b.bin"


@implementer(IUploadObserver)
class RecordingObserver:
    """
    Keeps every event.
    """

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def started(self, job, size):
        self.events.append(("started", job.url, size))

    def progress(self, job, position):
        pass

    def retrying(self, job, reason, delay, failures):
        self.events.append(("retrying", reason, delay, failures))

    def resumed(self, job, offset):
        self.events.append(("resumed", offset))

    def finished(self, result):
        self.events.append(("finished", result.ok))

    def of(self, kind):
        return [e for e in self.events if e[0] == kind]


if TYPE_CHECKING:
    _Base = SynchronousTestCase
else:
    _Base = object


class UploaderTestsMixin(_Base):
    """
    Builds a file, a simulation, a fake server and an uploader.
    """

    def setUp(self) -> None:
        self.sim = Simulation()
        self.server = FakeServer(self.sim)
        self.observer = RecordingObserver()
        self.content = random.Random(7).randbytes(SIZE)
        self.path = self.writeFile(self.content)

    def writeFile(self, content: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(content)
        return path

    def uploader(self, **kw) -> Uploader:
        kw.setdefault("retry", RetryPolicy(initialDelay=1.0, maxDelay=8.0, jitter=0.5, maxAttempts=5))
        kw.setdefault("stallTimeout", 10.0)
        return Uploader(
            HTTPClient(self.server),
            self.sim.clock,
            self.sim.cooperator,
            observer=self.observer,
            rng=random.Random(1),
            readSize=READ,
            finalPiece=FINAL,
            **kw,
        )

    def upload(self, path: str | None = None, url: str = URL, **kw) -> UploadResult:
        job = UploadJob(path or self.path, url)
        return self.sim.run(self.uploader(**kw).upload(job))

    def stored(self, path: str = "/a/b.bin") -> StoredUpload:
        return self.server.uploads[path]

    def ranges(self) -> list[bytes | None]:
        return [r.header(b"Content-Range") for r in self.server.dataRequests()]

    def assertStoredWhole(self, result: UploadResult) -> None:
        self.assertEqual((result.ok, result.error), (True, None))
        self.assertTrue(self.stored().complete)
        self.assertEqual(bytes(self.stored().data), self.content)
        self.assertEqual(result.sha256, hashlib.sha256(self.content).hexdigest())


class CleanUploadTests(UploaderTestsMixin, SynchronousTestCase):
    """
    Uploads over a link that does not fail.
    """

    def test_longRequestThenClosingPiece(self) -> None:
        """
        Without a chunk size the file goes in one request up to the closing
        piece, then the closing piece, after one HEAD.
        """
        result = self.upload()
        self.assertStoredWhole(result)
        self.assertEqual([r.method for r in self.server.log], [b"HEAD", b"PUT", b"PUT"])
        self.assertEqual(
            self.ranges(),
            [b"bytes 0-%d/%d" % (SIZE - FINAL - 1, SIZE), b"bytes %d-%d/%d" % (SIZE - FINAL, SIZE - 1, SIZE)],
        )
        self.assertEqual(result.bytesSent, SIZE)
        self.assertEqual(result.resumes, 0)

    def test_closingPieceCarriesDigest(self) -> None:
        """
        The closing request carries the Repr-Digest of the whole file (the
        earlier one cannot know it yet).
        """
        self.upload()
        first, last = self.server.dataRequests()
        self.assertIsNone(first.header(b"Repr-Digest"))
        self.assertEqual(last.header(b"Repr-Digest"), b64digest(self.content))

    def test_chunked(self) -> None:
        """
        With a chunk size every request covers at most that many bytes, each
        starting where the previous one ended.
        """
        result = self.upload(chunkSize=3000)
        self.assertStoredWhole(result)
        self.assertEqual(result.startOffsets, (0, 3000, 6000, 9000, SIZE - FINAL))
        self.assertEqual(
            self.ranges(),
            [
                b"bytes 0-2999/10000",
                b"bytes 3000-5999/10000",
                b"bytes 6000-8999/10000",
                b"bytes 9000-9499/10000",
                b"bytes 9500-9999/10000",
            ],
        )

    def test_smallFile(self) -> None:
        """
        A file no bigger than the closing piece goes in one request, with its
        digest.
        """
        self.content = b"tiny file"
        result = self.upload(self.writeFile(self.content))
        self.assertStoredWhole(result)
        (only,) = self.server.dataRequests()
        self.assertEqual(only.header(b"Content-Range"), b"bytes 0-8/9")
        self.assertEqual(only.header(b"Repr-Digest"), b64digest(b"tiny file"))

    def test_emptyFile(self) -> None:
        """
        An empty file is sent as a plain PUT with the digest of nothing.
        """
        self.content = b""
        result = self.upload(self.writeFile(b""))
        self.assertStoredWhole(result)
        (only,) = self.server.dataRequests()
        self.assertIsNone(only.header(b"Content-Range"))
        self.assertEqual(only.header(b"Repr-Digest"), b64digest(b""))

    def test_authorization(self) -> None:
        """
        The configured headers (the bearer token) go with every request.
        """
        self.upload(headers={"Authorization": "Bearer s3cret"})
        self.assertEqual(
            [r.header(b"Authorization") for r in self.server.log], [b"Bearer s3cret"] * 3
        )

    def test_credentialsInURL(self) -> None:
        """
        C{user:password@} in the URL goes as C{Authorization: Basic} with
        every request (percent-encoding undone, UTF-8), and no request URI
        carries it.
        """
        result = self.upload(url="http://al%C3%AFce:p%40ss:w@upload.example/a/b.bin")
        self.assertStoredWhole(result)
        basic = b"Basic " + base64.b64encode("al\u00efce:p@ss:w".encode())
        self.assertEqual([r.header(b"Authorization") for r in self.server.log], [basic] * 3)
        self.assertEqual({r.uri for r in self.server.log}, {URL.encode()})

    def test_credentialsInURLAndHeader(self) -> None:
        """
        Credentials in the URL with an C{Authorization} header already set
        are refused before any request: only one can be sent.
        """
        result = self.upload(
            url="http://alice:pw@upload.example/a/b.bin", headers={"authorization": "Bearer t"}
        )
        self.assertFalse(result.ok)
        self.assertIn("cannot both be sent", result.error)
        self.assertEqual(self.server.log, [])

    def test_unsendableCredentials(self) -> None:
        """
        A user name with a colon cannot be sent as Basic: refused before any
        request, and the message does not repeat the password.
        """
        result = self.upload(url="http://a%3Ab:hunter2@upload.example/a/b.bin")
        self.assertFalse(result.ok)
        self.assertIn("must not contain ':'", result.error)
        self.assertNotIn("hunter2", result.error)
        self.assertEqual(self.server.log, [])

    def test_unsendableURL(self) -> None:
        """
        A URL the HTTP library cannot encode (an IPv6 address, a host name
        IDNA refuses) fails at once, before any request, instead of being
        retried until the attempts run out.
        """
        for url, words in [
            ("http://[::1]:8080/a/b.bin", "IPv6 address URLs are not supported"),
            ("http://bad_host.example/a/b.bin", "the URL cannot be sent: InvalidCodepoint"),
        ]:
            result = self.upload(url=url)
            self.assertFalse(result.ok)
            self.assertIn(words, result.error)
        self.assertEqual(self.server.log, [])
        self.assertEqual(self.observer.of("retrying"), [])

    def test_events(self) -> None:
        """
        The observer hears of the start and the successful end.
        """
        self.upload()
        self.assertEqual(self.observer.of("started"), [("started", URL, SIZE)])
        self.assertEqual(self.observer.of("finished"), [("finished", True)])
        self.assertEqual(self.observer.of("retrying"), [])


class ResumeTests(UploaderTestsMixin, SynchronousTestCase):
    """
    What happens when the link fails.
    """

    def test_cutResumesFromServerOffset(self) -> None:
        """
        After a connection drop the client asks for the offset and sends from
        there: the bytes the server kept are not sent again.
        """
        self.server.faults[1] = CutAfter(4321)
        result = self.upload()
        self.assertStoredWhole(result)
        self.assertEqual([r.method for r in self.server.log], [b"HEAD", b"PUT", b"HEAD", b"PUT", b"PUT"])
        self.assertEqual(result.startOffsets, (0, 4321, SIZE - FINAL))
        self.assertEqual(result.resumes, 1)
        self.assertEqual(self.observer.of("resumed"), [("resumed", 4321)])
        # Only what was in flight (the rest of one read block) was lost.
        self.assertLessEqual(result.bytesSent, SIZE + READ)

    def test_manyCutsNeverRestart(self) -> None:
        """
        A link that drops every few hundred bytes still gets the file there,
        every attempt starting at the server's offset, never at zero again.
        """
        rng = random.Random(3)

        def faultFor(index, record):
            if record.method == b"PUT":
                return CutAfter(rng.randint(100, 900))
            return None

        self.server.faultFor = faultFor
        result = self.upload(retry=RetryPolicy(initialDelay=0.1, maxAttempts=3))
        self.assertStoredWhole(result)
        offsets = result.startOffsets
        self.assertEqual(offsets[0], 0)
        self.assertNotIn(0, offsets[1:])
        self.assertEqual(list(offsets), sorted(offsets))
        self.assertGreater(result.resumes, 9)

    def test_stalledRequestAbandoned(self) -> None:
        """
        A request that makes no progress for the stall timeout is cancelled
        and the next attempt resumes from what the server holds.
        """
        self.server.faults[1] = StallAfter(2000)
        result = self.upload(stallTimeout=10.0)
        self.assertStoredWhole(result)
        self.assertEqual(result.startOffsets, (0, 2000, SIZE - FINAL))
        (retry,) = self.observer.of("retrying")
        self.assertEqual(retry[1], "stalled: no progress for 10 s")
        # The HEAD after the stall came 10 s (stall) + the back-off later.
        head = self.server.log[2]
        self.assertEqual(head.method, b"HEAD")
        self.assertAlmostEqual(head.time, 10.0 + retry[2])

    def test_conflictOffsetUsedDirectly(self) -> None:
        """
        A 409 with Upload-Offset moves the client to that offset at once,
        without a HEAD and without waiting.
        """
        self.server.uploads["/a/b.bin"] = StoredUpload(bytearray(self.content[:1234]), SIZE)
        # The HEAD answer is out of date (say, from a cache): the client
        # starts beyond the server's offset and the server puts it right.
        self.server.faults[0] = Answer(204, {b"Upload-Offset": b"5000", b"Upload-Length": b"%d" % SIZE})
        result = self.upload()
        self.assertStoredWhole(result)
        self.assertEqual([r.method for r in self.server.log], [b"HEAD", b"PUT", b"PUT", b"PUT"])
        self.assertEqual(result.startOffsets, (5000, 1234, SIZE - FINAL))
        self.assertEqual(self.server.log[2].time, self.server.log[1].time)
        self.assertEqual(self.observer.of("retrying"), [])

    def test_conflictWithoutOffsetIsFinal(self) -> None:
        """
        A 409 without an offset (the file exists with other content) stops
        the upload with the server's reason, without retrying.
        """
        self.server.faults[1] = Answer(409, {}, b"a complete file exists\n")
        result = self.upload()
        self.assertFalse(result.ok)
        self.assertEqual(result.error, "HTTP 409: a complete file exists")
        self.assertEqual(len(self.server.log), 2)

    def test_resumeAfterEarlierRun(self) -> None:
        """
        When the server already holds part of the file (from an earlier run)
        the client starts there, hashing the part it did not send, and the
        digest still covers the whole file.
        """
        self.server.uploads["/a/b.bin"] = StoredUpload(bytearray(self.content[:6000]), SIZE)
        result = self.upload()
        self.assertStoredWhole(result)
        self.assertEqual(result.startOffsets, (6000, SIZE - FINAL))
        self.assertEqual(result.bytesSent, SIZE - 6000)
        self.assertEqual(self.server.dataRequests()[-1].header(b"Repr-Digest"), b64digest(self.content))

    def test_lostFinalAnswer(self) -> None:
        """
        When the answer to the closing request is lost the client finds the
        file complete and confirms it with a completion retry, not a new
        upload.
        """
        self.server.faults[2] = CutAfter(FINAL)
        result = self.upload()
        self.assertStoredWhole(result)
        self.assertEqual(result.startOffsets, (0, SIZE - FINAL, SIZE - FINAL))
        self.assertEqual(self.server.log[3].method, b"HEAD")

    def test_alreadyComplete(self) -> None:
        """
        A file that is already on the server is confirmed by its digest and
        only the closing piece is sent.
        """
        self.server.uploads["/a/b.bin"] = StoredUpload(bytearray(self.content), SIZE, True)
        result = self.upload()
        self.assertStoredWhole(result)
        self.assertTrue(result.alreadyComplete)
        self.assertEqual(result.startOffsets, (SIZE - FINAL,))

    def test_alreadyCompleteDifferent(self) -> None:
        """
        A different file of the same size at the URL is a failure.
        """
        other = bytes(SIZE)
        self.server.uploads["/a/b.bin"] = StoredUpload(bytearray(other), SIZE, True)
        result = self.upload()
        self.assertFalse(result.ok)
        self.assertEqual(result.error, "HTTP 409: different content")

    def test_otherSizeAlreadyComplete(self) -> None:
        """
        A complete file of another size at the URL is reported, nothing sent.
        """
        self.server.uploads["/a/b.bin"] = StoredUpload(bytearray(b"x" * 10), 10, True)
        result = self.upload()
        self.assertFalse(result.ok)
        self.assertIn("a different file (10 bytes) already exists", result.error)
        self.assertEqual(self.server.dataRequests(), [])

    def test_totalMismatch(self) -> None:
        """
        An incomplete upload of another total at the URL is reported, nothing
        sent.
        """
        self.server.uploads["/a/b.bin"] = StoredUpload(bytearray(b"x" * 10), 99)
        result = self.upload()
        self.assertFalse(result.ok)
        self.assertIn("incomplete upload of 99 bytes", result.error)
        self.assertEqual(self.server.dataRequests(), [])

    def test_wrongDigestDetected(self) -> None:
        """
        A completion answer whose Repr-Digest is not the file's fails the
        upload.
        """
        self.server.faults[2] = WrongDigest()
        result = self.upload()
        self.assertFalse(result.ok)
        self.assertIn("the stored file differs", result.error)

    def test_serverRefusesCorruptWhole(self) -> None:
        """
        When the server refuses the whole for a digest mismatch (the file
        changed under the client), the upload fails with its reason.
        """
        # Corrupt the server's copy of the first byte: the whole digest then
        # differs from what the client sends.
        original = self.server._respond
        corrupted: list[bool] = []

        def corrupting(path, upload, record, fault):
            if not corrupted:
                corrupted.append(True)
                upload.data[0] ^= 0xFF
            return original(path, upload, record, fault)

        self.server._respond = corrupting  # type: ignore[method-assign]
        result = self.upload()
        self.assertFalse(result.ok)
        self.assertEqual(result.error, "HTTP 400: Repr-Digest mismatch")


class BackoffTests(UploaderTestsMixin, SynchronousTestCase):
    """
    Waiting between attempts, and giving up.
    """

    def test_exponentialSchedule(self) -> None:
        """
        Consecutive failures without progress wait per the policy: growing,
        jittered, and reproducible with the same seed.
        """
        for i in range(4):
            self.server.faults[i] = Refuse()
        policy = RetryPolicy(initialDelay=1.0, factor=2.0, maxDelay=8.0, jitter=0.5, maxAttempts=10)
        result = self.upload(retry=policy)
        self.assertStoredWhole(result)
        delays = [e[2] for e in self.observer.of("retrying")]
        rng = random.Random(1)
        self.assertEqual(delays, [policy.delay(n, rng) for n in (1, 2, 3, 4)])
        times = [r.time for r in self.server.log[:5]]
        self.assertEqual(
            [round(b - a, 9) for a, b in zip(times, times[1:])], [round(d, 9) for d in delays]
        )
        self.assertEqual([e[3] for e in self.observer.of("retrying")], [1, 2, 3, 4])

    def test_progressResetsSchedule(self) -> None:
        """
        Failures count up until an offset query shows progress; after that
        the next failure waits the initial delay again.
        """
        self.server.faults[0] = Refuse()
        self.server.faults[1] = Refuse()
        self.server.faults[3] = CutAfter(3000)
        self.server.faults[5] = CutAfter(3000)
        result = self.upload(retry=RetryPolicy(initialDelay=1.0, jitter=0.0))
        self.assertStoredWhole(result)
        self.assertEqual(result.startOffsets, (0, 3000, 6000, SIZE - FINAL))
        self.assertEqual(
            [(e[2], e[3]) for e in self.observer.of("retrying")],
            [(1.0, 1), (2.0, 2), (4.0, 3), (1.0, 1)],
        )

    def test_noProgressGivesUp(self) -> None:
        """
        A server that takes data but never keeps any is given up on: sending
        is not progress, only the server's offset is.
        """
        self.server.faultFor = lambda i, r: CutAfter(0) if r.method == b"PUT" else None
        result = self.upload(retry=RetryPolicy(initialDelay=1.0, jitter=0.0, maxAttempts=3))
        self.assertFalse(result.ok)
        self.assertEqual(result.startOffsets, (0, 0, 0))
        self.assertEqual([e[2] for e in self.observer.of("retrying")], [1.0, 2.0])
        self.assertIn("gave up after 3 failed attempts", result.error)

    def test_giveUpAfterAttempts(self) -> None:
        """
        A server that is never reachable is given up on after the maximum
        number of attempts, with the last error in the message.
        """
        self.server.faultFor = lambda i, r: Refuse()
        result = self.upload(retry=RetryPolicy(initialDelay=1.0, jitter=0.0, maxAttempts=4))
        self.assertFalse(result.ok)
        self.assertEqual(
            result.error, "gave up after 4 failed attempts without progress; last: connection refused"
        )
        self.assertEqual(len(self.server.log), 4)
        self.assertEqual(self.sim.clock.seconds(), 1.0 + 2.0 + 4.0)
        self.assertEqual(self.observer.of("finished"), [("finished", False)])

    def test_giveUpAfterTime(self) -> None:
        """
        With a give-up time, the upload stops once that long passed without
        progress, however many attempts that took.
        """
        self.server.faultFor = lambda i, r: Refuse()
        policy = RetryPolicy(initialDelay=1.0, jitter=0.0, maxDelay=1.0, maxAttempts=None, giveUpAfter=5.0)
        result = self.upload(retry=policy)
        self.assertFalse(result.ok)
        self.assertEqual(len(self.server.log), 6)
        self.assertEqual(self.sim.clock.seconds(), 5.0)

    def test_retryAfterHonoured(self) -> None:
        """
        A 503 with Retry-After waits at least that long before the next
        attempt.
        """
        self.server.faults[1] = Answer(503, {b"Retry-After": b"7"}, b"busy")
        result = self.upload(retry=RetryPolicy(initialDelay=1.0, jitter=0.0))
        self.assertStoredWhole(result)
        self.assertEqual(self.server.log[2].time - self.server.log[1].time, 7.0)

    def test_serverErrorRetried(self) -> None:
        """
        A 500 is retried, and the upload completes.
        """
        self.server.faults[1] = Answer(500, {}, b"oops")
        result = self.upload()
        self.assertStoredWhole(result)
        self.assertEqual(self.observer.of("retrying")[0][1], "HTTP 500: oops")

    def test_clientErrorNotRetried(self) -> None:
        """
        A 4xx other than 409-with-offset ends the upload at once.
        """
        self.server.faults[0] = Answer(403, {}, b"crosses a symbolic link\n")
        result = self.upload()
        self.assertFalse(result.ok)
        self.assertEqual(result.error, "HTTP 403: crosses a symbolic link")
        self.assertEqual(len(self.server.log), 1)

    def test_unauthorizedNotRetried(self) -> None:
        """
        A 401 ends the upload after one request, saying whether credentials
        were sent (and the server's reason, the title of an HTML page).
        """
        page = b"<html>\r\n<head><title>401 Authorization Required</title></head></html>"
        self.server.faults[0] = Answer(401, {b"Content-Type": b"text/html"}, page)
        result = self.upload()
        self.assertEqual(
            result.error,
            "HTTP 401: the server asks for credentials (none were sent)"
            " (401 Authorization Required)",
        )
        self.assertEqual(len(self.server.log), 1)
        self.server.faults[1] = Answer(401)
        result = self.upload(headers={"Authorization": "Bearer s3cret"})
        self.assertEqual(result.error, "HTTP 401: the server refused the credentials")
        self.assertEqual(len(self.server.log), 2)
        self.assertEqual(self.observer.of("retrying"), [])

    def test_forbiddenNotRetried(self) -> None:
        """
        A 403 on a data request ends the upload after it, without a retry.
        """
        self.server.faults[1] = Answer(403)
        result = self.upload()
        self.assertEqual(result.error, "HTTP 403: forbidden")
        self.assertEqual(len(self.server.log), 2)
        self.assertEqual(self.observer.of("retrying"), [])

    def test_missingFile(self) -> None:
        """
        A file that cannot be opened fails without any request.
        """
        result = self.upload(path=self.mktemp())
        self.assertFalse(result.ok)
        self.assertIn("cannot read", result.error)
        self.assertEqual(self.server.log, [])


class ManyFilesTests(UploaderTestsMixin, SynchronousTestCase):
    """
    L{Uploader.uploadMany}.
    """

    def test_parallelLimitAndOrder(self) -> None:
        """
        At most C{parallel} files are in flight at once, each resumes on its
        own, and the results come in the order of the jobs.
        """
        contents = [random.Random(i).randbytes(3000 + i * 700) for i in range(5)]
        jobs = [UploadJob(self.writeFile(c), f"http://h/f{i}") for i, c in enumerate(contents)]
        cut = {"n": 0}

        def faultFor(index, record):
            if record.method == b"PUT" and record.path == "/f3" and cut["n"] < 2:
                cut["n"] += 1
                return CutAfter(1000)
            return None

        self.server.faultFor = faultFor
        results = self.sim.run(self.uploader().uploadMany(jobs, parallel=2))
        self.assertEqual([r.job for r in results], jobs)
        self.assertTrue(all(r.ok for r in results))
        for i, c in enumerate(contents):
            self.assertEqual(bytes(self.server.uploads[f"/f{i}"].data), c)
        self.assertEqual(self.server.maxActive, 2)
        self.assertEqual([r.resumes for r in results], [0, 0, 0, 2, 0])

    def test_oneFailureDoesNotStopOthers(self) -> None:
        """
        A file that fails leaves the others to finish.
        """
        jobs = [UploadJob(self.path, "http://h/ok"), UploadJob(self.mktemp(), "http://h/missing")]
        results = self.sim.run(self.uploader().uploadMany(jobs, parallel=2))
        self.assertEqual([r.ok for r in results], [True, False])
        self.assertEqual(bytes(self.server.uploads["/ok"].data), self.content)


class SettingsTests(UploaderTestsMixin, SynchronousTestCase):
    """
    L{UploadSettings}: what one file's upload gets of the uploader's
    configuration.
    """

    def test_fileUploadRunsOnSettingsAlone(self) -> None:
        """
        A file upload needs no L{Uploader}: its settings, an exchange, the
        clock, the cooperator, an observer and randomness are enough.
        """
        upload = PutFileUpload(
            UploadJob(self.path, URL),
            UploadSettings(
                retry=RetryPolicy(initialDelay=1.0, jitter=0.0, maxAttempts=3),
                chunkSize=4000,
                finalPiece=FINAL,
                readSize=READ,
            ),
            HTTPExchange(HTTPClient(self.server), self.sim.clock, 10.0, {"Authorization": "Bearer t"}),
            clock=self.sim.clock,
            cooperator=self.sim.cooperator,
            observer=self.observer,
            rng=random.Random(1),
        )
        self.server.faults[2] = CutAfter(1000)
        result = self.sim.run(Deferred.fromCoroutine(upload.run()))
        self.assertStoredWhole(result)
        self.assertEqual(result.startOffsets, (0, 4000, 5000, 9000, SIZE - FINAL))
        self.assertEqual({r.header(b"Authorization") for r in self.server.log}, {b"Bearer t"})
        self.assertEqual(self.observer.of("retrying"), [("retrying", "connection lost", 1.0, 1)])

    def test_credentialsConflictFromSettings(self) -> None:
        """
        The settings say whether an C{Authorization} header is configured,
        which credentials in the URL then conflict with.
        """
        upload = PutFileUpload(
            UploadJob(self.path, "http://a:b@upload.example/a/b.bin"),
            UploadSettings(authorizationConfigured=True),
            HTTPExchange(HTTPClient(self.server), self.sim.clock, 10.0),
            clock=self.sim.clock,
            cooperator=self.sim.cooperator,
            observer=self.observer,
            rng=random.Random(1),
        )
        result = self.sim.run(Deferred.fromCoroutine(upload.run()))
        self.assertIn("cannot both be sent", result.error)
        self.assertEqual(self.server.log, [])

    def test_settingsFromUploader(self) -> None:
        """
        An upload gets the uploader's configuration as it is when the upload
        starts (its public attributes may be changed in between).
        """
        uploader = self.uploader(chunkSize=3000, headers={"authorization": "Bearer x"})
        self.assertEqual(
            uploader.settings(),
            UploadSettings(
                retry=uploader.retry,
                chunkSize=3000,
                finalPiece=FINAL,
                readSize=READ,
                authorizationConfigured=True,
            ),
        )
        uploader.chunkSize = 2000
        result = self.sim.run(uploader.upload(UploadJob(self.path, URL)))
        self.assertStoredWhole(result)
        self.assertEqual(result.startOffsets, (0, 2000, 4000, 6000, 8000, SIZE - FINAL))

    def test_badSettingsRefused(self) -> None:
        """
        A chunk size or closing piece below one byte is refused, by the
        settings and by the uploader when it is built.
        """
        for kw, message in [
            ({"chunkSize": 0}, "chunkSize must be positive"),
            ({"finalPiece": 0}, "finalPiece must be positive"),
        ]:
            self.assertEqual(str(self.assertRaises(ValueError, UploadSettings, **kw)), message)
            self.assertEqual(
                str(self.assertRaises(
                    ValueError, Uploader, HTTPClient(self.server), self.sim.clock,
                    self.sim.cooperator, **kw,
                )),
                message,
            )
