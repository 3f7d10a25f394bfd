"""
Streaming request bodies in twisted.web: the one package that touches its
internals.

twisted.web has no public hook for a body that is still arriving
(twisted/twisted#4688): it spools the body to a BytesIO or a temp file and
renders the resource only once the last byte is in. For an upload server that
is backwards. Here:

  - the HTTP/1.1 channel (L{http1}) hands the method and path (which at that
    moment exist only on the channel as C{_command}/C{_path}) to the request
    when the headers are complete, and the request (L{request}) renders its
    resource right away, before any body byte is read or C{100 Continue} is
    sent;
  - the resource refuses (a response before the body: C{Connection: close}) or
    accepts by calling L{deliverBody} with an L{IBodyReceiver};
  - body chunks go to the receiver as they are decoded, never to a spool;
  - the receiver pauses and resumes the client's connection through an
    L{IPushProducer}; the channel owns that pause, so its own
    C{resumeProducing} (send buffer drained) does not undo it, and the idle
    timeout is suspended while the server is the slow side.

Requests without a body take Twisted's ordinary path.

Interim answers other than C{100 Continue} (the draft's C{104 Upload
Resumption Supported}) have no public API in twisted.web either:
L{sendInterim} writes one through the body gate, as a status line and
fields on HTTP/1.1 and as a HEADERS frame without END_STREAM on HTTP/2.

HTTP/2 (negotiated by ALPN over TLS when the C{h2} package is installed) gets
the same treatment from L{StreamingH2Connection} (L{http2}), a small subclass
of Twisted's C{H2Connection}: a stream whose HEADERS frame does not end it is
rendered right away; its DATA goes to the receiver; a paused body stops
granting flow-control window to its stream (L{h2stream}: the client's sender
stalls, the connection's other streams go on), and resuming grants it again.
A response that goes out before the body ended resets the stream with
C{NO_ERROR} (RFC 9113 section 8.1) instead of closing the connection, and the
window of every byte that nobody will read is handed back to the connection.

Below L{StreamingH2Connection}, L{h2guard} bounds what a hostile HTTP/2
client costs (with L{headerblock}, which measures header blocks before
C{h2} buffers them) and L{h2fixes} fixes Twisted's send loop and closing.
L{negotiate} switches a connection to HTTP/1.1 or HTTP/2 and holds
L{StreamingSite}; L{readsize} applies C{--read-size} to the socket under
any TLS layer; L{constants} holds the bounds all of them share.

Every private name of Twisted used by uploadsvc is used in this package (and
listed, with its user, in C{tests/test_twisted_internals}), and
C{tests/test_streaming} and C{tests/test_streaming_h2} exercise each of them,
so a Twisted upgrade that changes them fails loudly here.
"""

from twisted.web.http import H2_ENABLED

from uploadsvc.web.streaming.constants import (
    CLOSE_GRACE,
    DEFAULT_READ_SIZE,
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELDS,
)
from uploadsvc.web.streaming.http1 import StreamingHTTPChannel
from uploadsvc.web.streaming.negotiate import StreamingSite
from uploadsvc.web.streaming.request import (
    StreamingRequest,
    abortRequest,
    closeAfterResponse,
    deliverBody,
    sendInterim,
    whenFinished,
)

if H2_ENABLED:
    from uploadsvc.web.streaming.http2 import StreamingH2Connection
else:  # pragma: no cover - without h2 the server speaks HTTP/1.1 only
    StreamingH2Connection = None  # type: ignore[assignment,misc]

__all__ = [
    "CLOSE_GRACE",
    "DEFAULT_READ_SIZE",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_FIELDS",
    "StreamingH2Connection",
    "StreamingHTTPChannel",
    "StreamingRequest",
    "StreamingSite",
    "abortRequest",
    "closeAfterResponse",
    "deliverBody",
    "sendInterim",
    "whenFinished",
]
