"""
The pure part of hooks (L{uploadsvc.ops.hooks}): the event document, how an
answer is read, the retry schedule. No reactor.
"""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from uploadsvc.ops.hookhttp import shownURL
from uploadsvc.ops.hooks import (
    ALL_HOOKS,
    MAX_ANSWER_BYTES,
    PRE_CREATE,
    PRE_FINISH,
    HookFailed,
    HookUpload,
    Proceed,
    Refuse,
    buildPayload,
    oneLine,
    parseAnswer,
    parseCommandAnswer,
    parseHookList,
    parseHTTPAnswer,
    refusal,
    requestFacts,
    retryDelays,
    safeHeaders,
    unavailable,
)


class _Request:
    """
    The parts of a twisted.web request that L{requestFacts} reads.
    """

    method = b"PUT"
    uri = b"/a/b.bin?expires=1&sig=abcdef"

    def __init__(self, headers: dict[bytes, list[bytes]]) -> None:
        self.requestHeaders = Headers(headers)

    def getClientAddress(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40000)


class AnswerTests(SynchronousTestCase):
    def test_emptyProceeds(self) -> None:
        """An empty answer (or only white space) lets the upload go on."""
        self.assertEqual(parseAnswer(PRE_CREATE, b""), Proceed())
        self.assertEqual(parseAnswer(PRE_FINISH, b" \n"), Proceed())

    def test_objectProceeds(self) -> None:
        """An object without a refusal (or with a 2xx status) goes on; unknown members are ignored."""
        self.assertEqual(parseAnswer(PRE_CREATE, b'{"note": 1}'), Proceed())
        self.assertEqual(parseAnswer(PRE_CREATE, b'{"status": 200}'), Proceed())

    def test_refusal(self) -> None:
        """A 4xx status with a reason refuses with both."""
        self.assertEqual(
            parseAnswer(PRE_CREATE, b'{"status": 403, "reason": "over quota"}'),
            Refuse(403, "over quota"),
        )

    def test_refusalWithoutReason(self) -> None:
        """A refusal without a reason gets one that names the hook."""
        self.assertEqual(
            parseAnswer(PRE_FINISH, b'{"status": 422}'),
            Refuse(422, "refused by the pre-finish hook"),
        )

    def test_reasonOneLine(self) -> None:
        """A reason with line breaks and control characters becomes one short printable line."""
        decision = parseAnswer(
            PRE_CREATE, json.dumps({"status": 400, "reason": "a\r\nb\x00c" + "x" * 500}).encode()
        )
        assert isinstance(decision, Refuse)
        self.assertEqual(decision.reason[:6], "a b c" + "x")
        self.assertNotIn("\n", decision.reason)
        self.assertEqual(len(decision.reason), 200)

    def test_path(self) -> None:
        """pre-create may name another destination."""
        self.assertEqual(
            parseAnswer(PRE_CREATE, b'{"path": "users/alice/a.bin"}'), Proceed("users/alice/a.bin")
        )

    def test_garbage(self) -> None:
        """Anything else is a failed hook, never a decision."""
        for body in [
            b"ok",
            b"\xff\xfe",
            b"[]",
            b"null",
            b'"yes"',
            b'{"status": 500}',
            b'{"status": 302}',
            b'{"status": 401}',
            b'{"status": 407}',
            b'{"status": "403"}',
            b'{"status": 403.0}',
            b'{"status": true}',
            b'{"status": 403, "reason": 5}',
            b'{"path": 7}',
            b'{"status": 403, "path": "x"}',
            b"{" * 10,
            b" " * (MAX_ANSWER_BYTES + 1),
        ]:
            self.assertRaises(HookFailed, parseAnswer, PRE_CREATE, body)

    def test_pathOnlyForPreCreate(self) -> None:
        """pre-finish cannot move the file: an answer that tries is a failed hook."""
        self.assertRaises(HookFailed, parseAnswer, PRE_FINISH, b'{"path": "elsewhere"}')

    def test_http2xx(self) -> None:
        """An HTTP 2xx carries an answer document."""
        self.assertEqual(parseHTTPAnswer(PRE_CREATE, 204, b""), Proceed())
        self.assertEqual(parseHTTPAnswer(PRE_CREATE, 200, b'{"status": 404}'), Refuse(404, "refused by the pre-create hook"))
        self.assertEqual(parseHTTPAnswer(PRE_CREATE, 200, b'{"path": "x/y"}'), Proceed("x/y"))
        self.assertEqual(
            parseHTTPAnswer(PRE_CREATE, 200, b'{"status": 409, "reason": "taken"}'),
            Refuse(409, "taken"),
        )

    def test_http4xx(self) -> None:
        """An HTTP 4xx refuses, its reason from a JSON document or the body's first line."""
        self.assertEqual(
            parseHTTPAnswer(PRE_CREATE, 403, b'{"reason": "no"}'), Refuse(403, "no")
        )
        self.assertEqual(
            parseHTTPAnswer(PRE_CREATE, 413, b"too big for you\nsecond line"),
            Refuse(413, "too big for you"),
        )
        self.assertEqual(
            parseHTTPAnswer(PRE_CREATE, 400, b""), Refuse(400, "refused by the pre-create hook")
        )

    def test_httpFailures(self) -> None:
        """5xx, redirects, informational statuses, 401, 407, and 404/405 (a wrong URL) are failures."""
        for code in (500, 502, 503, 301, 302, 307, 101, 401, 407, 404, 405):
            self.assertRaises(HookFailed, parseHTTPAnswer, PRE_CREATE, code, b'{"reason": "x"}')

    def test_commandExit0(self) -> None:
        """A command that exits 0 answers with its stdout."""
        self.assertEqual(parseCommandAnswer(PRE_CREATE, 0, b""), Proceed())
        self.assertEqual(
            parseCommandAnswer(PRE_CREATE, 0, b'{"status": 403, "reason": "no"}'),
            Refuse(403, "no"),
        )

    def test_commandFailsWithRefusal(self) -> None:
        """A command that exits non-zero with a refusal on stdout refuses."""
        self.assertEqual(
            parseCommandAnswer(PRE_CREATE, 1, b'{"status": 403, "reason": "no"}'),
            Refuse(403, "no"),
        )

    def test_commandFailsWithoutDecision(self) -> None:
        """A command that exits non-zero (or dies) without a refusal is a failed hook."""
        for code, out in [(1, b""), (2, b'{"path": "x"}'), (1, b"garbage"), (None, b"")]:
            with self.assertRaises(HookFailed) as caught:
                parseCommandAnswer(PRE_CREATE, code, out)
            self.assertIn("signal" if code is None else f"status {code}", caught.exception.reason)


