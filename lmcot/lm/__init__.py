"""Language-model backends (local transformers, OpenAI-compatible HTTP) behind one cached API."""

from lmcot.lm.base import LM, GenerationParams, UnsupportedByBackend

__all__ = ["LM", "GenerationParams", "UnsupportedByBackend"]
