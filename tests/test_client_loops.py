"""
The tus and draft loops of the client (C{--protocol tus}, C{--protocol
ietf}) on a scripted server, step by step on a fake clock: which requests
they send (method, URL, the headers that say what a request is, the body's
range) and what they make of each answer, after failures too.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.client.backoff import RetryPolicy
from uploadsvc.client.jobs import UploadJob, UploadResult
from uploadsvc.client.observer import NullObserver
from uploadsvc.client.testing import FakeResponse, Simulation
from uploadsvc.client.uploader import Uploader

SIZE = 10_000
CHUNK = 4000
FINAL = 1000

#: The headers a record keeps: those that say what a request is.
_SHOWN = (
    b"Upload-Offset", b"Upload-Length", b"Upload-Complete", b"Upload-Metadata",
    b"Content-Disposition", b"Content-Type", b"Tus-Resumable",
    b"Upload-Draft-Interop-Version",
)


def _digestField(data: bytes) -> bytes:
    return b"sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()) + b":"


class _Collect:
    def __init__(self) -> None:
        self.data = b""

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.data += data


class ScriptedHTTP:
    """
    An L{IHTTPClient} that answers each request with the next answer of a
    script (a L{FakeResponse}, or an exception: the link failed after the
    body was read) and records what it was sent.

    @ivar sent: per request, C{(method, url, headers, body)} with the
        headers of L{_SHOWN} that it carried.
    @ivar digests: the C{Repr-Digest} each request carried, or L{None}.
    """

    def __init__(self, sim: Simulation, script: list[Any]) -> None:
        self._sim = sim
        self._script = list(script)
        self.sent: list[tuple[str, str, dict[bytes, bytes], bytes]] = []
        self.digests: list[bytes | None] = []

    def request(self, method: str, url: str, *, headers: Any = None, data: Any = None, **kw: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._answer(method, url, headers, data))

    def requests(self) -> list[tuple[str, str]]:
        """
        The method and URL of each request sent.
        """
        return [(method, url) for method, url, _, _ in self.sent]

    async def _answer(self, method: str, url: str, headers: Any, data: Any) -> Any:
        body = _Collect()
        if data is not None:
            await data.startProducing(body)
        shown = {}
        for name in _SHOWN:
            values = headers.getRawHeaders(name)
            if values:
                shown[name] = values[0]
        digest = headers.getRawHeaders(b"Repr-Digest")
        self.sent.append((method, url, shown, body.data))
        self.digests.append(digest[0] if digest else None)
        answer = self._script.pop(0)
        later: Deferred[Any] = Deferred()
        self._sim.soon(later.callback, None)
        await later
        if isinstance(answer, Exception):
            raise answer
        return answer


class LoopTestsMixin:
    """
    A file of L{SIZE} random bytes and an uploader of a protocol on a
    scripted server.
    """

    protocol = ""

    def setUp(self) -> None:
        self.sim = Simulation()
        self.path = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        self.content = random.Random(7).randbytes(SIZE)
        with open(self.path, "wb") as f:
            f.write(self.content)

    def upload(self, url: str, script: list[Any], path: str | None = None) -> tuple[UploadResult, ScriptedHTTP]:
        http = ScriptedHTTP(self.sim, script)
        uploader = Uploader(
            http, self.sim.clock, self.sim.cooperator,
            retry=RetryPolicy(initialDelay=1.0, jitter=0.0, maxAttempts=3),
            chunkSize=CHUNK, finalPiece=FINAL, readSize=512, observer=NullObserver(),
            rng=random.Random(1), protocol=self.protocol,
        )
        result = self.sim.run(uploader.upload(UploadJob(path or self.path, url)))
        return result, http


class TusLoopTests(LoopTestsMixin, SynchronousTestCase):
    """
    C{--protocol tus}: creation, C{PATCH}es from the acknowledged offset,
    C{HEAD} after a failure, creation again when the upload is gone.
    """

    protocol = "tus"

    def test_resumedFromHead(self) -> None:
        """
        A creation names the destination; a PATCH cut is followed by HEAD on
        the upload's URL and PATCHes from the offset it reports, in chunks,
        until the server holds the whole file.
        """
        U = "http://h/.tus/abc"
        result, http = self.upload("http://u:p@h/.tus/in/a.bin", [
            FakeResponse(201, {b"Location": b"/.tus/abc"}),
            FakeResponse(204, {b"Upload-Offset": b"4000"}),
            ConnectionLost("cut"),
            FakeResponse(200, {b"Upload-Offset": b"6000", b"Upload-Length": b"10000"}),
            FakeResponse(204, {b"Upload-Offset": b"10000"}),
        ])
        self.assertTrue(result.ok, result.error)
        tus = {b"Tus-Resumable": b"1.0.0"}
        patch = {**tus, b"Content-Type": b"application/offset+octet-stream"}
        self.assertEqual(http.sent, [
            ("POST", "http://h/.tus/", {
                **tus, b"Upload-Length": b"10000",
                b"Upload-Metadata": b"filename " + base64.b64encode(b"in/a.bin"),
            }, b""),
            ("PATCH", U, {**patch, b"Upload-Offset": b"0"}, self.content[:4000]),
            ("PATCH", U, {**patch, b"Upload-Offset": b"4000"}, self.content[4000:8000]),
            ("HEAD", U, tus, b""),
            ("PATCH", U, {**patch, b"Upload-Offset": b"6000"}, self.content[6000:]),
        ])
        self.assertEqual(http.digests, [None] * 5)
        self.assertEqual(result.sha256, hashlib.sha256(self.content).hexdigest())
        self.assertEqual((result.requests, result.resumes, result.startOffsets), (4, 1, (0, 4000, 6000)))

    def test_goneCreatedAgain(self) -> None:
        """
        An upload whose URL answers 404 after a failure is created again and
        sent from 0.
        """
        result, http = self.upload("http://h/.tus/", [
            FakeResponse(201, {b"Location": b"http://h/.tus/one"}),
            FakeResponse(503, {}, b"busy"),
            FakeResponse(404, {}),
            FakeResponse(201, {b"Location": b"two"}),
            FakeResponse(204, {b"Upload-Offset": b"4000"}),
            FakeResponse(204, {b"Upload-Offset": b"8000"}),
            FakeResponse(204, {b"Upload-Offset": b"10000"}),
        ])
        self.assertTrue(result.ok, result.error)
        self.assertEqual(
            [(m, u, h.get(b"Upload-Offset")) for m, u, h, _ in http.sent],
            [
                ("POST", "http://h/.tus/", None),
                ("PATCH", "http://h/.tus/one", b"0"),
                ("HEAD", "http://h/.tus/one", None),
                ("POST", "http://h/.tus/", None),
                ("PATCH", "http://h/.tus/two", b"0"),
                ("PATCH", "http://h/.tus/two", b"4000"),
                ("PATCH", "http://h/.tus/two", b"8000"),
            ],
        )
        self.assertNotIn(b"Upload-Metadata", http.sent[0][2])
        self.assertEqual((result.requests, result.startOffsets), (6, (0, 0, 4000, 8000)))

    def test_completeAtHead(self) -> None:
        """
        A HEAD that reports the whole file ends the upload without another
        PATCH.
        """
        result, http = self.upload("http://h/.tus/a", [
            FakeResponse(201, {b"Location": b"/.tus/abc"}),
            FakeResponse(204, {b"Upload-Offset": b"4000"}),
            ConnectionLost("cut"),
            FakeResponse(200, {b"Upload-Offset": b"10000"}),
        ])
        self.assertTrue(result.ok, result.error)
        self.assertEqual([m for m, _ in http.requests()], ["POST", "PATCH", "PATCH", "HEAD"])
        self.assertEqual(result.sha256, hashlib.sha256(self.content).hexdigest())

    def test_noEndpoint(self) -> None:
        """
        A URL without /.tus/ fails the upload before any request.
        """
        result, http = self.upload("http://h/in/a", [])
        self.assertFalse(result.ok)
        self.assertIn("tus endpoint", result.error)
        self.assertEqual(http.sent, [])


class DraftLoopTests(LoopTestsMixin, SynchronousTestCase):
    """
    C{--protocol ietf}: an empty C{?0} creation, C{PATCH}es up to the
    closing piece, the closing one C{?1} with the file's digest, checked.
    """

    protocol = "ietf"

    def test_closingPieceChecked(self) -> None:
        """
        At /.uploads/ the destination goes in Content-Disposition; PATCHes
        run in chunks up to the closing piece, which carries ?1 and the
        digest that the server's answer must match.
        """
        U = "http://h/.uploads/x"
        result, http = self.upload("http://h/.uploads/in/a.bin", [
            FakeResponse(201, {b"Location": b"/.uploads/x"}),
            FakeResponse(204, {b"Upload-Offset": b"4000"}),
            FakeResponse(204, {b"Upload-Offset": b"8000"}),
            FakeResponse(204, {b"Upload-Offset": b"9000"}),
            FakeResponse(201, {b"Upload-Offset": b"10000", b"Repr-Digest": _digestField(self.content)}),
        ])
        self.assertTrue(result.ok, result.error)
        v = {b"Upload-Draft-Interop-Version": b"6"}
        patch = {**v, b"Content-Type": b"application/partial-upload"}
        self.assertEqual(http.sent, [
            ("POST", "http://h/.uploads/", {
                **v, b"Upload-Complete": b"?0", b"Upload-Length": b"10000",
                b"Content-Disposition": b"attachment; filename*=UTF-8''in%2Fa.bin",
            }, b""),
            ("PATCH", U, {**patch, b"Upload-Offset": b"0", b"Upload-Complete": b"?0"}, self.content[:4000]),
            ("PATCH", U, {**patch, b"Upload-Offset": b"4000", b"Upload-Complete": b"?0"}, self.content[4000:8000]),
            ("PATCH", U, {**patch, b"Upload-Offset": b"8000", b"Upload-Complete": b"?0"}, self.content[8000:9000]),
            ("PATCH", U, {**patch, b"Upload-Offset": b"9000", b"Upload-Complete": b"?1"}, self.content[9000:]),
        ])
        self.assertEqual(http.digests, [None] * 4 + [_digestField(self.content)])
        self.assertEqual((result.requests, result.startOffsets), (5, (0, 4000, 8000, 9000)))

    def test_wrongDigestFails(self) -> None:
        """
        A completion whose digest differs from the file's fails the upload.
        """
        result, http = self.upload("http://h/in/a.bin", [
            FakeResponse(201, {b"Location": b"/.uploads/x"}),
            FakeResponse(204, {b"Upload-Offset": b"9000"}),
            FakeResponse(201, {b"Upload-Offset": b"10000", b"Repr-Digest": _digestField(b"other")}),
        ])
        self.assertFalse(result.ok)
        self.assertIn("the stored file differs", result.error)
        self.assertEqual(http.sent[0][:2], ("POST", "http://h/in/a.bin"))
        self.assertNotIn(b"Content-Disposition", http.sent[0][2])

    def test_lostCompletionFoundAtFile(self) -> None:
        """
        When the closing PATCH's answer is lost and the upload's URL is then
        gone, the file's URL is asked; a complete file of the size ends the
        upload without a new creation.
        """
        result, http = self.upload("http://h/.uploads/in/a.bin", [
            FakeResponse(201, {b"Location": b"/.uploads/x"}),
            FakeResponse(204, {b"Upload-Offset": b"9000"}),
            ConnectionLost("cut"),
            FakeResponse(404, {}),
            FakeResponse(200, {b"Content-Length": b"10000"}),
        ])
        self.assertTrue(result.ok, result.error)
        self.assertEqual(http.requests(), [
            ("POST", "http://h/.uploads/"), ("PATCH", "http://h/.uploads/x"),
            ("PATCH", "http://h/.uploads/x"), ("HEAD", "http://h/.uploads/x"),
            ("HEAD", "http://h/in/a.bin"),
        ])
        self.assertEqual(http.sent[4][2], {})
        self.assertEqual(result.sha256, hashlib.sha256(self.content).hexdigest())

    def test_goneBeforeClosingCreatedAgain(self) -> None:
        """
        An upload gone before its closing piece went out is created again,
        without asking the file's URL.
        """
        result, http = self.upload("http://h/in/a.bin", [
            FakeResponse(201, {b"Location": b"/.uploads/x"}),
            ConnectionLost("cut"),
            FakeResponse(404, {}),
            FakeResponse(201, {b"Location": b"/.uploads/y"}),
            FakeResponse(204, {b"Upload-Offset": b"9000"}),
            FakeResponse(201, {b"Upload-Offset": b"10000", b"Repr-Digest": _digestField(self.content)}),
        ])
        self.assertTrue(result.ok, result.error)
        self.assertEqual(http.requests(), [
            ("POST", "http://h/in/a.bin"), ("PATCH", "http://h/.uploads/x"),
            ("HEAD", "http://h/.uploads/x"), ("POST", "http://h/in/a.bin"),
            ("PATCH", "http://h/.uploads/y"), ("PATCH", "http://h/.uploads/y"),
        ])

    def test_emptyFile(self) -> None:
        """
        An empty file is created complete in one request carrying its
        digest, which the answer must match.
        """
        empty = os.path.abspath(self.mktemp())
        open(empty, "wb").close()
        result, http = self.upload("http://h/.uploads/in/e", [
            FakeResponse(201, {b"Upload-Offset": b"0", b"Repr-Digest": _digestField(b"")}),
        ], empty)
        self.assertTrue(result.ok, result.error)
        self.assertEqual(http.sent[0][0], "POST")
        self.assertEqual(http.sent[0][2][b"Upload-Complete"], b"?1")
        self.assertEqual(http.digests, [_digestField(b"")])
        self.assertEqual((result.requests, result.startOffsets), (1, (0,)))
