from __future__ import annotations

import dataclasses
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_nvml import FakeGpu, FakeNvml, h100s
from hypothesis import given
from hypothesis import strategies as st

from pytest_llmperf import fingerprint as fp_mod
from pytest_llmperf.fingerprint import Fingerprint, collect_fingerprint, git_commit, slugify

SLUG = re.compile(r"[a-z0-9][a-z0-9._-]*")


def make_fp(**overrides: object) -> Fingerprint:
    base = dict(
        device="gpu",
        gpu_name="NVIDIA H100 80GB HBM3",
        gpu_count=1,
        gpu_memory_mib=81559,
        driver="550.54.15",
        cuda="12.4",
        cpu_model="Intel(R) Xeon(R) Platinum 8488C",
        cpu_count=16,
        vllm_version="0.25.0",
        torch_version="2.7.0",
        python="3.11.7",
    )
    base.update(overrides)
    return Fingerprint(**base)  # type: ignore[arg-type]


def test_gpu_hardware_key() -> None:
    assert make_fp().hardware_key == "nvidia-h100-80gb-hbm3-x1"
    assert make_fp(gpu_count=8).hardware_key == "nvidia-h100-80gb-hbm3-x8"
    assert make_fp(gpu_name="Tesla V100-SXM2-16GB").hardware_key == "tesla-v100-sxm2-16gb-x1"


@pytest.mark.parametrize(
    ("model", "count", "key"),
    [
        ("Intel(R) Xeon(R) Platinum 8488C", 2, "cpu-intel-xeon-platinum-8488c-2c"),
        ("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", 4, "cpu-intel-xeon-e5-2686-v4-4c"),
        ("AMD EPYC 7R13 Processor", 8, "cpu-amd-epyc-7r13-8c"),
        ("AMD Ryzen 9 5950X 16-Core Processor", 32, "cpu-amd-ryzen-9-5950x-32c"),
        ("", 1, "cpu-unknown-1c"),
    ],
)
def test_cpu_hardware_key(model: str, count: int, key: str) -> None:
    assert make_fp(device="cpu", gpu_name=None, gpu_count=0, cpu_model=model,
                   cpu_count=count).hardware_key == key


def test_hardware_key_ignores_software() -> None:
    """A vLLM/driver upgrade must compare against the same baselines, not start afresh."""
    a = make_fp()
    b = make_fp(vllm_version="0.32.0", torch_version="2.9.0", driver="580.65", cuda="13.0",
                python="3.12.1", cpu_model="AMD EPYC 9654", cpu_count=64)
    assert a.hardware_key == b.hardware_key


@given(name=st.text(max_size=200), count=st.integers(0, 4096),
       device=st.sampled_from(["gpu", "cpu"]))
def test_hardware_key_is_always_a_safe_slug(name: str, count: int, device: str) -> None:
    key = make_fp(device=device, gpu_name=name, cpu_model=name, gpu_count=count,
                  cpu_count=max(count, 1)).hardware_key
    assert SLUG.fullmatch(key), key
    assert len(key) <= 100
    assert slugify(name) == slugify(slugify(name))


def test_json_round_trip_and_forward_compat() -> None:
    fp = make_fp()
    assert Fingerprint.from_json(fp.to_json()) == fp
    assert Fingerprint.from_json({**fp.to_json(), "numa_nodes": 2}) == fp


def test_software_differences() -> None:
    old = make_fp()
    new = make_fp(vllm_version="0.32.0", driver="580.65.06", torch_version=None)
    assert old.software_differences(new) == [
        "vllm 0.25.0 -> 0.32.0",
        "torch 2.7.0 -> none",
        "driver 550.54.15 -> 580.65.06",
    ]
    assert old.software_differences(old) == []


def test_collect_cpu_fingerprint_on_this_machine() -> None:
    fp = collect_fingerprint("cpu")
    assert fp.device == "cpu"
    assert fp.hardware_key.startswith("cpu-")
    assert fp.hardware_key.endswith(f"-{fp.cpu_count}c")
    assert SLUG.fullmatch(fp.hardware_key)
    assert fp.gpu_name is None and fp.gpu_count == 0
    assert fp.cpu_count >= 1 and fp.cpu_model
    assert fp.python == platform.python_version()


