"""The sweep helper, cost and roofline arithmetic, the memory budget and the leak check:
pure logic over synthetic results (real engines run them in suites/)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from factories import make_result

from pytest_llmperf.budget import BudgetError, parse_size, under_budget
from pytest_llmperf.cards import predicted_weight_bytes, resolve_model
from pytest_llmperf.config import EngineConfig, Workload
from pytest_llmperf.derived import Speculation, cost_figures, decode_bound, roofline
from pytest_llmperf.footprint import Footprint, leaks
from pytest_llmperf.sweep import SweepError, SweepRunner, grid, knee

GIB = 2**30


def fake_run(engine: EngineConfig, workload: Workload):
    """Throughput grows with the batch up to 32 and then flattens; latency grows with it;
    max_num_seqs above 24 preempts."""
    tok_s = 100.0 * min(workload.batch, 32) * (1 + 0.001 * workload.batch)
    result = make_result(output_tok_s=tok_s, tpot_ms=5.0 + workload.batch / 8,
                         workload=workload, engine=engine)
    return replace(result, counters={"vllm:num_preemptions": 3.0 if (engine.max_num_seqs or 0) > 24 else 0.0})


def runner() -> SweepRunner:
    return SweepRunner(fake_run, EngineConfig(model="tiny-llama-2l", max_num_seqs=8),
                       Workload(batch=1, trials=2))


def test_grid_is_the_cartesian_product_in_order() -> None:
    assert grid({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert grid({}) == [{}]
    with pytest.raises(SweepError, match="'a'"):
        grid({"a": []})


def test_batch_sweep_finds_the_knee_and_the_pareto_front() -> None:
    sweep = runner().sweep(loads=[{"batch": b} for b in (1, 2, 4, 8, 16, 32, 64, 128)])
    curve = sweep.curve("batch")
    assert [x for x, _ in curve] == [1, 2, 4, 8, 16, 32, 64, 128]
    assert knee(curve) == 32  # 32 -> 64 gains 3.6%
    front = sweep.pareto()
    # Higher batches raise both throughput and latency: all are on the front but the
    # flat tail, where more latency buys almost nothing... and still a little.
    assert front[0].load == {"batch": 1}
    assert all(a.value("e2e_p50_ms") <= b.value("e2e_p50_ms") for a, b in zip(front, front[1:], strict=False))
    assert len(sweep.table()) == 2 + 8


def test_pareto_drops_dominated_points() -> None:
    slow = runner().sweep(loads=[{"batch": 4}])
    better = replace(slow.points[0], result=make_result(output_tok_s=9e9, tpot_ms=0.1))
    from pytest_llmperf.sweep import Sweep

    both = Sweep((slow.points[0], better))
    assert both.pareto() == [better]


def test_best_under_an_slo_and_largest_without_preemption() -> None:
    sweep = runner().sweep(engine_params={"max_num_seqs": [8, 16, 32]}, loads=[{"batch": 16}])
    assert sweep.largest_without_preemption("max_num_seqs").engine_params == {"max_num_seqs": 16}
    assert sweep.best({"tpot_p50_ms": 1e9}).value("output_tok_s") == max(
        p.value("output_tok_s") for p in sweep.points)
    assert sweep.best({"tpot_p50_ms": 0.001}) is None
    assert max(sweep.points, key=lambda p: p.engine_params["max_num_seqs"]).value("preemptions") == 3
    with pytest.raises(SweepError, match="unknown metric 'tpot'"):
        sweep.best({"tpot": 1.0})


def test_sweep_rejects_misplaced_keys() -> None:
    with pytest.raises(SweepError, match="'batch' is not an engine parameter"):
        runner().sweep(engine_params={"batch": [1]})
    with pytest.raises(SweepError, match="'max_num_seqs' is not a workload key"):
        runner().sweep(loads=[{"max_num_seqs": 4}])


def test_knee_edge_cases() -> None:
    assert knee([]) is None
    assert knee([(1, 10.0), (2, 20.0), (4, 40.0)]) == 4  # still rising: no knee inside
    assert knee([(1, 10.0), (2, 10.5)]) == 1


def test_cost_per_million_tokens_and_per_request() -> None:
    result = make_result(output_tok_s=1000.0)  # 8 requests of 128 tokens per trial
    figures = cost_figures(result, usd_per_gpu_hour=3.6, gpus=1)
    # $0.001 per second / 1000 tok/s = $1e-6 per token = $1 per million.
    assert figures["cost_per_mtok_usd"] == pytest.approx(1.0)
    assert figures["cost_per_request_usd"] == pytest.approx(0.001 / result.requests_s)
    assert cost_figures(result, 3.6, gpus=2)["cost_per_mtok_usd"] == pytest.approx(2.0)


def test_roofline_of_batch_one_decode_on_an_h100() -> None:
    # The measured H100 point: 16.06 GB of weights per token in 6.6 ms = 2.43 TB/s, 73%.
    w = Workload(batch=1, input_len=128, output_len=128)
    result = make_result(tpot_ms=6.6, workload=w, engine=EngineConfig(model="llama-3.1-8b", max_num_seqs=1))
    assert decode_bound(result)
    line = roofline(result, weights_bytes=16.06e9, kv_bytes_per_token=131072, peak_bytes_s_per_gpu=3.35e12)
    assert line is not None
    assert line.achieved_bytes_s == pytest.approx(16.06e9 / 6.6e-3, rel=0.02)
    assert line.share == pytest.approx(0.73, abs=0.02)


def test_roofline_of_speculative_decoding_counts_tokens_per_step_and_draft_passes() -> None:
    w = Workload(batch=1, input_len=128, output_len=129)
    result = make_result(tpot_ms=4.0, workload=w, engine=EngineConfig(model="llama-3.1-8b", max_num_seqs=1))
    kv_tokens = 128 + 64
    plain = roofline(result, 16e9, 131072, 3.35e12)
    # n-gram: two tokens per step, so each step took 8 ms and read what one plain step reads
    ngram = roofline(result, 16e9, 131072, 3.35e12, Speculation(tokens_per_step=2.0))
    assert plain is not None and ngram is not None
    assert ngram.bytes_per_step == plain.bytes_per_step
    assert ngram.achieved_bytes_s == pytest.approx(plain.achieved_bytes_s / 2)
    # a 2.5 GB draft proposing 4 tokens reads its weights and KV 4 times per step
    draft = roofline(result, 16e9, 131072, 3.35e12, Speculation(2.0, 4, 2.5e9, 32768))
    assert draft is not None
    extra = 4 * (2.5e9 + kv_tokens * 32768)
    assert draft.bytes_per_step == pytest.approx(plain.bytes_per_step + extra)
    assert draft.achieved_bytes_s == pytest.approx(draft.bytes_per_step / 8e-3)
    assert roofline(result, 16e9, 131072, 3.35e12, Speculation(0.0)) is None


def test_speculative_tokens_per_step_from_vllms_counters() -> None:
    result = make_result()
    assert result.spec_tokens_per_step is None
    counted = replace(result, counters={"vllm:spec_decode_num_drafts": 100.0,
                                        "vllm:spec_decode_num_draft_tokens": 400.0,
                                        "vllm:spec_decode_num_accepted_tokens": 150.0})
    assert counted.spec_tokens_per_step == pytest.approx(2.5)
    assert counted.spec_acceptance_rate == pytest.approx(0.375)


def test_prefill_heavy_run_is_not_decode_bound() -> None:
    w = Workload(batch=1, input_len=4096, output_len=2)
    assert not decode_bound(make_result(tpot_ms=0.01, workload=w))


def test_card_weights_match_what_vllm_loads() -> None:
    assert predicted_weight_bytes(resolve_model("llama-3.1-8b").config) / GIB == pytest.approx(15.0, rel=0.01)


@pytest.mark.parametrize(("text", "nbytes"), [("24GiB", 24 * GIB), ("24 GB", 24 * 10**9),
                                              ("24", 24 * GIB), ("16384MiB", 16 * GIB)])
def test_parse_size(text: str, nbytes: int) -> None:
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["24XB", "", "-1GiB", "0"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(BudgetError):
        parse_size(text)


def test_budget_turns_utilization_into_a_share_of_the_big_gpu() -> None:
    engine = EngineConfig(model="llama-3.1-8b", max_model_len=1024, gpu_memory_utilization=0.9)
    on_h100 = under_budget(engine, resolve_model("llama-3.1-8b"), 24 * GIB, 80 * GIB)
    assert on_h100.gpu_memory_utilization == pytest.approx(0.9 * 24 / 80)


def test_budget_refuses_a_config_that_cannot_fit() -> None:
    engine = EngineConfig(model="llama-3.1-8b", max_model_len=131072, gpu_memory_utilization=0.9)
    with pytest.raises(BudgetError, match=r"does not fit.*weights 14.96 GiB.*131072-token request's KV cache 16.00 GiB"):
        under_budget(engine, resolve_model("llama-3.1-8b"), 24 * GIB, 80 * GIB)
    with pytest.raises(BudgetError, match="larger than this GPU"):
        under_budget(engine, resolve_model("llama-3.1-8b"), 96 * GIB, 80 * GIB)


def test_leaks_name_what_did_not_come_back() -> None:
    idle = Footprint(device_gib=0.5, shm_mib=10, processes=(), rss_mib=500)
    assert leaks(idle, Footprint(0.9, 40, (), 600)) == []
    found = leaks(idle, Footprint(2.5, 200, ("11 vllm EngineCore", "12 python -c spawn"), 900))
    assert len(found) == 4
    assert "GPU memory 2.50 GiB in use, 0.50 GiB at idle" in found[0]


def test_sweep_order_saves_engine_starts() -> None:
    """The live engine's config first, the marker's own config last; reported sorted."""
    base = EngineConfig(model="tiny-llama-2l", max_num_seqs=32)
    seen: list[int | None] = []

    def run(engine: EngineConfig, workload: Workload):
        seen.append(engine.max_num_seqs)
        return fake_run(engine, workload)

    sweep = SweepRunner(run, base, Workload(batch=4), live=replace(base, max_num_seqs=48)).sweep(
        engine_params={"max_num_seqs": [16, 32, 48]})
    assert seen == [48, 16, 32]
    assert [x for x, _ in sweep.curve("max_num_seqs")] == [16, 32, 48]


@pytest.mark.parametrize("live", [None, 32, 2048])
def test_the_gated_point_is_the_markers_config_whatever_ran_first(live: int | None) -> None:
    """With the marker's own engine already live it runs first, not last (a suite run on
    an H100 then gated the 2048-token point against a baseline of the default one, and
    called the baseline stale); the gated point must not follow that order."""
    base = EngineConfig(model="tiny-llama-2l", max_num_seqs=32)
    live_config = None if live is None else replace(base, max_num_seqs=live)
    seen: list[int | None] = []

    def run(engine: EngineConfig, workload: Workload):
        seen.append(engine.max_num_seqs)
        return fake_run(engine, workload)

    sweep = SweepRunner(run, base, Workload(batch=4), live=live_config).sweep(
        engine_params={"max_num_seqs": [32, 512, 2048]}, loads=[{"batch": 2}, {"batch": 4}])
    assert seen[0] == {None: 512, 32: 32, 2048: 2048}[live] and len(seen) == 6
    assert sweep.gated is not None
    assert sweep.gated.engine_params == {"max_num_seqs": 32} and sweep.gated.load == {"batch": 4}


def test_a_sweep_without_the_markers_config_gates_its_last_combination_as_given() -> None:
    base = EngineConfig(model="tiny-llama-2l", max_num_seqs=32)
    sweep = SweepRunner(fake_run, base, Workload(batch=4), live=replace(base, max_num_seqs=64)).sweep(
        engine_params={"max_num_seqs": [64, 16]})
    assert [p.engine_params["max_num_seqs"] for p in sweep.points] == [64, 16]
    assert sweep.gated is not None and sweep.gated.engine_params == {"max_num_seqs": 16}
    # The live config ran first; as given it came first too, so the last is 16 either way.
    sweep = SweepRunner(fake_run, base, Workload(batch=4), live=replace(base, max_num_seqs=16)).sweep(
        engine_params={"max_num_seqs": [64, 16]})
    assert [p.engine_params["max_num_seqs"] for p in sweep.points] == [16, 64]
    assert sweep.gated is not None and sweep.gated.engine_params == {"max_num_seqs": 16}


def test_default_values_are_labelled_and_left_out_of_curves() -> None:
    sweep = runner().sweep(engine_params={"max_num_batched_tokens": [None, 64]})
    assert [p.label() for p in sweep.points] == ["max_num_batched_tokens=64", "max_num_batched_tokens=default"]
    assert [x for x, _ in sweep.curve("max_num_batched_tokens")] == [64]
    assert sweep.largest_without_preemption("max_num_batched_tokens").label() == "max_num_batched_tokens=64"


def test_multiprocessing_helpers_are_not_engine_processes(tmp_path: Path) -> None:
    """The first spawn of a session starts multiprocessing's resource tracker, which
    lives on; run alone on an H200 (2026-12-04), the leak check counted it as an engine
    left running. A real child still running is counted, and named."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import multiprocessing as mp, time\n"
        "from pytest_llmperf.footprint import leaks, take\n"
        "if __name__ == '__main__':\n"
        "    idle = take('cpu')\n"
        "    p = mp.get_context('spawn').Process(target=time.sleep, args=(0,))\n"
        "    p.start(); p.join()\n"
        "    after = take('cpu')\n"
        "    q = mp.get_context('spawn').Process(target=time.sleep, args=(30,))\n"
        "    q.start(); time.sleep(0.5)\n"
        "    busy = take('cpu')\n"
        "    q.kill(); q.join()\n"
        "    print(repr(leaks(idle, after)), '|', len(busy.processes), '|', leaks(idle, busy))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    quiet, count, busy = out.split(" | ")
    assert quiet == "[]", out
    assert count == "1" and "1 engine process(es) still running: " in busy and "spawn" in busy, out


