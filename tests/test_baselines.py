from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from factories import make_result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_llmperf import baselines
from pytest_llmperf.baselines import (
    BaselineEntry,
    BaselineError,
    BaselineStore,
    MetricRecord,
    SpeedState,
    format_json_path,
    load_schema,
)
from pytest_llmperf.config import EngineConfig, Workload
from pytest_llmperf.fingerprint import Fingerprint
from pytest_llmperf.metrics import METRICS

HW = "nvidia-h100-80gb-hbm3-x1"
SUITE = "suites/test_a.py"
TEST_ID = "suites/test_a.py::test_x"

FP = Fingerprint(
    device="gpu", gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1, gpu_memory_mib=81559,
    driver="550.54.15", cuda="12.4", cpu_model="Intel(R) Xeon(R) Platinum 8488C",
    cpu_count=16, vllm_version="0.25.0", torch_version="2.7.0", python="3.11.7",
)


def entry(test_id: str = TEST_ID, **result_kw: Any) -> BaselineEntry:
    return BaselineEntry.from_result(
        test_id, make_result(**result_kw), FP, "a" * 40, recorded_at="2025-01-02T03:04:05+00:00"
    )


@pytest.fixture
def store(tmp_path: Path) -> BaselineStore:
    return BaselineStore(tmp_path / "baselines", HW)


def write_raw(store: BaselineStore, doc: Any, suite: str = SUITE) -> Path:
    path = store.path_for(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2))
    return path


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------------- entries


def test_from_result_records_per_trial_values() -> None:
    e = entry(jitter=0.05, trials=5, seed=3)
    result = make_result(jitter=0.05, trials=5, seed=3)
    assert e.metric_values() == result.metric_values()
    rec = e.metrics["output_tok_s"]
    assert len(rec.values) == 5
    assert rec.median == sorted(rec.values)[2]
    assert rec.mad == sorted(abs(v - rec.median) for v in rec.values)[2]
    assert e.vllm_version == "0.32.0"  # what the engine ran, over the installed package
    assert e.engine == result.engine.to_json()
    assert set(e.metrics) <= set(METRICS)


def test_from_result_skips_values_a_ratio_cannot_use() -> None:
    result = make_result()
    result = dataclasses.replace(result, start_time_s=0.0)
    e = BaselineEntry.from_result(TEST_ID, result, FP, None)
    assert "start_time_s" not in e.metrics and "output_tok_s" in e.metrics
    assert e.recorded_at.endswith("+00:00")


def test_metric_record_from_values_rejects_bad_values() -> None:
    for bad in ([], [0.0], [1.0, float("nan")], [float("inf")], [-1.0]):
        with pytest.raises(ValueError):
            MetricRecord.from_values(bad)


def test_stale_reasons() -> None:
    e = entry(workload=Workload(batch=24, trials=3),
              engine=EngineConfig(model="m", max_num_seqs=24))
    same_but_longer = Workload(batch=24, trials=10, warmup=3, min_duration_s=60.0, slowdown=0.2)
    assert e.stale_reasons(EngineConfig(model="m", max_num_seqs=24), same_but_longer) == []
    reasons = e.stale_reasons(
        EngineConfig(model="m", max_num_seqs=20, enforce_eager=True), Workload(batch=16)
    )
    assert reasons == [
        "engine.max_num_seqs: baseline 24, now 20",
        "engine.enforce_eager: baseline false, now true",
        "workload.batch: baseline 24, now 16",
    ]


def test_stale_reasons_new_and_removed_keys() -> None:
    e = entry(engine=EngineConfig(model="m"), workload=Workload())
    # Recorded before a config key existed: fine while the key keeps its default.
    engine = {k: v for k, v in e.engine.items() if k != "kv_cache_dtype"}
    old = dataclasses.replace(e, engine=engine)
    assert old.stale_reasons(EngineConfig(model="m"), Workload()) == []
    assert old.stale_reasons(EngineConfig(model="m", kv_cache_dtype="fp8"), Workload()) == [
        'engine.kv_cache_dtype: baseline absent, now "fp8"'
    ]
    gone = dataclasses.replace(e, workload={**e.workload, "temperature": 0.7})
    assert gone.stale_reasons(EngineConfig(model="m"), Workload()) == [
        "workload.temperature: baseline 0.7, now absent"
    ]


