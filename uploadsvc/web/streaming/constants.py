"""
The bounds and sizes shared by the HTTP/1.1 and HTTP/2 streaming glue.
"""

from __future__ import annotations

#: How much one socket read may return (C{--read-size}). Twisted's default
#: is 64 KiB; larger reads mean fewer trips through the parser and the sink
#: per GiB. It also sizes the HTTP/2 flow-control windows.
DEFAULT_READ_SIZE = 256 * 1024

#: The flow-control window HTTP/2 starts every stream and connection with
#: (RFC 9113 section 6.9.2).
H2_DEFAULT_WINDOW = 65535

#: The most header fields one request may carry (HTTP/1.1 and HTTP/2); more
#: is answered C{431}. Each field held costs objects well beyond its bytes,
#: so the count is bounded as well as the size.
MAX_HEADER_FIELDS = 100

#: The most bytes of one request's header block: on HTTP/1.1 the request
#: line and the field lines with their line ends, counted while they arrive
#: (an unfinished line included); on HTTP/2 the encoded block (HEADERS and
#: CONTINUATION frames) and the decoded field list. More is answered C{431}
#: (C{414} for a request line alone) and the connection closed.
MAX_HEADER_BYTES = 16 * 1024

#: Seconds a connection the server closed may take to go away before it is
#: aborted. Nothing is read from it meanwhile: over TLS, Twisted would
#: otherwise keep decrypting (and parsing) whatever the client still sends
#: until the client closes.
CLOSE_GRACE = 5
