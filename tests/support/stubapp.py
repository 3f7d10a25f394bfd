"""
Requests to an L{UploadApp} through treq's StubTreq: routes, statuses and
headers, with every disk call inline (no streaming, no back-pressure).
"""

from __future__ import annotations

from typing import Any


class StubRequests:
    """
    Mixed into a L{SynchronousTestCase} whose C{treq} is a C{StubTreq} of
    the app under test.
    """

    treq: Any

    def request(
        self, method: str, path: str, body: bytes = b"", **headers: str | list[str]
    ) -> tuple[Any, bytes]:
        """
        Send one request; C{Content_Range="..."} names the header
        C{Content-Range}, and a list gives a field several times.
        """
        fields = {
            k.replace("_", "-"): v if isinstance(v, list) else [v] for k, v in headers.items()
        }
        response = self.successResultOf(  # type: ignore[attr-defined]
            self.treq.request(method, "http://example" + path, data=body or None, headers=fields)
        )
        return response, self.successResultOf(self.treq.content(response))  # type: ignore[attr-defined]

    def header(self, response: Any, name: str) -> str | None:
        values = response.headers.getRawHeaders(name)
        if not values:
            return None
        value = values[0]
        return value.decode() if isinstance(value, bytes) else str(value)
