"""
The treq client the uploader talks through: a connection pool, TLS verified
against the system trust store or a given CA file, the bearer token, and
credentials given in the URL (sent as HTTP Basic).
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

import attrs
from hyperlink import EncodedURL
from treq.client import HTTPClient
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.web.client import Agent, HTTPConnectionPool

from uploadsvc.client.tls import StrictPolicyForHTTPS

#: The environment variable that may hold the bearer token.
TOKEN_ENV = "UPLOADSVC_TOKEN"

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


class ConfigError(Exception):
    """
    A client setting cannot be used (unreadable CA file, empty token file).
    """


def loadTrustRoot(pem: bytes) -> Any:
    """
    A trust root of every certificate in a PEM file (a CA bundle may hold
    several).

    @raise ConfigError: when there is no certificate in it.
    """
    blocks = _PEM_CERT.findall(pem)
    if not blocks:
        raise ConfigError("no PEM certificate found in the CA file")
    try:
        return trustRootFromCertificates([Certificate.loadPEM(b) for b in blocks])
    except Exception as e:
        raise ConfigError(f"bad certificate in the CA file: {e}") from None


def authorizationHeaders(
    tokenFile: str | None, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """
    The C{Authorization: Bearer} header from C{tokenFile} (first line) or,
    when no file is given, from C{UPLOADSVC_TOKEN}; no header when neither
    is set.

    @raise ConfigError: when the file cannot be read or holds no token.
    """
    token: str | None
    if tokenFile is not None:
        try:
            with open(tokenFile, encoding="utf-8") as f:
                token = f.readline().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read the token file {tokenFile}: {e}") from None
        if not token:
            raise ConfigError(f"the token file {tokenFile} is empty")
    else:
        token = environ.get(TOKEN_ENV, "").strip() or None
    if token is None:
        return {}
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in token):
        raise ConfigError("the token has characters not allowed in a header")
    return {"Authorization": f"Bearer {token}"}


def splitCredentials(url: str) -> tuple[str, dict[str, str]]:
    """
    Take C{user:password@} out of C{url}: what goes on the wire is the URL
    without it and an C{Authorization: Basic} header (RFC 7617, UTF-8, the
    URL's percent-encoding undone), as a front end with C{auth_basic}
    expects. Messages then name the URL without the password.

    @return: the URL without credentials, and the header (none when the
        URL has no credentials).
    @raise ConfigError: for credentials that cannot be sent; the message
        never repeats them.
    """
    try:
        parts = urlsplit(url)
        parts.port  # a ValueError for a port that is not a number
    except ValueError:
        # Also a password holding a raw "/", "?" or "#": the host then
        # ends there, and its "port" is part of the password.
        raise ConfigError(
            "the URL cannot be parsed (percent-encode / ? # @ : % in credentials)"
        ) from None
    if "@" not in parts.netloc:
        return url, {}
    userinfo, _, hostPort = parts.netloc.rpartition("@")
    clean = urlunsplit(parts._replace(netloc=hostPort))
    rawUser, colon, rawPassword = userinfo.partition(":")
    if not rawUser and not colon:
        return clean, {}
    try:
        user = unquote(rawUser, errors="strict")
        password = unquote(rawPassword, errors="strict")
    except UnicodeDecodeError:
        raise ConfigError("the credentials in the URL are not UTF-8 once percent-decoded") from None
    if ":" in user:
        raise ConfigError("the user name in the URL must not contain ':'")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in user + password):
        raise ConfigError("the credentials in the URL hold control characters")
    token = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
    return clean, {"Authorization": f"Basic {token}"}


def checkSendable(url: str) -> None:
    """
    Check that treq can send a request to C{url}: it encodes the host with
    IDNA, which fails for an IPv6 address and some names, and would fail
    the same way on every attempt.

    @raise ConfigError: when it cannot.
    """
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        raise ConfigError("the URL cannot be parsed") from None
    if ":" in host:
        raise ConfigError(
            f"IPv6 address URLs are not supported (the HTTP library cannot send to [{host}]);"
            " use a host name"
        )
    try:
        EncodedURL.from_text(url).to_uri()
    except Exception as e:
        raise ConfigError(f"the URL cannot be sent: {type(e).__name__}: {e}") from None


@attrs.define
class ClientConnection:
    """
    A treq client and the pool it uses (close the pool when done).
    """

    http: HTTPClient
    pool: HTTPConnectionPool

    def close(self) -> Any:
        """
        Close the idle connections of the pool.

        @return: a L{Deferred} that fires when they are closed.
        """
        return self.pool.closeCachedConnections()


def makeHTTPClient(
    reactor: Any,
    *,
    caFile: str | None = None,
    maxPerHost: int = 4,
    connectTimeout: float = 30.0,
) -> ClientConnection:
    """
    Build the treq client: persistent connections, at most C{maxPerHost}
    idle ones per host, and https verified (host name included, failing
    closed: L{StrictPolicyForHTTPS}) against C{caFile} or the system trust
    store. There is no option to turn verification off.

    @raise ConfigError: when C{caFile} is unusable.
    """
    if caFile is not None:
        try:
            with open(caFile, "rb") as f:
                pem = f.read()
        except OSError as e:
            raise ConfigError(f"cannot read the CA file {caFile}: {e.strerror or e}") from None
        policy = StrictPolicyForHTTPS(trustRoot=loadTrustRoot(pem))
    else:
        policy = StrictPolicyForHTTPS()
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = maxPerHost
    # The uploader does its own retrying, with back-off.
    pool.retryAutomatically = False
    agent = Agent(reactor, contextFactory=policy, connectTimeout=connectTimeout, pool=pool)
    return ClientConnection(HTTPClient(agent), pool)
