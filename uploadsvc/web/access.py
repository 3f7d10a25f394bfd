"""
What let a request through (L{uploadsvc.protocol.scopes.Access}), kept on
the request by the app's dispatch so that every front end (tus, the draft,
the path interface after a pre-create hook moved an upload) checks the
same scope once it knows where the upload lands.
"""

from __future__ import annotations

from typing import Any

from uploadsvc.protocol.scopes import Access, outOfScope

_ATTRIBUTE = "uploadsvcAccess"


def noteAccess(request: Any, access: Access) -> None:
    setattr(request, _ATTRIBUTE, access)


def accessOf(request: Any) -> Access:
    """
    The request's L{Access}.

    @raise Forbidden: C{out-of-scope} for a request that the credentials
        check never saw (fail closed: a handler reached another way).
    """
    access: Access | None = getattr(request, _ATTRIBUTE, None)
    if access is None:
        raise outOfScope("the credentials of this request were not checked")
    return access
