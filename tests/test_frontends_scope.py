"""
Scoped credentials and signed URLs on the tus (C{/.tus/}) and draft
(C{/.uploads/}, file paths) front ends: a creation is checked on the
destination its metadata names (or C{incoming/<id>}), every later request
on an upload id on the destination the store recorded, and a pre-create
hook's choice again; a refusal is C{403 out-of-scope} from the headers,
with nothing stored changed. StubTreq in memory, a real file store.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.ops.hookrunner import Hooks
from uploadsvc.ops.hooks import Proceed
from uploadsvc.protocol.signing import signQuery
from uploadsvc.storage.filestore import FileStore
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp
from uploadsvc.web.auth import Authenticator, SecretFile, tokenFile
from tests.support.hooktargets import FakeTarget

ADMIN = "admin-token-0123456789"
ALICE = "alice-token-0123456789"
DROP = "drop-token-0123456789"
READER = "reader-token-0123456789"
UPLOADER = "uploader-token-0123456789"
KEY = b"signing-key-" + b"7" * 40

TOKENS = f"""{ADMIN} name=admin
{ALICE} name=alice prefix=alice/ ops=upload
{DROP} name=drop prefix=incoming/ ops=upload
{READER} name=reader ops=download
{UPLOADER} name=up ops=upload
"""

TUS = {"Tus-Resumable": "1.0.0"}
STREAM = {"Content-Type": "application/offset+octet-stream"}
PARTIAL = {"Content-Type": "application/partial-upload"}
NOW = 1_700_000_000


def metadata(**pairs: str) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in pairs.items()
    )


class _ScopeCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(NOW)
        tokens = os.path.abspath(self.mktemp())
        with open(tokens, "w") as f:
            f.write(TOKENS)
        keys = os.path.abspath(self.mktemp())
        with open(keys, "wb") as f:
            f.write(KEY + b"\n")
        self.auth = Authenticator(
            self.clock, tokenFile(tokens, self.clock), SecretFile(keys, self.clock)
        )
        self.target = FakeTarget()
        self.build()

    def build(self, hooks: frozenset[str] = frozenset()) -> None:
        self.store = FileStore(self.root, fsync=False)
        self.addCleanup(self.store.close)
        self.app = UploadApp(
            self.store, ImmediateRunner(), Config(maxUploadSize=1_000_000, expireAfter=0),
            auth=self.auth, clock=self.clock,
            hooks=Hooks([self.target], hooks, self.clock) if hooks else None,
        )
        self.treq = StubTreq(self.app.resource())

    def send(
        self, token: str | None, method: str, path: str, body: bytes = b"", **headers: str
    ) -> tuple[Any, bytes]:
        fields = {k.replace("_", "-"): [v] for k, v in headers.items()}
        if token is not None:
            fields["Authorization"] = [f"Bearer {token}"]
        response = self.successResultOf(
            self.treq.request(method, "http://example" + path, data=body or None, headers=fields)
        )
        return response, self.successResultOf(self.treq.content(response))

    def header(self, response: Any, name: str) -> str | None:
        values = response.headers.getRawHeaders(name)
        return values[0].decode() if values and isinstance(values[0], bytes) else (
            values[0] if values else None
        )

    def signed(self, method: str, path: str) -> str:
        return path + "?" + signQuery(KEY, method.encode(), path.encode(), NOW + 600).decode()

    def assertOutOfScope(self, answer: tuple[Any, bytes]) -> None:
        response, body = answer
        self.assertEqual(response.code, 403, body)
        if body:
            self.assertEqual(body.count(b"\n"), 1, body)

    def incomplete(self) -> list[tuple[str | None, int]]:
        return sorted((e.path, e.offset) for e in self.store.listIncomplete())

    def files(self) -> list[str]:
        found = []
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if d != ".uploadsvc"]
            found += [os.path.relpath(os.path.join(folder, n), self.root) for n in names]
        return sorted(found)


class TusScopeTests(_ScopeCase):
    def create(self, token: str, length: int = 10, **headers: str) -> tuple[Any, bytes]:
        return self.send(token, "POST", "/.tus/", Upload_Length=str(length), **TUS, **headers)

    def adminUpload(self, name: str = "bob/x.bin") -> str:
        response, body = self.create(ADMIN, Upload_Metadata=metadata(filename=name))
        self.assertEqual(response.code, 201, body)
        location = self.header(response, "Location")
        assert location is not None
        response, _ = self.send(ADMIN, "PATCH", location, b"01234", Upload_Offset="0", **TUS, **STREAM)
        self.assertEqual(response.code, 204)
        return location

    def test_creationOutside(self) -> None:
        """A token limited to alice/ cannot create a tus upload whose filename or relativePath is elsewhere: 403, nothing made."""
        for pairs in ({"filename": "bob/x"}, {"relativePath": "/bob/x", "filename": "alice/x"}):
            self.assertOutOfScope(self.create(ALICE, Upload_Metadata=metadata(**pairs)))
        body = b"0123456789"
        self.assertOutOfScope(self.send(
            ALICE, "POST", "/.tus/", body, Upload_Length="10",
            Upload_Metadata=metadata(filename="bob/y"), **TUS, **STREAM,
        ))
        self.assertEqual(self.incomplete(), [])
        self.assertEqual(self.files(), [])

    def test_creationInside(self) -> None:
        """Inside its folder the same token creates, writes and lands the upload."""
        response, _ = self.create(ALICE, 5, Upload_Metadata=metadata(filename="alice/a.bin"))
        self.assertEqual(response.code, 201)
        location = self.header(response, "Location") or ""
        response, _ = self.send(ALICE, "PATCH", location, b"abcde", Upload_Offset="0", **TUS, **STREAM)
        self.assertEqual(response.code, 204)
        self.assertEqual(self.files(), ["alice/a.bin"])

    def test_unnamed(self) -> None:
        """Without a name (incoming/<id>) a token limited to alice/ is refused; one limited to incoming/ or to nothing may."""
        self.assertOutOfScope(self.create(ALICE))
        self.assertEqual(self.incomplete(), [])
        for token in (DROP, UPLOADER):
            response, _ = self.create(token)
            self.assertEqual(response.code, 201)
        self.assertEqual([p.split("/")[0] for p, _ in self.incomplete()], ["incoming", "incoming"])

    def test_idRequestsOutside(self) -> None:
        """HEAD, PATCH, DELETE (and their X-HTTP-Method-Override forms) on an upload outside the folder are 403, the upload untouched."""
        location = self.adminUpload()
        self.assertOutOfScope(self.send(ALICE, "HEAD", location, **TUS))
        self.assertOutOfScope(
            self.send(ALICE, "PATCH", location, b"56789", Upload_Offset="5", **TUS, **STREAM)
        )
        self.assertOutOfScope(self.send(ALICE, "DELETE", location, **TUS))
        for override in ("DELETE", "PATCH", "HEAD"):
            self.assertOutOfScope(self.send(
                ALICE, "POST", location, b"", X_HTTP_Method_Override=override, Upload_Offset="5",
                **TUS, **STREAM,
            ))
        self.assertEqual(self.incomplete(), [("bob/x.bin", 5)])
        response, _ = self.send(ADMIN, "HEAD", location, **TUS)
        self.assertEqual(self.header(response, "Upload-Offset"), "5")

    def test_operations(self) -> None:
        """An upload-only token may query, append and terminate (cancel); a download-only one may do none."""
        location = self.adminUpload("u.bin")
        self.assertOutOfScope(self.send(READER, "HEAD", location, **TUS))
        self.assertOutOfScope(self.send(READER, "DELETE", location, **TUS))
        self.assertEqual(self.send(UPLOADER, "HEAD", location, **TUS)[0].code, 200)
        self.assertEqual(self.send(UPLOADER, "DELETE", location, **TUS)[0].code, 204)
        self.assertEqual(self.incomplete(), [])

    def test_completedOutside(self) -> None:
        """An upload completed here is not described to a token whose folder does not hold it."""
        location = self.adminUpload()
        response, _ = self.send(ADMIN, "PATCH", location, b"56789", Upload_Offset="5", **TUS, **STREAM)
        self.assertEqual(response.code, 204)
        self.assertEqual(self.files(), ["bob/x.bin"])
        self.assertOutOfScope(self.send(ALICE, "HEAD", location, **TUS))
        self.assertOutOfScope(self.send(ALICE, "PATCH", location, Upload_Offset="10", **TUS, **STREAM))

    def test_concatenation(self) -> None:
        """Partial uploads are checked on their metadata's name; a final upload may not take parts outside the folder."""
        self.assertOutOfScope(self.create(ALICE, 5, Upload_Concat="partial"))
        response, _ = self.create(
            ALICE, 5, Upload_Concat="partial", Upload_Metadata=metadata(filename="alice/p")
        )
        self.assertEqual(response.code, 201)
        mine = self.header(response, "Location") or ""
        response, _ = self.create(ADMIN, 5, Upload_Concat="partial", Upload_Metadata=metadata(filename="bob/p"))
        theirs = self.header(response, "Location") or ""
        for part in (mine, theirs):
            token = ALICE if part == mine else ADMIN
            self.assertEqual(
                self.send(token, "PATCH", part, b"abcde", Upload_Offset="0", **TUS, **STREAM)[0].code, 204
            )
        self.assertOutOfScope(self.send(
            ALICE, "POST", "/.tus/", Upload_Concat=f"final;{mine} {theirs}",
            Upload_Metadata=metadata(filename="alice/joined"), **TUS,
        ))
        self.assertEqual(self.files(), [])
        response, _ = self.send(
            ALICE, "POST", "/.tus/", Upload_Concat=f"final;{mine}",
            Upload_Metadata=metadata(filename="alice/joined"), **TUS,
        )
        self.assertEqual(response.code, 201)
        self.assertEqual(self.files(), ["alice/joined"])

    def test_signedCreationRefused(self) -> None:
        """A signed URL for POST /.tus/ names no destination: 403, nothing made."""
        self.assertOutOfScope(self.send(
            None, "POST", self.signed("POST", "/.tus/"), Upload_Length="5",
            Upload_Metadata=metadata(filename="any/where"), **TUS,
        ))
        self.assertEqual(self.incomplete(), [])

    def test_signedIdURL(self) -> None:
        """A signed URL for one upload's URL and method serves that request only, never with a method override."""
        location = self.adminUpload()
        response, _ = self.send(
            None, "PATCH", self.signed("PATCH", location), b"56", Upload_Offset="5", **TUS, **STREAM
        )
        self.assertEqual(response.code, 204)
        self.assertOutOfScope(self.send(
            None, "POST", self.signed("POST", location), X_HTTP_Method_Override="DELETE", **TUS,
        ))
        self.assertEqual(self.send(None, "DELETE", self.signed("PATCH", location), **TUS)[0].code, 401)
        self.assertEqual(self.incomplete(), [("bob/x.bin", 7)])

    def test_preCreateChoiceChecked(self) -> None:
        """A pre-create hook's destination outside the folder is 403, nothing made."""
        self.build(frozenset({"pre-create"}))
        self.target.answers = [Proceed("bob/moved.bin")]
        self.assertOutOfScope(self.create(ALICE, Upload_Metadata=metadata(filename="alice/a")))
        self.assertEqual(self.incomplete(), [])
        self.target.answers = [Proceed("alice/moved.bin")]
        response, _ = self.create(ALICE, Upload_Metadata=metadata(filename="alice/a"))
        self.assertEqual(response.code, 201)
        self.assertEqual(self.incomplete(), [("alice/moved.bin", 0)])


