"""What do users of `vllm serve` feel under load: latency percentiles against SLOs, goodput
at a fixed concurrency and at a Poisson request rate, what the prefix cache buys a
workload with shared prefixes, and multi-turn chats that resend their history?

Every test talks to a real OpenAI-compatible vLLM server that the plugin starts (one per
engine config, shared by the tests that use it), streaming ``/v1/completions`` or
``/v1/chat/completions`` with the plugin's asyncio client. The SLOs are what a chat
product would promise on the marker's GPU (Llama-3.1-8B on one H100 serves 24 concurrent
256/256 streams at about 7.5 ms per token); on vLLM's CPU build the tiny card runs the
same path with SLOs loose enough for two shared cores, so there the tests check the
mechanism (every request answered, percentiles ordered, the prefix cache hit) rather than
the promise. The gate watches throughput, TTFT/TPOT percentiles and goodput per test.
"""

from tiny import TINY_ENGINE

from pytest_llmperf import perf

# Prefix caching is vLLM's default; set explicitly so the on/off sweep reuses this server.
SERVER = dict(model="llama-3.1-8b", backend="server", max_model_len=2048, max_num_seqs=64,
              enable_prefix_caching=True, trials=2, warmup=1)
CPU_SERVER = {**TINY_ENGINE, "enable_prefix_caching": True, "trials": 2, "warmup": 1}

# Per-request bounds in milliseconds: goodput counts the requests that meet all of them.
SLO = {"gpu": {"ttft_ms": 1000.0, "tpot_ms": 25.0}, "cpu": {"ttft_ms": 10_000.0, "tpot_ms": 1000.0}}


def _percentiles(llmperf, result) -> None:
    for name in ("ttft", "tpot", "itl", "e2e"):
        d = getattr(result, name)
        llmperf.note(f"{name.upper()} p50/p95/p99: {d.p50:,.1f} / {d.p95:,.1f} / {d.p99:,.1f} ms")


def _run_within_slo(llmperf):
    """Measure the marker's load, note its percentiles, and check it against the SLO."""
    result = llmperf.run()
    _percentiles(llmperf, result)
    _check_slo(llmperf, result)
    return result


def _check_slo(llmperf, result) -> None:
    """Every request answered; p50 <= p95 <= p99; p99 within the SLO; goodput near all."""
    slo = SLO[llmperf.device]
    for trial in result.trials:
        assert trial.failed_requests == 0, trial.errors
        assert trial.good_requests is not None, "the marker's SLO did not reach the client"
    for name in ("ttft", "tpot"):
        d = getattr(result, name)
        assert d.p50 <= d.p95 <= d.p99, f"{name} percentiles out of order: {d}"
        assert d.p99 <= slo[f"{name}_ms"], f"{name.upper()} p99 {d.p99:,.1f} ms breaks the SLO {slo}"
    good = sum(t.good_requests or 0 for t in result.trials)
    total = sum(t.num_requests for t in result.trials)
    llmperf.note(f"goodput: {good}/{total} requests met {slo}")
    assert good >= 0.95 * total, f"only {good} of {total} requests met the SLO {slo}"


@perf(**SERVER, load="concurrency", concurrency=24, num_requests=96, input_len=256,
      output_len=256, slo=SLO["gpu"],
      cpu={**CPU_SERVER, "load": "concurrency", "concurrency": 4, "num_requests": 16,
           "input_len": 64, "output_len": 16, "slo": SLO["cpu"]})
def test_latency_slos_at_fixed_concurrency(llmperf):
    _run_within_slo(llmperf)


@perf(**SERVER, load="rate", rate=8.0, num_requests=120, input_len=256, output_len=256,
      slo=SLO["gpu"],
      cpu={**CPU_SERVER, "load": "rate", "rate": 2.0, "num_requests": 12, "input_len": 64,
           "output_len": 16, "slo": SLO["cpu"]})
def test_goodput_at_a_poisson_rate(llmperf):
    result = _run_within_slo(llmperf)
    # The server keeps up with the offered rate: the run lasts about as long as the
    # arrivals (num_requests / rate), plus the last request's own latency.
    arrivals_s = llmperf.workload.num_requests / llmperf.workload.rate
    for trial in result.trials:
        assert trial.elapsed_s <= 2.0 * arrivals_s + result.e2e.max / 1000.0, (
            f"{trial.elapsed_s:.1f} s for {arrivals_s:.1f} s of arrivals: the server falls behind")


@perf(**SERVER, load="synchronous", dataset="shared_prefix", num_prefixes=2, prefix_len=1792,
      input_len=1920, output_len=16, num_requests=16,
      # CPU: prompts long enough that prefill, not the HTTP round trip, is most of TTFT
      # (448-token prompts gave 25 ms TTFT with caching off on a fast runner, too little
      # to halve), and 16 tokens out so that a stream is not over in one burst.
      cpu={**CPU_SERVER, "load": "synchronous", "dataset": "shared_prefix", "num_prefixes": 1,
           "max_model_len": 2048, "prefix_len": 1792, "input_len": 1920, "output_len": 16,
           "num_requests": 6})
def test_prefix_caching_pays_on_shared_prefixes(llmperf):
    sweep = llmperf.sweep(engine={"enable_prefix_caching": [True, False]})
    for line in sweep.table():
        llmperf.note(line)
    on, off = (next(p.result for p in sweep.points if p.engine_params["enable_prefix_caching"] is v)
               for v in (True, False))
    hits_on = [t.server_metrics.get("prefix_cache_hit_rate", 0.0) for t in on.trials]
    hits_off = [t.server_metrics.get("prefix_cache_hit_rate", 0.0) for t in off.trials]
    llmperf.note(f"prefix-cache hit rate: {min(hits_on):.0%} on, {max(hits_off):.0%} off; TTFT p50 "
                 f"{on.ttft.p50:,.1f} ms on vs {off.ttft.p50:,.1f} ms off")
    # All but each group's first prompt find its prefix cached, in whole KV blocks.
    assert min(hits_on) >= 0.5, f"shared prefixes missed the cache: {hits_on}"
    assert max(hits_off) == 0.0, f"prefix caching was off, yet hits were counted: {hits_off}"
    # Skipping most of the prefill must show in the first token.
    assert on.ttft.p50 < 0.8 * off.ttft.p50, (
        f"prefix caching did not cut TTFT: {on.ttft.p50:,.1f} ms on vs {off.ttft.p50:,.1f} ms off")
    llmperf.gate_on(on)


@perf(**SERVER, load="concurrency", concurrency=8, dataset="multiturn", api="chat", turns=4,
      num_requests=32, input_len=256, output_len=128, think_time_s=0.5, slo=SLO["gpu"],
      cpu={**CPU_SERVER, "load": "concurrency", "concurrency": 2, "dataset": "multiturn",
           "api": "chat", "turns": 3, "num_requests": 6, "input_len": 64, "output_len": 8,
           "think_time_s": 0.2, "slo": SLO["cpu"]})
def test_multiturn_chats_reuse_their_history(llmperf):
    result = _run_within_slo(llmperf)
    workload = llmperf.workload
    for trial in result.trials:
        # Turn k resends the whole conversation: far more prompt than one message per turn.
        assert trial.input_tokens > trial.num_requests * workload.input_len, trial.input_tokens
        # ... and its earlier turns are in the prefix cache.
        assert trial.server_metrics.get("prefix_cache_hits", 0.0) > 0, trial.server_metrics
    llmperf.note(f"prompt tokens per request: {result.trials[-1].input_tokens / result.trials[-1].num_requests:,.0f} "
                 f"(one message: {workload.input_len})")
