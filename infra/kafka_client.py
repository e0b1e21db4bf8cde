"""How every Kafka client of the system connects: TLS and SASL, written once.

``KafkaSecurity`` is one frozen settings shape, read by each process's settings object from
variables named after Kafka's own client configs (``security.protocol`` is
``KAFKA_SECURITY_PROTOCOL``, ``sasl.mechanism`` is ``KAFKA_SASL_MECHANISM``, ...). Producers,
consumers and admin clients take ``**security.client_kwargs()``; the Faust app takes
``**security.faust_kwargs(bootstrap)``. With nothing set it is ``PLAINTEXT``: the clients are
built exactly as before.

A client that cannot authenticate does not say so: aiokafka logs the broker's answer and raises
"Unable to bootstrap". ``diagnose`` opens one connection with the same settings and raises
``KafkaAuthenticationError`` with the reason (a refused password, a certificate the CA does not
vouch for), so a wrong password fails start-up at once with a message that names it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.env import env_str
from infra.errors import KafkaAuthenticationError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
"""``security.protocol`` values."""
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
"""``sasl.mechanism`` values supported here."""

ENV = {
    "protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "username": "KAFKA_SASL_USERNAME",
    "password": "KAFKA_SASL_PASSWORD",
    "ssl_cafile": "KAFKA_SSL_CAFILE",
    "ssl_certfile": "KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "KAFKA_SSL_KEYFILE",
}
"""The environment variable of each field."""


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How a client reaches the brokers; validated on construction."""

    protocol: str = "PLAINTEXT"
    """``security.protocol``: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: str = "SCRAM-SHA-512"
    """``sasl.mechanism`` (SASL protocols only): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."""
    username: str = ""
    """SASL user name (``sasl.jaas.config``'s ``username``)."""
    password: str = field(default="", repr=False)
    """SASL password; never in a repr or a log line."""
    ssl_cafile: str = ""
    """PEM file of the CA(s) that sign the brokers' certificates; empty: the system's trust store."""
    ssl_certfile: str = ""
    """Client certificate (PEM) for brokers that require one (mutual TLS); empty: none."""
    ssl_keyfile: str = ""
    """The client certificate's private key (PEM); empty: in ``ssl_certfile``."""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"{ENV['protocol']} must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}"
            )
        if self.uses_sasl:
            if self.sasl_mechanism not in MECHANISMS:
                allowed = ", ".join(MECHANISMS)
                raise ValueError(
                    f"{ENV['sasl_mechanism']} must be one of {allowed}, got {self.sasl_mechanism!r}"
                )
            if not self.username or not self.password:
                raise ValueError(
                    f"{ENV['protocol']}={self.protocol} needs {ENV['username']} and {ENV['password']}"
                )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError(f"{ENV['ssl_keyfile']} is set without {ENV['ssl_certfile']}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        """Read by each process's settings object (``env`` is the mapping it reads)."""
        d = cls()
        return cls(
            protocol=env_str(env, ENV["protocol"], d.protocol).upper(),
            sasl_mechanism=env_str(env, ENV["sasl_mechanism"], d.sasl_mechanism).upper(),
            username=env_str(env, ENV["username"], d.username),
            password=env_str(env, ENV["password"], d.password),
            ssl_cafile=env_str(env, ENV["ssl_cafile"], d.ssl_cafile),
            ssl_certfile=env_str(env, ENV["ssl_certfile"], d.ssl_certfile),
            ssl_keyfile=env_str(env, ENV["ssl_keyfile"], d.ssl_keyfile),
        )

    def env(self) -> dict[str, str]:
        """These settings as the variables ``from_env`` reads (for a child process)."""
        if self.protocol == "PLAINTEXT":
            return {ENV["protocol"]: "PLAINTEXT"}
        return {name: str(getattr(self, attr)) for attr, name in ENV.items() if getattr(self, attr)}

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (hostname checked) for TLS protocols; None otherwise."""
        if not self.uses_tls:
            return None
        from aiokafka.helpers import create_ssl_context

        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ssl_cafile or None,
            certfile=self.ssl_certfile or None,
            keyfile=self.ssl_keyfile or None,
        )
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and
        ``AIOKafkaAdminClient``; empty for PLAINTEXT (the clients' defaults)."""
        if self.protocol == "PLAINTEXT":
            return {}
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            kwargs |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        return kwargs

    def faust_kwargs(self, bootstrap: str) -> dict[str, Any]:
        """``broker`` and ``broker_credentials`` of ``faust.App``. Faust hands the credentials to
        every aiokafka client it makes (consumers, producers, the topic creator); the URL scheme
        stays ``kafka://`` whatever the protocol (Faust takes TLS from the credentials)."""
        import faust

        credentials: faust.types.auth.CredentialsT | None = None
        if self.uses_sasl:
            credentials = faust.SASLCredentials(
                username=self.username,
                password=self.password,
                ssl_context=self.ssl_context(),
                mechanism=self.sasl_mechanism,
            )
        elif self.uses_tls:
            context = self.ssl_context()
            assert context is not None
            credentials = faust.SSLCredentials(context)
        return {"broker": f"kafka://{bootstrap}", "broker_credentials": credentials}

    def describe(self) -> str:
        """A line for logs and errors (no password)."""
        if self.uses_sasl:
            return f"{self.protocol} as {self.username!r} ({self.sasl_mechanism})"
        return self.protocol


PLAINTEXT = KafkaSecurity()


async def diagnose(bootstrap: str, security: KafkaSecurity, timeout_s: float = 10.0) -> None:
    """Open one connection to each bootstrap server as a client would; raise
    ``KafkaAuthenticationError`` when a broker refuses the credentials or the TLS handshake fails.
    Returns quietly when a connection succeeds or fails for another reason (unreachable: the
    caller's own error says so)."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError, SaslAuthenticationFailed

    kwargs = security.client_kwargs()
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host.strip("[]"),
                    int(port),
                    security_protocol=kwargs.get("security_protocol", "PLAINTEXT"),
                    ssl_context=kwargs.get("ssl_context"),
                    sasl_mechanism=kwargs.get("sasl_mechanism"),
                    sasl_plain_username=kwargs.get("sasl_plain_username"),
                    sasl_plain_password=kwargs.get("sasl_plain_password"),
                    request_timeout_ms=int(timeout_s * 1000),
                ),
                timeout_s,
            )
        except SaslAuthenticationFailed as exc:
            raise KafkaAuthenticationError(
                f"Kafka authentication failed at {server.strip()} with {security.describe()}: {exc} "
                f"(check {ENV['username']} / {ENV['password']} / {ENV['sasl_mechanism']})"
            ) from exc
        except ssl.SSLError as exc:
            raise KafkaAuthenticationError(
                f"Kafka TLS handshake failed at {server.strip()} with {security.describe()}: {exc} "
                f"(check {ENV['ssl_cafile']} and {ENV['protocol']})"
            ) from exc
        except (OSError, KafkaError, TimeoutError, ValueError):
            continue
        conn.close()
        return