class DraftScopeTests(_ScopeCase):
    def create(self, token: str | None, path: str = "/.uploads/", body: bytes = b"01234", **headers: str) -> tuple[Any, bytes]:
        return self.send(
            token, "POST", path, body, Upload_Complete="?0", Upload_Draft_Interop_Version="8",
            **headers,
        )

    def adminUpload(self) -> str:
        response, body = self.create(ADMIN, Content_Disposition='attachment; filename="bob/x.bin"')
        self.assertEqual(response.code, 201, body)
        location = self.header(response, "Location")
        assert location is not None
        return location

    def test_creationOutside(self) -> None:
        """A token limited to alice/ cannot create a draft upload elsewhere, at /.uploads/ or on a file path: 403, nothing made."""
        self.assertOutOfScope(self.create(ALICE, Content_Disposition='attachment; filename="bob/x"'))
        self.assertOutOfScope(self.create(ALICE, "/bob/y"))
        self.assertEqual(self.incomplete(), [])
        self.assertEqual(self.files(), [])
        response, _ = self.create(ALICE, Content_Disposition='attachment; filename="alice/x"')
        self.assertEqual(response.code, 201)
        self.assertEqual(self.incomplete(), [("alice/x", 5)])

    def test_unnamed(self) -> None:
        """Without a filename (incoming/<id>) a token limited to alice/ is refused; one limited to incoming/ may."""
        self.assertOutOfScope(self.create(ALICE))
        self.assertEqual(self.incomplete(), [])
        response, _ = self.create(DROP)
        self.assertEqual(response.code, 201)
        [(path, offset)] = self.incomplete()
        self.assertEqual(path.split("/")[0], "incoming")

    def test_idRequestsOutside(self) -> None:
        """HEAD, PATCH and DELETE on a draft upload outside the folder are 403, the upload untouched."""
        location = self.adminUpload()
        self.assertOutOfScope(self.send(ALICE, "HEAD", location))
        self.assertOutOfScope(self.send(
            ALICE, "PATCH", location, b"56789", Upload_Offset="5", Upload_Complete="?1", **PARTIAL
        ))
        self.assertOutOfScope(self.send(ALICE, "DELETE", location))
        self.assertOutOfScope(self.send(READER, "HEAD", location))
        self.assertEqual(self.incomplete(), [("bob/x.bin", 5)])
        self.assertEqual(self.files(), [])
        response, _ = self.send(UPLOADER, "DELETE", location)
        self.assertEqual(response.code, 204)
        self.assertEqual(self.incomplete(), [])

    def test_signed(self) -> None:
        """A signed URL for a file path creates a draft upload there; one for POST /.uploads/ is 403."""
        self.assertOutOfScope(self.create(
            None, self.signed("POST", "/.uploads/"), Content_Disposition="attachment; filename=s.bin"
        ))
        self.assertEqual(self.incomplete(), [])
        response, _ = self.create(None, self.signed("PUT", "/s/named.bin"))
        self.assertEqual(response.code, 201)
        self.assertEqual(self.incomplete(), [("s/named.bin", 5)])

    def test_preCreateChoiceChecked(self) -> None:
        """A pre-create hook's destination outside the folder is 403, nothing made."""
        self.build(frozenset({"pre-create"}))
        self.target.answers = [Proceed("bob/moved.bin")]
        self.assertOutOfScope(self.create(ALICE, "/alice/a.bin"))
        self.assertEqual(self.incomplete(), [])


    def test_signedPreCreateMoves(self) -> None:
        """A draft creation on a signed file path goes where a pre-create hook says, as a path upload would."""
        self.build(frozenset({"pre-create"}))
        self.target.answers = [Proceed("moved/by-hook.bin")]
        response, _ = self.create(None, self.signed("PUT", "/s/named.bin"))
        self.assertEqual(response.code, 201)
        self.assertEqual(self.incomplete(), [("moved/by-hook.bin", 5)])


