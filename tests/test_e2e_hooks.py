"""
Hooks end to end: a real C{twistd uploadsvc} calling a real HTTP endpoint
(a small twisted.web server in this test, on 127.0.0.1) and a real command
(a small Python program): refusals from the headers, a changed destination,
pre-finish rejecting a file, an endpoint that is down (503, data kept, then
the retry succeeds), an endpoint that answers garbage or never, and
notifications that are retried, never block an upload, and are reported
when they give up.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests.support import rawhttp
from tests.support.server import REPO_ROOT, ServerTestMixin, freePort

TOKEN = "hooks-e2e-token-7f3a9c2e41d8"
SECRET = "hook-shared-secret-0123456789abcdef"
BODY = rawhttp.patternBytes(11, 0, 300_000)
TOTAL = len(BODY)

#: Bounded waits: polls of this many steps of L{STEP} seconds.
POLLS = 600
STEP = 0.05

Answer = tuple[int, bytes] | str | None

#: A policy's answer: 200 and the first byte of a body that never ends.
TRICKLE = "trickle"


class HookEndpoint(Resource):
    """
    The application's hook endpoint: records every call and answers as
    C{policy(hook, document)} says (L{None}: never answers; L{TRICKLE}:
    headers and one byte of the body, then nothing more).
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, dict[str, Any], dict[bytes, list[bytes]]]] = []
        self.policy: Callable[[str, dict[str, Any]], Answer] = lambda hook, doc: (204, b"")
        self.pending: list[Any] = []

    def render_POST(self, request: Any) -> Any:
        document = json.loads(request.content.read())
        headers = dict(request.requestHeaders.getAllRawHeaders())
        self.calls.append((document["hook"], document, headers))
        answer = self.policy(document["hook"], document)
        if answer == TRICKLE:
            request.setResponseCode(200)
            request.write(b" ")
        if answer is None or answer == TRICKLE:
            self.pending.append(request)
            request.notifyFinish().addBoth(lambda _: self.pending.remove(request))
            return NOT_DONE_YET
        assert isinstance(answer, tuple)
        code, body = answer
        request.setResponseCode(code)
        return body

    def hooks(self) -> list[str]:
        return [hook for hook, _, _ in self.calls]

    def documents(self, hook: str) -> list[dict[str, Any]]:
        return [doc for name, doc, _ in self.calls if name == hook]


async def waitFor(condition: Callable[[], bool]) -> bool:
    """
    Let the reactor run until C{condition()} holds (bounded: L{POLLS} looks).
    """
    for _ in range(POLLS):
        if condition():
            return True
        await deferLater(reactor, STEP)
    return condition()


