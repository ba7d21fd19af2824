"""The server's Prometheus ``/metrics``: what explains a serving result.

Scraped before and after every trial (and sampled during it for the gauges) and
parsed with ``prometheus_client``'s parser. Counter deltas say what the run cost the
server (preemptions, prefix-cache queries and hits, tokens); gauge peaks say how
full it got (KV-cache usage, running and waiting requests = queue depth). Names
differ across vLLM versions (``gpu_cache_usage_perc`` became ``kv_cache_usage_perc``,
``gpu_prefix_cache_*`` became ``prefix_cache_*``), so each figure lists its aliases.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

# reported name -> Prometheus sample names, newest first
COUNTERS: dict[str, tuple[str, ...]] = {
    "preemptions": ("vllm:num_preemptions_total",),
    "prefix_cache_queries": ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
    "prefix_cache_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    "prompt_tokens": ("vllm:prompt_tokens_total",),
    "generation_tokens": ("vllm:generation_tokens_total",),
    "requests_finished": ("vllm:request_success_total",),
}
GAUGES: dict[str, tuple[str, ...]] = {
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
}


def parse(text: str) -> dict[str, float]:
    """Sum every sample by name over its label sets (engines, finish reasons)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    return totals


def pick(samples: Mapping[str, float], names: tuple[str, ...]) -> float | None:
    for name in names:
        if name in samples:
            return samples[name]
    return None


def deltas(before: Mapping[str, float], after: Mapping[str, float],
           peaks: Mapping[str, float] | None = None) -> dict[str, float]:
    """Counter deltas over a run, the prefix-cache hit rate, and gauge peaks."""
    out: dict[str, float] = {}
    for name, aliases in COUNTERS.items():
        a, b = pick(before, aliases), pick(after, aliases)
        if a is not None and b is not None:
            out[name] = b - a
    if out.get("prefix_cache_queries"):
        out["prefix_cache_hit_rate"] = out.get("prefix_cache_hits", 0.0) / out["prefix_cache_queries"]
    for name, value in (peaks or {}).items():
        out[f"max_{name}"] = value
    return out


def gauges(samples: Mapping[str, float]) -> dict[str, float]:
    out = {}
    for name, aliases in GAUGES.items():
        value = pick(samples, aliases)
        if value is not None:
            out[name] = value
    return out


async def scrape(base_url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """Parsed ``/metrics`` of a server; empty when it has none or does not answer."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                         trust_env=False) as session, \
                session.get(base_url.rstrip("/") + "/metrics") as response:
            if response.status != 200:
                return {}
            text = await response.text()
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
        return {}
    try:
        return parse(text)
    except ValueError:
        return {}


class GaugeSampler:
    """Samples the gauges every ``interval_s`` during a run and keeps their peaks."""

    def __init__(self, base_url: str, interval_s: float = 0.5) -> None:
        self.base_url = base_url
        self.interval_s = interval_s
        self.peaks: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            for name, value in gauges(await scrape(self.base_url)).items():
                self.peaks[name] = max(value, self.peaks.get(name, value))
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        return dict(self.peaks)
