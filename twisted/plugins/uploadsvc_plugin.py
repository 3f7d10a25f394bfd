"""
The C{twistd uploadsvc} plugin; everything lives in L{uploadsvc.tap}.
"""

from twisted.application.service import ServiceMaker

uploadsvc = ServiceMaker(
    "uploadsvc",
    "uploadsvc.tap",
    "Streaming, resumable upload server (PUT to a path, resume with Content-Range).",
    "uploadsvc",
)
