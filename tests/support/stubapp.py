"""
Requests to an L{UploadApp} through treq's StubTreq: routes, statuses and
headers, with every disk call inline (no streaming, no back-pressure).
"""

from __future__ import annotations

import os
from typing import Any

from treq.testing import StubTreq

from uploadsvc.storage.filestore import FileStore
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp


class StubRequests:
    """
    Mixed into a L{SynchronousTestCase} whose C{treq} is a C{StubTreq} of
    the app under test (L{buildFileApp} makes one on a L{FileStore} at
    C{root}).
    """

    treq: Any
    root: str

    def buildFileApp(self, config: Config) -> None:
        """
        The app under test on a L{FileStore} at C{root}, every disk call
        inline; its lifecycle events collected in C{events}.
        """
        self.store = FileStore(self.root, fsync=False)
        self.addCleanup(self.store.close)  # type: ignore[attr-defined]
        self.app = UploadApp(self.store, ImmediateRunner(), config)
        self.events: list[Any] = []
        self.app.events.subscribe(self.events.append)
        self.treq = StubTreq(self.app.resource())

    def stored(self, rel: str) -> bytes | None:
        """
        The bytes of the file at C{rel} under C{root}, or L{None}.
        """
        try:
            with open(os.path.join(self.root, rel), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

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
