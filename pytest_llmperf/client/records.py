"""One request to an OpenAI server and what the client saw of it, chunk by chunk.

Timings follow ``vllm bench serve`` (``vllm/benchmarks/lib/endpoint_request_func.py``):
the clock starts just before the POST; TTFT is the first chunk that carries a choice;
every later such chunk adds one inter-token latency (ITL); E2EL ends at the last such
chunk (not at ``[DONE]``); output tokens come from the server's ``usage`` field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A decode span shorter than this per token cannot be real decoding (it would be over
# 10,000 tokens/s for one stream): the server held the stream back and sent it at once.
BURST_SECONDS_PER_TOKEN = 1e-4


@dataclass(frozen=True)
class ServeRequest:
    """What to send: a prompt (token ids or text) or chat messages, and how much to generate."""

    output_len: int
    input_len: int
    prompt: list[int] | str | None = None
    messages: list[dict[str, str]] | None = None
    arrival_s: float = 0.0  # offset from the start of the run (open-loop loads)
    conversation: int | None = None  # multi-turn: which chat, and which turn in it
    turn: int = 0

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


@dataclass
class RequestRecord:
    """The client's view of one request: its timestamps (perf_counter seconds) and counts."""

    request: ServeRequest
    start: float = 0.0
    first: float | None = None
    last: float | None = None
    chunk_times: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    text: str = ""
    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ttft_s(self) -> float:
        assert self.first is not None
        return self.first - self.start

    @property
    def e2el_s(self) -> float:
        assert self.last is not None
        return self.last - self.start

    @property
    def itls_s(self) -> list[float]:
        t = self.chunk_times
        return [b - a for a, b in zip(t, t[1:], strict=False)]

    @property
    def tpot_s(self) -> float | None:
        """(E2EL - TTFT) / (tokens - 1), as ``vllm bench serve`` defines TPOT."""
        n = self.output_tokens or 0
        if n <= 1 or self.first is None or self.last is None:
            return None
        return (self.last - self.first) / (n - 1)

    @property
    def bursty(self) -> bool:
        """The whole stream arrived in one burst: TTFT == E2EL, no real chunk gaps."""
        n = self.output_tokens or 0
        if not self.ok or n <= 1 or self.first is None or self.last is None:
            return False
        return (self.last - self.first) < BURST_SECONDS_PER_TOKEN * (n - 1)

    def fail(self, message: str, status: int | None = None) -> RequestRecord:
        if self.error is None:
            self.error = message
        if status is not None:
            self.status = status
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start, "first": self.first, "last": self.last,
            "chunks": len(self.chunk_times), "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens, "status": self.status, "error": self.error,
            "requested_output_len": self.request.output_len,
        }
