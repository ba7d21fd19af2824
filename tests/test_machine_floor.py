"""A stored baseline from another GPU of the same model: the between-machines floor.

On 2026-12-03 the H200 quantization baselines (recorded in one session) were gated in
the next session on another H200: bf16 TPOT p50 +2.5% and throughput -2.3%, reproduced on
a fresh engine start, while fp8 weights ran 2.2% *faster* there. The engine starts of
one machine agreed within 0.3%, so the gate was sure of a drift that is the machine's,
and the 2% tolerance failed the test. These tests pin the fix: GPU fingerprints carry
the UUIDs measured, and a baseline from other (or unnamed) GPUs must be cleared by the
metric's ``between_machines`` floor.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from factories import make_result

from pytest_llmperf.baselines import BaselineEntry, BaselineStore
from pytest_llmperf.config import EngineConfig
from pytest_llmperf.fingerprint import Fingerprint
from pytest_llmperf.gate import compare_entry, machine_floors, runner_noise
from pytest_llmperf.metrics import METRICS
from pytest_llmperf.reports.model import MergeError, RunReport, merge_reports
from pytest_llmperf.startgate import compare_to_starts

ROOT = Path(__file__).resolve().parents[1]
GPU_A = ("GPU-aaaaaaaa-1111-2222-3333-444444444444",)
GPU_B = ("GPU-bbbbbbbb-5555-6666-7777-888888888888",)


def _fp(uuids: tuple[str, ...] = GPU_A, **kw: object) -> Fingerprint:
    base = dict(device="gpu", gpu_name="NVIDIA H200", gpu_count=1, gpu_memory_mib=143771,
                driver="580.159.04", cuda="13.0", cpu_model="Intel Xeon", cpu_count=16,
                vllm_version="0.25.0", torch_version="2.11.0", python="3.12.3", gpu_uuids=uuids)
    base.update(kw)
    return Fingerprint(**base)  # type: ignore[arg-type]


def _entry(fp: Fingerprint) -> BaselineEntry:
    starts = [make_result(output_tok_s=3874.0 * s, tpot_ms=5.587 / s, trials=3, jitter=0.0005, seed=i)
              for i, s in enumerate((1.0, 0.998, 1.002))]
    return BaselineEntry.from_starts("test_x", starts, fp, git_commit=None)


def _now(worse: float, seed: int = 7) -> list:
    """Two engine starts ``worse`` slower than the baseline (throughput down, TPOT up)."""
    return [make_result(output_tok_s=3874.0 / (1 + worse), tpot_ms=5.587 * (1 + worse), trials=3,
                        jitter=0.0005, seed=seed + i) for i in range(2)]


def test_same_machine_is_known_only_when_both_name_their_gpus() -> None:
    assert _fp(GPU_A).same_machine(_fp(GPU_A)) is True
    assert _fp(GPU_A + GPU_B).same_machine(_fp(GPU_B + GPU_A)) is True  # order of tp ranks aside
    assert _fp(GPU_A).same_machine(_fp(GPU_B)) is False
    assert _fp(()).same_machine(_fp(GPU_A)) is None
    assert _fp(GPU_A).same_machine(_fp(())) is None


def test_uuids_round_trip_and_a_cpu_fingerprint_is_unchanged() -> None:
    fp = _fp(GPU_A + GPU_B)
    data = fp.to_json()
    assert data["gpu_uuids"] == list(GPU_A + GPU_B)
    assert Fingerprint.from_json(data) == fp
    cpu = _fp((), device="cpu", gpu_name=None, gpu_count=0, gpu_memory_mib=None)
    assert "gpu_uuids" not in cpu.to_json()  # CPU baselines' files do not change
    assert Fingerprint.from_json(cpu.to_json()) == cpu


def test_between_machines_is_never_below_the_noise_floor() -> None:
    for spec in METRICS.values():
        assert spec.between_machines >= spec.noise_floor
    assert METRICS["tpot_p50_ms"].between_machines == pytest.approx(0.03)
    assert METRICS["output_tok_s"].between_machines == pytest.approx(0.03)


def test_a_drift_of_another_gpu_is_not_a_regression_but_one_on_the_same_gpu_is() -> None:
    entry = _entry(_fp(GPU_A))
    status, same, messages = compare_entry(_now(0.025), entry, {}, machine=_fp(GPU_A))
    assert status == "compared" and same is not None
    assert {r.metric for r in same.regressions} >= {"tpot_p50_ms", "output_tok_s"}
    assert not any("other GPUs" in m for m in messages)

    _, other, messages = compare_entry(_now(0.025), entry, {}, machine=_fp(GPU_B))
    assert other is not None and not other.regressions
    assert {r.metric for r in other.inconclusive} >= {"tpot_p50_ms"}  # beyond 2%, not proven
    (why,) = [m for m in messages if "other GPUs" in m]
    assert GPU_A[0][:12] in why and GPU_B[0][:12] in why and "tpot_p50_ms 3.0%" in why
    # the floor cannot be resolved by more starts: the gate says so instead of spending them
    tpot = next(r for r in other.rows if r.metric == "tpot_p50_ms")
    assert tpot.starts_needed is None and tpot.noise_floor == pytest.approx(0.03)

    _, big, _ = compare_entry(_now(0.06), entry, {}, machine=_fp(GPU_B))
    assert big is not None and {r.metric for r in big.regressions} >= {"tpot_p50_ms", "output_tok_s"}


def test_an_eager_engine_on_another_gpu_gets_the_host_bound_floor() -> None:
    """The s39 H100 suite run: the eager max-concurrency test ran 4.9% slower in ITL p50
    than a baseline from another H100 (13.49 -> 14.14 ms), reproduced on a fresh start,
    and failed; three starts on the new machine then gave 18.4-20.9 ms TPOT p50 against
    13.9 ms on the old one. An eager engine's decode moves with the host, so a baseline
    from another machine must be cleared by that drift; on the same GPU the graph-mode
    floors, and its own starts' spread, still apply."""
    eager = EngineConfig(model="test/tiny-model", max_num_seqs=8, enforce_eager=True)
    starts = [make_result(output_tok_s=990.0 * s, tpot_ms=13.9 / s, trials=1, jitter=0.0, seed=i,
                          engine=eager) for i, s in enumerate((1.0, 0.999, 1.001))]
    entry = BaselineEntry.from_starts("test_eager", starts, _fp(GPU_A), git_commit=None)

    def now(worse: float) -> list:
        return [make_result(output_tok_s=990.0 / (1 + worse), tpot_ms=13.9 * (1 + worse), trials=1,
                            seed=9 + i, engine=eager) for i in range(2)]

    floors, why = machine_floors(entry, _fp(GPU_B))
    assert floors is not None and floors["tpot_p50_ms"] == pytest.approx(0.40)
    assert floors["output_tok_s"] == pytest.approx(0.30) and "peak_mem_gib" not in floors
    assert "enforce_eager" in why and "host" in why
    _, other, _ = compare_entry(now(0.05), entry, {}, machine=_fp(GPU_B))
    assert other is not None and not other.regressions
    _, same, _ = compare_entry(now(0.05), entry, {}, machine=_fp(GPU_A))
    assert same is not None and {r.metric for r in same.regressions} >= {"tpot_p50_ms"}
    _, far, _ = compare_entry(now(0.8), entry, {}, machine=_fp(GPU_B))
    assert far is not None and {r.metric for r in far.regressions} >= {"tpot_p50_ms"}
    # a CUDA-graph engine's entry keeps the floor of its kind
    graph_entry = _entry(_fp(GPU_A))
    assert machine_floors(graph_entry, _fp(GPU_B))[0]["tpot_p50_ms"] == pytest.approx(0.03)  # type: ignore[index]


