"""One error root for the pipeline; retriable vs terminal is a class attribute."""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error raised by ``pipeline``."""

    retriable: bool = False


class ProviderError(PipelineError):
    """The model provider could not produce (the rest of) an answer.

    ``error_class`` is the stable name written into ``ResponseFailed.error_class``."""

    error_class: str = "provider_error"

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable


class ProviderTimeoutError(ProviderError):
    """No answer (or no next token) within the configured time."""

    error_class = "provider_timeout"
    retriable = True


class ProviderUnavailableError(ProviderError):
    """Connection refused, 429 or 5xx: worth retrying later."""

    error_class = "provider_unavailable"
    retriable = True


class ProviderRejectedError(ProviderError):
    """The provider refused the request (4xx other than 429): retrying will not help."""

    error_class = "provider_rejected"


class ProviderProtocolError(ProviderError):
    """The provider's stream could not be understood."""

    error_class = "provider_protocol"


class ScriptedFailureError(ProviderError):
    """The demo generator was told to fail (a ``[[fail...]]`` marker in the prompt)."""

    error_class = "scripted_failure"