def test_parsed_fingerprint_gives_software_notes() -> None:
    now = dataclasses.replace(FP, vllm_version="0.32.0")
    assert entry().parsed_fingerprint().software_differences(now) == ["vllm 0.25.0 -> 0.32.0"]


# ----------------------------------------------------------------------- store paths


def test_path_for(store: BaselineStore) -> None:
    assert store.path_for("suites/test_decode.py") == (
        store.root / HW / "suites" / "test_decode.json"
    )
    assert store.path_for("test_top.py") == store.root / HW / "test_top.json"
    assert store.path_for("suites/../suites/./t.py") == store.root / HW / "suites" / "t.json"
    assert store.path_for(Path("suites/t.py")) == store.root / HW / "suites" / "t.json"


@pytest.mark.parametrize(
    "bad", ["", "/etc/passwd.py", "../x.py", "suites/../../x.py", "..", ".", "suites/.."]
)
def test_path_for_rejects_escapes(store: BaselineStore, bad: str) -> None:
    with pytest.raises(ValueError, match="suite file"):
        store.path_for(bad)


@pytest.mark.parametrize("key", ["", "Has-Caps", "a/b", "../x", ".hidden", "a b"])
def test_store_rejects_unsafe_hardware_keys(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="hardware_key"):
        BaselineStore(tmp_path, key)


# --------------------------------------------------------------------- round trips


def test_load_missing_file_is_empty(store: BaselineStore) -> None:
    assert store.load(SUITE) == {}
    assert store.get(SUITE, TEST_ID) is None


def test_update_writes_readable_valid_json(store: BaselineStore) -> None:
    path = store.update(SUITE, {TEST_ID: entry()})
    text = path.read_text()
    assert text.endswith("}\n") and not text.endswith("\n\n")
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    jsonschema.Draft202012Validator(load_schema()).validate(doc)
    assert doc["schema_version"] == 2 and doc["hardware_key"] == HW
    assert store.get(SUITE, TEST_ID) == entry()
    assert listing(path.parent) == ["test_a.json"]  # no lock or temp files left


def test_update_merges_and_replaces(store: BaselineStore) -> None:
    store.update(SUITE, {"t::a": entry("t::a"), "t::b": entry("t::b")})
    faster = entry("t::b", output_tok_s=2000.0)
    store.update(SUITE, {"t::b": faster, "t::c": entry("t::c")})
    loaded = store.load(SUITE)
    assert sorted(loaded) == ["t::a", "t::b", "t::c"]
    assert loaded["t::b"] == faster and loaded["t::a"] == entry("t::a")


def test_update_rejects_mismatched_ids(store: BaselineStore) -> None:
    with pytest.raises(ValueError, match="t::other"):
        store.update(SUITE, {TEST_ID: entry("t::other")})


def test_unchanged_update_does_not_rewrite(store: BaselineStore) -> None:
    path = store.update(SUITE, {TEST_ID: entry()})
    before = os.stat(path)
    store.update(SUITE, {TEST_ID: entry()})
    after = os.stat(path)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_load_sees_changes_made_by_another_store(store: BaselineStore) -> None:
    other = BaselineStore(store.root, HW)
    store.update(SUITE, {"t::a": entry("t::a")})
    assert list(store.load(SUITE)) == ["t::a"]
    other.update(SUITE, {"t::b": entry("t::b")})
    assert sorted(store.load(SUITE)) == ["t::a", "t::b"]


positive = st.floats(min_value=1e-6, max_value=1e12, allow_nan=False, allow_infinity=False)
test_ids = st.text(
    alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40
) | st.from_regex(r"suites/test_[a-z]{1,8}\.py::test_[a-z]{1,8}(\[[a-z0-9/-]{1,10}\])?",
                  fullmatch=True)
metric_maps = st.dictionaries(
    st.sampled_from(sorted(METRICS)),
    st.lists(positive, min_size=1, max_size=6).map(MetricRecord.from_values),
    min_size=1,
)
fingerprints = st.builds(
    Fingerprint,
    device=st.sampled_from(["gpu", "cpu"]),
    gpu_name=st.none() | st.text(max_size=30),
    gpu_count=st.integers(0, 8),
    gpu_memory_mib=st.none() | st.integers(0, 2**20),
    driver=st.none() | st.text(max_size=10),
    cuda=st.none() | st.text(max_size=10),
    cpu_model=st.text(max_size=30),
    cpu_count=st.integers(1, 512),
    vllm_version=st.none() | st.text(max_size=10),
    torch_version=st.none() | st.text(max_size=10),
    python=st.text(max_size=10),
)
timestamps = st.datetimes(
    timezones=st.sampled_from([baselines.timezone.utc]), allow_imaginary=False
).map(lambda d: d.isoformat())