def test_a_baseline_that_names_no_gpu_gets_the_floor_and_says_why() -> None:
    entry = _entry(_fp(()))
    _, cmp, messages = compare_entry(_now(0.025), entry, {}, machine=_fp(GPU_A))
    assert cmp is not None and not cmp.regressions
    assert any("GPUs it does not name" in m for m in messages)
    # without a machine (a script that does not say) the gate is what it was
    _, old, messages = compare_entry(_now(0.025), entry, {})
    assert old is not None and old.regressions and not any("GPU" in m for m in messages)


def test_cpu_results_keep_the_noise_floor() -> None:
    cpu = _fp((), device="cpu", gpu_name=None, gpu_count=0, gpu_memory_mib=None)
    starts = [replace(make_result(output_tok_s=100.0 * s, trials=3, jitter=0.0005, seed=i), device="cpu")
              for i, s in enumerate((1.0, 0.998, 1.002))]
    entry = BaselineEntry.from_starts("t", starts, cpu, git_commit=None)
    now = [replace(r, device="cpu") for r in _now(0.0)]
    _, _, messages = compare_entry(now, entry, {}, machine=cpu)
    assert not any("GPU" in m for m in messages)


def test_the_recorded_h200_false_alarm_is_averted() -> None:
    """Replay of 2026-12-03: the committed H200 bf16 entry against the second H200's two
    starts (TPOT p50 +2.6% and +2.4%, throughput -2.3%: the medians its gate printed,
    benchmarks/results/h200-2026-12-03-s26/quant-gate.txt)."""
    store = BaselineStore(ROOT / "baselines", "nvidia-h200-x1")
    entries = store.load("suites/test_quantization.py")
    entry = entries["test_precision[bf16]"]
    base = entry.start_medians()
    tpot, tok = sum(base["tpot_p50_ms"]) / 2, sum(base["output_tok_s"]) / 2
    now = [{"tpot_p50_ms": [tpot * 1.026] * 3, "output_tok_s": [tok * 0.977] * 3},
           {"tpot_p50_ms": [tpot * 1.024] * 3, "output_tok_s": [tok * 0.977] * 3}]
    baseline = {k: base[k] for k in ("tpot_p50_ms", "output_tok_s")}
    noise = runner_noise(entry, entries.values())
    before = compare_to_starts(now, baseline, noise=noise)
    assert [r.metric for r in before.regressions] == ["tpot_p50_ms"]  # what failed that day
    floors, why = machine_floors(entry, _fp(GPU_B))
    assert floors and "does not name" in why
    after = compare_to_starts(now, baseline, noise=noise, floors=floors)
    assert not after.regressions and after.state == "inconclusive"