def test_a_draft_models_share_moves_from_the_target_to_its_passes() -> None:
    from pytest_llmperf.derived import speculation_reads

    spec = {"method": "draft_model", "model": "llama-3.2-1b", "num_speculative_tokens": 4}
    engine = EngineConfig(model="llama-3.1-8b", max_num_seqs=4, speculative_config=spec)
    counters = {"vllm:spec_decode_num_drafts": 10.0, "vllm:spec_decode_num_accepted_tokens": 20.0}
    result = replace(make_result(engine=engine), counters=counters)
    draft = resolve_model("llama-3.2-1b")
    draft_w = predicted_weight_bytes(draft.config)
    w, kv, reads = speculation_reads(result, 18e9, 131072 + 32768, logged=True)
    assert (w, kv) == (18e9 - draft_w, 131072)
    assert reads is not None
    assert (reads.tokens_per_step, reads.draft_passes, reads.draft_kv_bytes_per_token) == (3.0, 4, 32768)
    ngram = replace(result, engine=replace(engine, speculative_config={"method": "ngram", "num_speculative_tokens": 4}))
    assert speculation_reads(ngram, 16e9, 131072, logged=True)[:2] == (16e9, 131072)
    # without vLLM's counters the step's token count is unknown: no roofline
    assert speculation_reads(make_result(engine=engine), 18e9, 163840, logged=True) == (0.0, 0, None)


def test_one_flat_step_early_is_not_the_knee() -> None:
    """CI's 2-core runner (stop 40) measured batch 1..32 as 171, 188, 320, 520, 599,
    691 tok/s: batch 2 gained only 10%, and the knee was called at batch 1 although the
    curve went on to 4x. The knee is where no later point pays any more."""
    cpu = [(1, 171.2), (2, 188.2), (4, 320.7), (8, 519.8), (16, 599.3), (32, 691.0)]
    assert knee(cpu) == 32
    assert knee([(1, 100.0), (2, 105.0), (4, 300.0), (8, 310.0), (16, 312.0)]) == 4
    # a later dip does not move a knee that the points after it confirm
    assert knee([(1, 100.0), (2, 200.0), (4, 400.0), (8, 420.0), (16, 380.0), (32, 430.0)]) == 4
