"""The visible-device resolver, the NVML guards, GPU leases and the release check.

All on a fake NVML (tests/fake_nvml.py): the code under test is the real one, only
the driver is simulated, so these run on the CPU build in seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from fake_nvml import POWER_CAP, THERMAL, FakeGpu, FakeNvml, h100s

import pytest_llmperf.workload as workload_mod
from pytest_llmperf.config import EngineConfig, Workload
from pytest_llmperf.engine import EngineError, EngineHandle, wait_for_gpu_release
from pytest_llmperf.fingerprint import collect_fingerprint
from pytest_llmperf.hw import nvml
from pytest_llmperf.hw.leases import GpuLeases, NotEnoughGpus, assign
from pytest_llmperf.hw.nvml import DeviceOrderError, VisibleGpu, cuda_env, parse_visible
from pytest_llmperf.sampler import ResourceSampler
from pytest_llmperf.workload import RequestTiming, measure


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", nvml.FAKE_GPUS_ENV):
        monkeypatch.delenv(name, raising=False)


def _gpus(names: list[str]) -> list[VisibleGpu]:
    return [VisibleGpu(uuid=f"GPU-{i}{'a' * 7}", nvml_index=i, pci_bus_id=f"00000000:{i:02X}:00.0",
                       name=n, memory_total_mib=81920, order=i) for i, n in enumerate(names)]


# -- CUDA_VISIBLE_DEVICES as CUDA reads it ------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, [0, 1, 2, 3]),
        ("", []),
        ("-1", []),
        ("2", [2]),
        ("3,1", [3, 1]),
        (" 1 , 2 ", [1, 2]),
        ("1,7,2", [1]),  # an index that names no device ends the list
        ("1,1,2", [1]),  # so does a repeated one
        ("GPU-2a", [2]),  # unique UUID prefix
        ("GPU-", []),  # ambiguous prefix
        ("GPU-3aaaaaaa,0", [3, 0]),
        ("MIG-unknown", []),
        ("cuda:0", []),
    ],
)
def test_parse_visible_follows_cuda(spec: str | None, expected: list[int]) -> None:
    gpus = _gpus(["H100"] * 4)
    assert [g.order for g in parse_visible(spec, gpus)] == expected


def test_indices_on_a_mixed_host_need_pci_bus_order() -> None:
    gpus = _gpus(["NVIDIA H100", "NVIDIA A10G"])
    with pytest.raises(DeviceOrderError, match="CUDA_DEVICE_ORDER=PCI_BUS_ID"):
        parse_visible("1", gpus)
    assert parse_visible("1", gpus, device_order="PCI_BUS_ID") == [gpus[1]]
    assert parse_visible("GPU-1", gpus) == [gpus[1]]  # UUIDs are never ambiguous
    assert parse_visible(None, gpus) == gpus


def test_nvml_index_is_found_through_the_pci_bus_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML's own numbering may differ from CUDA's: the resolver goes by PCI bus id."""
    devices = h100s(3)
    FakeNvml(devices, nvml_order=[2, 0, 1]).install(monkeypatch)  # NVML 0 is the last PCI slot
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
    seen = nvml.visible_gpus()
    assert [g.uuid for g in seen] == [devices[0].uuid, devices[2].uuid]
    assert [g.nvml_index for g in seen] == [1, 0]
    assert [g.order for g in seen] == [0, 2]


