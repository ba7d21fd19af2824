"""Which serving keys go together, checked when the marker is read (a collection error).

The offline backend submits ``batch`` prompts at once; everything about a load shape,
a dataset or SLOs needs ``backend="server"``. On the server, ``load`` names the shape
(default ``concurrency``, with ``concurrency`` defaulting to ``batch``), and each shape
takes only its own keys, so a key that would be silently ignored is an error instead.
"""

from __future__ import annotations

from typing import Any

BACKENDS = ("offline", "server")
LOADS = ("synchronous", "concurrency", "rate", "sweep", "replay")
DATASETS = ("random", "sharegpt", "shared_prefix", "multiturn")
LENGTH_DISTS = ("fixed", "uniform", "normal")
APIS = ("completions", "chat")
SLO_KEYS = ("ttft_ms", "tpot_ms", "e2el_ms")

# Keys that only mean something on the served path.
SERVER_ONLY = ("load", "concurrency", "rate", "burstiness", "num_requests", "dataset",
               "length_dist", "length_spread", "api", "slo", "max_error_rate")
# Load keys and the shapes that take them.
_LOAD_KEYS: dict[str, tuple[str, ...]] = {
    "concurrency": ("concurrency", "rate", "sweep"),  # rate/sweep: a cap on requests in flight
    "rate": ("rate",),
    "burstiness": ("rate", "sweep"),
}


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
    if load == "rate" and workload.rate is None:
        raise _error("load='rate' needs rate=REQUESTS_PER_SECOND, e.g. rate=4")
    if workload.rate is not None and not workload.rate > 0:
        raise _error(f"rate={workload.rate!r}: must be positive")
    if not workload.burstiness > 0:
        raise _error(f"burstiness={workload.burstiness!r}: must be positive (1 = Poisson)")
    if workload.dataset not in DATASETS:
        raise _error(f"dataset={workload.dataset!r}: must be one of {', '.join(map(repr, DATASETS))}")
    if workload.length_dist not in LENGTH_DISTS:
        raise _error(f"length_dist={workload.length_dist!r}: must be one of "
                     f"{', '.join(map(repr, LENGTH_DISTS))}")
    if not 0 <= workload.length_spread < 1:
        raise _error(f"length_spread={workload.length_spread!r}: must be a fraction in [0, 1)")
    if workload.length_spread and workload.length_dist == "fixed":
        raise _error("length_spread needs length_dist='uniform' or 'normal'")
    if workload.api not in APIS:
        raise _error(f"api={workload.api!r}: must be one of {', '.join(map(repr, APIS))}")
    for key, value in workload.slo.items():
        if key not in SLO_KEYS:
            from ..config import suggest

            raise _error(f"slo: unknown key {key!r}{suggest(key, set(SLO_KEYS))}; "
                         f"valid: {', '.join(SLO_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise _error(f"slo[{key!r}]={value!r}: must be a positive number of milliseconds")
    if not 0 <= workload.max_error_rate < 1:
        raise _error(f"max_error_rate={workload.max_error_rate!r}: must be a fraction in [0, 1)")
