"""Local infrastructure: a real Apache Kafka broker without Docker, topic provisioning,
and the process supervision used by ``make run`` and the integration tests."""

from infra.errors import BrokerError, InfraError, TopicMismatchError

__all__ = ["BrokerError", "InfraError", "TopicMismatchError"]
