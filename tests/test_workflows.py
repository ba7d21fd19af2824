"""The GitHub workflows: parsed with PyYAML and checked for what keeps self-hosted runners safe.

The fork guard of gpu-perf.yml is evaluated, not string-matched: its ``if:`` expression
is translated to Python and run against the events GitHub would send.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
LABEL = "gpu-perf-ok"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def _all() -> dict[str, dict[str, Any]]:
    return {p.name: _load(p.name) for p in sorted(WORKFLOWS.glob("*.yml"))}


def _self_hosted(job: dict[str, Any]) -> bool:
    runs_on = job.get("runs-on")
    return isinstance(runs_on, list) and "self-hosted" in runs_on


def _evaluate(expression: str, github: dict[str, Any]) -> bool:
    """Evaluate a GitHub Actions ``if:`` made of ==, !=, &&, || and ( ) over ``github``."""

    def lookup(path: str) -> Any:
        value: Any = {"github": github}
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    refs: list[str] = []

    def ref(match: re.Match[str]) -> str:
        refs.append(match.group(0))
        return f"_r[{len(refs) - 1}]"

    text = re.sub(r"github(\.[A-Za-z_][\w-]*)+", ref, " ".join(expression.split()))
    assert not re.search(r"[A-Za-z_]\w*\(", text), f"unsupported function in {expression!r}"
    text = text.replace("&&", " and ").replace("||", " or ").replace("!=", " != ")
    text = re.sub(r"!(?!=)", " not ", text)
    return bool(eval(text, {"__builtins__": {}}, {"_r": [lookup(r) for r in refs]}))  # noqa: S307


def _event(action: str, *, fork: bool, label: str | None = None) -> dict[str, Any]:
    head = "someone/fork" if fork else "org/repo"
    event: dict[str, Any] = {"action": action,
                             "pull_request": {"head": {"repo": {"full_name": head}}, "number": 7}}
    if label is not None:
        event["label"] = {"name": label}
    return {"repository": "org/repo", "event": event}


def test_every_workflow_declares_least_privilege_permissions() -> None:
    allowed = {"contents": {"read", "write"}, "pull-requests": {"write"}, "actions": {"read"}}
    for name, wf in _all().items():
        assert "permissions" in wf, f"{name}: no top-level permissions (defaults are broad)"
        assert wf["permissions"] in ({}, {"contents": "read"}), f"{name}: {wf['permissions']}"
        for job_name, job in wf["jobs"].items():
            perms = job.get("permissions", {})
            assert perms != "write-all", f"{name}:{job_name}"
            for scope, level in perms.items():
                assert level in allowed.get(scope, set()), f"{name}:{job_name}: {scope}: {level}"
            if _self_hosted(job):
                # Code under test runs on self-hosted runners: never a writable token.
                assert perms == {"contents": "read"}, f"{name}:{job_name}: {perms}"


def test_no_workflow_uses_secrets() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        assert "secrets." not in path.read_text(), path.name


def test_gpu_job_runs_on_a_gpu_runner_class_one_at_a_time() -> None:
    wf = _load("gpu-perf.yml")
    job = wf["jobs"]["perf"]
    runs_on = job["runs-on"]
    assert runs_on[:3] == ["self-hosted", "linux", "gpu"]
    assert "vars.LLMPERF_GPU_CLASS" in runs_on[3]  # the configurable class label
    group = job["concurrency"]["group"]
    assert "vars.LLMPERF_GPU_CLASS" in group and job["concurrency"]["cancel-in-progress"] is False
    # The same group as the baseline recorder's: they share the runners.
    recorder = _load("update-baselines.yml")["jobs"]["measure"]
    assert recorder["concurrency"]["group"].startswith("llmperf-gpu-")
    assert "VLLM_CACHE_ROOT" in job["env"]  # compile cache kept on the runner


def test_gpu_perf_runs_only_for_changes_that_can_move_performance() -> None:
    wf = _load("gpu-perf.yml")
    trigger = wf["on"]
    assert set(trigger) == {"pull_request"}  # never pull_request_target: that has write access
    paths = trigger["pull_request"]["paths"]
    for wanted in ("suites/**", "pytest_llmperf/cards/**", "pyproject.toml", "models/**",
                   "configs/**"):
        assert wanted in paths
    run = " ".join(s.get("run", "") for s in wf["jobs"]["perf"]["steps"])
    assert '--llmperf-ab "origin/$BASE_REF"' in run
    for flag in ("--llmperf-json", "--llmperf-markdown", "--llmperf-plots", "--benchmark-json"):
        assert flag in run


@pytest.mark.parametrize(
    ("github", "runs"),
    [
        (_event("opened", fork=False), True),
        (_event("synchronize", fork=False), True),
        (_event("labeled", fork=False, label="documentation"), False),
        (_event("opened", fork=True), False),
        (_event("synchronize", fork=True), False),   # a push after the review: never
        (_event("reopened", fork=True), False),
        (_event("labeled", fork=True, label="documentation"), False),
        (_event("labeled", fork=True, label=LABEL), True),  # a maintainer approved it
    ],
)
def test_fork_guard(github: dict[str, Any], runs: bool) -> None:
    job = _load("gpu-perf.yml")["jobs"]["perf"]
    assert _evaluate(job["if"], github) is runs


def test_label_is_removed_on_every_push_without_running_pr_code() -> None:
    wf = _load("gpu-perf-label.yml")
    assert wf["on"] == {"pull_request_target": {"types": ["synchronize"]}}
    [job] = wf["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert not any("uses" in s for s in job["steps"])  # no checkout, no third-party action
    assert f"--remove-label {LABEL}" in job["steps"][0]["run"]


def test_pr_comment_is_posted_from_the_base_repository_context() -> None:
    wf = _load("gpu-perf-comment.yml")
    assert wf["on"] == {"workflow_run": {"workflows": ["gpu-perf"], "types": ["completed"]}}
    [job] = wf["jobs"].values()
    assert not any("checkout" in s.get("uses", "") for s in job["steps"])
    script = job["steps"][-1]["with"]["script"]
    assert "pr.head.sha !== process.env.HEAD_SHA" in script  # the artifact's PR number is checked
    assert "updateComment" in script  # one comment, updated in place


def test_baselines_pr_is_opened_off_the_gpu_runner() -> None:
    wf = _load("update-baselines.yml")
    assert "workflow_dispatch" in wf["on"]
    assert "runner_class" in wf["on"]["workflow_dispatch"]["inputs"]
    jobs = wf["jobs"]
    assert "inputs.runner_class" in jobs["measure"]["runs-on"][3]
    assert "--llmperf-update-baselines" in jobs["measure"]["steps"][-2]["run"]
    assert jobs["pull-request"]["runs-on"] == "ubuntu-latest"
    assert "gh pr create" in jobs["pull-request"]["steps"][-1]["run"]


def _actionlint() -> str | None:
    here = Path(sys.executable).parent / "actionlint"
    return str(here) if here.exists() else shutil.which("actionlint")


def test_actionlint_is_clean() -> None:
    exe = _actionlint()
    if exe is None:
        pytest.skip("actionlint is not installed (pip install -e '.[dev]')")
    done = subprocess.run([exe, "-no-color"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
