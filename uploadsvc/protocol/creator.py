"""
Which front end answers an upload named by an id (docs/protocol-tus.md,
docs/protocol-ietf.md): tus (C{/.tus/<id>}) and the draft
(C{/.uploads/<id>}) share one id space, and each speaks its own rules
(a tus partial upload lands nowhere; a draft upload completes when a
request says so), so an upload answers only the protocol that created it,
recorded in the store's attributes at creation. To the other it does not
exist.

Pure: functions of the attributes a store keeps.
"""

from __future__ import annotations

from typing import Mapping

from uploadsvc.errors import NotFound

#: The attribute that names the creating protocol.
PROTOCOL = "protocol"

#: The protocols that create uploads named by an id.
TUS, IETF = "tus", "ietf"


def createdBy(protocol: str) -> dict[str, str]:
    """
    The attributes that record C{protocol} as an upload's creator.
    """
    return {PROTOCOL: protocol}


def creatorOf(attributes: Mapping[str, str], partial: bool) -> str | None:
    """
    The protocol that created an upload, or L{None} when nothing tells
    (one staged before the creator was recorded, with no tus attribute:
    either front end answers it, as then).

    @param partial: the store's flag of a tus partial upload, which only
        tus makes.
    """
    recorded = attributes.get(PROTOCOL)
    if recorded is not None:
        return recorded
    if partial or any(name.startswith("tus-") for name in attributes):
        return TUS
    return None


def checkCreator(attributes: Mapping[str, str], partial: bool, protocol: str) -> None:
    """
    Refuse a request of C{protocol} on an upload that another protocol
    created, as for an id that names no upload.

    @raise NotFound: C{no-upload}.
    """
    creator = creatorOf(attributes, partial)
    if creator is not None and creator != protocol:
        raise NotFound("no-upload", "there is no such upload")
