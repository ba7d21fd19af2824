"""Which serving keys go together, checked when the marker is read (a collection error).

The offline backend submits ``batch`` prompts at once; everything about a load shape,
a dataset or SLOs needs ``backend="server"``. On the server, ``load`` names the shape
(default ``concurrency``, with ``concurrency`` defaulting to ``batch``), and each shape
takes only its own keys, so a key that would be silently ignored is an error instead.
"""

from __future__ import annotations

import os
from typing import Any

BACKENDS = ("offline", "server")
LOADS = ("synchronous", "concurrency", "rate", "sweep", "replay")
DATASETS = ("random", "sharegpt", "shared_prefix", "multiturn")
LENGTH_DISTS = ("fixed", "uniform", "normal")
APIS = ("completions", "chat")
PROMPT_FORMATS = ("ids", "text")
SLO_KEYS = ("ttft_ms", "tpot_ms", "e2el_ms")

# Keys that only mean something on the served path.
SERVER_ONLY = ("load", "concurrency", "rate", "burstiness", "num_requests", "dataset",
               "length_dist", "length_spread", "api", "prompt_format", "slo", "max_error_rate", "sweep", "trace",
               "dataset_path", "prefix_len", "num_prefixes", "turns", "think_time_s")
# Load keys and the shapes that take them.
_LOAD_KEYS: dict[str, tuple[str, ...]] = {
    "concurrency": ("concurrency", "rate", "replay"),  # rate/replay: a cap on requests in flight
    "rate": ("rate",),
    "burstiness": ("rate",),
    "sweep": ("sweep",),
    "trace": ("replay",),
}
# Dataset keys and the dataset that takes them.
_DATASET_KEYS: dict[str, str] = {
    "dataset_path": "sharegpt", "prefix_len": "shared_prefix", "num_prefixes": "shared_prefix",
    "turns": "multiturn", "think_time_s": "multiturn",
}
SWEEP_AXES = ("concurrency", "rate")


def _error(message: str) -> Exception:
    from ..config import ConfigError

    return ConfigError(message)


def resolved_load(workload: Any) -> str:
    return workload.load or "concurrency"


def resolved_concurrency(workload: Any) -> int:
    return int(workload.concurrency or workload.batch)


def resolved_num_requests(workload: Any) -> int:
    """Requests per trial: ``num_requests``, else 4 per client (at least 8) for closed loops."""
    if workload.num_requests:
        return int(workload.num_requests)
    load = resolved_load(workload)
    if load == "synchronous":
        return 8
    if load in ("sweep", "replay"):
        return 0  # sweep: each point resolves its own; replay: the whole trace
    if load == "rate":
        return max(8, round(float(workload.rate) * 10))  # about ten seconds of arrivals
    return max(8, 4 * resolved_concurrency(workload))


def load_label(workload: Any) -> str:
    load = resolved_load(workload)
    if load == "synchronous":
        text = "sync"
    elif load == "concurrency":
        text = f"c{resolved_concurrency(workload)}"
    elif load == "rate":
        text = f"r{workload.rate:g}/s"
        if workload.burstiness != 1.0:
            text += f" b{workload.burstiness:g}"
    elif load == "sweep":
        ((axis, values),) = workload.sweep.items()
        text = f"sweep {axis} {'/'.join(f'{v:g}' for v in values)}"
    else:
        text = load
    if workload.dataset != "random":
        text += f" {workload.dataset}"
    return f"server {text}"