class HookTestMixin(ServerTestMixin):
    """
    A hook endpoint in this process and a server that calls it.
    """

    def startEndpoint(self, port: int = 0) -> int:
        self.endpoint = HookEndpoint()
        listening = reactor.listenTCP(port, Site(self.endpoint), interface="127.0.0.1")
        self.addCleanup(self._stopEndpoint, listening)  # type: ignore[attr-defined]
        return listening.getHost().port  # type: ignore[no-any-return]

    def _stopEndpoint(self, listening: Any) -> Any:
        for request in list(self.endpoint.pending):
            request.setResponseCode(500)
            request.finish()
        return listening.stopListening()

    def tokenFile(self) -> str:
        path = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        with open(path, "w") as f:
            f.write(TOKEN + "\n")
        return path

    def secretFile(self) -> str:
        path = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        with open(path, "w") as f:
            f.write(SECRET + "\n")
        return path

    def put(self, path: str, body: bytes, headers: list[tuple[str, str]] | None = None) -> Any:
        """
        A PUT on a raw connection, in a thread (the reactor keeps serving
        the hook endpoint meanwhile).
        """
        sent = [("Authorization", f"Bearer {TOKEN}"), ("Content-Length", str(len(body)))]
        sent += headers or []
        return deferToThread(
            lambda: rawhttp.exchange(self.server.port, "PUT", path, sent, body, timeout=60)[1]
        )

    def head(self, path: str) -> Any:
        return deferToThread(
            lambda: rawhttp.exchange(
                self.server.port, "HEAD", path, [("Authorization", f"Bearer {TOKEN}")], timeout=30
            )[1]
        )

    def headersOnly(self, path: str, length: int) -> Any:
        """
        Send only the headers of a PUT announcing C{length} bytes with
        C{Expect: 100-continue}; read the final answer, and whether the
        server closed the connection.
        """

        def run() -> tuple[list[Any], Any, bytes]:
            sent = [
                ("Authorization", f"Bearer {TOKEN}"),
                ("Content-Length", str(length)),
                ("Expect", "100-continue"),
            ]
            with rawhttp.connect(self.server.port, timeout=60) as sock:
                sock.sendall(rawhttp.requestHead("PUT", path, sent))
                reader = rawhttp.ResponseReader(sock)
                interim, answer = reader.readFinal("PUT")
                return interim, answer, reader.waitClosed(30)

        return deferToThread(run)

    def stored(self, relpath: str) -> bytes | None:
        try:
            with open(self.storedPath(relpath), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None


class HTTPHookTests(HookTestMixin, TestCase):
    timeout = 180

    def serve(self, *extra: str, hookPort: int | None = None) -> None:
        port = self.startEndpoint() if hookPort is None else hookPort
        self.startUploadServer(
            "--auth-tokens", self.tokenFile(),
            "--hook-url", f"http://127.0.0.1:{port}/hooks",
            "--hook-secret-file", self.secretFile(),
            "--hook-backoff", "0.2",
            *extra,
        )

    async def test_refusedFromHeaders(self) -> None:
        """pre-create refuses with its status and reason from the headers: no 100 Continue, no body read, connection closed."""
        self.serve()
        self.endpoint.policy = lambda hook, doc: (
            (403, b'{"reason": "no uploads into archive/"}') if hook == "pre-create" else (204, b"")
        )
        interim, answer, rest = await self.headersOnly("/archive/a.bin", 1_000_000)
        self.assertEqual(interim, [])
        self.assertEqual(answer.status, 403)
        self.assertEqual(answer.body, b"no uploads into archive/\n")
        self.assertEqual(answer.header("content-type"), "text/plain; charset=utf-8")
        self.assertIn("close", answer.header("connection") or "")
        self.assertEqual(rest, b"")
        [(hook, document, headers)] = self.endpoint.calls
        self.assertEqual(hook, "pre-create")
        self.assertEqual(headers[b"Uploadsvc-Hook-Secret"], [SECRET.encode()])
        self.assertEqual(document["upload"]["path"], "archive/a.bin")
        self.assertEqual(document["upload"]["total"], 1_000_000)
        self.assertEqual(document["request"]["client"].split(":")[0], "127.0.0.1")
        sent = json.dumps(document)
        self.assertNotIn(TOKEN, sent)
        self.assertNotIn("authorization", document["request"]["headers"])
        head = await self.head("/archive/a.bin")
        self.assertEqual(head.status, 404)

    async def test_renamed(self) -> None:
        """pre-create sends the upload elsewhere: it lands there, the answer's Location says where."""
        self.serve()
        self.endpoint.policy = lambda hook, doc: (
            (200, json.dumps({"path": "users/alice/" + doc["upload"]["path"]}).encode())
            if hook == "pre-create" else (204, b"")
        )
        answer = await self.put("/photo.jpg", BODY)
        self.assertCompleted(answer, "users/alice/photo.jpg", TOTAL, rawhttp.patternSha256(11, TOTAL))
        self.assertIsNone(self.stored("photo.jpg"))
        self.assertTrue(await waitFor(lambda: "post-finish" in self.endpoint.hooks()))
        [finished] = self.endpoint.documents("post-finish")
        self.assertEqual(finished["upload"]["path"], "users/alice/photo.jpg")
        self.assertEqual(finished["upload"]["offset"], TOTAL)

    async def test_renamedOutsideRefused(self) -> None:
        """A hook cannot send a file outside the root: its ../ destination is refused with 400."""
        self.serve()
        self.endpoint.policy = lambda hook, doc: (
            (200, b'{"path": "../../etc/evil"}') if hook == "pre-create" else (204, b"")
        )
        answer = await self.put("/x.bin", BODY[:1000])
        self.assertEqual(answer.status, 400)
        self.assertEqual(sorted(os.listdir(self.server.root)), [".uploadsvc"])
        self.assertFalse(os.path.exists(os.path.join(os.path.dirname(self.server.root), "etc")))

    async def test_renamedThroughLinkNoLocation(self) -> None:
        """A destination through a symbolic link is refused 403 with no Location: nothing was accepted there."""
        self.serve()
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        os.symlink(outside, os.path.join(self.server.root, "linked"))
        self.endpoint.policy = lambda hook, doc: (
            (200, b'{"path": "linked/x.bin"}') if hook == "pre-create" else (204, b"")
        )
        answer = await self.put("/x.bin", BODY[:1000])
        self.assertEqual(answer.status, 403)
        self.assertIsNone(answer.header("location"))
        self.assertEqual(os.listdir(outside), [])

    async def test_preFinishRejects(self) -> None:
        """pre-finish rejects the file: the client gets its status and reason; the file never appears and is not kept."""
        self.serve()
        self.endpoint.policy = lambda hook, doc: (
            (422, b"checksum blocklisted") if hook == "pre-finish" else (204, b"")
        )
        answer = await self.put("/bad.bin", BODY)
        self.assertEqual(answer.status, 422)
        self.assertEqual(answer.body, b"checksum blocklisted\n")
        self.assertIsNone(self.stored("bad.bin"))
        self.assertEqual((await self.head("/bad.bin")).status, 404)
        self.assertEqual(
            [h for h in self.endpoint.hooks() if h.startswith("pre-")], ["pre-create", "pre-finish"]
        )
        self.assertEqual(self.endpoint.documents("pre-finish")[0]["upload"]["offset"], TOTAL)

    async def test_endpointDown(self) -> None:
        """With the endpoint down, pre-create answers 503 + Retry-After and nothing is staged; once it is up, the retry succeeds."""
        port = freePort()
        self.serve(hookPort=port)
        answer = await self.put("/later.bin", BODY)
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.header("retry-after"), "5")
        self.assertEqual((await self.head("/later.bin")).status, 404)
        self.assertIn("pre-create hook", self.server.logText())
        self.startEndpoint(port)
        answer = await self.put("/later.bin", BODY)
        self.assertCompleted(answer, "later.bin", TOTAL, rawhttp.patternSha256(11, TOTAL))

    async def test_preFinishDownKeepsData(self) -> None:
        """A pre-finish endpoint that is down answers 503 and keeps every byte staged; once up, a status query completes the upload."""
        port = freePort()
        self.serve("--hooks", "pre-finish", hookPort=port)
        answer = await self.put(
            "/kept.bin", BODY, [("Content-Range", f"bytes 0-{TOTAL - 1}/{TOTAL}")]
        )
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.header("retry-after"), "5")
        self.assertIsNone(self.stored("kept.bin"))
        head = await self.head("/kept.bin")
        self.assertIncomplete(head, TOTAL, TOTAL, head=True)
        # Still kept after a restart (the pre-finish hook stops recovery
        # from finishing it behind the hook's back).
        await deferToThread(self.server.restart)
        self.assertIsNone(self.stored("kept.bin"))
        self.startEndpoint(port)
        query = await deferToThread(
            lambda: rawhttp.exchange(
                self.server.port, "PUT", "/kept.bin",
                [("Authorization", f"Bearer {TOKEN}"), ("Content-Range", f"bytes */{TOTAL}"),
                 ("Content-Length", "0")], timeout=60,
            )[1]
        )
        self.assertCompleted(query, "kept.bin", TOTAL, rawhttp.patternSha256(11, TOTAL), jsonBody=True)
        self.assertEqual(self.endpoint.hooks(), ["pre-finish"])

    async def test_garbage(self) -> None:
        """An endpoint answering garbage is a failed hook: 503, never a success, and logged."""
        self.serve()
        self.endpoint.policy = lambda hook, doc: (200, b"<html>OK!</html>")
        answer = await self.put("/g.bin", BODY[:1000])
        self.assertEqual(answer.status, 503)
        self.assertIsNone(self.stored("g.bin"))
        self.assertIn("answer is not JSON", self.server.logText())

    async def test_slow(self) -> None:
        """An endpoint that never answers is a failed hook at --hook-timeout: 503, the call abandoned."""
        self.serve("--hook-timeout", "2")
        self.endpoint.policy = lambda hook, doc: None
        answer = await self.put("/s.bin", BODY[:1000])
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.header("retry-after"), "5")
        self.assertIn("within 2 s", self.server.logText())
        # The server gave up on its request: it closed the connection.
        self.assertTrue(await waitFor(lambda: not self.endpoint.pending))

    async def test_trickledBodyClosed(self) -> None:
        """
        An endpoint that sends its headers at once and then never finishes
        its body is a failed hook at --hook-timeout (503), and the server
        closes its connection to it.
        """
        self.serve("--hook-timeout", "2")
        self.endpoint.policy = lambda hook, doc: TRICKLE
        answer = await self.put("/t.bin", BODY[:1000])
        self.assertEqual(answer.status, 503)
        self.assertIn("within 2 s", self.server.logText())
        self.assertTrue(await waitFor(lambda: not self.endpoint.pending))

    async def test_notificationRetried(self) -> None:
        """A notification that fails is tried again (backoff) until delivered; the upload never waits for it."""
        self.serve("--hooks", "post-create,post-finish")
        failures = {"post-finish": 2}

        def policy(hook: str, doc: dict[str, Any]) -> Answer:
            if hook == "post-create":
                return None  # never answers: must not hold up the upload
            if failures.get(hook):
                failures[hook] -= 1
                return (500, b"busy")
            return (204, b"")

        self.endpoint.policy = policy
        first = await self.put(
            "/n.bin", BODY[:1000], [("Content-Range", f"bytes 0-999/{TOTAL}")]
        )
        self.assertIncomplete(first, 1000)
        self.assertTrue(await waitFor(lambda: len(self.endpoint.pending) == 1))
        rest = await self.put(
            "/n.bin", BODY[1000:], [("Content-Range", f"bytes 1000-{TOTAL - 1}/{TOTAL}")]
        )
        self.assertCompleted(rest, "n.bin", TOTAL, rawhttp.patternSha256(11, TOTAL))
        self.assertTrue(await waitFor(lambda: len(self.endpoint.documents("post-finish")) == 3))
        log = self.server.logText()
        self.assertEqual(log.count("post-finish notification"), 2)
        self.assertIn("trying again in 0.2 s", log)
        self.assertIn("trying again in 0.4 s", log)

    async def test_notificationGivesUp(self) -> None:
        """A notification that keeps failing is given up after its last try: logged, never silently lost."""
        self.serve("--hooks", "post-finish", "--hook-retries", "2")
        self.endpoint.policy = lambda hook, doc: (503, b"")
        answer = await self.put("/lost.bin", BODY[:1000])
        self.assertEqual(answer.status, 201)
        self.assertTrue(
            await waitFor(lambda: "not delivered after 3 tries" in self.server.logText())
        )
        self.assertEqual(len(self.endpoint.documents("post-finish")), 3)


