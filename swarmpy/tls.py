"""TLS contexts for the API on TCP: mutual TLS only, never plain TCP.

The server asks every client for a certificate signed by the cluster's CA
(`--tlscacert`); the CLI presents its own and checks the server's the same way,
as the docker CLI and dockerd do with `--tlsverify`.
"""
from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

CERT_PATH_ENV = "SWARMPY_CERT_PATH"     # a folder with ca.pem, cert.pem, key.pem (as DOCKER_CERT_PATH)


@dataclass(frozen=True)
class TLSFiles:
    ca: str
    cert: str
    key: str

    def check(self) -> None:
        for flag, path in (("--tlscacert", self.ca), ("--tlscert", self.cert), ("--tlskey", self.key)):
            if not path:
                raise ValueError(f"{flag} is required: the API is served on TCP only with mutual TLS")
            if not os.path.isfile(path):
                raise ValueError(f"{flag}: no such file {path}")

    @classmethod
    def from_flags(cls, ca: str | None, cert: str | None, key: str | None) -> "TLSFiles":
        base = os.environ.get(CERT_PATH_ENV, "")
        pick = lambda given, name: given or (os.path.join(base, name) if base else "")  # noqa: E731
        return cls(pick(ca, "ca.pem"), pick(cert, "cert.pem"), pick(key, "key.pem"))


def server_context(files: TLSFiles) -> ssl.SSLContext:
    files.check()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=files.ca)
    ctx.load_cert_chain(files.cert, files.key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def node_server_context(files: TLSFiles) -> ssl.SSLContext:
    """The cluster port: a node certificate is verified when presented, and a connection
    without one may only ask the CA server (the root certificate, a join with a token)."""
    ctx = server_context(files)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(files: TLSFiles) -> ssl.SSLContext:
    files.check()
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca)
    ctx.load_cert_chain(files.cert, files.key)
    # Trust is the cluster CA's signature; node certificates name node ids, not host names.
    ctx.check_hostname = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