@st.composite
def entries(draw: st.DrawFn) -> dict[str, BaselineEntry]:
    ids = draw(st.lists(test_ids, min_size=1, max_size=4, unique=True))
    out = {}
    for test_id in ids:
        engine = EngineConfig(
            model=draw(st.text(min_size=1, max_size=20)),
            max_num_seqs=draw(st.none() | st.integers(1, 1024)),
            gpu_memory_utilization=draw(st.floats(0.01, 1.0)),
        )
        workload = Workload(batch=draw(st.integers(1, 256)), output_len=draw(st.integers(1, 4096)))
        out[test_id] = BaselineEntry(
            test_id=test_id,
            engine=engine.to_json(),
            workload=workload.to_json(),
            metrics=draw(metric_maps),
            fingerprint=draw(fingerprints).to_json(),
            recorded_at=draw(timestamps),
            git_commit=draw(st.none() | st.from_regex(r"[0-9a-f]{40}", fullmatch=True)),
            vllm_version=draw(st.none() | st.text(max_size=10)),
        )
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=entries(), second=entries())
def test_round_trip(first: dict[str, BaselineEntry], second: dict[str, BaselineEntry]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = BaselineStore(tmp, HW)
        store.update(SUITE, first)
        path = store.update(SUITE, second)
        assert store.load(SUITE) == {**first, **second}
        assert BaselineStore(tmp, HW).load(SUITE) == {**first, **second}  # no cache involved
        jsonschema.Draft202012Validator(load_schema()).validate(json.loads(path.read_text()))


# ------------------------------------------------------------------------- schema


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_metric_names_match_catalogue() -> None:
    metrics = load_schema()["$defs"]["entry"]["properties"]["metrics"]
    assert set(metrics["properties"]) == set(METRICS)
    assert metrics["additionalProperties"] is False


def test_schema_fingerprint_matches_dataclass() -> None:
    fp = load_schema()["$defs"]["fingerprint"]
    names = [f.name for f in dataclasses.fields(Fingerprint)]
    assert sorted(names) == sorted(fp["properties"])
    # gpu_uuids is optional: CPU fingerprints and those stored before it lack it
    assert sorted(fp["required"]) == sorted(set(names) - {"gpu_uuids"})


def test_schema_entry_matches_to_json() -> None:
    props = load_schema()["$defs"]["entry"]["properties"]
    speed = {"score": 1.0, "spread": 0.0, "parts": {}, "version": 1}
    state = SpeedState(speed, entry().metrics, entry().recorded_at, None)
    probed = dataclasses.replace(entry(), host_speed=speed, speed_states=(state,))
    assert set(props) == set(probed.to_json())
    assert "speed_states" not in dataclasses.replace(probed, speed_states=()).to_json()
    assert "host_speed" not in entry().to_json()  # unprobed entries stay valid version 1 entries


# ------------------------------------------------------- per-start medians, schema v2


def test_from_starts_keeps_each_start_median_and_pools_the_trials() -> None:
    starts = [make_result(output_tok_s=s, trials=3, jitter=0.01, seed=i)
              for i, s in enumerate((1000.0, 1010.0, 990.0))]
    e = BaselineEntry.from_starts(TEST_ID, starts, FP, None, recorded_at="2025-01-02T03:04:05+00:00")
    rec = e.metrics["output_tok_s"]
    assert len(rec.values) == 9
    assert rec.start_medians == tuple(r.output_tok_s for r in starts)
    assert e.start_medians()["output_tok_s"] == [r.output_tok_s for r in starts]
    assert BaselineEntry.from_json(TEST_ID, e.to_json()) == e


def v1_doc() -> dict[str, Any]:
    data = entry().to_json()
    for metric in data["metrics"].values():
        del metric["start_medians"]
    return {"schema_version": 1, "hardware_key": HW, "entries": {"t::old": data}}


def test_version_1_files_are_read_and_rewritten_as_version_2(store: BaselineStore) -> None:
    path = write_raw(store, v1_doc())
    old = store.get(SUITE, "t::old")
    assert old is not None and old.metrics["output_tok_s"].start_medians is None
    # A version 1 entry counts as one engine start: the median of its trials.
    assert old.start_medians()["output_tok_s"] == [old.metrics["output_tok_s"].median]
    store.update(SUITE, {TEST_ID: entry()})
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 2
    jsonschema.Draft202012Validator(load_schema(2)).validate(doc)
    assert store.get(SUITE, "t::old") == old
    assert "start_medians" in doc["entries"][TEST_ID]["metrics"]["output_tok_s"]


def test_version_1_file_may_not_hold_start_medians(store: BaselineStore) -> None:
    write_raw(store, {**good_doc(), "schema_version": 1})
    with pytest.raises(BaselineError, match="start_medians"):
        store.load(SUITE)


# ---------------------------------------------------------------------- bad files


def good_doc() -> dict[str, Any]:
    return {"schema_version": 2, "hardware_key": HW, "entries": {TEST_ID: entry().to_json()}}


def test_invalid_json_names_file_line_and_column(store: BaselineStore) -> None:
    path = write_raw(store, '{\n  "schema_version": 1,\n<<<<<<< HEAD\n}')
    with pytest.raises(BaselineError) as info:
        store.load(SUITE)
    msg = str(info.value)
    assert msg.startswith(f"{path}:3:1: invalid JSON")
    assert (info.value.line, info.value.column) == (3, 1)


def test_wrong_type_deep_inside_names_the_json_path(store: BaselineStore) -> None:
    doc = good_doc()
    doc["entries"][TEST_ID]["metrics"]["output_tok_s"]["values"][2] = "fast"
    path = write_raw(store, doc)
    with pytest.raises(BaselineError) as info:
        store.load(SUITE)
    msg = str(info.value)
    assert str(path) in msg
    assert '$.entries["suites/test_a.py::test_x"].metrics.output_tok_s.values[2]' in msg
    assert "'fast' is not of type 'number'" in msg
    assert info.value.json_path == (
        '$.entries["suites/test_a.py::test_x"].metrics.output_tok_s.values[2]'
    )


@pytest.mark.parametrize(
    ("mutate", "path_part", "reason_part"),
    [
        (lambda e: e["metrics"].update(bogus_ms={"values": [1], "median": 1, "mad": 0}),
         ".metrics", "known metrics: output_tok_s"),
        (lambda e: e["metrics"]["tpot_p50_ms"].update(values=[]), ".tpot_p50_ms.values",
         "should be non-empty"),
        (lambda e: e["metrics"]["tpot_p50_ms"].update(values=[7.0, 0]), ".values[1]",
         "less than or equal to the minimum"),
        (lambda e: e["metrics"]["tpot_p50_ms"].update(mad=-1), ".tpot_p50_ms.mad", "minimum"),
        (lambda e: e.pop("recorded_at"), TEST_ID, "'recorded_at' is a required property"),
        (lambda e: e.update(recorded_at="yesterday"), ".recorded_at", "ISO-8601"),
        (lambda e: e["fingerprint"].update(device="tpu"), ".fingerprint.device", "tpu"),
        (lambda e: e.update(extra=1), TEST_ID, "'extra' was unexpected"),
    ],
)
def test_schema_violations_name_path_and_reason(
    store: BaselineStore, mutate: Any, path_part: str, reason_part: str
) -> None:
    doc = good_doc()
    mutate(doc["entries"][TEST_ID])
    write_raw(store, doc)
    with pytest.raises(BaselineError) as info:
        store.load(SUITE)
    assert path_part in (info.value.json_path or "")
    assert reason_part in info.value.reason


def test_unknown_schema_version(store: BaselineStore) -> None:
    write_raw(store, {**good_doc(), "schema_version": 3})
    with pytest.raises(BaselineError, match=r"\$\.schema_version: unsupported schema_version 3; "
                       r"this version of pytest-llmperf reads schema_version 1, 2 \(written by "):
        store.load(SUITE)
    write_raw(store, {**good_doc(), "schema_version": True})
    with pytest.raises(BaselineError, match="unsupported schema_version true"):
        store.load(SUITE)


def test_hardware_key_must_match_directory(store: BaselineStore) -> None:
    write_raw(store, {**good_doc(), "hardware_key": "nvidia-a10g-x1"})
    with pytest.raises(BaselineError, match=r"\$\.hardware_key: file says 'nvidia-a10g-x1'"):
        store.load(SUITE)


@pytest.mark.parametrize(
    ("text", "json_path", "reason"),
    [
        ('{"schema_version": 1, "schema_version": 1}', "$", "duplicate key 'schema_version'"),
        ("[]", "$", "expected a JSON object"),
        ("", None, "invalid JSON"),
    ],
)
def test_other_malformed_files(
    store: BaselineStore, text: str, json_path: str | None, reason: str
) -> None:
    write_raw(store, text)
    with pytest.raises(BaselineError) as info:
        store.load(SUITE)
    assert info.value.json_path == json_path and reason in info.value.reason


def test_nan_in_file_is_reported_with_path(store: BaselineStore) -> None:
    text = json.dumps(good_doc()).replace('"mad": 0.0', '"mad": NaN', 1)
    write_raw(store, text)
    with pytest.raises(BaselineError) as info:
        store.load(SUITE)
    assert info.value.json_path and info.value.json_path.endswith(".mad")
    assert "finite" in info.value.reason


def test_not_utf8(store: BaselineStore) -> None:
    path = store.path_for(SUITE)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"x": "\xff"}')
    with pytest.raises(BaselineError, match="not UTF-8"):
        store.load(SUITE)


