"""A local certificate authority and a broker certificate, made with ``openssl`` for the local
broker's SASL_SSL listener.

Made once per broker home (``<home>/tls``) and kept, so clients holding the CA file stay valid
across restarts: ``ca.pem`` (what clients trust, ``KAFKA_SSL_CAFILE``), ``broker.pem`` (the
broker's certificate, subject alternative names ``IP:127.0.0.1`` and ``DNS:localhost``, so
clients verify the hostname) and ``broker-keystore.pem`` (its key and certificate, what Kafka
reads as a PEM keystore). Private keys are mode 0600. EC P-256 keys: quick to make, and both
Python's ssl and Java read them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from infra.errors import BrokerError

CA_SUBJECT = "/CN=tokenlog local Kafka CA"
DAYS = 825
"""Validity of the certificates (the longest browsers accept for a leaf; nothing here needs more)."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the local broker's TLS material lives."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def broker_cert(self) -> Path:
        return self.directory / "broker.pem"

    @property
    def broker_key(self) -> Path:
        return self.directory / "broker.key"

    @property
    def keystore(self) -> Path:
        """The broker's key followed by its certificate (Kafka's ``ssl.keystore.type=PEM``)."""
        return self.directory / "broker-keystore.pem"

    def complete(self) -> bool:
        return all(
            p.exists() for p in (self.ca, self.ca_key, self.broker_cert, self.broker_key, self.keystore)
        )


def make_tls(directory: Path) -> TlsFiles:
    """The CA and the broker certificate in ``directory``, made unless they are all there."""
    files = TlsFiles(directory)
    if files.complete():
        return files
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BrokerError("openssl is not on PATH: it makes the local broker's TLS certificates")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = directory / "ca.ext"
    ca_ext.write_text(
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n"
    )
    leaf_ext = directory / "broker.ext"
    leaf_ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    csr = directory / "broker.csr"
    ca_csr = directory / "ca.csr"

    def request(key: Path, out: Path, subject: str) -> list[str]:
        return [openssl, "req", "-new", *ec, "-keyout", str(key), "-out", str(out), "-subj", subject]

    def sign(request: Path, out: Path, extensions: Path, *issuer: str) -> list[str]:
        days = ("-days", str(DAYS), "-sha256")
        return [
            openssl,
            "x509",
            "-req",
            "-in",
            str(request),
            *issuer,
            "-out",
            str(out),
            *days,
            "-extfile",
            str(extensions),
        ]

    ca = ("-CA", str(files.ca), "-CAkey", str(files.ca_key), "-CAcreateserial")
    steps = [
        request(files.ca_key, ca_csr, CA_SUBJECT),
        sign(ca_csr, files.ca, ca_ext, "-key", str(files.ca_key)),  # self-signed
        request(files.broker_key, csr, "/CN=127.0.0.1"),
        sign(csr, files.broker_cert, leaf_ext, *ca),
    ]
    old = os.umask(0o077)  # keys are written 0600
    try:
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
            if proc.returncode != 0:
                raise BrokerError(f"openssl failed: {' '.join(cmd[:2])}", log_tail=proc.stderr[-2000:])
        files.keystore.write_text(files.broker_key.read_text() + files.broker_cert.read_text())
    finally:
        os.umask(old)
    for path in (files.ca_key, files.broker_key, files.keystore):
        os.chmod(path, 0o600)
    os.chmod(files.ca, 0o644)
    os.chmod(files.broker_cert, 0o644)
    for scratch in (ca_ext, leaf_ext, csr, ca_csr, directory / "ca.srl"):
        scratch.unlink(missing_ok=True)
    return files