def check_serving(workload: Any, given: set[str]) -> None:
    """Raise ConfigError naming the key and the fix for any serving key out of place."""
    if workload.backend not in BACKENDS:
        raise _error(f"backend={workload.backend!r}: must be one of {', '.join(map(repr, BACKENDS))}")
    if workload.backend == "offline":
        for key in SERVER_ONLY:
            if key in given:
                raise _error(
                    f"{key}={getattr(workload, key)!r} needs backend='server': the offline "
                    "backend submits `batch` prompts at once and has no load shape, dataset "
                    "or SLOs"
                )
        return
    load = resolved_load(workload)
    if load not in LOADS:
        raise _error(f"load={load!r}: must be one of {', '.join(map(repr, LOADS))}")
    for key, shapes in _LOAD_KEYS.items():
        if key in given and load not in shapes:
            raise _error(f"{key}={getattr(workload, key)!r} does not apply to load={load!r} "
                         f"(it applies to load={' or '.join(map(repr, shapes))})")
    if load == "sweep":
        if len(workload.sweep) != 1 or next(iter(workload.sweep)) not in SWEEP_AXES:
            raise _error("load='sweep' needs sweep={'concurrency': [1, 4, 8]} or "
                         "sweep={'rate': [1.0, 2.0, 4.0]} (one axis)")
        ((axis, values),) = workload.sweep.items()
        if (not isinstance(values, (list, tuple)) or not values
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)
                or (axis == "concurrency" and not all(isinstance(v, int) for v in values))):
            raise _error(f"sweep[{axis!r}]={values!r}: must be a non-empty list of positive "
                         f"{'integers' if axis == 'concurrency' else 'numbers'}")
        if list(values) != sorted(set(values)):
            raise _error(f"sweep[{axis!r}]={values!r}: list the load points in increasing order")
    if load == "replay":
        if not workload.trace:
            raise _error("load='replay' needs trace='path/to/trace.jsonl' (lines of "
                         '{"arrival_s": 0.0, "input_len": 128, "output_len": 64})')
        from ..datasets.replay import read_trace

        read_trace(workload.trace)  # raises ConfigError naming the line
    if load == "rate" and workload.rate is None:
        raise _error("load='rate' needs rate=REQUESTS_PER_SECOND, e.g. rate=4")
    if workload.rate is not None and not workload.rate > 0:
        raise _error(f"rate={workload.rate!r}: must be positive")
    if not workload.burstiness > 0:
        raise _error(f"burstiness={workload.burstiness!r}: must be positive (1 = Poisson)")
    if workload.dataset not in DATASETS:
        raise _error(f"dataset={workload.dataset!r}: must be one of {', '.join(map(repr, DATASETS))}")
    for key, dataset in _DATASET_KEYS.items():
        if key in given and workload.dataset != dataset:
            raise _error(f"{key}={getattr(workload, key)!r} needs dataset={dataset!r}")
    if workload.dataset == "sharegpt":
        if not workload.dataset_path:
            raise _error("dataset='sharegpt' needs dataset_path='path/to/sharegpt.json'")
        if not os.path.isfile(workload.dataset_path):
            raise _error(f"dataset_path={workload.dataset_path!r}: no such file")
    if workload.dataset == "shared_prefix":
        if workload.prefix_len is None:
            raise _error("dataset='shared_prefix' needs prefix_len=TOKENS (shared by each group)")
        if workload.prefix_len >= workload.input_len:
            raise _error(f"prefix_len={workload.prefix_len} must be below input_len="
                         f"{workload.input_len} (each prompt is a shared prefix plus its own tail)")
    if workload.dataset == "multiturn" and "api" in given and workload.api != "chat":
        raise _error("dataset='multiturn' talks to /v1/chat/completions: drop api= or set api='chat'")
    if workload.think_time_s < 0:
        raise _error(f"think_time_s={workload.think_time_s!r}: must be 0 or more")
    if workload.dataset == "sharegpt" and workload.length_dist != "fixed":
        raise _error("length_dist does not apply to dataset='sharegpt' (lengths come from the file)")
    if workload.length_dist not in LENGTH_DISTS:
        raise _error(f"length_dist={workload.length_dist!r}: must be one of "
                     f"{', '.join(map(repr, LENGTH_DISTS))}")
    if not 0 <= workload.length_spread < 1:
        raise _error(f"length_spread={workload.length_spread!r}: must be a fraction in [0, 1)")
    if workload.length_spread and workload.length_dist == "fixed":
        raise _error("length_spread needs length_dist='uniform' or 'normal'")
    if workload.api not in APIS:
        raise _error(f"api={workload.api!r}: must be one of {', '.join(map(repr, APIS))}")
    if workload.prompt_format not in PROMPT_FORMATS:
        raise _error(f"prompt_format={workload.prompt_format!r}: must be one of "
                     f"{', '.join(map(repr, PROMPT_FORMATS))}")
    if workload.prompt_format == "text" and (workload.dataset != "random" or workload.api != "completions"):
        raise _error("prompt_format='text' applies to dataset='random' with api='completions' "
                     "(chat messages are always text)")
    for key, value in workload.slo.items():
        if key not in SLO_KEYS:
            from ..config import suggest

            raise _error(f"slo: unknown key {key!r}{suggest(key, set(SLO_KEYS))}; "
                         f"valid: {', '.join(SLO_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise _error(f"slo[{key!r}]={value!r}: must be a positive number of milliseconds")
    if not 0 <= workload.max_error_rate < 1:
        raise _error(f"max_error_rate={workload.max_error_rate!r}: must be a fraction in [0, 1)")