@pytest.mark.parametrize("content", ["{ not json", json.dumps({**good_doc(), "schema_version": 9})])
def test_update_never_overwrites_a_bad_file(store: BaselineStore, content: str) -> None:
    path = write_raw(store, content)
    before = path.read_bytes()
    with pytest.raises(BaselineError):
        store.update(SUITE, {"t::new": entry("t::new")})
    assert path.read_bytes() == before
    assert listing(path.parent) == ["test_a.json"]


def test_update_refuses_to_write_an_invalid_document(store: BaselineStore) -> None:
    store.update(SUITE, {TEST_ID: entry()})
    before = store.path_for(SUITE).read_bytes()
    bad = dataclasses.replace(entry("t::bad"), recorded_at="last tuesday")
    with pytest.raises(BaselineError, match=r'\$\.entries\["t::bad"\]\.recorded_at: refusing '
                       r"to write: 'last tuesday' is not an ISO-8601 timestamp"):
        store.update(SUITE, {"t::bad": bad})
    inf = dataclasses.replace(entry("t::inf"), engine={"model": "m", "x": float("inf")})
    with pytest.raises(BaselineError, match=r'\$\.entries\["t::inf"\]\.engine\.x'):
        store.update(SUITE, {"t::inf": inf})
    assert store.path_for(SUITE).read_bytes() == before