HOOK_PROGRAM = r'''
import json, sys
record, hook = sys.argv[1], sys.argv[-1]
event = json.load(sys.stdin)
with open(record, "a") as f:
    f.write(json.dumps({"hook": hook, "event": event}) + "\n")
path = event["upload"]["path"] or ""
if hook == "pre-create":
    if "forbidden" in path:
        print(json.dumps({"status": 403, "reason": "no forbidden files here"}))
    elif path.startswith("inbox/"):
        print(json.dumps({"path": "sorted/" + path[len("inbox/"):]}))
elif hook == "pre-finish":
    if path.endswith(".exe"):
        print(json.dumps({"status": 415, "reason": "no executables"}))
        sys.exit(1)
    if "crash" in path:
        sys.stderr.write("scanner unavailable\n")
        sys.exit(3)
'''


class CommandHookTests(HookTestMixin, TestCase):
    timeout = 180

    def setUp(self) -> None:
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        self.program = os.path.join(work, "hook.py")
        with open(self.program, "w") as f:
            f.write(HOOK_PROGRAM)
        self.record = os.path.join(work, "calls.jsonl")
        self.startUploadServer(
            "--auth-tokens", self.tokenFile(),
            "--hook-command", f"{sys.executable} {self.program} {self.record}",
        )

    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        try:
            with open(self.record) as f:
                return [(c["hook"], c["event"]) for c in map(json.loads, f)]
        except FileNotFoundError:
            return []

    async def test_uploadAndNotifications(self) -> None:
        """A command sees pre-create, pre-finish and post-create/post-finish, the event on stdin."""
        answer = await self.put("/ok.bin", BODY)
        self.assertCompleted(answer, "ok.bin", TOTAL, rawhttp.patternSha256(11, TOTAL))
        self.assertTrue(await waitFor(lambda: len(self.calls()) == 4))
        hooks = [hook for hook, _ in self.calls()]
        self.assertEqual([h for h in hooks if h.startswith("pre-")], ["pre-create", "pre-finish"])
        self.assertEqual(sorted(h for h in hooks if h.startswith("post-")), ["post-create", "post-finish"])
        # post-finish follows the answer, so it comes after pre-finish.
        self.assertGreater(hooks.index("post-finish"), hooks.index("pre-finish"))
        for _, event in self.calls():
            self.assertEqual(event["upload"]["path"], "ok.bin")
            self.assertNotIn(TOKEN, json.dumps(event))

    async def test_terminated(self) -> None:
        """Cancelling an incomplete upload tells post-terminate."""
        first = await self.put("/t.bin", BODY[:1000], [("Content-Range", f"bytes 0-999/{TOTAL}")])
        self.assertIncomplete(first, 1000)
        gone = await deferToThread(
            lambda: rawhttp.exchange(
                self.server.port, "DELETE", "/t.bin", [("Authorization", f"Bearer {TOKEN}")],
                timeout=30,
            )[1]
        )
        self.assertEqual(gone.status, 204)
        self.assertTrue(await waitFor(lambda: "post-terminate" in [h for h, _ in self.calls()]))
        [event] = [e for h, e in self.calls() if h == "post-terminate"]
        self.assertEqual(event["upload"]["path"], "t.bin")
        self.assertEqual(event["detail"]["event"], "cancelled")

    async def test_refused(self) -> None:
        """The command refuses on stdout: the client gets its status and reason."""
        answer = await self.put("/forbidden/x.bin", BODY[:1000])
        self.assertEqual(answer.status, 403)
        self.assertEqual(answer.body, b"no forbidden files here\n")
        self.assertEqual((await self.head("/forbidden/x.bin")).status, 404)

    async def test_renamed(self) -> None:
        """The command moves the upload: it lands at the command's destination."""
        answer = await self.put("/inbox/r.bin", BODY)
        self.assertCompleted(answer, "sorted/r.bin", TOTAL, rawhttp.patternSha256(11, TOTAL))
        self.assertIsNone(self.stored("inbox/r.bin"))

    async def test_preFinishRejects(self) -> None:
        """A command that exits 1 with a refusal rejects the file; nothing is kept."""
        answer = await self.put("/tool.exe", BODY)
        self.assertEqual(answer.status, 415)
        self.assertEqual(answer.body, b"no executables\n")
        self.assertIsNone(self.stored("tool.exe"))
        self.assertEqual((await self.head("/tool.exe")).status, 404)

    async def test_failedKeeps(self) -> None:
        """A command that fails without a decision answers 503, keeps the data, and logs its stderr."""
        answer = await self.put("/crash.bin", BODY, [("Content-Range", f"bytes 0-{TOTAL - 1}/{TOTAL}")])
        self.assertEqual(answer.status, 503)
        self.assertIsNone(self.stored("crash.bin"))
        head = await self.head("/crash.bin")
        self.assertIncomplete(head, TOTAL, TOTAL, head=True)
        self.assertIn("scanner unavailable", self.server.logText())


