"""
Throw-away TLS material for tests: a private CA and a server certificate it signs.

Made fresh at test time with C{cryptography} (installed with pyOpenSSL), written as PEM files
into a directory the test owns, so that nothing secret is ever committed and nothing outside the
test trusts it.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The host name the test origins answer to; only the proxy (through --resolve) knows where it is.
TEST_HOST = "origin.caplab.test"

#: Names every test server certificate is valid for.
SERVER_NAMES = (TEST_HOST, "localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TestPKI:
    """
    PEM files of a throw-away CA and one server certificate.

    @ivar caCert: the CA certificate (what a client must trust).
    @ivar serverCert: the server certificate (signed by the CA directly).
    @ivar serverKey: the server's private key (PKCS#8, unencrypted).
    @ivar serverSPKIHash: base64 SHA-256 of the server's public key, the form Chromium's
        C{--ignore-certificate-errors-spki-list} takes.
    """

    __test__ = False  # not a pytest test class despite the name

    caCert: Path
    serverCert: Path
    serverKey: Path
    serverSPKIHash: str


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "caplab tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _subjectAltNames(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def makePKI(directory: Path, names: tuple[str, ...] = SERVER_NAMES) -> TestPKI:
    """
    Make a CA and a server certificate for C{names} (DNS names or IP addresses) in
    C{directory}; valid from an hour ago for two days.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    notBefore, notAfter = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)

    caKey = ec.generate_private_key(ec.SECP256R1())
    caName = _name("caplab throw-away test CA")
    caCert = (
        x509.CertificateBuilder()
        .subject_name(caName)
        .issuer_name(caName)
        .public_key(caKey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(notBefore)
        .not_valid_after(notAfter)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(caKey.public_key()), False)
        .sign(caKey, hashes.SHA256())
    )

    serverKey = ec.generate_private_key(ec.SECP256R1())
    serverCert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(caName)
        .public_key(serverKey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(notBefore)
        .not_valid_after(notAfter)
        .add_extension(_subjectAltNames(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(caKey.public_key()), False
        )
        .sign(caKey, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    paths = TestPKI(
        caCert=directory / "ca.pem",
        serverCert=directory / "server.pem",
        serverKey=directory / "server-key.pem",
        serverSPKIHash=spkiHash(serverCert),
    )
    paths.caCert.write_bytes(caCert.public_bytes(pem))
    paths.serverCert.write_bytes(serverCert.public_bytes(pem))
    paths.serverKey.write_bytes(
        serverKey.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def spkiHash(certificate: x509.Certificate) -> str:
    """
    Base64 of the SHA-256 of C{certificate}'s SubjectPublicKeyInfo.
    """
    der = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return base64.b64encode(digest.finalize()).decode("ascii")
