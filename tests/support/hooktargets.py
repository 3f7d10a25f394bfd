"""
Hook targets for tests: answers that the test gives, calls recorded.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from uploadsvc.ops.hooks import Proceed


class FakeTarget:
    """
    A hook target whose answers the test gives: each call takes the next
    answer (a decision, an exception, or a Deferred), and is recorded.
    """

    kind = "fake"

    def __init__(self, *answers: Any, shown: str = "fake") -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.shown = shown

    def call(self, hook: str, payload: bytes) -> Deferred[Any]:
        self.calls.append((hook, json.loads(payload)))
        answer = self.answers.pop(0) if self.answers else Proceed()
        if isinstance(answer, Deferred):
            return answer
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)
