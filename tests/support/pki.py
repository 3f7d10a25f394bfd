"""
Throw-away certificate authorities for TLS tests.

Ordinary CAs and server certificates come from C{trustme}, a small library
made for this; the kinds of certificate it cannot make on purpose (no
subjectAltName, self-signed like C{openssl req -x509}) are built here with
C{cryptography}, because they are what the client's refusals are tested on.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _keyPem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _altNames(dnsNames: list[str], ips: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dnsNames]
    return names + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]


class TemporaryCA:
    """
    A throw-away certificate authority, made fresh for a test.

    @ivar certPem: the CA certificate, PEM.
    """

    def __init__(self, name: str = "uploadsvc test CA") -> None:
        self._ca = trustme.CA(organization_name=name)
        self.certPem = self._ca.cert_pem.bytes()

    def issue(
        self,
        dnsNames: list[str],
        ips: list[str] = [],
        *,
        commonName: str | None = None,
        subjectAltName: bool = True,
        notBefore: datetime.timedelta = datetime.timedelta(days=-1),
        notAfter: datetime.timedelta = datetime.timedelta(days=1),
    ) -> tuple[bytes, bytes]:
        """
        A server certificate for C{dnsNames} and C{ips}.

        @param commonName: the subject's CN (by default the first name).
        @param subjectAltName: whether to write the names as a subjectAltName
            (without it the certificate names its host by CN only).
        @param notBefore: the start of its validity, from now.
        @param notAfter: the end of its validity, from now.
        @return: C{(key PEM, certificate PEM)}.
        """
        now = datetime.datetime.now(datetime.timezone.utc)
        commonName = commonName or (dnsNames[0] if dnsNames else ips[0])
        if subjectAltName:
            leaf = self._ca.issue_cert(
                *dnsNames, *ips, common_name=commonName,
                not_before=now + notBefore, not_after=now + notAfter,
            )
            return leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes()
        # trustme always writes a subjectAltName: sign this one by hand with
        # the CA's key.
        caKey = serialization.load_pem_private_key(self._ca.private_key_pem.bytes(), None)
        caCert = x509.load_pem_x509_certificate(self.certPem)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(commonName))
            .issuer_name(caCert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + notBefore)
            .not_valid_after(now + notAfter)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(caKey, hashes.SHA256())  # type: ignore[arg-type]
        )
        return _keyPem(key), _pem(cert)


def selfSigned(commonName: str, dnsNames: list[str] = [], ips: list[str] = []) -> tuple[bytes, bytes]:
    """
    A self-signed server certificate, as C{openssl req -x509} makes one
    (C{CA:TRUE}); a subjectAltName only when names are given.

    @return: C{(key PEM, certificate PEM)}.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(commonName))
        .issuer_name(_name(commonName))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if dnsNames or ips:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(_altNames(dnsNames, ips)), critical=False
        )
    return _keyPem(key), _pem(builder.sign(key, hashes.SHA256()))
