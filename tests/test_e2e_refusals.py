"""
End-to-end tests of refusals decided from the headers (docs/protocol.md section
6), against a real C{twistd uploadsvc} process: the client sends headers
only, announcing a body it never sends, and must get the final status at
once, with a one-line plain-text reason, C{Connection: close}, no C{100
Continue}, and a closed connection.
"""

from __future__ import annotations

from typing import Sequence

from twisted.trial.unittest import TestCase

from tests.support import rawhttp
from tests.support.rawhttp import patternBytes
from tests.support.server import ServerTestMixin

MAX = 1_000_000


class HeaderRefusalTests(ServerTestMixin, TestCase):
    """
    Refusals that need no body byte.
    """

    timeout = 120

    def setUp(self) -> None:
        self.startUploadServer("--max-upload-size", str(MAX))

    def refuse(
        self,
        path: str,
        headers: Sequence[tuple[str, str]],
        status: int,
        method: str = "PUT",
    ) -> list[rawhttp.Answer]:
        """
        Send the headers of a request (with and without C{Expect:
        100-continue}, on two connections) and never its body; assert that
        each time the refusal C{status} comes first and alone, with a
        one-line C{text/plain; charset=utf-8} reason and C{Connection:
        close}, and that the server then closes the connection.

        @return: the two refusals.
        """
        answers = []
        for expect in (True, False):
            sent = list(headers) + ([("Expect", "100-continue")] if expect else [])
            with rawhttp.connect(self.server.port, timeout=10) as sock:
                sock.sendall(rawhttp.requestHead(method, path, sent))
                reader = rawhttp.ResponseReader(sock)
                try:
                    interim, answer = reader.readFinal(method)
                except OSError as e:
                    self.fail(f"{method} {path} {sent}: no answer ({e!r})")
                where = f"{method} {path} {sent}: {answer.raw[:500]!r}"
                self.assertEqual([r.status for r in interim], [], where)
                self.assertEqual(answer.status, status, where)
                contentType = (answer.header("content-type") or "").replace(" ", "").lower()
                self.assertEqual(contentType, "text/plain;charset=utf-8", where)
                reason = answer.body.rstrip(b"\r\n")
                self.assertTrue(reason, where)
                self.assertNotIn(b"\n", reason, where)
                reason.decode("utf-8")
                self.assertIn("close", (answer.header("connection") or "").lower(), where)
                self.assertEqual(reader.waitClosed(10), b"", where)
            answers.append(answer)
        return answers

    def test_badPaths(self) -> None:
        """
        Paths that break the rules of docs/protocol.md section 1 are refused 400
        before the body.
        """
        for path in [
            "/",
            "/a/../b.bin",
            "/a/./b.bin",
            "/a//b.bin",
            "/.hidden",
            "/a/.b/c.bin",
            "/a%2Fb.bin",
            "/a%2fb.bin",
            "/bad%zz.bin",
            "/trailing%",
            "/%u002e.bin",
            "/nul%00.bin",
            "/ctl%1F.bin",
            "/del%7F.bin",
            "/c1%C2%80.bin",
            "/back%5Cslash.bin",
            "/overlong%C0%AF.bin",
            "/notutf8%FF.bin",
            "/nfd/cafe%CC%81.bin",
            "/" + "x" * 256,
            "/" + "/".join(["d"] * 33),
            "/" + "/".join(["y" * 200] * 6),
        ]:
            self.refuse(path, [("Content-Length", "1000")], 400)

    def test_rangeBeyondOffset(self) -> None:
        """
        A Content-Range that starts past the stored offset is refused 409
        with Upload-Offset (and Range once bytes are stored), and the stored
        bytes stay.
        """
        first = self.refuse(
            "/r.bin", [("Content-Range", "bytes 100-199/1000"), ("Content-Length", "100")], 409
        )[0]
        self.assertEqual(first.header("upload-offset"), "0")
        _, stored = rawhttp.exchange(
            self.server.port,
            "PUT",
            "/r.bin",
            [("Content-Range", "bytes 0-49/1000"), ("Content-Length", "50")],
            patternBytes(1, 0, 50),
        )
        self.assertIncomplete(stored, 50)
        later = self.refuse(
            "/r.bin", [("Content-Range", "bytes 100-199/1000"), ("Content-Length", "100")], 409
        )[0]
        self.assertEqual(later.header("upload-offset"), "50")
        self.assertEqual(later.header("range"), "bytes=0-49")
        self.assertIncomplete(self.headRaw("/r.bin"), 50, 1000, head=True)

    def test_totalDiffers(self) -> None:
        """
        A Content-Range whose total differs from the recorded one is refused
        409 with the recorded Upload-Length.
        """
        rawhttp.exchange(
            self.server.port,
            "PUT",
            "/t.bin",
            [("Content-Range", "bytes 0-49/1000"), ("Content-Length", "50")],
            patternBytes(1, 0, 50),
        )
        answer = self.refuse(
            "/t.bin", [("Content-Range", "bytes 50-99/2000"), ("Content-Length", "50")], 409
        )[0]
        self.assertEqual(answer.header("upload-length"), "1000")
        self.assertIncomplete(self.headRaw("/t.bin"), 50, 1000, head=True)

    def test_existingFile(self) -> None:
        """
        A plain PUT on a complete file, without --allow-overwrite, is
        refused 409 and the file stays.
        """
        _, done = rawhttp.exchange(
            self.server.port, "PUT", "/done.bin", [("Content-Length", "4")], b"done"
        )
        self.assertEqual(done.status, 201, done.body)
        self.refuse("/done.bin", [("Content-Length", "1000")], 409)
        self.refuse("/done.bin", [("Transfer-Encoding", "chunked")], 409)
        with open(self.storedPath("done.bin"), "rb") as f:
            self.assertEqual(f.read(), b"done")

    def test_tooLarge(self) -> None:
        """
        A Content-Length or Content-Range total above --max-upload-size is
        refused 413.
        """
        self.refuse("/big.bin", [("Content-Length", str(MAX + 1))], 413)
        self.refuse(
            "/big.bin",
            [("Content-Range", f"bytes 0-99/{MAX + 1}"), ("Content-Length", "100")],
            413,
        )
        self.assertEqual(self.headRaw("/big.bin").status, 404)

    def test_malformedRange(self) -> None:
        """
        A malformed Content-Range, an end before its start or past its
        total, or a Content-Length that disagrees with it is refused 400.
        """
        for value, length in [
            ("bytes 5-3/10", "3"),
            ("bytes=0-9/10", "10"),
            ("bytes 0-9", "10"),
            ("bytes 0-9/5", "10"),
            ("bytes 0-9/10", "5"),
            ("bytes -1-9/10", "11"),
            ("bytes 0-9/10, bytes 10-19/20", "10"),
            ("items 0-9/10", "10"),
            ("bytes 00000000000000000000000000000000-1/2", "2"),
        ]:
            self.refuse("/m.bin", [("Content-Range", value), ("Content-Length", length)], 400)
        self.assertEqual(self.headRaw("/m.bin").status, 404)

    def test_queryWithBody(self) -> None:
        """
        A C{bytes */T} status query that carries a body, with a length or
        chunked, is refused 400 from its headers and records nothing.
        """
        rawhttp.exchange(
            self.server.port, "PUT", "/q.bin",
            [("Content-Range", "bytes 0-2/6"), ("Content-Length", "3")], b"abc",
        )
        for headers, body in [
            ([("Content-Length", "5")], b"hello"),
            ([("Transfer-Encoding", "chunked")], b"5\r\nhello\r\n0\r\n\r\n"),
        ]:
            _, answer = rawhttp.exchange(
                self.server.port, "PUT", "/q.bin",
                [("Content-Range", "bytes */9"), *headers], body,
            )
            self.assertEqual(answer.status, 400, answer.raw)
            self.assertIn(b"carries no body", answer.body)
        self.assertEqual(self.headRaw("/q.bin").header("upload-length"), "6")

    def test_precedence(self) -> None:
        """
        When several refusals apply, the path comes before the size, and the
        size before the range syntax and the state.
        """
        self.refuse("/.x", [("Content-Length", str(MAX + 1))], 400)
        self.refuse(
            "/p.bin", [("Content-Range", "bytes 0-9/10"), ("Content-Length", str(MAX + 1))], 413
        )
        rawhttp.exchange(self.server.port, "PUT", "/p.bin", [("Content-Length", "1")], b"x")
        self.refuse("/p.bin", [("Content-Range", "bytes 5-3/10"), ("Content-Length", "3")], 400)

    def test_emptyBodyWithExpect(self) -> None:
        """
        A refused request that announces an empty body with C{Expect:
        100-continue} gets its refusal without a C{100 Continue} first.
        """
        rawhttp.exchange(self.server.port, "PUT", "/e.bin", [("Content-Length", "1")], b"x")
        for path, headers, status in [
            ("/e.bin", [("Content-Length", "0")], 409),
            ("/e2.bin", [("Content-Range", "bytes 5-3/10"), ("Content-Length", "0")], 400),
            ("/nothing.bin", [("Content-Range", "bytes */10"), ("Content-Length", "0")], 404),
        ]:
            interim, answer = rawhttp.exchange(
                self.server.port, "PUT", path, headers + [("Expect", "100-continue")], timeout=10
            )
            where = f"PUT {path} {headers}: {answer.raw[:300]!r}"
            self.assertEqual([r.status for r in interim], [], where)
            self.assertEqual(answer.status, status, where)

    def test_unreadBodyIsNotARequest(self) -> None:
        """
        The unread body of a refused request is never parsed as a next
        request, even when it looks like one.
        """
        smuggled = rawhttp.requestHead("PUT", "/smuggled.bin", [("Content-Length", "1")]) + b"x"
        with rawhttp.connect(self.server.port, timeout=10) as sock:
            sock.sendall(
                rawhttp.requestHead("PUT", "/.refused", [("Content-Length", str(len(smuggled)))])
                + smuggled
            )
            reader = rawhttp.ResponseReader(sock)
            _, answer = reader.readFinal()
            self.assertEqual(answer.status, 400, answer.raw)
            rest = reader.waitClosed(10)
        self.assertEqual(rest, b"")
        self.assertEqual(self.headRaw("/smuggled.bin").status, 404)