class PathPreCreateScopeTests(_ScopeCase):
    def test_preCreateChoiceChecked(self) -> None:
        """On a path upload too, a pre-create hook's destination outside the credential's folder is 403, nothing staged."""
        self.build(frozenset({"pre-create"}))
        self.target.answers = [Proceed("bob/moved.bin")]
        self.assertOutOfScope(self.send(ALICE, "PUT", "/alice/a.bin", b"data"))
        self.assertEqual(self.incomplete(), [])
        self.assertEqual(self.files(), [])


class RuleTests(SynchronousTestCase):
    """
    The pure rules of L{uploadsvc.protocol.scopes} for tus and the draft.
    """

    def test_checkCreation(self) -> None:
        """A creation is checked on its destination; unnamed ones only for the whole root or incoming/; signed ones only on their own path."""
        from uploadsvc.errors import Forbidden
        from uploadsvc.protocol.paths import parseRelativePath
        from uploadsvc.protocol.scopes import Access, Credential, checkCreation

        alice = Credential(b"t" * 16, "alice", ("alice",), frozenset({"upload"}))
        drop = Credential(b"d" * 16, "drop", ("incoming",), frozenset({"upload"}))
        deep = Credential(b"e" * 16, "deep", ("incoming", "a"), frozenset({"upload"}))
        reader = Credential(b"r" * 16, "reader", (), frozenset({"download"}))
        everyone = Credential(b"p" * 16)
        inside, outside = parseRelativePath("alice/a"), parseRelativePath("bob/a")
        allowed = [
            (Access(), outside, False), (Access(), None, False), (Access(alice), inside, False),
            (Access(drop), None, False), (Access(everyone), None, False),
            (Access(signed=True), outside, True),
        ]
        for access, destination, named in allowed:
            checkCreation(access, destination, named)
        refused = [
            (Access(alice), outside, False), (Access(alice), None, False), (Access(deep), None, False),
            (Access(reader), None, False), (Access(reader), outside, False),
            (Access(signed=True), outside, False), (Access(signed=True), None, False),
        ]
        for access, destination, named in refused:
            error = self.assertRaises(Forbidden, checkCreation, access, destination, named)
            self.assertEqual(error.code, "out-of-scope")

    def test_checkUpload(self) -> None:
        """Requests on an id: HEAD/PATCH/POST need upload, DELETE delete or upload; a signed URL never with a method override."""
        from uploadsvc.errors import Forbidden
        from uploadsvc.protocol.paths import parseRelativePath
        from uploadsvc.protocol.scopes import Access, Credential, checkUpload, idOperation

        uploader = Credential(b"u" * 16, "up", (), frozenset({"upload"}))
        deleter = Credential(b"x" * 16, "del", (), frozenset({"delete"}))
        reader = Credential(b"r" * 16, "reader", (), frozenset({"download"}))
        path = parseRelativePath("a/b")
        self.assertEqual([idOperation(uploader, m) for m in (b"HEAD", b"PATCH", b"POST", b"DELETE")],
                         ["upload"] * 4)
        self.assertEqual(idOperation(deleter, b"DELETE"), "delete")
        for method in (b"HEAD", b"PATCH", b"DELETE"):
            checkUpload(Access(uploader), path, method)
            self.assertRaises(Forbidden, checkUpload, Access(reader), path, method)
        self.assertRaises(Forbidden, checkUpload, Access(deleter), path, b"PATCH")
        checkUpload(Access(deleter), path, b"DELETE")
        checkUpload(Access(signed=True), path, b"PATCH")
        self.assertRaises(Forbidden, checkUpload, Access(signed=True), path, b"DELETE", True)
