"""Multi-turn chats: each job is one conversation of ``turns`` turns.

Turn k sends the whole history (every earlier user message and the assistant's actual
reply) plus a new user message of ``input_len`` random words, then waits
``think_time_s`` before the next turn, as an agent or a person would. ``concurrency``
chats run at once; each turn is one timed request. The history grows by
``input_len + output_len`` tokens a turn, so later turns are prefix-cache hits.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..client.records import RequestRecord, ServeRequest
from ..loads.base import Job, Send
from ..tokenizer import text_of


@dataclass
class Conversation:
    index: int
    turns: int
    input_len: int
    output_len: int
    think_time_s: float
    user_messages: list[list[int]] = field(default_factory=list)

    async def __call__(self, send: Send) -> list[RequestRecord]:
        history: list[dict[str, str]] = []
        records: list[RequestRecord] = []
        words = 0
        for turn, ids in enumerate(self.user_messages):
            history.append({"role": "user", "content": text_of(ids)})
            words += len(ids)
            req = ServeRequest(output_len=self.output_len, input_len=words,
                               messages=list(history), conversation=self.index, turn=turn)
            record = await send(req)
            records.append(record)
            if not record.ok:
                break  # the chat cannot go on without its reply
            reply = record.text.strip()
            history.append({"role": "assistant", "content": reply})
            words += len(reply.split())
            if turn + 1 < len(self.user_messages) and self.think_time_s:
                await asyncio.sleep(self.think_time_s)
        return records


def multiturn_jobs(workload: Any, n_requests: int, vocab_size: int, round_key: str) -> list[Job]:
    digest = hashlib.sha256(f"{workload.seed}:{round_key}".encode()).hexdigest()
    rng = np.random.default_rng(int(digest[:16], 16))
    low = min(100, max(vocab_size // 2, 1))
    chats = max(1, n_requests // workload.turns)
    jobs: list[Job] = []
    for c in range(chats):
        conv = Conversation(c, workload.turns, workload.input_len, workload.output_len,
                            workload.think_time_s)
        conv.user_messages = [rng.integers(low, vocab_size, size=workload.input_len).tolist()
                              for _ in range(workload.turns)]
        jobs.append(conv)
    return jobs
