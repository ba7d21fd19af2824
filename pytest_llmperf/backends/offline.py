"""The ``offline`` backend: a ``vllm.LLM`` in a child process (:mod:`..engine`)."""

from __future__ import annotations

from ..engine import EngineManager

__all__ = ["EngineManager"]
