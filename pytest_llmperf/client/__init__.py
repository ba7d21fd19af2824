"""The async streaming OpenAI client (aiohttp) and the per-request timings it records."""

from __future__ import annotations

from .records import RequestRecord, ServeRequest
from .sse import SSEParser

__all__ = ["RequestRecord", "SSEParser", "ServeRequest"]
