"""The stored-baseline gate as a script calls it (``gate.gate_on_store``), no pytest plugin:
a regression is re-measured on a fresh engine start before it counts, and confirmation
starts are spent only while they can help."""

from __future__ import annotations

from dataclasses import replace

from factories import make_result

from pytest_llmperf.baselines import BaselineEntry
from pytest_llmperf.fingerprint import Fingerprint
from pytest_llmperf.gate import gate_on_store
from pytest_llmperf.results import PerfResult

FP = Fingerprint(device="gpu", gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1, gpu_memory_mib=81559,
                 driver="580.159.04", cuda="13.0", cpu_model="Intel Xeon", cpu_count=16,
                 vllm_version="0.25.0", torch_version="2.11.0", python="3.12.3",
                 gpu_uuids=("GPU-aaaaaaaa-1111-2222-3333-444444444444",))


def _start(worse: float, seed: int) -> PerfResult:
    """One engine start ``worse`` slower than the baseline (throughput down, TPOT up)."""
    return make_result(output_tok_s=3100.0 / (1 + worse), tpot_ms=7.15 * (1 + worse), trials=3,
                       jitter=0.0005, seed=seed)


ENTRY = BaselineEntry.from_starts("test_x", [_start(s, i) for i, s in enumerate((0.0, 0.002, -0.002))],
                                  FP, git_commit=None)
ENTRY_WORKLOAD = _start(0.0, 0).workload


class Starts:
    """``more_starts`` that hands out prepared results and counts what was asked for."""

    def __init__(self, *worse: float) -> None:
        self.prepared = [_start(w, 100 + i) for i, w in enumerate(worse)]
        self.left = list(self.prepared)
        self.asked = 0

    def __call__(self, n: int) -> list[PerfResult]:
        self.asked += n
        out, self.left = self.left[:n], self.left[n:]
        assert len(out) == n, "asked for more starts than the test prepared"
        return out


def test_a_regression_that_does_not_reproduce_is_set_aside() -> None:
    more = Starts(0.0)
    gate = gate_on_store(_start(0.10, 9), ENTRY, {}, more_starts=more, confirm=2, machine=FP)
    assert more.asked == 1
    assert gate.status == "compared" and gate.comparison is not None
    assert gate.comparison.state == "pass"
    assert gate.judged is more.prepared[0]  # the fresh start is what the verdict shows
    assert gate.comparison.starts is not None and gate.comparison.starts[1] == 1
    assert any(m.startswith("set aside a disturbed engine start") for m in gate.messages)


def test_a_regression_that_reproduces_fails_over_both_starts() -> None:
    more = Starts(0.10)
    gate = gate_on_store(_start(0.10, 9), ENTRY, {}, more_starts=more, confirm=2, machine=FP)
    assert more.asked == 1 and gate.judged is None
    assert gate.comparison is not None and gate.comparison.state == "regression"
    assert gate.comparison.starts is not None and gate.comparison.starts[1] == 2  # both starts
    assert any("reproduced on a fresh engine start" in m for m in gate.messages)
    assert {r.metric for r in gate.comparison.regressions} >= {"tpot_p50_ms", "output_tok_s"}


def test_no_confirmation_starts_means_one_start_decides() -> None:
    more = Starts()
    gate = gate_on_store(_start(0.10, 9), ENTRY, {}, more_starts=more, confirm=0, machine=FP)
    assert more.asked == 0 and gate.judged is None and gate.confirmations == 0
    assert gate.comparison is not None and gate.comparison.state == "regression"


def test_a_missing_or_stale_baseline_measures_nothing_more() -> None:
    more = Starts()
    missing = gate_on_store(_start(0.0, 9), None, {}, more_starts=more, confirm=3)
    assert (missing.status, missing.comparison) == ("missing", None)
    other = make_result(output_tok_s=3100.0, tpot_ms=7.15, trials=3,
                        workload=replace(ENTRY_WORKLOAD, output_len=64))
    stale = gate_on_store(other, ENTRY, {}, more_starts=more, confirm=3)
    assert stale.status == "stale" and "re-record" in stale.messages[-1]
    assert more.asked == 0


def test_an_unchanged_start_passes_without_more_starts() -> None:
    more = Starts()
    gate = gate_on_store(_start(0.001, 9), ENTRY, {}, more_starts=more, confirm=3, machine=FP)
    assert gate.comparison is not None and gate.comparison.state == "pass"
    assert more.asked == 0 and gate.confirmations == 0



def test_the_other_entries_may_come_as_a_one_pass_iterable() -> None:
    """Every decision reads the file's other entries (a one-start entry learns its
    between-start noise from them): a generator must not run dry after the first."""
    one = BaselineEntry.from_starts("test_x", [_start(0.0, 1)], FP, git_commit=None)
    others = [BaselineEntry.from_starts(f"other{i}", [_start(0.0, 10 * i + j) for j in range(3)],
                                        FP, git_commit=None) for i in range(3)]
    as_list = gate_on_store(_start(0.10, 9), one, {}, more_starts=Starts(0.10), confirm=1,
                            machine=FP, file_entries=others)
    as_gen = gate_on_store(_start(0.10, 9), one, {}, more_starts=Starts(0.10), confirm=1,
                           machine=FP, file_entries=(e for e in others))
    assert as_list.comparison is not None and as_gen.comparison is not None
    assert "pooled over 3 test(s) of the baseline file" in as_list.comparison.notes[0]
    assert as_gen.comparison.notes == as_list.comparison.notes
    assert as_gen.messages == as_list.messages
