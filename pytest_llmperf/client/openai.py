"""Streams ``/v1/completions`` and ``/v1/chat/completions`` with aiohttp, timing every chunk.

Every way a request can go wrong ends as an error on its record, never as a dropped
request: an HTTP error (status and the server's message), a timeout, a broken
connection, a stream with no token or no ``usage``, or a reply shorter than asked for
(requests set ``ignore_eos``, so anything but the requested count is a fault).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from .records import RequestRecord, ServeRequest
from .sse import SSEParser


def make_session(limit: int = 0, timeout_s: float | None = None) -> aiohttp.ClientSession:
    """One pooled session per run (keep-alive, no per-host limit beyond the load's own)."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, force_close=False,
                                     keepalive_timeout=60)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        trust_env=False,  # loopback benchmarks must not go through a proxy
    )


def payload_for(request: ServeRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.output_len,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    # No sampling overrides: the server's defaults, as `vllm bench serve` sends them.
    if request.is_chat:
        body["messages"] = request.messages
    else:
        body["prompt"] = request.prompt
        body["repetition_penalty"] = 1.0
    return body


class OpenAIClient:
    """Sends one streaming request at a time per call; share it across concurrent calls."""

    def __init__(self, base_url: str, model: str, session: aiohttp.ClientSession,
                 request_timeout_s: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.session = session
        self.request_timeout_s = request_timeout_s

    async def send(self, request: ServeRequest) -> RequestRecord:
        record = RequestRecord(request)
        try:
            await asyncio.wait_for(self._stream(record), timeout=self.request_timeout_s)
        except (TimeoutError, asyncio.TimeoutError):
            return record.fail(f"timed out after {self.request_timeout_s:g} s")
        except aiohttp.ClientError as exc:
            return record.fail(f"{type(exc).__name__}: {exc}")
        except OSError as exc:
            return record.fail(f"{type(exc).__name__}: {exc}")
        if record.error is not None:
            return record
        return _check_complete(record)

    async def _stream(self, record: RequestRecord) -> None:
        request = record.request
        path = "/v1/chat/completions" if request.is_chat else "/v1/completions"
        body = payload_for(request, self.model)
        parser = SSEParser()
        record.start = time.perf_counter()
        async with self.session.post(self.base_url + path, json=body) as response:
            record.status = response.status
            if response.status != 200:
                text = (await response.text())[:300].strip()
                record.fail(f"HTTP {response.status}: {text or response.reason}")
                return
            async for data in response.content.iter_any():
                now = time.perf_counter()
                for event in parser.feed(data):
                    _take(record, event, now, request.is_chat)
                if record.error:
                    return
            for event in parser.close():
                _take(record, event, time.perf_counter(), request.is_chat)


def _take(record: RequestRecord, event: str, now: float, chat: bool) -> None:
    """Apply one SSE event to the record (the rules of ``vllm bench serve``)."""
    if event == "[DONE]":
        return
    try:
        data = json.loads(event)
    except json.JSONDecodeError:
        record.fail(f"unparseable stream event: {event[:200]!r}")
        return
    if "error" in data and not data.get("choices"):
        err = data["error"]
        message = err.get("message", err) if isinstance(err, dict) else err
        record.fail(f"server error in stream: {message}")
        return
    choices = data.get("choices")
    if choices:
        if record.first is None:
            record.first = now
        record.last = now
        record.chunk_times.append(now)
        choice = choices[0]
        piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
        record.text += piece or ""
    usage = data.get("usage")
    if usage:
        record.output_tokens = usage.get("completion_tokens")
        record.prompt_tokens = usage.get("prompt_tokens")


def _check_complete(record: RequestRecord) -> RequestRecord:
    if record.first is None:
        return record.fail("the stream ended without a token")
    if record.output_tokens is None:
        return record.fail("the stream carried no usage field (token count unknown)")
    want = record.request.output_len
    if record.output_tokens != want:
        return record.fail(f"short reply: {record.output_tokens} of {want} tokens")
    return record
