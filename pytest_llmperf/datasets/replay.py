"""A JSONL trace to replay: one request per line, ``{"arrival_s", "input_len", "output_len"}``.

``timestamp`` (seconds) is accepted for ``arrival_s``; offsets are taken relative to the
first line. Prompts are random tokens of the traced lengths (fresh every round).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any

import numpy as np

from ..client.records import ServeRequest
from ..loads.base import Job, SingleRequest


def _error(message: str) -> Exception:
    from ..config import ConfigError

    return ConfigError(message)


@functools.lru_cache(maxsize=32)
def _read(path: str, mtime_ns: int) -> tuple[tuple[float, int, int], ...]:
    rows: list[tuple[float, int, int]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"trace {path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _error(f"{where}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise _error(f"{where}: expected an object, got {type(row).__name__}")
            at = row.get("arrival_s", row.get("timestamp"))
            ins, outs = row.get("input_len"), row.get("output_len")
            if not isinstance(at, (int, float)) or isinstance(at, bool) or at < 0:
                raise _error(f"{where}: arrival_s must be a number of seconds >= 0, got {at!r}")
            for key, value in (("input_len", ins), ("output_len", outs)):
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise _error(f"{where}: {key} must be a positive integer, got {value!r}")
            rows.append((float(at), int(ins), int(outs)))  # type: ignore[arg-type]
    if not rows:
        raise _error(f"trace {path}: no requests in it")
    first = min(r[0] for r in rows)
    return tuple(sorted(((a - first, i, o) for a, i, o in rows), key=lambda r: r[0]))


def read_trace(path: str) -> tuple[tuple[float, int, int], ...]:
    """(arrival offset, input_len, output_len) per line, sorted by arrival; ConfigError
    naming the file and line for anything malformed."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as exc:
        raise _error(f"trace={path!r}: {exc.strerror}") from None
    return _read(path, mtime)


def replay_jobs(workload: Any, vocab_size: int, round_key: str, n: int | None = None) -> list[Job]:
    rows = read_trace(str(workload.trace))
    if n:
        rows = rows[:n]
    digest = hashlib.sha256(f"{workload.seed}:{round_key}".encode()).hexdigest()
    rng = np.random.default_rng(int(digest[:16], 16))
    low = min(100, max(vocab_size // 2, 1))
    return [SingleRequest(ServeRequest(output_len=o, input_len=i, arrival_s=a,
                                       prompt=rng.integers(low, vocab_size, size=i).tolist()))
            for a, i, o in rows]
