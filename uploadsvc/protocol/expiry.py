"""
When an incomplete upload expires (docs/protocol.md, operating it): a pure
rule shared by expiry itself and by the answers that report it (tus
C{Upload-Expires}, the draft's C{max-age}).
"""

from __future__ import annotations

import math
from email.utils import formatdate


def expiresAt(touched: float, expireAfter: float) -> float | None:
    """
    When an upload last touched at C{touched} (seconds since the epoch)
    expires, or L{None} when expiry is off (C{expireAfter <= 0}).
    """
    if expireAfter <= 0:
        return None
    return touched + expireAfter


def secondsLeft(touched: float, now: float, expireAfter: float) -> int | None:
    """
    Whole seconds until expiry (never negative; rounded down so that a
    client never counts on time it does not have), or L{None} when off.
    """
    at = expiresAt(touched, expireAfter)
    if at is None:
        return None
    return max(0, math.floor(at - now))


def httpDate(when: float) -> str:
    """
    C{when} as an HTTP date (RFC 9110 IMF-fixdate), as tus C{Upload-Expires}
    carries it.
    """
    return formatdate(when, usegmt=True)