# ----------------------------------------------------------------------- atomicity


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_crash_during_write_leaves_original_intact(
    store: BaselineStore, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    path = store.update(SUITE, {TEST_ID: entry()})
    before = path.read_bytes()

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(baselines.os, fail_at, crash)
    with pytest.raises(BaselineError, match=r"\$: cannot write: No space left on device"):
        store.update(SUITE, {"t::new": entry("t::new")})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert listing(path.parent) == ["test_a.json"]  # no temp file, no lock file
    assert list(store.load(SUITE)) == [TEST_ID]


def _worker(root: str, worker: int, n: int) -> None:
    store = BaselineStore(root, HW)
    for i in range(n):
        test_id = f"suites/test_a.py::test_w{worker}_{i}"
        store.update(SUITE, {test_id: entry(test_id, output_tok_s=1000.0 + worker * 10 + i)})


def test_concurrent_updates_from_processes_all_survive(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), w, 5)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    loaded = BaselineStore(tmp_path, HW).load(SUITE)
    assert len(loaded) == 20
    assert loaded["suites/test_a.py::test_w3_4"].metrics["output_tok_s"].median == (
        pytest.approx(1034.0)
    )
    assert listing(tmp_path / HW / "suites") == ["test_a.json"]


def test_format_json_path() -> None:
    assert format_json_path([]) == "$"
    assert format_json_path(["entries", 'a"b', "metrics", "x", "values", 0]) == (
        '$.entries["a\\"b"].metrics.x.values[0]'
    )