def docExample(heading: str) -> str:
    """
    The first python block after C{heading} in docs/operating.md.
    """
    with open(os.path.join(REPO_ROOT, "docs", "operating.md")) as f:
        text = f.read()
    after = text[text.index(heading):]
    start = after.index("```python\n") + len("```python\n")
    return after[start:after.index("```", start)]


class DocExampleTests(HookTestMixin, TestCase):
    """
    The command hook of docs/operating.md does what the page says.
    """

    timeout = 180

    async def test_example(self) -> None:
        """The documented program refuses .exe and large files, moves inbox/ to sorted/, and logs finished files."""
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        program = os.path.join(work, "hook.py")
        with open(program, "w") as f:
            f.write(docExample("## Example: a command hook"))
        self.startUploadServer(
            "--auth-tokens", self.tokenFile(),
            "--hook-command", f"{sys.executable} {program}", "--hooks", "pre-create,post-finish",
        )
        answer = await self.put("/setup.exe", BODY[:1000])
        self.assertEqual((answer.status, answer.body), (415, b"no executables, please\n"))
        interim, answer, _ = await self.headersOnly("/big.iso", 200 * 1024 * 1024)
        self.assertEqual(interim, [])
        self.assertEqual((answer.status, answer.body), (413, b"files over 100 MiB go elsewhere\n"))
        answer = await self.put("/inbox/a.jpg", BODY)
        self.assertCompleted(answer, "sorted/a.jpg", TOTAL, rawhttp.patternSha256(11, TOTAL))
        self.assertTrue(
            await waitFor(lambda: f"finished sorted/a.jpg ({TOTAL} bytes)" in self.server.logText())
        )
