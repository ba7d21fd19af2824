"""What a perf test asks for: the engine to start, the workload to run, the limits.

Marker keywords are parsed here (not in the plugin) so a script can build the same
objects from a dict. Every rejection names the key and suggests the closest valid one.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .metrics import METRICS, tolerance_limit, tolerance_range

CPU_STAND_IN = "tiny-llama-2l"


class ConfigError(ValueError):
    """A perf marker or config dict is invalid; the message says which key and why."""


def _freeze(value: Any) -> Any:
    """Make dict/list values hashable and order-independent for engine sharing."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class EngineConfig:
    """Arguments of one vLLM ``LLM``; equal configs share one engine process."""

    model: str
    tp: int = 1
    dtype: str = "auto"
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    enforce_eager: bool = False
    kv_cache_dtype: str = "auto"
    quantization: str | None = None
    speculative_config: dict[str, Any] | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def key(self) -> tuple[Any, ...]:
        """Hashable identity used to group tests onto one engine."""
        return tuple(_freeze(getattr(self, f.name)) for f in fields(self))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EngineConfig:
        return cls(**dict(data))

    def label(self) -> str:
        """Short human label for tables: model and the knobs that are set."""
        parts = [self.model, f"tp{self.tp}"]
        if self.max_num_seqs:
            parts.append(f"seqs{self.max_num_seqs}")
        if self.max_model_len:
            parts.append(f"len{self.max_model_len}")
        if self.kv_cache_dtype != "auto":
            parts.append(f"kv-{self.kv_cache_dtype}")
        if self.quantization:
            parts.append(self.quantization)
        return " ".join(parts)

    def describe(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


@dataclass(frozen=True)
class Workload:
    """An offline throughput/latency workload: ``batch`` prompts submitted at once.

    Prompts are random token ids (distinct per prompt, so the prefix cache never
    helps by accident) of ``input_len`` tokens; each generates exactly
    ``output_len`` tokens (``ignore_eos``). ``warmup`` untimed runs precede
    ``trials`` timed ones; more trials run until ``min_duration_s`` is covered.
    ``slowdown`` injects a known delay (a fraction of throughput) to prove the gate.
    """

    batch: int = 1
    input_len: int = 128
    output_len: int = 128
    trials: int = 3
    warmup: int = 1
    min_duration_s: float = 0.0
    seed: int = 0
    slowdown: float = 0.0
    # The served path (backend="server"): see pytest_llmperf/loads/spec.py for the rules.
    backend: str = "offline"
    load: str | None = None  # synchronous | concurrency | rate | sweep | replay
    concurrency: int | None = None
    rate: float | None = None
    burstiness: float = 1.0
    num_requests: int | None = None
    dataset: str = "random"  # random | sharegpt | shared_prefix | multiturn
    length_dist: str = "fixed"  # fixed | uniform | normal (random dataset)
    length_spread: float = 0.0
    api: str = "completions"  # completions | chat
    prompt_format: str = "ids"  # ids | text: what a completions prompt carries (random dataset)
    slo: dict[str, float] = field(default_factory=dict)
    max_error_rate: float = 0.0
    sweep: dict[str, list[float]] = field(default_factory=dict)  # {"concurrency": [1, 4, 8]}
    trace: str | None = None  # load="replay": JSONL of arrival_s, input_len, output_len
    dataset_path: str | None = None  # dataset="sharegpt"
    prefix_len: int | None = None  # dataset="shared_prefix": tokens shared by a group
    num_prefixes: int = 1
    turns: int = 1  # dataset="multiturn": turns per chat
    think_time_s: float = 0.0  # pause between a reply and the next user message

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Workload:
        return cls(**dict(data))

    def label(self) -> str:
        if self.backend == "server":
            from .loads.spec import load_label

            return f"{load_label(self)} {self.input_len}/{self.output_len}"
        return f"b{self.batch} {self.input_len}/{self.output_len}"


@dataclass(frozen=True)
class Limits:
    """Absolute floors and ceilings a test must meet regardless of any baseline."""

    min_tok_s: float | None = None
    min_total_tok_s: float | None = None
    max_ttft_p50_ms: float | None = None
    max_ttft_p99_ms: float | None = None
    max_tpot_p50_ms: float | None = None
    max_tpot_p99_ms: float | None = None
    max_itl_p99_ms: float | None = None
    max_e2e_p99_ms: float | None = None
    max_gpu_mem_gib: float | None = None
    min_kv_cache_tokens: int | None = None

    def items(self) -> list[tuple[str, float]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]


@dataclass(frozen=True)
class PerfSpec:
    """Everything one ``@perf`` marker says."""

    engine: EngineConfig
    workload: Workload
    limits: Limits
    tolerance: float | None = None
    tolerances: dict[str, float] = field(default_factory=dict)
    device: str = "auto"  # "gpu", "cpu" or "auto" (CPU build allowed when no --gpu)
    cpu: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None

    def on_cpu(self, memory_fraction: float) -> tuple[EngineConfig, Workload]:
        """The engine and workload this test runs on vLLM's CPU build.

        A GPU-sized model would take minutes per token on two cores, so a card is
        swapped for the tiny card unless ``cpu={...}`` says otherwise; on CPU the
        memory fraction means RAM, and eager mode cuts start-up to seconds.
        """
        overrides = dict(self.cpu)
        if "model" not in overrides:
            overrides["model"] = CPU_STAND_IN
        engine_kw = {k: v for k, v in overrides.items() if k in _ENGINE_KEYS}
        workload_kw = {k: v for k, v in overrides.items() if k in _WORKLOAD_KEYS}
        engine_kw.setdefault("gpu_memory_utilization", memory_fraction)
        engine_kw.setdefault("enforce_eager", True)
        workload = replace(self.workload, **workload_kw)
        if "max_num_seqs" not in engine_kw and self.engine.max_num_seqs == self.workload.batch:
            engine_kw["max_num_seqs"] = workload.batch
        return replace(self.engine, **engine_kw), workload

    def gate_tolerances(self, device: str) -> tuple[float | None, dict[str, float]]:
        """(tolerance, per-metric tolerances) the gate uses on ``device``: on the CPU
        build, ``cpu={"tolerance": ..., "tolerances": {...}}`` replaces the marker's own,
        since CPU runners are noisier than GPUs."""
        if device == "cpu" and ("tolerance" in self.cpu or "tolerances" in self.cpu):
            return self.cpu.get("tolerance"), dict(self.cpu.get("tolerances") or {})
        return self.tolerance, dict(self.tolerances)

    def substituted_on_cpu(self) -> bool:
        """True when the CPU run measures a different model than the marker names."""
        return self.cpu.get("model", CPU_STAND_IN) != self.engine.model


_ENGINE_KEYS = {f.name for f in fields(EngineConfig)}
_WORKLOAD_KEYS = {f.name for f in fields(Workload)}
_LIMIT_KEYS = {f.name for f in fields(Limits)}
_OTHER_KEYS = {"tolerance", "tolerances", "device", "cpu", "timeout_s"}
ALL_KEYS: frozenset[str] = frozenset(_ENGINE_KEYS | _WORKLOAD_KEYS | _LIMIT_KEYS | _OTHER_KEYS)

_TYPES: dict[str, tuple[type, ...]] = {}
for _cls in (EngineConfig, Workload, Limits):
    for _f in fields(_cls):
        _t = str(_f.type)
        if _t.startswith("int"):
            _TYPES[_f.name] = (int,)
        elif _t.startswith("float"):
            _TYPES[_f.name] = (int, float)
        elif _t.startswith("bool"):
            _TYPES[_f.name] = (bool,)
        elif _t.startswith("str"):
            _TYPES[_f.name] = (str,)
        elif _t.startswith("dict"):
            _TYPES[_f.name] = (dict,)
_TYPES.update({"tolerance": (int, float), "tolerances": (dict,), "device": (str,),
               "cpu": (dict,), "timeout_s": (int, float)})

_POSITIVE_INT = {"tp", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "batch",
                 "input_len", "output_len", "trials", "concurrency", "num_requests", "prefix_len", "num_prefixes",
                 "turns"}


def suggest(key: str, valid: frozenset[str] | set[str]) -> str:
    """' (did you mean 'x'?)' for the closest valid key, or '' when nothing is close."""
    match = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _check_type(key: str, value: Any) -> None:
    expected = _TYPES.get(key)
    if value is None or expected is None:
        return
    # bool is an int subclass; reject True for numeric keys and 1 for booleans.
    if isinstance(value, bool) and bool not in expected:
        raise ConfigError(f"{key}={value!r}: expected {'/'.join(t.__name__ for t in expected)}")
    if not isinstance(value, expected):
        raise ConfigError(
            f"{key}={value!r}: expected {'/'.join(t.__name__ for t in expected)}, "
            f"got {type(value).__name__}"
        )
    if key in _POSITIVE_INT and isinstance(value, int) and value < 1:
        raise ConfigError(f"{key}={value!r}: must be at least 1")


def _check_tolerances(kwargs: Mapping[str, Any], where: str) -> tuple[float | None, dict[str, float]]:
    tolerances = dict(kwargs.get("tolerances") or {})
    for name, tol in tolerances.items():
        if name not in METRICS:
            raise ConfigError(f"{where}tolerances: unknown metric {name!r}{suggest(name, set(METRICS))}")
        limit = tolerance_limit(name)
        if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not 0 < tol < limit:
            raise ConfigError(f"{where}tolerances[{name!r}]={tol!r}: must be a fraction in {tolerance_range(name)}")
    tolerance = kwargs.get("tolerance")
    if tolerance is not None and not 0 < tolerance < 1:
        raise ConfigError(f"{where}tolerance={tolerance!r}: must be a fraction in (0, 1), e.g. 0.03")
    return tolerance, tolerances


def parse_perf_kwargs(kwargs: Mapping[str, Any]) -> PerfSpec:
    """Turn ``@perf(...)`` keywords into a :class:`PerfSpec`, or raise ConfigError."""
    for key in kwargs:
        if key not in ALL_KEYS:
            raise ConfigError(f"unknown perf key {key!r}{suggest(key, ALL_KEYS)}")
    for key, value in kwargs.items():
        _check_type(key, value)
    if "model" not in kwargs:
        raise ConfigError("perf marker needs model=... (a card name, a local directory or a model id)")

    engine_kw = {k: v for k, v in kwargs.items() if k in _ENGINE_KEYS}
    workload_kw = {k: v for k, v in kwargs.items() if k in _WORKLOAD_KEYS}
    limit_kw = {k: v for k, v in kwargs.items() if k in _LIMIT_KEYS}

    workload = Workload(**workload_kw)
    if workload.warmup < 0:
        raise ConfigError(f"warmup={workload.warmup}: must be 0 or more")
    if not 0.0 <= workload.slowdown < 0.9:
        raise ConfigError(f"slowdown={workload.slowdown}: must be in [0, 0.9)")
    if workload.min_duration_s < 0:
        raise ConfigError(f"min_duration_s={workload.min_duration_s}: must be 0 or more")
    from .loads.spec import check_serving

    check_serving(workload, set(workload_kw))
    # A batch larger than the engine admits is a different experiment (waves);
    # default the engine's concurrency to the batch so "batch=24" means 24 at once.
    # A server keeps vLLM's own default, as `vllm serve` would; the load sets the pace.
    if workload.backend != "server":
        engine_kw.setdefault("max_num_seqs", workload.batch)
    engine = EngineConfig(**engine_kw)
    if not 0.0 < engine.gpu_memory_utilization <= 1.0:
        raise ConfigError(
            f"gpu_memory_utilization={engine.gpu_memory_utilization}: must be in (0, 1]"
        )
    if engine.max_model_len is not None and workload.input_len + workload.output_len > engine.max_model_len:
        raise ConfigError(
            f"input_len + output_len = {workload.input_len + workload.output_len} exceeds "
            f"max_model_len={engine.max_model_len}"
        )

    tolerance, tolerances = _check_tolerances(kwargs, "")
    device = kwargs.get("device", "auto")
    if device not in ("auto", "gpu", "cpu"):
        raise ConfigError(f"device={device!r}: must be 'auto', 'gpu' or 'cpu'")
    cpu = dict(kwargs.get("cpu") or {})
    cpu_keys = _ENGINE_KEYS | _WORKLOAD_KEYS | {"tolerance", "tolerances"}
    for key, value in cpu.items():
        if key not in cpu_keys:
            raise ConfigError(f"cpu: unknown key {key!r}{suggest(key, cpu_keys)}")
        _check_type(key, value)
    _check_tolerances(cpu, "cpu: ")
    cpu_workload = {k: v for k, v in cpu.items() if k in _WORKLOAD_KEYS}
    if cpu_workload:
        try:
            check_serving(replace(workload, **cpu_workload), set(workload_kw) | set(cpu_workload))
        except ConfigError as exc:
            raise ConfigError(f"cpu: {exc}") from None
    if device == "cpu" and "model" not in cpu:
        cpu["model"] = kwargs["model"]
    timeout = kwargs.get("timeout_s")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout_s={timeout!r}: must be positive")
    return PerfSpec(
        engine=engine,
        workload=workload,
        limits=Limits(**limit_kw),
        tolerance=tolerance,
        tolerances=tolerances,
        device=device,
        cpu=cpu,
        timeout_s=timeout,
    )