def test_core_imports_neither_pytest_nor_torch_nor_vllm() -> None:
    """Scripts use these modules without pytest, and fingerprinting must stay cheap."""
    code = (
        "import sys\n"
        "from pytest_llmperf.fingerprint import collect_fingerprint\n"
        "from pytest_llmperf.baselines import BaselineStore, load_schema\n"
        "collect_fingerprint('cpu'); load_schema()\n"
        "bad = [m for m in ('pytest', '_pytest', 'torch', 'vllm', 'pynvml') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = Path(fp_mod.__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def test_collect_rejects_unknown_device() -> None:
    with pytest.raises(ValueError, match="'tpu'"):
        collect_fingerprint("tpu")


def test_gpu_without_nvml_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    with pytest.raises(RuntimeError, match="nvidia-ml-py"):
        collect_fingerprint("gpu")


def _fake_pynvml(count: int = 2, fail_init: bool = False) -> FakeNvml:
    gpus = h100s(count)
    mig = FakeGpu(uuid="MIG-ok-1", pci_bus_id="", name="NVIDIA H100 80GB HBM3 MIG 1g.10gb",
                  total_gib=10, parent=gpus[1] if count > 1 else None)
    return FakeNvml(gpus, migs=[mig], fail_init=fail_init)


def test_collect_gpu_fingerprint_with_fake_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_pynvml(count=2)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fp = collect_fingerprint("gpu")
    assert (fp.gpu_name, fp.gpu_count, fp.gpu_memory_mib) == ("NVIDIA H100 80GB HBM3", 2, 81920)
    assert (fp.driver, fp.cuda) == ("580.65.06", "13.0")
    assert fp.hardware_key == "nvidia-h100-80gb-hbm3-x2"
    assert len(fp.gpu_uuids) == 2 and len(set(fp.gpu_uuids)) == 2
    assert all(u.startswith("GPU-") for u in fp.gpu_uuids)
    assert fake.calls == ["init", "shutdown"]


@pytest.mark.parametrize(
    ("visible", "count", "name_part"),
    [("1", 1, "HBM3"), ("0,1", 2, "HBM3"), ("0,7,1", 1, "HBM3"), ("GPU-1aa", 1, "HBM3"),
     ("MIG-ok-1", 1, "MIG 1g.10gb")],
)
def test_cuda_visible_devices_is_respected(
    monkeypatch: pytest.MonkeyPatch, visible: str, count: int, name_part: str
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(count=2))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    fp = collect_fingerprint("gpu")
    assert fp.gpu_count == count
    assert name_part in (fp.gpu_name or "")


@pytest.mark.parametrize("visible", ["", "-1", "MIG-missing"])
def test_no_visible_gpu_is_an_error(monkeypatch: pytest.MonkeyPatch, visible: str) -> None:
    fake = _fake_pynvml(count=2)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(RuntimeError, match="no GPU is visible"):
        collect_fingerprint("gpu")
    assert fake.calls == ["init", "shutdown"]


def test_nvml_init_failure_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(fail_init=True))
    with pytest.raises(RuntimeError, match="Driver Not Loaded"):
        collect_fingerprint("gpu")


def test_fingerprint_fields_match_cpu_defaults() -> None:
    """The CPU path fills every field (no field forgotten when the dataclass grows); the
    GPU UUIDs are left out of a CPU fingerprint's JSON, which stays as it was."""
    fp = collect_fingerprint("cpu")
    assert fp.gpu_uuids == ()
    assert set(fp.to_json()) == {f.name for f in dataclasses.fields(Fingerprint)} - {"gpu_uuids"}


def test_git_commit_outside_a_repo(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None
    assert git_commit(tmp_path / "does-not-exist") is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_commit_in_a_scratch_repo(tmp_path: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com",
           "-c", "commit.gpgsign=false", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    assert git_commit(tmp_path) == head


def test_git_commit_survives_missing_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert git_commit(tmp_path) is None
