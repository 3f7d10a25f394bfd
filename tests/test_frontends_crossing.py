"""
tus (C{/.tus/<id>}) and the draft (C{/.uploads/<id>}) share one id space:
an upload answers only the protocol that created it (recorded in the
store's attributes at creation), the other front end answers C{404} and
changes nothing. Through StubTreq, on a file store and on a memory store.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from tests.support.stubapp import StubRequests
from uploadsvc.storage.filestore import FileStore
from uploadsvc.storage.interfaces import IUploadStore, UploadId, newUploadId
from uploadsvc.storage.memory import MemoryStore
from uploadsvc.protocol.paths import parseRelativePath
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp

TUS = {"Tus_Resumable": "1.0.0"}
STREAM = {"Content_Type": "application/offset+octet-stream"}
DRAFT = {"Upload_Draft_Interop_Version": "8"}
PARTIAL = {"Content_Type": "application/partial-upload"}


def metadata(**pairs: str) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in pairs.items()
    )


class _Crossing(StubRequests):
    """
    The tests, for a store that L{makeStore} makes.
    """

    root: str

    def makeStore(self) -> Any:
        raise NotImplementedError()

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        os.makedirs(self.root)
        self.store = self.makeStore()
        self.addCleanup(self.store.close)  # type: ignore[attr-defined]
        self.app = UploadApp(self.store, ImmediateRunner(), Config(maxUploadSize=1000))
        self.treq = StubTreq(self.app.resource())

    def staged(self) -> list[tuple[str, int, int | None]]:
        """
        Every incomplete upload: its id, offset and length.
        """
        return sorted(
            (e.uploadId.value if e.uploadId else "", e.offset, e.total)
            for e in self.store.listIncomplete()
        )

    def landed(self) -> list[str]:
        """
        The complete files of the store.
        """
        if isinstance(self.store, MemoryStore):
            return sorted(self.store.files)
        found = []
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if d != ".uploadsvc"]
            found += [os.path.relpath(os.path.join(folder, n), self.root) for n in names]
        return sorted(found)

    def tusUpload(self, length: int, sent: bytes, **headers: Any) -> str:
        """
        A tus upload of C{length} with C{sent} bytes in; its id.
        """
        response, body = self.request(
            "POST", "/.tus/", sent, Upload_Length=str(length), **TUS,
            **(STREAM if sent else {}), **headers,
        )
        self.assertEqual(response.code, 201, body)  # type: ignore[attr-defined]
        return (self.header(response, "Location") or "").rsplit("/", 1)[1]

    def draftUpload(self, sent: bytes, **headers: Any) -> str:
        """
        An open draft upload with C{sent} bytes in; its id.
        """
        response, body = self.request(
            "POST", "/.uploads/", sent, Upload_Complete="?0", **DRAFT, **headers
        )
        self.assertEqual(response.code, 201, body)  # type: ignore[attr-defined]
        return (self.header(response, "Location") or "").rsplit("/", 1)[1]

    def draftRequests(self, uploadId: str, offset: int) -> list[tuple[str, Any]]:
        """
        Every draft request on C{uploadId}'s resource (HEAD, PATCHes that
        complete it or not, tell a length or not, DELETE) and its answer.
        """
        url = "/.uploads/" + uploadId
        asked = []
        for method, body, fields in (
            ("HEAD", b"", {}),
            ("PATCH", b"C", {"Upload_Offset": str(offset), "Upload_Complete": "?1", **PARTIAL}),
            ("PATCH", b"", {"Upload_Offset": str(offset), "Upload_Complete": "?1", **PARTIAL}),
            ("PATCH", b"C", {"Upload_Offset": str(offset), "Upload_Complete": "?0",
                             "Upload_Length": "5", **PARTIAL}),
            ("DELETE", b"", {}),
        ):
            asked.append(((method, body, fields), self.request(method, url, body, **DRAFT, **fields)))
        return asked

    def tusRequests(self, uploadId: str, offset: int) -> list[tuple[str, Any]]:
        """
        Every tus request on C{uploadId}'s URL (HEAD, PATCHes with and
        without a length, the overridden POST, DELETE) and its answer.
        """
        url = "/.tus/" + uploadId
        asked = []
        for method, body, fields in (
            ("HEAD", b"", {}),
            ("PATCH", b"!!", {"Upload_Offset": str(offset), "Upload_Length": str(offset + 2), **STREAM}),
            ("PATCH", b"", {"Upload_Offset": str(offset), "Upload_Length": str(offset), **STREAM}),
            ("PATCH", b"!", {"Upload_Offset": str(offset), **STREAM}),
            ("POST", b"", {"X_HTTP_Method_Override": "HEAD"}),
            ("DELETE", b"", {}),
        ):
            asked.append(((method, body, fields), self.request(method, url, body, **TUS, **fields)))
        return asked

    def assertAllNotFound(self, asked: list[tuple[str, Any]]) -> None:
        for what, (response, body) in asked:
            reason = b"" if what[0] == "HEAD" else b"there is no such upload\n"
            self.assertEqual((response.code, body), (404, reason), what)  # type: ignore[attr-defined]

    def test_draftOnTusPartial(self) -> None:
        """The draft's requests on a tus partial upload are 404: it is not completed, landed, lengthened nor removed."""
        uploadId = self.tusUpload(2, b"C", Upload_Concat="partial")
        before = self.staged()
        self.assertAllNotFound(self.draftRequests(uploadId, 1))
        self.assertEqual((self.staged(), self.landed()), (before, []))  # type: ignore[attr-defined]
        # It is still tus's, whole: a PATCH fills it and a final joins it.
        response, _ = self.request(
            "PATCH", "/.tus/" + uploadId, b"D", Upload_Offset="1", **TUS, **STREAM
        )
        self.assertEqual(response.code, 204)  # type: ignore[attr-defined]
        response, body = self.request(
            "POST", "/.tus/", Upload_Concat="final;/.tus/" + uploadId,
            Upload_Metadata=metadata(filename="cd.bin"), **TUS,
        )
        self.assertEqual(response.code, 201, body)  # type: ignore[attr-defined]
        self.assertEqual(self.landed(), ["cd.bin"])  # type: ignore[attr-defined]

    def test_draftOnTusUpload(self) -> None:
        """The draft's requests on a tus upload (named or not) are 404 and change nothing."""
        named = self.tusUpload(5, b"ab", Upload_Metadata=metadata(filename="t.bin"))
        unnamed = self.tusUpload(5, b"ab")
        before = self.staged()
        self.assertAllNotFound(self.draftRequests(named, 2) + self.draftRequests(unnamed, 2))
        self.assertEqual((self.staged(), self.landed()), (before, []))  # type: ignore[attr-defined]

    def test_tusOnDraftUpload(self) -> None:
        """tus's requests on a draft upload are 404: a length is not set, it is not completed nor removed."""
        uploadId = self.draftUpload(b"ie", Content_Disposition='inline; filename="ie.txt"')
        before = self.staged()
        self.assertAllNotFound(self.tusRequests(uploadId, 2))
        self.assertEqual((self.staged(), self.landed()), (before, []))  # type: ignore[attr-defined]
        # The draft completes it as it would have.
        response, body = self.request(
            "PATCH", "/.uploads/" + uploadId, b"!!", Upload_Offset="2", Upload_Complete="?1",
            **DRAFT, **PARTIAL,
        )
        self.assertEqual(response.code, 201, body)  # type: ignore[attr-defined]
        self.assertEqual(self.landed(), ["ie.txt"])  # type: ignore[attr-defined]

    def test_draftUploadIsNoPart(self) -> None:
        """A tus final upload naming a draft upload is 400 (an unknown upload); both stay as they were."""
        uploadId = self.draftUpload(b"ie")
        before = self.staged()
        response, body = self.request(
            "POST", "/.tus/", Upload_Concat="final;/.tus/" + uploadId, **TUS
        )
        self.assertEqual(  # type: ignore[attr-defined]
            (response.code, body), (400, b"Upload-Concat names an unknown upload\n")
        )
        self.assertEqual(self.staged(), before)  # type: ignore[attr-defined]

    def test_recorded(self) -> None:
        """The creating protocol is what the store keeps: tus, or ietf for a draft upload at /.uploads/ or on a file path."""
        tus = self.tusUpload(5, b"")
        draft = self.draftUpload(b"")
        response, _ = self.request("PUT", "/p.bin", b"x", Upload_Complete="?0", **DRAFT)
        onPath = (self.header(response, "Location") or "").rsplit("/", 1)[1]
        found = {
            uploadId: self.store.describe(UploadId(uploadId)).attributes.get("protocol")
            for uploadId in (tus, draft, onPath)
        }
        self.assertEqual(found, {tus: "tus", draft: "ietf", onPath: "ietf"})  # type: ignore[attr-defined]

    def test_unrecordedPartial(self) -> None:
        """A partial upload staged before the protocol was recorded is tus's alone: the draft answers 404."""
        made = self.store.create(None, 2, {"tus-concat": "partial"}, True, newUploadId())
        self.assertAllNotFound(self.draftRequests(made.value, 0))
        response, _ = self.request("HEAD", "/.tus/" + made.value, **TUS)
        self.assertEqual(response.code, 200)  # type: ignore[attr-defined]

    def test_unrecordedTusAttributes(self) -> None:
        """An upload staged before the protocol was recorded, with tus attributes (metadata, a deferred length), is tus's alone."""
        for attributes in ({"tus-metadata": "filename eA=="}, {"tus-defer-length": "1"}):
            made = self.store.create(parseRelativePath("x"), None, attributes, False, newUploadId())
            response, _ = self.request("HEAD", "/.uploads/" + made.value, **DRAFT)
            self.assertEqual(response.code, 404, attributes)  # type: ignore[attr-defined]
            response, _ = self.request("HEAD", "/.tus/" + made.value, **TUS)
            self.assertEqual(response.code, 200, attributes)  # type: ignore[attr-defined]

    def test_unrecordedPlain(self) -> None:
        """An upload staged before the protocol was recorded, with nothing that tells, is answered by both, as it was."""
        made = self.store.create(parseRelativePath("old.bin"), None, None, False, newUploadId())
        response, _ = self.request("HEAD", "/.uploads/" + made.value, **DRAFT)
        self.assertEqual(response.code, 204)  # type: ignore[attr-defined]
        response, _ = self.request("HEAD", "/.tus/" + made.value, **TUS)
        self.assertEqual(response.code, 200)  # type: ignore[attr-defined]


class FileStoreCrossingTests(_Crossing, SynchronousTestCase):
    def makeStore(self) -> IUploadStore:
        return FileStore(self.root, fsync=False)


class MemoryStoreCrossingTests(_Crossing, SynchronousTestCase):
    def makeStore(self) -> IUploadStore:
        return MemoryStore()