def test_mig_slice_is_resolved_by_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = h100s(2)
    mig = FakeGpu(uuid="MIG-1111", pci_bus_id="", name="NVIDIA H100 80GB HBM3 MIG 1g.10gb",
                  total_gib=10, parent=devices[1], reasons=0)
    FakeNvml(devices, migs=[mig]).install(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-1111")
    [g] = nvml.visible_gpus()
    assert g.mig and g.order == 1 and g.memory_total_mib == 10 * 1024
    devices[1].reasons = THERMAL  # the board's clocks, read through the parent
    assert nvml.read_gpu(sys.modules["pynvml"], g).reasons == ("thermal slowdown (software)",)
    assert cuda_env([g])["CUDA_VISIBLE_DEVICES"] == "MIG-1111"


def test_pinning_env_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a worker or engine is pinned to is exactly what it then resolves."""
    FakeNvml(h100s(4), nvml_order=[3, 2, 1, 0]).install(monkeypatch)
    every = nvml.visible_gpus()
    for chosen in ([every[2]], [every[3], every[1]]):
        monkeypatch.setattr(os, "environ", {**os.environ, **cuda_env(chosen)})
        assert nvml.visible_gpus() == chosen


def test_fake_gpus_are_test_only_and_honour_visibility(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(nvml.FAKE_GPUS_ENV, "GPU-fake-x,GPU-fake-y")
    assert [g.uuid for g in nvml.visible_gpus()] == ["GPU-fake-x", "GPU-fake-y"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [g.uuid for g in nvml.visible_gpus()] == ["GPU-fake-y"]
    monkeypatch.setenv(nvml.FAKE_GPUS_ENV, "3")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert len(nvml.visible_gpus()) == 3


# -- fingerprint and hardware key count the engine's GPUs ----------------------------


def test_hardware_key_counts_the_engines_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml(h100s(4)).install(monkeypatch)
    every = nvml.visible_gpus()
    assert collect_fingerprint("gpu").hardware_key == "nvidia-h100-80gb-hbm3-x4"
    assert collect_fingerprint("gpu", every[2:4]).hardware_key == "nvidia-h100-80gb-hbm3-x2"
    assert collect_fingerprint("gpu", every[1:2]).hardware_key == "nvidia-h100-80gb-hbm3-x1"


# -- guards: every GPU the engine uses, on every trial -------------------------------


def _fake_rounds(monkeypatch: pytest.MonkeyPatch, during: dict[int, Any]) -> list[int]:
    """Replace the vLLM round with a 60 ms one; ``during[n]`` runs while round n lasts."""
    calls: list[int] = []

    def run_round(llm: Any, prompts: list[list[int]], output_len: int, tag: str) -> Any:
        n = len(calls)
        calls.append(n)
        undo = during.get(n, lambda: (lambda: None))()
        start = time.perf_counter()
        time.sleep(0.06)
        end = time.perf_counter()
        undo()
        timings = {f"{tag}-{i}": RequestTiming(submitted=start, first=start + 0.01, last=end,
                                               tokens=output_len, chunk_gaps=[0.01])
                   for i in range(len(prompts))}
        return end - start, timings

    monkeypatch.setattr(workload_mod, "run_round", run_round)
    return calls


def _set(obj: Any, **values: Any) -> Any:
    """A change to a fake GPU during a round, and its undo."""
    def apply() -> Any:
        old = {k: getattr(obj, k) for k in values}
        for k, v in values.items():
            setattr(obj, k, v)
        return lambda: [setattr(obj, k, v) for k, v in old.items()]
    return apply


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> tuple[list[FakeGpu], list[VisibleGpu]]:
    """A tp=2 engine's GPUs on bare metal: the engine's own PID is seen on both."""
    devices = h100s(4)
    for d in devices[1:3]:
        d.procs = {os.getpid(): 30.0}
        d.used_gib = 30.5
    FakeNvml(devices).install(monkeypatch)
    every = nvml.visible_gpus()
    return devices, every[1:3]


def _measure(sampler: ResourceSampler, trials: int = 3) -> list[Any]:
    sampler.interval_s = 0.005
    sampler.start()
    try:
        wl = Workload(batch=2, input_len=4, output_len=4, trials=trials, warmup=0)
        return measure(object(), wl, 1000, check=sampler.disturbances)
    finally:
        sampler.stop()


def test_throttled_second_gpu_marks_the_trial_and_is_remeasured(
    monkeypatch: pytest.MonkeyPatch, two_gpus: tuple[list[FakeGpu], list[VisibleGpu]]
) -> None:
    devices, engine_gpus = two_gpus
    # Round 1 (the second trial) runs while GPU 2, the engine's second GPU, is held
    # down by heat; the engine's own processes are visible the whole time.
    calls = _fake_rounds(monkeypatch, {1: _set(devices[2], reasons=THERMAL, temp_c=91)})
    trials = _measure(ResourceSampler(device="gpu", gpus=engine_gpus))
    assert len(calls) == 4  # three trials plus one re-measure
    assert [t.remeasured for t in trials] == [False, True, False]
    marks = " | ".join(trials[1].disturbances)
    assert "first try: clocks held down: thermal slowdown (software) on GPU 2" in marks
    assert "first try: GPU temperature reached 91 C" in marks
    assert trials[0].disturbances == trials[2].disturbances == ()


def test_another_process_on_an_engine_gpu_is_flagged(
    monkeypatch: pytest.MonkeyPatch, two_gpus: tuple[list[FakeGpu], list[VisibleGpu]]
) -> None:
    devices, engine_gpus = two_gpus
    shared = {os.getpid(): 30.0, 4242: 5.0}
    # Busy in the first try and in the re-measure: the mark stays as measured.
    calls = _fake_rounds(monkeypatch, {0: _set(devices[1], procs=shared),
                                       1: _set(devices[1], procs=shared)})
    trials = _measure(ResourceSampler(device="gpu", gpus=engine_gpus), trials=2)
    assert len(calls) == 3
    assert trials[0].remeasured
    assert trials[0].disturbances == ("other processes on the GPU: pids 4242",)
    assert not trials[1].remeasured


def test_gpus_the_engine_does_not_use_are_not_watched(
    monkeypatch: pytest.MonkeyPatch, two_gpus: tuple[list[FakeGpu], list[VisibleGpu]]
) -> None:
    devices, engine_gpus = two_gpus
    _fake_rounds(monkeypatch, {0: _set(devices[0], reasons=THERMAL, procs={99: 70.0}),
                               1: _set(devices[3], reasons=THERMAL, procs={98: 70.0})})
    trials = _measure(ResourceSampler(device="gpu", gpus=engine_gpus), trials=2)
    assert [t.remeasured for t in trials] == [False, False]


def test_short_power_capping_is_tolerated(
    monkeypatch: pytest.MonkeyPatch, two_gpus: tuple[list[FakeGpu], list[VisibleGpu]]
) -> None:
    devices, engine_gpus = two_gpus
    sampler = ResourceSampler(device="gpu", gpus=engine_gpus)
    devices[1].reasons = POWER_CAP
    t0 = time.perf_counter()
    sampler.samples.append(sampler.sample())
    devices[1].reasons = 0
    sampler.samples.extend(sampler.sample() for _ in range(9))
    assert sampler.disturbances(t0, time.perf_counter()) == []  # 10% of samples < 25%
    devices[1].reasons = POWER_CAP
    sampler.samples.extend(sampler.sample() for _ in range(10))
    assert sampler.disturbances(t0, time.perf_counter()) == [
        "clocks held down: power cap on GPU 1 in 55% of samples"
    ]


def test_memory_sums_the_engines_gpus_and_power_too(
    two_gpus: tuple[list[FakeGpu], list[VisibleGpu]]
) -> None:
    devices, engine_gpus = two_gpus
    devices[0].used_gib = 70.0  # someone else's GPU: not counted
    s = ResourceSampler(device="gpu", gpus=engine_gpus).sample()
    assert s.process_gib == pytest.approx(60.0, abs=0.01)
    assert s.device_gib == pytest.approx(61.0, abs=0.01)
    assert s.power_w == pytest.approx(600.0)


def test_host_pids_in_a_container_fall_back_to_device_growth(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = h100s(2)
    FakeNvml(devices).install(monkeypatch)
    gpus = nvml.visible_gpus()
    sampler = ResourceSampler(device="gpu", gpus=gpus)  # idle: 0.5 GiB each
    for d in devices:
        d.procs, d.used_gib = {123456: 0.0}, 20.5  # a host PID, unknown here
    s = sampler.sample()
    assert s.process_gib == pytest.approx(40.0, abs=0.01)
    assert s.foreign == ()


# -- the memory-release check watches the engine's GPUs ------------------------------


def _handle(gpus: list[VisibleGpu], before: frozenset[int] = frozenset()) -> EngineHandle:
    return EngineHandle(EngineConfig(model="tiny-llama-2l", tp=len(gpus)), None, "gpu", {},  # type: ignore[arg-type]
                        "/tmp/x.log", gpu_pids_before=before, gpus=tuple(gpus))


def test_release_check_names_what_still_holds_the_engines_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = h100s(4)
    FakeNvml(devices).install(monkeypatch)
    every = nvml.visible_gpus()
    devices[0].procs = {111: 40.0}  # another engine's GPU: not ours to wait for
    wait_for_gpu_release(_handle(every[2:4]), timeout_s=0.2)
    devices[3].procs = {222: 12.0}
    with pytest.raises(EngineError, match=r"not released .*pid 222 holds 12.0 GiB"):
        wait_for_gpu_release(_handle(every[2:4]), timeout_s=0.2)
    wait_for_gpu_release(_handle(every[2:4], before=frozenset({222})), timeout_s=0.2)


# -- leases: owned first, borrow, never two engines on one GPU ------------------------


def test_assign_gives_each_worker_its_own_block() -> None:
    gpus = _gpus(["H100"] * 5)
    blocks = [assign(gpus, i, 2) for i in range(2)]
    assert [[g.order for g in b] for b in blocks] == [[0, 1], [2, 3]]
    assert [g.order for g in assign(gpus, 3, 5)] == [3]
    with pytest.raises(NotEnoughGpus, match="3 workers but only 2 GPU"):
        assign(gpus[:2], 0, 3)


def test_leases_borrow_in_pool_order(tmp_path: Path) -> None:
    gpus = _gpus(["H100"] * 4)
    leases = GpuLeases(gpus[2:3], gpus, lock_dir=tmp_path)
    assert [g.order for g in leases.choose(1)] == [2]
    assert [g.order for g in leases.choose(2)] == [2, 0]
    assert [g.order for g in leases.acquire(3)] == [2, 0, 1]
    leases.release()
    with pytest.raises(NotEnoughGpus, match="tp=5 needs 5 GPUs, but this run has 4"):
        leases.choose(5)


def test_a_leased_gpu_is_not_given_to_another_process(tmp_path: Path) -> None:
    gpus = _gpus(["H100"] * 2)
    leases = GpuLeases(gpus[:1], gpus, lock_dir=tmp_path)
    leases.acquire(2)  # a tp=2 engine borrowed GPU 1
    other = textwrap.dedent(f"""
        import sys, time
        from filelock import FileLock, Timeout
        lock = FileLock({str(tmp_path / (gpus[1].uuid + '.lock'))!r})
        try:
            lock.acquire(timeout=0.5)
        except Timeout:
            print("busy"); sys.exit(0)
        print("free")
    """)
    run = [sys.executable, "-c", other]
    assert subprocess.run(run, capture_output=True, text=True, check=True).stdout.strip() == "busy"
    leases.release()
    assert subprocess.run(run, capture_output=True, text=True, check=True).stdout.strip() == "free"


def test_servers_run_on_leased_gpus_and_give_them_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server backend leases GPUs like offline engines: pinned, locked, released."""
    from pytest_llmperf.backends import server as server_mod
    from pytest_llmperf.config import EngineConfig
    from pytest_llmperf.engine import EngineError

    gpus = _gpus(["H100"] * 2)
    leases = GpuLeases(gpus[1:], gpus, lock_dir=tmp_path)
    started: list[list[int]] = []

    class Handle:
        def __init__(self, config: EngineConfig, gpus: list[VisibleGpu]) -> None:
            self.config, self.gpus, self.stopped = config, gpus, False

        def alive(self) -> bool:
            return not self.stopped

        def stop(self, timeout_s: float = 30.0) -> None:
            self.stopped = True

    def fake_start(config: EngineConfig, device: str, **kw: object) -> Handle:
        gpus = list(kw["gpus"])  # type: ignore[call-overload]
        assert leases.current == gpus  # locked before the server starts
        started.append([g.order for g in gpus])
        if config.tp == 2 and len(started) > 2:
            raise EngineError("start", "no")
        return Handle(config, gpus)

    monkeypatch.setattr(server_mod, "start_server", fake_start)
    manager = server_mod.ServerManager(device="gpu", leases=leases)
    manager.get(EngineConfig(model="tiny-llama-2l"))
    assert started == [[1]]
    manager.get(EngineConfig(model="tiny-llama-2l", tp=2))  # borrows GPU 0
    assert started == [[1], [1, 0]] and len(leases.current) == 2
    manager.close()
    assert leases.current == []
    with pytest.raises(EngineError):
        manager.get(EngineConfig(model="tiny-llama-2l", tp=2, max_num_seqs=3))
    assert leases.current == []  # a failed start gives its GPUs back


def test_a_server_is_started_with_its_gpus_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_llmperf.backends import server as server_mod
    from pytest_llmperf.config import EngineConfig

    monkeypatch.setenv("LLMPERF_CACHE_DIR", str(tmp_path / "cache"))
    seen: dict[str, str] = {}

    def fake_command(args: list[str], **kw: object) -> None:
        seen.update(kw["env"])  # type: ignore[arg-type]
        raise RuntimeError("not starting a server here")

    monkeypatch.setattr(server_mod, "start_command", fake_command)
    gpus = _gpus(["H100"] * 3)
    with pytest.raises(RuntimeError, match="not starting"):
        server_mod.start_server(EngineConfig(model="tiny-llama-2l", tp=2), "gpu",
                                log_dir=str(tmp_path), gpus=[gpus[2], gpus[0]])
    assert seen["CUDA_VISIBLE_DEVICES"] == "2,0"
    assert seen["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
