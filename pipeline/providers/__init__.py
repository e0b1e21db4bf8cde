"""Model providers behind one small interface (``base.ModelProvider``)."""

from pipeline.providers.base import Finish, GenerationRequest, ModelProvider

__all__ = ["Finish", "GenerationRequest", "ModelProvider"]
