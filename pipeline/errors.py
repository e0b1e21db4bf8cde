"""One error root for the pipeline; retriable vs terminal is a class attribute.

A provider error's text (``str(exc)``) may carry a provider's response body, a host name or an
exception's text: it is logged by the worker, never written to the log. What users see in
``ResponseFailed`` is ``error_class`` and ``public_message()``, a fixed text per class (or, for the
demo's scripted errors, a text built from the user's own prompt only).
"""

from __future__ import annotations

from typing import ClassVar


class PipelineError(Exception):
    """Root of every error raised by ``pipeline``."""

    retriable: bool = False


class ProviderError(PipelineError):
    """The model provider could not produce (the rest of) an answer.

    ``error_class`` is the stable name written into ``ResponseFailed.error_class``."""

    error_class: str = "provider_error"
    safe_text: ClassVar[str] = "the model provider could not produce the answer"
    """What ``ResponseFailed.error_message`` says for this class."""

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable

    def public_message(self) -> str:
        """The message users may see: the class's fixed text, never the exception's own."""
        return self.safe_text


class ProviderTimeoutError(ProviderError):
    """No answer (or no next token) within the configured time."""

    error_class = "provider_timeout"
    safe_text = "the model provider did not answer in time"
    retriable = True


class ProviderUnavailableError(ProviderError):
    """Connection refused, 429 or 5xx: worth retrying later."""

    error_class = "provider_unavailable"
    safe_text = "the model provider is unavailable; try again later"
    retriable = True


class ProviderRejectedError(ProviderError):
    """The provider refused the request (4xx other than 429): retrying will not help."""

    error_class = "provider_rejected"
    safe_text = "the model provider refused the request"


class ProviderProtocolError(ProviderError):
    """The provider's stream could not be understood."""

    error_class = "provider_protocol"
    safe_text = "the model provider's answer could not be read"


class ScriptedFailureError(ProviderError):
    """The demo generator was told to fail (a ``[[fail...]]`` marker in the prompt)."""

    error_class = "scripted_failure"

    def public_message(self) -> str:
        return str(self)  # built from the prompt's own marker


class ProviderStalledError(ProviderError):
    """No piece from the provider within the worker's idle timeout (``answer_idle_timeout_s``):
    the worker ends the answer itself so a stuck provider frees the slot."""

    error_class = "provider_stalled"
    safe_text = "the model provider stopped sending the answer"
    retriable = True


class MarkerError(ProviderError):
    """A demo prompt marker is malformed or over its cap (``pipeline/providers/markers.py``); the
    message names the marker and the cap, nothing else, so it may be shown to the user."""

    error_class = "invalid_marker"

    def public_message(self) -> str:
        return str(self)
