"""Input validation on a real vLLM CPU engine (one engine start, about 30 s).

The fast tests (test_validation.py) prove the checks with a fake engine; this one
proves that what they validate is what the real engine path uses: layered markers
reach the engine, relative paths land under the rootdir wherever pytest is started,
and a bad baseline file stops its test before a real engine is started.
Run it under the engine lock: flock /tmp/llmperf-engine.lock pytest tests/test_validation_cpu.py
"""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("vllm")


@pytest.mark.full  # CI: the same layering and paths with the fake engine in test_validation.py
def test_layered_markers_and_rootdir_paths_on_a_real_engine(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_real="""
        from pytest_llmperf import perf

        pytestmark = perf(model="tiny-llama-2l", device="cpu", max_model_len=128, batch=1,
                          input_len=16, output_len=8, trials=1, warmup=0,
                          gpu_memory_utilization=0.2, enforce_eager=True,
                          extra={"kv_cache_memory_bytes": 256 * 2**20})

        @perf(batch=2, max_num_seqs=2)
        def test_tiny(llmperf):
            result = llmperf.run()
            assert result.workload.batch == 2 and result.engine.max_num_seqs == 2
            assert result.output_tok_s > 0
    """)
    sub = pytester.mkdir("sub")
    os.chdir(sub)  # relative paths must still resolve against the rootdir
    args = [str(pytester.path), "--llmperf-json=out/r.json", "--llmperf-log-dir=logs"]
    recorded = pytester.runpytest(*args, "--llmperf-update-baselines")
    recorded.assert_outcomes(passed=1)
    logs = pytester.path / "logs"
    [log] = list(logs.glob("engine-*.log"))
    report = json.loads((pytester.path / "out" / "r.json").read_text())
    assert report["tests"][0]["result"]["workload"]["batch"] == 2
    assert not (sub / "out").exists() and not (sub / "logs").exists()
    [baseline] = list((pytester.path / "baselines").rglob("test_real.json"))

    baseline.write_bytes(b'{"schema_version": 1, "entries": {')
    broken = pytester.runpytest(*args)
    broken.assert_outcomes(errors=1)
    broken.stdout.fnmatch_lines([f"*test_real.py::test_tiny: baseline file unusable: {baseline}:1:*invalid JSON*"])
    assert list(logs.glob("engine-*.log")) == [log], "an engine started for a test with a bad baseline"
    assert baseline.read_bytes() == b'{"schema_version": 1, "entries": {'
