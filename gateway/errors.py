"""One error root for the gateway and the one table that maps every error to an HTTP status, a
WebSocket close code and what the client does next.

Every error reaches clients in one shape, ``{"error": {"code": ..., "message": ...}}`` (over
HTTP as the body, over WebSocket as an ``error`` frame before the close). The client's next step:

- ``retry``: the same request later (after ``Retry-After`` when given);
- ``resume``: reconnect with the last cursor (any gateway can serve it);
- ``reauthenticate``: get a new token, then resume;
- ``stop``: do not repeat the request unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar


class Action(StrEnum):
    RETRY = "retry"
    RESUME = "resume"
    REAUTHENTICATE = "reauthenticate"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class Rule:
    """How one error code travels."""

    code: str
    status: int
    """HTTP status (0: only ever a WebSocket close)."""
    close_code: int
    action: Action
    meaning: str


class GatewayError(Exception):
    """Root of every error the gateway raises. Subclasses name their code; the table gives the rest."""

    code: ClassVar[str] = "internal"
    retriable: ClassVar[bool] = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def rule(self) -> Rule:
        return RULES[self.code]

    @property
    def status(self) -> int:
        return self.rule.status or 500

    @property
    def close_code(self) -> int:
        return self.rule.close_code

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "action": self.rule.action.value}
        error.update(self.details)
        return {"error": error}


class InvalidRequest(GatewayError):
    code = "invalid_request"


class InvalidMarker(GatewayError):
    """A demo prompt marker (``[[tokens=N]]``, ``[[rate=R]]``, ...) malformed or over its cap."""

    code = "invalid_marker"


class InvalidFrame(GatewayError):
    code = "invalid_frame"


class InvalidCursor(GatewayError):
    code = "invalid_cursor"


class Unauthorized(GatewayError):
    code = "unauthorized"


class Forbidden(GatewayError):
    code = "forbidden"


class OriginNotAllowed(GatewayError):
    code = "origin_not_allowed"


class UnknownConversation(GatewayError):
    code = "unknown_conversation"


class PromptIdReused(GatewayError):
    code = "prompt_id_reused"


class PayloadTooLarge(GatewayError):
    code = "payload_too_large"


class RateLimited(GatewayError):
    code = "rate_limited"
    retriable = True


class TooManyConnections(GatewayError):
    code = "too_many_connections"
    retriable = True


class TooManyReads(GatewayError):
    """A user already has as many catch-up or snapshot reads of the log running as allowed."""

    code = "too_many_reads"
    retriable = True


class RequestTimeout(GatewayError):
    """The request's headers or body did not arrive in time."""

    code = "request_timeout"
    retriable = True


class HostNotAllowed(GatewayError):
    """A Host header that is not loopback or on the allowlist (DNS rebinding)."""

    code = "host_not_allowed"


class Unavailable(GatewayError):
    """Kafka (or a resume read) did not answer in time."""

    code = "unavailable"
    retriable = True


class SlowClient(GatewayError):
    code = "slow_client"
    retriable = True


class ShuttingDown(GatewayError):
    code = "going_away"
    retriable = True


class NotFound(GatewayError):
    code = "not_found"


class WrongShard(GatewayError):
    code = "wrong_shard"
    retriable = True


class MethodNotAllowed(GatewayError):
    code = "method_not_allowed"


class Internal(GatewayError):
    code = "internal"
    retriable = True


_TABLE = (
    Rule("invalid_request", 400, 4400, Action.STOP, "a body, parameter or id failed validation"),
    Rule("invalid_marker", 400, 4400, Action.STOP, "a prompt marker malformed or over its cap (demo)"),
    Rule("invalid_frame", 0, 4400, Action.STOP, "a WebSocket frame that is not valid JSON of a known type"),
    Rule("invalid_cursor", 400, 4400, Action.STOP, "a cursor that is not a tokenlog cursor"),
    Rule("unauthorized", 401, 4401, Action.REAUTHENTICATE, "missing, expired or invalid token"),
    Rule("forbidden", 403, 4403, Action.STOP, "the conversation belongs to another user"),
    Rule("origin_not_allowed", 403, 4403, Action.STOP, "WebSocket from an Origin not on the allowlist"),
    Rule("unknown_conversation", 404, 4404, Action.STOP, "no such conversation in the log"),
    Rule("not_found", 404, 4404, Action.STOP, "no such route"),
    Rule("method_not_allowed", 405, 4405, Action.STOP, "the route does not take this method"),
    Rule("prompt_id_reused", 409, 4409, Action.STOP, "the prompt_id was already used with other text"),
    Rule("payload_too_large", 413, 1009, Action.STOP, "body or frame over the size limit"),
    Rule("host_not_allowed", 400, 4400, Action.STOP, "a Host header not loopback or on the allowlist"),
    Rule("request_timeout", 408, 4408, Action.RETRY, "the request's headers or body came too slowly"),
    Rule("rate_limited", 429, 4429, Action.RETRY, "too many prompts, cancels or frames; see Retry-After"),
    Rule("too_many_connections", 429, 4429, Action.RETRY, "this user or address holds too many streams"),
    Rule("too_many_reads", 429, 4429, Action.RETRY, "this user has too many log reads running"),
    Rule("wrong_shard", 421, 4421, Action.RETRY, "this gateway does not read the conversation's partition"),
    Rule("internal", 500, 1011, Action.RESUME, "a bug; the process keeps serving"),
    Rule("unavailable", 503, 1013, Action.RESUME, "Kafka did not answer in time; retry with backoff"),
    Rule("slow_client", 0, 4000, Action.RESUME, "the client fell too far behind; resume from its cursor"),
    Rule("going_away", 0, 1012, Action.RESUME, "this gateway is shutting down; resume on another"),
)
RULES: dict[str, Rule] = {rule.code: rule for rule in _TABLE}
"""The table, by code (README's "Errors" section is checked against it)."""
