"""The baseline loader fuzzed: whatever a file holds, reading it either works or raises
BaselineError (never another traceback), and an update never overwrites a bad file.

Each example starts from a valid file written by the store itself and damages it the
way files get damaged: cut short (a killed write on another tool), a byte flipped
(including invalid UTF-8), a value swapped for one of another type, a huge number,
NaN/Infinity, a negative median, an unknown key, a future schema version, or emptied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from factories import make_result
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pytest_llmperf.baselines import BaselineEntry, BaselineError, BaselineStore
from pytest_llmperf.config import EngineConfig, Workload
from pytest_llmperf.fingerprint import Fingerprint
from pytest_llmperf.gate import compare_entry

HW = "cpu-test-2c"
SUITE = "suites/test_a.py"
FP = Fingerprint(
    device="cpu", gpu_name=None, gpu_count=0, gpu_memory_mib=None, driver=None, cuda=None,
    cpu_model="Test CPU", cpu_count=2, vllm_version="0.32.0", torch_version="2.13.0",
    python="3.11.7",
)


def _entry(test_id: str, tok_s: float = 1000.0) -> BaselineEntry:
    return BaselineEntry.from_result(
        test_id, make_result(output_tok_s=tok_s), FP, "a" * 40,
        recorded_at="2025-01-02T03:04:05+00:00",
    )


def _valid_bytes(tmp: Path) -> bytes:
    store = BaselineStore(tmp, HW)
    path = store.update(SUITE, {"test_x": _entry("test_x"), "test_y[2]": _entry("test_y[2]", 900.0)})
    return path.read_bytes()


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _valid_bytes(tmp_path_factory.mktemp("valid"))


# -- how files get damaged ---------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=8),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=10**308, max_value=10**330),  # beyond any float
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, -1e-9, 1e308, -1e308, 2, 99]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return doc


@st.composite
def replaced_value(draw: st.DrawFn, valid: bytes) -> bytes:
    """A value somewhere in the document swapped for one of any type or size."""
    doc = json.loads(valid)
    path = draw(st.sampled_from(_paths(doc)))
    return json.dumps(_set(doc, path, draw(_values))).encode()


@st.composite
def unknown_key(draw: st.DrawFn, valid: bytes) -> bytes:
    doc = json.loads(valid)
    objects = [p for p in _paths(doc) if isinstance(_get(doc, p), dict)]
    target = _get(doc, draw(st.sampled_from(objects)))
    target[draw(st.text(min_size=1, max_size=8))] = draw(_values)
    return json.dumps(doc).encode()


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def special_number(draw: st.DrawFn, valid: bytes) -> bytes:
    """A number spelled as JSON must not spell it: NaN, Infinity, 1e400, 10^5000."""
    doc = json.loads(valid)
    numbers = [p for p in _paths(doc) if isinstance(_get(doc, p), (int, float))
               and not isinstance(_get(doc, p), bool)]
    path = draw(st.sampled_from(numbers))
    marker = "__SPECIAL__"
    text = json.dumps(_set(doc, path, marker))
    token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" * 5000,
                                  "-0.0", "0", "-3.5", "1e-400"]))
    return text.replace(json.dumps(marker), token).encode()


@st.composite
def damaged(draw: st.DrawFn, valid: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "replace", "unknown", "special",
                                 "version", "empty", "prefix", "nested"]))
    if kind == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "flip":
        i = draw(st.integers(0, len(valid) - 1))
        byte = draw(st.integers(0, 255))
        assume(byte != valid[i])
        return valid[:i] + bytes([byte]) + valid[i + 1:]
    if kind == "replace":
        return draw(replaced_value(valid))
    if kind == "unknown":
        return draw(unknown_key(valid))
    if kind == "special":
        return draw(special_number(valid))
    if kind == "version":
        doc = json.loads(valid)
        doc["schema_version"] = draw(st.one_of(st.integers(2, 10**6), st.just("1"), st.just(1.0),
                                               st.just(True), st.none()))
        return json.dumps(doc).encode()
    if kind == "empty":
        return draw(st.sampled_from([b"", b" ", b"\n", b"null", b"{}", b"[]", b"\xef\xbb\xbf"]))
    if kind == "nested":
        depth = draw(st.integers(500, 200_000))
        if draw(st.booleans()):  # well-formed, but deeper than any check walks
            return b'{"entries": ' + b"[" * depth + b"]" * depth + b"}"
        return b"[" * depth
    return draw(st.binary(min_size=1, max_size=8)) + valid  # "prefix": junk before the JSON


def _use(entries: dict[str, BaselineEntry]) -> None:
    """What the gate does with loaded entries: none of it may raise."""
    now = make_result(output_tok_s=1000.0)
    for entry in entries.values():
        assert all(v > 0 for values in entry.metric_values().values() for v in values)
        entry.stale_reasons(EngineConfig(model="tiny-llama-2l"), Workload())
        entry.parsed_fingerprint().software_differences(FP)
        compare_entry(now, entry, {})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_loader_never_raises_anything_but_its_own_error_and_never_overwrites(
    tmp_path: Path, valid: bytes, data: st.DataObject
) -> None:
    content = data.draw(damaged(valid), label="file content")
    store = BaselineStore(tmp_path, HW)
    path = store.path_for(SUITE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    try:
        entries = store.load(SUITE)
    except BaselineError as exc:
        assert exc.file == str(path) and exc.reason
        assert str(exc).startswith(str(path))
        with pytest.raises(BaselineError):
            store.update(SUITE, {"test_new": _entry("test_new")})
        assert path.read_bytes() == content, "a bad baseline file was overwritten"
        assert sorted(p.name for p in path.parent.iterdir()) == ["test_a.json"]
        return
    _use(entries)
    # A file that reads fine may be updated; the old entries survive the update.
    store.update(SUITE, {"test_new": _entry("test_new")})
    after = BaselineStore(tmp_path, HW).load(SUITE)
    assert set(after) == set(entries) | {"test_new"}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "invalid JSON: Expecting value"),
        (b"[" * 100_000, "invalid JSON: nested too deeply"),
        (b"\xff\xfe{}", "not UTF-8 text"),
    ],
)
def test_examples_found_worth_keeping(tmp_path: Path, content: bytes, reason: str) -> None:
    store = BaselineStore(tmp_path, HW)
    path = store.path_for(SUITE)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(BaselineError, match=reason):
        store.load(SUITE)


def test_huge_integer_and_negative_median_are_named(tmp_path: Path, valid: bytes) -> None:
    store = BaselineStore(tmp_path, HW)
    path = store.path_for(SUITE)
    path.parent.mkdir(parents=True)
    doc = json.loads(valid)
    doc["entries"]["test_x"]["metrics"]["output_tok_s"]["values"][0] = 10**400
    path.write_text(json.dumps(doc))
    with pytest.raises(BaselineError) as info:
        store.load(SUITE)
    assert info.value.json_path == "$.entries.test_x.metrics.output_tok_s.values[0]"
    assert "too large a number" in info.value.reason
    doc = json.loads(valid)
    doc["entries"]["test_x"]["metrics"]["output_tok_s"]["median"] = -1000.0
    path.write_text(json.dumps(doc))
    with pytest.raises(BaselineError) as info:
        store.load(SUITE)
    assert info.value.json_path == "$.entries.test_x.metrics.output_tok_s.median"
    doc["entries"]["test_x"]["metrics"]["output_tok_s"]["median"] = 5.0
    path.write_text(json.dumps(doc))
    with pytest.raises(BaselineError, match=r"lies outside its values"):
        store.load(SUITE)


def test_unreadable_or_unwritable_places_are_baseline_errors(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path, HW)
    path = store.path_for(SUITE)
    path.mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(BaselineError, match=r"\$: cannot read: Is a directory"):
        store.load(SUITE)
    blocked = BaselineStore(tmp_path / "file", HW)
    (tmp_path / "file").write_text("")  # the baselines root is a file: nothing can be made
    with pytest.raises(BaselineError, match=r"\$: cannot write: Not a directory"):
        blocked.update(SUITE, {"test_new": _entry("test_new")})
