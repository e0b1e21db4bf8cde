"""One error root for the ``infra`` package; retriable vs terminal is a class attribute."""

from __future__ import annotations


class InfraError(Exception):
    """Root of every error raised by ``infra``."""

    retriable: bool = False


class BrokerError(InfraError):
    """The local broker could not be resolved, formatted, started, reached or stopped.

    ``log_tail`` holds the last lines the broker wrote, so a failure explains itself.
    """

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message if not log_tail else f"{message}\n--- broker log tail ---\n{log_tail}")
        self.log_tail = log_tail


class BrokerUnreachableError(BrokerError):
    """The broker did not answer a metadata request in time."""

    retriable = True


class TopicMismatchError(InfraError):
    """An existing topic differs from its spec in a way that cannot be fixed in place
    (partition count: changing it would re-route conversations to other partitions)."""


class ProcessError(InfraError):
    """A supervised subprocess failed to start, become ready or stop."""


class KafkaAuthenticationError(InfraError):
    """A broker refused the client's SASL credentials, or the TLS handshake failed (a CA that
    does not vouch for the broker, a protocol mismatch): terminal, retrying cannot help."""
