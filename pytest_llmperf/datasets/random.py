"""Random-token prompts with a length distribution (fixed, uniform, or normal around a mean).

Token ids are drawn above 100 (cards keep special tokens low) and are distinct per
request and per round, so the prefix cache never turns a run into a cache-hit benchmark.
Completions get the ids themselves (exact prompt lengths with any tokenizer), or with
``prompt_format="text"`` the synthetic tokenizer's text for them (``t<i>`` words, which
the server tokenizes back into the same ids, as it does the text prompts of
``vllm bench serve``'s random dataset: tokenizing is then part of TTFT); chat requests
always get that text.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..client.records import ServeRequest
from ..loads.base import Job, SingleRequest
from ..tokenizer import text_of


def lengths(mean: int, n: int, dist: str, spread: float, rng: np.random.Generator) -> list[int]:
    """``n`` lengths around ``mean``: fixed, uniform in mean*(1 +- spread), or normal with
    standard deviation spread*mean; never below 1."""
    if dist == "fixed" or spread == 0:
        return [mean] * n
    if dist == "uniform":
        lo, hi = max(1, round(mean * (1 - spread))), max(1, round(mean * (1 + spread)))
        return rng.integers(lo, hi + 1, size=n).tolist()
    if dist == "normal":
        return np.maximum(1, np.rint(rng.normal(mean, spread * mean, size=n))).astype(int).tolist()
    raise ValueError(f"unknown length distribution {dist!r}")


def random_requests(workload: Any, n: int, vocab_size: int, round_key: str) -> list[ServeRequest]:
    digest = hashlib.sha256(f"{workload.seed}:{round_key}".encode()).hexdigest()
    rng = np.random.default_rng(int(digest[:16], 16))
    ins = lengths(workload.input_len, n, workload.length_dist, workload.length_spread, rng)
    outs = lengths(workload.output_len, n, workload.length_dist, workload.length_spread, rng)
    low = min(100, max(vocab_size // 2, 1))
    out: list[ServeRequest] = []
    for i, o in zip(ins, outs, strict=True):
        ids = rng.integers(low, vocab_size, size=i).tolist()
        if workload.api == "chat":
            out.append(ServeRequest(output_len=o, input_len=i,
                                    messages=[{"role": "user", "content": text_of(ids)}]))
        elif workload.prompt_format == "text":
            out.append(ServeRequest(output_len=o, input_len=i, prompt=text_of(ids)))
        else:
            out.append(ServeRequest(output_len=o, input_len=i, prompt=ids))
    return out


def random_jobs(workload: Any, n: int, vocab_size: int, round_key: str) -> list[Job]:
    return [SingleRequest(r) for r in random_requests(workload, n, vocab_size, round_key)]
