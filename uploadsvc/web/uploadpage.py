"""
The server's own upload page at C{/.upload/} (docs/browsers.md): a few
static files shipped with the package (C{uploadsvc/web/page/}), served
with a strict C{Content-Security-Policy} (nothing but this server's own
scripts and styles, no frames, no forms).

Fetching the page needs no credentials: it holds no data. The uploads it
makes do, like any other (the page asks for a token).
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from typing import Any

from uploadsvc.errors import MethodNotAllowed, NotFound
from uploadsvc.web.answers import refuse
from uploadsvc.web.forwarded import absoluteURL

#: Where the page lives, under the mount prefix.
PAGE_PATH = b"/.upload"

#: The page's files: URL name -> (file, content type).
FILES = {
    b"": ("index.html", b"text/html; charset=utf-8"),
    b"app.js": ("app.js", b"text/javascript; charset=utf-8"),
    b"app.css": ("app.css", b"text/css; charset=utf-8"),
}

#: Only this server's own script, style and uploads; no inline code, no
#: plug-ins, no frames around it, no form posting elsewhere.
CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@lru_cache(maxsize=None)
def pageFile(name: str) -> bytes:
    """
    The bytes of one of the page's files (read once).
    """
    return (files("uploadsvc.web") / "page" / name).read_bytes()


def servePage(request: Any, mountPrefix: bytes) -> bytes | None:
    """
    Answer C{request} if it is for the upload page; L{None} otherwise.
    """
    raw = request.uri.split(b"?", 1)[0]
    here = mountPrefix + PAGE_PATH
    if not raw.startswith(here):
        return None
    rest = raw[len(here):]
    if rest and not rest.startswith(b"/"):
        return None  # /.uploads/ and the like are not the page's
    if request.method not in (b"GET", b"HEAD"):
        return refuse(
            request,
            MethodNotAllowed("method", "the upload page is read with GET", {b"Allow": b"GET, HEAD"}),
        )
    if not rest:
        request.setResponseCode(301)
        request.setHeader(b"Location", absoluteURL(request, here + b"/"))
        request.setHeader(b"Content-Length", b"0")
        return b""
    entry = FILES.get(rest[1:])
    if entry is None:
        return refuse(request, NotFound("not-found", "the upload page has no such file"))
    name, contentType = entry
    body = pageFile(name)
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", contentType)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    request.setHeader(b"Content-Security-Policy", CSP)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.setHeader(b"Cache-Control", b"no-cache")
    return body
