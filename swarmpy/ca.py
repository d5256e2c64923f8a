"""A small certificate authority: the cluster's root CA and the certificates it signs.

Certificates name the node id as CN and the role as OU (`swarm-manager`,
`swarm-worker`, `swarm-client`), as swarm's do.  Keys are ECDSA P-256.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT_VALIDITY = dt.timedelta(days=20 * 365)
NODE_VALIDITY = dt.timedelta(days=90)          # swarm's default node certificate expiry


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes


def _name(cn: str, ou: str | None = None, org: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if ou:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    if org:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(parts)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_root(cluster_id: str) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = _name("swarmpy-root-ca", org=cluster_id)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + ROOT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _signed(root: KeyPair, public_key, node_id: str, role: str, hosts: list[str] | None = None) -> bytes:
    """A node or client certificate, usable for both TLS ends (mutual TLS), as PEM."""
    ca_cert = x509.load_pem_x509_certificate(root.cert_pem)
    ca_key = serialization.load_pem_private_key(root.key_pem, password=None)
    now = dt.datetime.now(dt.timezone.utc)
    sans = [x509.DNSName(node_id)] + [x509.DNSName(h) for h in hosts or [] if not h[0].isdigit()]
    cert = (x509.CertificateBuilder().subject_name(_name(node_id, f"swarm-{role}"))
            .issuer_name(ca_cert.subject).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + NODE_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def issue(root: KeyPair, node_id: str, role: str, hosts: list[str] | None = None) -> KeyPair:
    """A new key and its certificate, made where the CA is (init, tests, operators)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return KeyPair(_signed(root, key.public_key(), node_id, role, hosts), _key_pem(key))


def new_key_and_csr() -> tuple[bytes, bytes]:
    """A joining node's key (it never leaves the node) and the request the CA signs."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(_name("swarmpy-node"))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def sign_csr(root: KeyPair, csr_pem: bytes, node_id: str, role: str) -> bytes:
    """The CA decides the identity: the CSR contributes only its public key."""
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise ValueError("the certificate request's signature is invalid")
    return _signed(root, csr.public_key(), node_id, role)


def digest(ca_cert_pem: bytes) -> str:
    """The root CA's fingerprint as a join token carries it: sha256 of the DER, base 36,
    50 digits (docker's SWMTKN-1 layout)."""
    der = x509.load_pem_x509_certificate(ca_cert_pem).public_bytes(serialization.Encoding.DER)
    return _base36(int.from_bytes(hashlib.sha256(der).digest(), "big")).rjust(50, "0")


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


def new_join_token(ca_cert_pem: bytes) -> str:
    """SWMTKN-1-<CA digest>-<secret>: the digest lets a joining node refuse a manager of
    another cluster; the secret (25 base-36 digits, ~129 bits) admits it."""
    return f"SWMTKN-1-{digest(ca_cert_pem)}-{_base36(secrets.randbits(129)).rjust(25, '0')[:25]}"


def token_ca_digest(token: str) -> str:
    parts = token.split("-")
    if len(parts) != 4 or parts[:2] != ["SWMTKN", "1"] or len(parts[2]) != 50 or len(parts[3]) != 25:
        raise ValueError("invalid join token: expected SWMTKN-1-<50 digits>-<25 digits>, as printed by "
                         "'swarmpy join-token'")
    return parts[2]


def expires_at(cert_pem: bytes) -> dt.datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def identity(peercert: dict | None) -> tuple[str, str] | None:
    """(node id, role) from a verified peer certificate as `ssl` reports it, else None."""
    if not peercert:
        return None
    fields = {k: v for rdn in peercert.get("subject", ()) for k, v in rdn}
    node_id, ou = fields.get("commonName"), fields.get("organizationalUnitName", "")
    if not node_id or not ou.startswith("swarm-"):
        return None
    return node_id, ou[len("swarm-"):]


def write(pair: KeyPair, cert_path: str, key_path: str) -> None:
    import os
    with open(cert_path, "wb") as f:
        f.write(pair.cert_pem)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pair.key_pem)
