"""The interface every model provider implements.

``stream(request)`` yields pieces of answer text (``str``) and ends with exactly one ``Finish``.
With ``request.prefix`` set, the provider continues an answer whose first part is already stored
(after a failover) and yields only what follows the prefix; providers that cannot do that say so
with ``can_continue = False`` and the worker restarts the answer visibly instead.
Errors are ``pipeline.errors.ProviderError`` subclasses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from schemas.records import PromptSubmitted, Usage


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What to generate."""

    prompt: PromptSubmitted
    """The prompt to answer."""
    model: str
    """The resolved model name."""
    prefix: str = ""
    """Answer text already stored; generate what follows it."""


@dataclass(frozen=True, slots=True)
class Finish:
    """The end of a stream."""

    reason: str = "stop"
    """stop, length, content_filter, ... as the provider says."""
    usage: Usage = field(default_factory=Usage)


class ModelProvider(Protocol):
    """A source of answer text."""

    name: str
    can_continue: bool
    """Whether ``stream`` honours ``GenerationRequest.prefix``."""

    def model_for(self, prompt: PromptSubmitted) -> str:
        """The model that answers ``prompt`` (its own choice, or the default)."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        """Answer text, piece by piece, then one ``Finish``."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
