"""
The client's https policy: the certificate chain and the host name are both
checked, and any problem, or any error while checking, refuses the
connection before a byte of the request is sent.

Why not Twisted's own check alone: its verify callback refuses only on
C{service_identity.VerificationError}; any other exception (a certificate
without a subjectAltName raises C{CertificateError}, an invalid pattern in
one raises it too) is logged and the connection goes on as if verified. Here
the host name check is our own callback, which fails closed whatever goes
wrong.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from OpenSSL import SSL
from OpenSSL.crypto import X509
from service_identity import VerificationError
from service_identity.hazmat import DNS_ID, IPAddress_ID, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import optionsForClientTLS
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

#: OpenSSL's X509_V_ERR_* codes that users meet, said in words.
_VERIFY_ERRORS = {
    2: "unable to get the issuer certificate",
    7: "the certificate signature is invalid",
    9: "the certificate is not yet valid",
    10: "the certificate has expired",
    18: "the certificate is self-signed and not trusted",
    19: "a self-signed certificate in the chain is not trusted",
    20: "the certificate is not signed by a trusted CA",
    21: "unable to verify the first certificate (no trusted CA for it)",
    23: "the certificate has been revoked",
    24: "an invalid CA certificate is in the chain",
    26: "the certificate is not for a TLS server",
}


class CertificateRefused(Exception):
    """
    The server's certificate was refused.

    @ivar reason: one line for the user.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def describeVerifyError(code: int) -> str:
    """
    Words for an OpenSSL certificate verification error code.
    """
    return _VERIFY_ERRORS.get(code, f"OpenSSL verification error {code}")


def checkHostName(cert: X509, host: str) -> None:
    """
    Check that C{cert} names C{host} (a DNS name, or an IP address that must
    be in an IP address entry of the subjectAltName; the common name is
    never used).

    @raise CertificateRefused: when it does not, or when the certificate
        cannot be read as naming anything.
    """
    try:
        try:
            serviceID: Any = IPAddress_ID(str(ipaddress.ip_address(host)))
        except ValueError:
            serviceID = DNS_ID(host)
        verify_service_identity(extract_patterns(cert), [serviceID], [])
    except VerificationError:
        raise CertificateRefused(f"the certificate does not match the host name {host!r}") from None
    except Exception as e:
        # CertificateError (no subjectAltName, an invalid pattern) and
        # anything else: refused, never let through.
        detail = str(e).strip().splitlines()
        raise CertificateRefused(
            f"the certificate cannot be checked against the host name {host!r}"
            + (f": {detail[0]}" if detail else "")
        ) from None


@implementer(IOpenSSLClientConnectionCreator)
class _StrictClientTLS:
    """
    Twisted's client TLS options (trust root, SNI), with our own verify
    callback in place of Twisted's.
    """

    def __init__(self, host: str, trustRoot: Any) -> None:
        self._host = host
        self._options = optionsForClientTLS(host, trustRoot=trustRoot)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        host = self._host

        def verify(conn: SSL.Connection, cert: X509, code: int, depth: int, ok: int) -> bool:
            # Called by OpenSSL for each certificate of the chain, the
            # server's own last (depth 0). Anything but a clean pass,
            # exceptions included, refuses the handshake.
            try:
                if not ok:
                    raise CertificateRefused(f"certificate verify failed: {describeVerifyError(code)}")
                if depth == 0:
                    checkHostName(cert, host)
                return True
            except BaseException as e:
                reason = e if isinstance(e, CertificateRefused) else CertificateRefused(
                    f"certificate verify failed: {type(e).__name__}: {e}"
                )
                try:
                    # The reason the request's Deferred fails with.
                    tlsProtocol.failVerification(Failure(reason))
                except BaseException:
                    pass
                return False

        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        return connection


@implementer(IPolicyForHTTPS)
class StrictPolicyForHTTPS:
    """
    Verify the chain against C{trustRoot} (the system store when L{None})
    and the host name of the URL, failing closed.
    """

    def __init__(self, trustRoot: Any = None) -> None:
        self._trustRoot = trustRoot

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        host = hostname.decode("ascii")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return _StrictClientTLS(host, self._trustRoot)