class PayloadTests(SynchronousTestCase):
    def test_document(self) -> None:
        """The event document names the hook, the upload, the request and the credential."""
        upload = HookUpload(
            "a/b.bin", "p-1", protocol="put", offset=0, total=10, metadata={"k": "v"}
        )
        request = requestFacts(
            _Request({b"Content-Length": [b"10"], b"X-Thing": [b"1", b"2"]})
        )
        document = json.loads(buildPayload(PRE_CREATE, upload, request, "alice", "r1"))
        self.assertEqual(
            document,
            {
                "version": 1,
                "hook": "pre-create",
                "upload": {
                    "path": "a/b.bin", "id": None, "key": "p-1", "protocol": "put",
                    "offset": 0, "total": 10, "metadata": {"k": "v"},
                },
                "request": {
                    "method": "PUT",
                    "path": "/a/b.bin",
                    "headers": {"content-length": ["10"], "x-thing": ["1", "2"]},
                    "client": "127.0.0.1:40000",
                },
                "requestId": "r1",
                "credential": "alice",
            },
        )

    def test_noSecrets(self) -> None:
        """Credentials, cookies, secret-looking fields and the query string never reach a hook."""
        headers = {
            b"Authorization": [b"Bearer field-laptop-7f3a9c2e41d8b6"],
            b"Proxy-Authorization": [b"Basic c2VjcmV0"],
            b"Cookie": [b"session=s3cr3t"],
            b"X-Api-Token": [b"tok-123456"],
            b"X-Upload-Secret": [b"sec-123456"],
            b"Content-Type": [b"application/octet-stream"],
        }
        payload = buildPayload(
            PRE_CREATE, HookUpload("a", "p-1"), requestFacts(_Request(headers))
        )
        for secret in (b"7f3a9c2e41d8b6", b"c2VjcmV0", b"s3cr3t", b"tok-123456",
                       b"sec-123456", b"sig=", b"abcdef"):
            self.assertNotIn(secret, payload)
        self.assertIn(b"application/octet-stream", payload)

    def test_safeHeadersMergesRepeats(self) -> None:
        """Names are lowercased and repeated fields keep every value in order."""
        self.assertEqual(
            safeHeaders([(b"A", [b"1"]), (b"a", [b"2"])]), {"a": ("1", "2")}
        )


class ScheduleTests(SynchronousTestCase):
    def test_doubling(self) -> None:
        """Each new try waits twice as long as the one before, capped."""
        self.assertEqual(retryDelays(4, 1.0), (1.0, 2.0, 4.0, 8.0))
        self.assertEqual(retryDelays(3, 100.0, cap=250.0), (100.0, 200.0, 250.0))
        self.assertEqual(retryDelays(0, 1.0), ())


class NamesTests(SynchronousTestCase):
    def test_list(self) -> None:
        """--hooks takes any of the six names, comma-separated."""
        self.assertEqual(parseHookList(",".join(ALL_HOOKS)), frozenset(ALL_HOOKS))
        self.assertEqual(parseHookList(" all "), frozenset(ALL_HOOKS))
        self.assertEqual(parseHookList(" pre-create , post-finish"), {"pre-create", "post-finish"})

    def test_badList(self) -> None:
        """An unknown name, or none, is refused."""
        self.assertRaises(ValueError, parseHookList, "pre-create,post-recieve")
        self.assertRaises(ValueError, parseHookList, " , ")


class AnswersToClientTests(SynchronousTestCase):
    def test_refusal(self) -> None:
        """A hook's refusal reaches the client with the hook's status and reason."""
        error = refusal(PRE_CREATE, Refuse(451, "not here"))
        self.assertEqual((error.status, error.code, error.reason), (451, "hook-refused", "not here"))

    def test_unavailable(self) -> None:
        """A failed blocking hook is a 503 with Retry-After."""
        error = unavailable(PRE_FINISH)
        self.assertEqual(error.status, 503)
        self.assertEqual(error.code, "hook-failed")
        self.assertEqual(error.headers[b"Retry-After"], b"5")

    def test_oneLine(self) -> None:
        """oneLine squeezes white space and drops control characters."""
        self.assertEqual(oneLine("  a\t\tb\u2028c\x7f "), "a b c")

    def test_shownURL(self) -> None:
        """The log never shows a hook URL's user, password or query."""
        self.assertEqual(
            shownURL("https://u:pw@hooks.example:8443/in?token=abc"), "https://hooks.example:8443/in"
        )
        self.assertEqual(shownURL("http://[::1]:80/x"), "http://[::1]:80/x")
