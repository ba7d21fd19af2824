"""Pure logic of the served path, no server: SSE parsing, request timings, metric math,
load schedules, marker rules, the synthetic tokenizer, Prometheus parsing."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_llmperf.client.openai import _check_complete, _take
from pytest_llmperf.client.records import RequestRecord, ServeRequest
from pytest_llmperf.client.sse import SSEParser
from pytest_llmperf.config import ConfigError, parse_perf_kwargs
from pytest_llmperf.loads import Concurrency, SingleRequest, StopRule, Synchronous
from pytest_llmperf.loads.base import open_loop
from pytest_llmperf.loads.rate import arrival_times, exponential_ks_pvalue
from pytest_llmperf.prometheus import deltas, parse
from pytest_llmperf.serving_metrics import meets_slo, summarise_records

# -- SSE -------------------------------------------------------------------------------


def _events(n: int) -> bytes:
    out = b""
    for i in range(n):
        out += b"data: " + json.dumps({"choices": [{"text": f" t{i}"}]}).encode() + b"\n\n"
    out += b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": %d}}\n\n' % n
    return out + b"data: [DONE]\n\n"


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=50))
def test_sse_events_survive_any_split(cuts: list[int]) -> None:
    data = _events(5) + b": ping\n\n"
    parser = SSEParser()
    got: list[str] = []
    pos = 0
    for cut in cuts:
        got += parser.feed(data[pos:pos + cut])
        pos += cut
    got += parser.feed(data[pos:])
    got += parser.close()
    assert len(got) == 7  # 5 tokens, usage, [DONE]; the comment is skipped
    assert got[-1] == "[DONE]"
    assert json.loads(got[5])["usage"]["completion_tokens"] == 5


def test_sse_handles_crlf_and_multibyte_split() -> None:
    text = 'data: {"choices": [{"text": "é"}]}\r\n\r\n'.encode()
    parser = SSEParser()
    cut = text.index(b"\xc3") + 1  # split inside the two-byte character
    assert parser.feed(text[:cut]) == []
    (event,) = parser.feed(text[cut:])
    assert json.loads(event)["choices"][0]["text"] == "é"


# -- request timings -------------------------------------------------------------------


def _record(times: list[float], tokens: int, start: float = 0.0, want: int | None = None) -> RequestRecord:
    rec = RequestRecord(ServeRequest(output_len=want or tokens, input_len=3, prompt=[1, 2, 3]))
    rec.start = start
    for i, t in enumerate(times):
        _take(rec, json.dumps({"choices": [{"text": f" t{i}"}]}), t, chat=False)
    _take(rec, json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": tokens}}),
          times[-1] + 0.5, chat=False)
    _take(rec, "[DONE]", times[-1] + 0.6, chat=False)
    return _check_complete(rec)


def test_timings_follow_vllm_bench_serve() -> None:
    rec = _record([0.1, 0.15, 0.25, 0.30], tokens=4)
    assert rec.ok and rec.text == " t0 t1 t2 t3"
    assert rec.ttft_s == pytest.approx(0.1)
    assert rec.e2el_s == pytest.approx(0.30)  # the last token chunk, not [DONE] or usage
    assert rec.itls_s == pytest.approx([0.05, 0.10, 0.05])
    assert rec.tpot_s == pytest.approx((0.30 - 0.1) / 3)
    assert sum(rec.itls_s) == pytest.approx(rec.e2el_s - rec.ttft_s)
    assert not rec.bursty


def test_short_reply_and_missing_usage_are_failures() -> None:
    assert _record([0.1, 0.2], tokens=2, want=4).error == "short reply: 2 of 4 tokens"
    rec = RequestRecord(ServeRequest(output_len=2, input_len=1, prompt=[5]))
    _take(rec, json.dumps({"choices": [{"text": " t1"}]}), 0.1, chat=False)
    assert "no usage" in (_check_complete(rec).error or "")
    rec = RequestRecord(ServeRequest(output_len=2, input_len=1, prompt=[5]))
    _take(rec, json.dumps({"error": {"message": "boom"}}), 0.1, chat=False)
    assert rec.error == "server error in stream: boom"


def test_a_stream_delivered_at_once_is_bursty() -> None:
    rec = _record([0.5, 0.5 + 1e-6, 0.5 + 2e-6, 0.5 + 3e-6], tokens=4)
    assert rec.bursty
    assert rec.ttft_s == pytest.approx(rec.e2el_s, abs=1e-5)


def test_summary_metrics_match_numpy_definitions() -> None:
    recs = [_record([0.1 * k, 0.1 * k + 0.02, 0.1 * k + 0.05], tokens=3, start=0.0) for k in range(1, 6)]
    failed = RequestRecord(ServeRequest(output_len=3, input_len=3, prompt=[1])).fail("HTTP 500: x")
    trial = summarise_records([*recs, failed], elapsed_s=2.0, slo={"ttft_ms": 250})
    ttfts = [r.ttft_s * 1e3 for r in recs]
    assert trial.ttft_ms.p50 == pytest.approx(np.percentile(ttfts, 50))
    assert trial.ttft_ms.p99 == pytest.approx(np.percentile(ttfts, 99))
    assert trial.tpot_ms.p50 == pytest.approx(25.0)
    assert trial.itl_ms.count == 10
    assert trial.num_requests == 5 and trial.failed_requests == 1
    assert trial.output_tokens == 15 and trial.input_tokens == 15
    assert trial.output_tok_s == pytest.approx(7.5)
    assert trial.good_requests == 2  # TTFT 100 and 200 ms meet 250 ms
    assert trial.goodput_req_s == pytest.approx(1.0)
    assert trial.errors == ("HTTP 500: x",)
    assert meets_slo(recs[0], {"tpot_ms": 25.01}) and not meets_slo(recs[0], {"tpot_ms": 24.0})


# -- loads -----------------------------------------------------------------------------


class _FakeServer:
    """Answers after ``delay`` seconds and records how many requests were in flight."""

    def __init__(self, delay: float = 0.01, fail_every: int = 0) -> None:
        self.delay = delay
        self.in_flight = 0
        self.peak = 0
        self.sent: list[float] = []
        self.fail_every = fail_every

    async def send(self, request: ServeRequest) -> RequestRecord:
        loop = asyncio.get_running_loop()
        self.sent.append(loop.time())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        rec = RequestRecord(request, start=loop.time())
        await asyncio.sleep(self.delay)
        rec.first = rec.last = loop.time()
        rec.output_tokens = request.output_len
        self.in_flight -= 1
        if self.fail_every and len(self.sent) % self.fail_every == 0:
            rec.fail("HTTP 500: boom", 500)
        return rec


def _jobs(n: int) -> list[SingleRequest]:
    return [SingleRequest(ServeRequest(output_len=1, input_len=1, prompt=[i])) for i in range(n)]


def test_concurrency_holds_exactly_n_in_flight() -> None:
    server = _FakeServer()
    records = asyncio.run(Concurrency(4).drive(_jobs(20), server.send, StopRule()))
    assert len(records) == 20 and server.peak == 4
    server = _FakeServer()
    asyncio.run(Synchronous().drive(_jobs(5), server.send, StopRule()))
    assert server.peak == 1


def test_error_rate_stop_rule_ends_the_run_early() -> None:
    server = _FakeServer(fail_every=1)
    stop = StopRule(max_error_rate=0.5, min_requests=4)
    records = asyncio.run(Concurrency(2).drive(_jobs(50), server.send, stop))
    assert len(records) < 10
    assert stop.verdict and "failed" in stop.verdict


def test_backlog_stop_rule_ends_an_oversaturated_open_loop() -> None:
    server = _FakeServer(delay=0.5)
    stop = StopRule(max_backlog=5)
    arrivals = [i * 0.001 for i in range(100)]
    records = asyncio.run(open_loop(_jobs(100), arrivals, server.send, stop))
    assert stop.verdict and "over-saturated" in stop.verdict
    assert len(records) < 100


def test_open_loop_sends_on_schedule() -> None:
    server = _FakeServer(delay=0.2)
    arrivals = [0.0, 0.05, 0.1, 0.15]
    asyncio.run(open_loop(_jobs(4), arrivals, server.send, StopRule()))
    offsets = np.array(server.sent) - server.sent[0]
    assert np.allclose(offsets, arrivals, atol=0.03)
    assert server.peak == 4  # arrivals do not wait for replies


def test_poisson_arrivals_pass_and_gamma_fails_the_fit() -> None:
    gaps = np.diff(arrival_times(400, rate=5.0, burstiness=1.0, seed=3))
    assert abs(gaps.mean() - 0.2) < 0.03
    assert exponential_ks_pvalue(gaps.tolist(), 5.0) > 0.01
    bursty = np.diff(arrival_times(400, rate=5.0, burstiness=0.25, seed=3))
    assert exponential_ks_pvalue(bursty.tolist(), 5.0) < 1e-6
    assert abs(bursty.mean() - 0.2) < 0.08  # same mean rate, burstier


def test_ks_pvalue_is_calibrated_under_the_null() -> None:
    ps = [exponential_ks_pvalue(np.diff(arrival_times(100, 2.0, seed=s)).tolist(), 2.0)
          for s in range(200)]
    assert 0.01 <= float(np.mean(np.array(ps) < 0.05)) <= 0.10


# -- marker rules ----------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rate": 4.0}, "rate=4.0 needs backend='server'"),
    ({"concurrency": 4}, "needs backend='server'"),
    ({"backend": "serve"}, "backend='serve': must be one of"),
    ({"backend": "server", "rate": 2.0}, "does not apply to load='concurrency'"),
    ({"backend": "server", "load": "rate"}, "load='rate' needs rate="),
    ({"backend": "server", "load": "synchronous", "concurrency": 2}, "does not apply to load='synchronous'"),
    ({"backend": "server", "slo": {"ttft": 100}}, "did you mean 'ttft_ms'"),
    ({"backend": "server", "slo": {"ttft_ms": -1}}, "positive number of milliseconds"),
    ({"backend": "server", "length_spread": 0.2}, "needs length_dist="),
    ({"backend": "server", "max_error_rate": 1.5}, "max_error_rate=1.5"),
    ({"backend": "server", "concurrency": 0}, "must be at least 1"),
    ({"cpu": {"rate": 1.0}}, "cpu: rate=1.0 needs backend='server'"),
])
def test_invalid_serving_combinations_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_perf_kwargs({"model": "tiny-llama-2l", **kwargs})


def test_valid_serving_marker() -> None:
    spec = parse_perf_kwargs({"model": "tiny-llama-2l", "backend": "server", "load": "rate",
                              "rate": 2.5, "burstiness": 0.5, "slo": {"ttft_ms": 200}})
    assert spec.workload.label() == "server r2.5/s b0.5 128/128"
    spec = parse_perf_kwargs({"model": "tiny-llama-2l", "backend": "server", "batch": 4})
    assert spec.workload.label() == "server c4 128/128"


# -- tokenizer -------------------------------------------------------------------------


def test_synthetic_tokenizer_round_trips_ids(tmp_path, monkeypatch) -> None:
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from pytest_llmperf.cards import resolve_model
    from pytest_llmperf.tokenizer import ids_of, served_model_dir, text_of

    monkeypatch.setenv("LLMPERF_CACHE_DIR", str(tmp_path))
    directory = served_model_dir(resolve_model("tiny-llama-2l"))
    assert served_model_dir(resolve_model("tiny-llama-2l")) == directory  # cached
    tok = AutoTokenizer.from_pretrained(directory)
    assert len(tok) == 4096
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 4096, size=500).tolist()
    assert tok.encode(text_of(ids), add_special_tokens=False) == ids
    assert tok.decode(ids) == text_of(ids)
    assert ids_of(tok.decode(ids)) == ids
    assert tok.eos_token_id == 2 and tok.bos_token_id == 1
    assert tok.decode([1, 5, 2], skip_special_tokens=True) == "t5"


# -- Prometheus ------------------------------------------------------------------------

_BEFORE = """# TYPE vllm:num_preemptions counter
vllm:num_preemptions_total{engine="0",model_name="m"} 1.0
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 100.0
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 10.0
# TYPE vllm:request_success counter
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 4.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 1.0
"""
_AFTER = (_BEFORE.replace(" 1.0\n# TYPE vllm:prefix_cache_q", " 3.0\n# TYPE vllm:prefix_cache_q")
          .replace("100.0", "300.0").replace("10.0", "110.0").replace(" 4.0", " 14.0"))


def test_prometheus_deltas_and_hit_rate() -> None:
    d = deltas(parse(_BEFORE), parse(_AFTER), {"waiting": 7.0})
    assert d["preemptions"] == 2.0
    assert d["prefix_cache_hit_rate"] == pytest.approx(0.5)
    assert d["requests_finished"] == 10.0  # summed over finish reasons
    assert d["max_waiting"] == 7.0
    assert math.isfinite(d["prefix_cache_queries"])


# -- plugin wiring (no server) ---------------------------------------------------------

pytest_plugins = ["pytester"]


def test_rate_for_the_offline_backend_is_a_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bad="""
        import pytest

        @pytest.mark.perf(model="tiny-llama-2l", rate=4.0)
        def test_offline_rate(llmperf):
            llmperf.run()
    """)
    res = pytester.runpytest_inprocess("-p", "pytest_llmperf", "-p", "no:cacheprovider")
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines(["*test_offline_rate: invalid perf marker: rate=4.0 needs backend='server'*"])


def test_run_cannot_switch_backend(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    import fake_engine

    fake_engine.install(monkeypatch)
    pytester.makepyfile(test_switch="""
        import pytest

        @pytest.mark.perf(model="tiny-llama-2l")
        def test_switch(llmperf):
            with pytest.raises(TypeError, match="'backend' is not a workload key"):
                llmperf.run(backend="server")
    """)
    res = pytester.runpytest_inprocess("-p", "pytest_llmperf", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=1)


# -- sweep, replay and the datasets ----------------------------------------------------


def test_sweep_points_knee_and_stop() -> None:
    from factories import make_result

    from pytest_llmperf.backends.server import RequestsFailed
    from pytest_llmperf.config import Workload
    from pytest_llmperf.loads.sweep import run_sweep, sweep_points

    wl = Workload(backend="server", load="sweep", sweep={"concurrency": [1, 2, 4, 8]},
                  slo={"ttft_ms": 100})
    assert [(label, p.load, p.concurrency) for label, p in sweep_points(wl)] == [
        ("c=1", "concurrency", 1), ("c=2", "concurrency", 2), ("c=4", "concurrency", 4),
        ("c=8", "concurrency", 8)]
    good = {1: 1.0, 2: 0.95, 4: 0.5}

    def run_point(p: Workload):
        if p.concurrency == 8:
            raise RequestsFailed("run", "3 of 8 requests failed")
        r = make_result(trials=2, workload=p)
        trials = tuple(replace(t, good_requests=round(good[p.concurrency] * t.num_requests))
                       for t in r.trials)
        return replace(r, trials=trials)

    from dataclasses import replace

    sweep = run_sweep(wl, run_point, RequestsFailed)
    assert [label for label, _ in sweep.points] == ["c=1", "c=2", "c=4"]
    assert sweep.knee == "c=2"
    assert sweep.stopped and "c=8" in sweep.stopped and "3 of 8" in sweep.stopped
    assert any("knee" in n for n in sweep.points[-1][1].notes)
    assert sweep.point("c=4").workload.concurrency == 4


def test_replay_trace_errors_name_the_line(tmp_path) -> None:
    from pytest_llmperf.datasets.replay import read_trace

    good = tmp_path / "t.jsonl"
    good.write_text('{"arrival_s": 5.0, "input_len": 8, "output_len": 2}\n'
                    '{"timestamp": 4.5, "input_len": 4, "output_len": 1}\n')
    assert read_trace(str(good)) == ((0.0, 4, 1), (0.5, 8, 2))
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"arrival_s": 0, "input_len": 8, "output_len": 2}\n{"arrival_s": 1, "input_len": 0}\n')
    with pytest.raises(ConfigError, match=r"b.jsonl:2: input_len must be a positive integer"):
        parse_perf_kwargs({"model": "tiny-llama-2l", "backend": "server", "load": "replay",
                           "trace": str(bad)})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"load": "sweep"}, "needs sweep="),
    ({"load": "sweep", "sweep": {"concurrency": [4, 2]}}, "increasing order"),
    ({"load": "sweep", "sweep": {"concurrency": [1.5]}}, "positive integers"),
    ({"sweep": {"rate": [1.0]}}, "does not apply to load='concurrency'"),
    ({"load": "replay"}, "needs trace="),
    ({"load": "replay", "trace": "/nonexistent.jsonl"}, "No such file"),
    ({"prefix_len": 8}, "needs dataset='shared_prefix'"),
    ({"dataset": "shared_prefix"}, "needs prefix_len="),
    ({"dataset": "shared_prefix", "prefix_len": 200}, "must be below input_len"),
    ({"dataset": "sharegpt"}, "needs dataset_path="),
    ({"dataset": "sharegpt", "dataset_path": "/nope.json"}, "no such file"),
    ({"dataset": "multiturn", "api": "completions"}, "chat"),
    ({"turns": 3}, "needs dataset='multiturn'"),
    ({"prompt_format": "tokens"}, "prompt_format='tokens': must be one of 'ids', 'text'"),
    ({"prompt_format": "text", "api": "chat"}, "applies to dataset='random' with api='completions'"),
    ({"prompt_format": "text", "dataset": "shared_prefix", "prefix_len": 8},
     "applies to dataset='random'"),
])
def test_invalid_sweep_replay_dataset_keys(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_perf_kwargs({"model": "tiny-llama-2l", "backend": "server", **kwargs})


def test_shared_prefix_prompts_share_their_groups_prefix() -> None:
    from pytest_llmperf.config import Workload
    from pytest_llmperf.datasets import make_jobs

    wl = Workload(backend="server", dataset="shared_prefix", prefix_len=16, num_prefixes=2,
                  input_len=24)
    prompts = [j.request.prompt for j in make_jobs(wl, 6, 4096, "k")]  # type: ignore[attr-defined]
    assert all(len(p) == 24 for p in prompts)
    assert prompts[0][:16] == prompts[2][:16] == prompts[4][:16] != prompts[1][:16]
    assert prompts[0][16:] != prompts[2][16:]


def test_text_prompts_are_the_words_of_the_same_ids() -> None:
    """prompt_format='text' sends what vllm bench serve's random dataset sends (text the
    server tokenizes), the same token ids as the default id prompts."""
    from pytest_llmperf.config import Workload
    from pytest_llmperf.datasets import make_jobs
    from pytest_llmperf.tokenizer import ids_of

    ids = [j.request.prompt for j in make_jobs(Workload(backend="server", input_len=24), 4, 4096, "k")]  # type: ignore[attr-defined]
    wl = Workload(backend="server", input_len=24, prompt_format="text")
    texts = [j.request.prompt for j in make_jobs(wl, 4, 4096, "k")]  # type: ignore[attr-defined]
    assert all(isinstance(t, str) for t in texts)
    assert [ids_of(t) for t in texts] == ids
    with pytest.raises(ConfigError, match="needs backend='server'"):
        parse_perf_kwargs({"model": "tiny-llama-2l", "prompt_format": "text"})


def test_sharegpt_file(tmp_path) -> None:
    from pytest_llmperf.config import Workload
    from pytest_llmperf.datasets import make_jobs

    convs = [{"conversations": [{"from": "human", "value": " ".join(["w"] * (5 + i))},
                                {"from": "gpt", "value": " ".join(["r"] * (10 + i))}]}
             for i in range(4)] + [{"conversations": [{"from": "human", "value": "hi"}]}]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(convs))
    wl = Workload(backend="server", dataset="sharegpt", dataset_path=str(path), output_len=12)
    reqs = [j.request for j in make_jobs(wl, 3, 4096, "k", max_len=20)]  # type: ignore[attr-defined]
    assert [(r.input_len, r.output_len) for r in reqs] == [(5, 10), (6, 11), (7, 12)]
    assert reqs[0].prompt == " ".join(["w"] * 5)


def test_multiturn_conversation_carries_the_history() -> None:
    from pytest_llmperf.config import Workload
    from pytest_llmperf.datasets import make_jobs

    wl = Workload(backend="server", dataset="multiturn", turns=3, input_len=4, output_len=2,
                  think_time_s=0.01)
    (chat,) = make_jobs(wl, 3, 4096, "k")
    sent: list[ServeRequest] = []

    async def send(req: ServeRequest) -> RequestRecord:
        sent.append(req)
        rec = RequestRecord(req, start=0.0, first=0.1, last=0.2, output_tokens=2)
        rec.text = f" t{len(sent)} t9"
        return rec

    records = asyncio.run(chat(send))
    assert len(records) == 3
    assert [len(r.messages or []) for r in sent] == [1, 3, 5]
    assert sent[2].messages[1] == {"role": "assistant", "content": "t1 t9"}  # type: ignore[index]
    assert [r.input_len for r in sent] == [4, 10, 16]  # history words + the new message


def test_server_keeps_vllms_default_batch_size() -> None:
    spec = parse_perf_kwargs({"model": "tiny-llama-2l", "backend": "server", "concurrency": 8})
    assert spec.engine.max_num_seqs is None  # not the offline default of `batch`
    engine, _ = spec.on_cpu(0.25)
    assert engine.max_num_seqs is None
    assert parse_perf_kwargs({"model": "tiny-llama-2l", "batch": 4}).engine.max_num_seqs == 4


def test_a_malformed_endpoint_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    res = pytester.runpytest_inprocess("-p", "pytest_llmperf", "-p", "no:cacheprovider",
                                       "--llmperf-endpoint=localhost:8000")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*--llmperf-endpoint=localhost:8000: expected a server URL*"])


def test_error_rate_allowance() -> None:
    from pytest_llmperf.backends.server import RequestsFailed
    from pytest_llmperf.config import Workload
    from pytest_llmperf.serving_run import _check_failures

    class Alive:
        log_path = "/tmp/server.log"

        def check_alive(self, phase: str, grace_s: float = 0.0) -> None:
            return None

    recs = [_record([0.1, 0.2], tokens=2) for _ in range(9)]
    recs.append(RequestRecord(ServeRequest(output_len=2, input_len=3, prompt=[1])).fail("timed out after 5 s"))
    trial = summarise_records(recs, elapsed_s=1.0)
    _check_failures(Alive(), Workload(backend="server", max_error_rate=0.1), recs, trial, RequestsFailed)
    with pytest.raises(RequestsFailed, match=r"1 of 10 requests failed \(max_error_rate=0.05\); "
                                             r"first errors:\n  timed out after 5 s"):
        _check_failures(Alive(), Workload(backend="server", max_error_rate=0.05), recs, trial,
                        RequestsFailed)