def _report(fp: Fingerprint, test_id: str) -> RunReport:
    return RunReport.from_json({"tests": [], "machines": {"nvidia-h200-x1": fp.to_json()}})


def test_shards_on_two_gpus_of_one_model_merge_and_keep_both_uuids() -> None:
    merged = merge_reports([("a.json", _report(_fp(GPU_A), "t1")), ("b.json", _report(_fp(GPU_B), "t2"))])
    assert merged.machines["nvidia-h200-x1"]["gpu_uuids"] == sorted(GPU_A + GPU_B)
    with pytest.raises(MergeError, match="another fingerprint"):
        merge_reports([("a.json", _report(_fp(GPU_A), "t1")),
                       ("b.json", _report(_fp(GPU_B, driver="570.1"), "t2"))])


# -- through pytest (fake engine and fake GPUs: the wiring, not the numbers) -------------

SUITE = '''
from pytest_llmperf import perf

@perf(model="llama-3.1-8b", max_model_len=1024, batch=4, input_len=32, output_len=16)
def test_x(llmperf):
    llmperf.run()
'''


def test_the_plugin_records_the_gpu_and_gates_another_one_with_the_floor(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    import fake_engine

    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        monkeypatch.delenv(name, raising=False)
    fake = fake_engine.install(monkeypatch)
    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("LLMPERF_FAKE_GPUS", "GPU-fake-aaaa")
    pytester.runpytest("--gpu", "--llmperf-update-baselines").assert_outcomes(passed=1)
    (path,) = (pytester.path / "baselines").rglob("test_suite.json")
    entry = json.loads(path.read_text())["entries"]["test_x"]
    assert entry["fingerprint"]["gpu_uuids"] == ["GPU-fake-aaaa"]

    # 4.5% slower: beyond the 2% tolerance and the 1% noise floor, within the 3%
    # between-machines floor's reach of the constant noise (one start each side)
    fake.tok_s = 955.0
    monkeypatch.setenv("LLMPERF_FAKE_GPUS", "GPU-fake-bbbb")
    other = pytester.runpytest("--gpu", "-rw")
    other.assert_outcomes(passed=1)
    other.stdout.fnmatch_lines(["*baseline recorded on other GPUs (GPU-fake-aaa*; now GPU-fake-bbb*)*"])
    assert len(fake.started) == 2  # no confirmation start spent on what starts cannot resolve

    monkeypatch.setenv("LLMPERF_FAKE_GPUS", "GPU-fake-aaaa")
    same = pytester.runpytest("--gpu")
    same.assert_outcomes(failed=1)
    same.stdout.fnmatch_lines(["*regression against the baseline (output_tok_s*"])
    assert "other GPUs" not in same.stdout.str()
