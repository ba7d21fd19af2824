"""A ShareGPT-format file: the first human turn of each conversation is the prompt, the
reply's length (in words, capped at ``output_len``) the number of tokens to generate.

The format is a JSON list of ``{"conversations": [{"from": "human", "value": ...},
{"from": "gpt", "value": ...}, ...]}`` (``vllm bench serve --dataset-name sharegpt``).
Prompts are sent as text, so the server's tokenizer counts them (the ``usage`` field
says how many tokens they were); with a card's synthetic tokenizer a word is a token.
Conversations whose prompt and reply would not fit ``max_len`` are skipped; rounds
take consecutive slices of the file so a prompt is not repeated before it runs out.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from ..client.records import ServeRequest
from ..loads.base import Job, SingleRequest


def _error(message: str) -> Exception:
    from ..config import ConfigError

    return ConfigError(message)


@functools.lru_cache(maxsize=8)
def _pairs(path: str, mtime_ns: int) -> tuple[tuple[str, int, int], ...]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise _error(f"dataset_path={path!r}: not a readable JSON file ({exc})") from None
    if not isinstance(data, list):
        raise _error(f"dataset_path={path!r}: expected a JSON list of conversations")
    out = []
    for item in data:
        conv = item.get("conversations") if isinstance(item, dict) else None
        if not isinstance(conv, list) or len(conv) < 2:
            continue
        first, reply = conv[0], conv[1]
        if not (isinstance(first, dict) and isinstance(reply, dict)):
            continue
        prompt, answer = str(first.get("value", "")), str(reply.get("value", ""))
        words_in, words_out = len(prompt.split()), len(answer.split())
        if words_in >= 4 and words_out >= 4:  # vllm bench serve prunes the same
            out.append((prompt, words_in, words_out))
    if not out:
        raise _error(f"dataset_path={path!r}: no conversation with a prompt and a reply")
    return tuple(out)


def sharegpt_jobs(workload: Any, n: int, round_index: int, max_len: int | None) -> list[Job]:
    path = str(workload.dataset_path)
    pairs = [p for p in _pairs(path, os.stat(path).st_mtime_ns)
             if max_len is None or p[1] + min(p[2], workload.output_len) <= max_len]
    if not pairs:
        raise _error(f"dataset_path={path!r}: no conversation fits max_model_len={max_len}")
    jobs: list[Job] = []
    for k in range(n):
        prompt, words_in, words_out = pairs[(round_index * n + k) % len(pairs)]
        out_len = min(words_out, workload.output_len)
        if workload.api == "chat":
            req = ServeRequest(output_len=out_len, input_len=words_in,
                               messages=[{"role": "user", "content": prompt}])
        else:
            req = ServeRequest(output_len=out_len, input_len=words_in, prompt=prompt)
        jobs.append(SingleRequest(req))
    return jobs
