"""Per-request client records -> one trial's serving metrics (``vllm bench serve``'s definitions).

- TTFT: POST to the first chunk carrying a choice; E2EL: POST to the last such chunk.
- TPOT: (E2EL - TTFT) / (output tokens - 1) per request with more than one token.
- ITL: every gap between consecutive chunks, over all requests.
- NTPOT: E2EL / output tokens per request (normalized time per output token).
- Throughput: completed requests, output tokens and prompt + output tokens, each over
  the run's wall time (first send to last completion), tokens from the ``usage`` field.
- Goodput: completed requests meeting every SLO (``ttft_ms``, ``tpot_ms``, ``e2el_ms``;
  a request of one token has TPOT 0, as there) per second.
Percentiles interpolate linearly (numpy's default). Failed requests count in
``failed_requests`` and quote their errors; they add no latency sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .client.records import RequestRecord
from .metrics import Distribution
from .results import TrialResult

MAX_QUOTED_ERRORS = 3


def first_errors(records: Sequence[RequestRecord], limit: int = MAX_QUOTED_ERRORS) -> tuple[str, ...]:
    """The first ``limit`` distinct errors, each with how often it occurred."""
    counts: dict[str, int] = {}
    for r in records:
        if r.error is not None:
            counts[r.error] = counts.get(r.error, 0) + 1
    return tuple(f"{msg} (x{n})" if n > 1 else msg for msg, n in list(counts.items())[:limit])


def meets_slo(record: RequestRecord, slo: Mapping[str, float]) -> bool:
    tpot = record.tpot_s or 0.0
    values = {"ttft_ms": record.ttft_s * 1e3, "tpot_ms": tpot * 1e3, "e2el_ms": record.e2el_s * 1e3}
    return all(values[k] <= bound for k, bound in slo.items())


def summarise_records(
    records: Sequence[RequestRecord],
    elapsed_s: float,
    slo: Mapping[str, float] | None = None,
    stopped: str | None = None,
) -> TrialResult:
    ok = [r for r in records if r.ok]
    ttft = [r.ttft_s * 1e3 for r in ok]
    e2el = [r.e2el_s * 1e3 for r in ok]
    tpot = [t * 1e3 for r in ok if (t := r.tpot_s) is not None]
    itl = [g * 1e3 for r in ok for g in r.itls_s]
    ntpot = [r.e2el_s * 1e3 / r.output_tokens for r in ok if r.output_tokens]
    return TrialResult(
        elapsed_s=elapsed_s,
        num_requests=len(ok),
        input_tokens=sum(r.prompt_tokens or 0 for r in ok),
        output_tokens=sum(r.output_tokens or 0 for r in ok),
        ttft_ms=Distribution.from_samples(ttft),
        tpot_ms=Distribution.from_samples(tpot),
        itl_ms=Distribution.from_samples(itl),
        e2e_ms=Distribution.from_samples(e2el),
        failed_requests=len(records) - len(ok),
        bursty_requests=sum(r.bursty for r in ok),
        good_requests=sum(meets_slo(r, slo) for r in ok) if slo else None,
        ntpot_ms=Distribution.from_samples(ntpot),
        errors=first_errors(records),
        stopped=stopped,
    )
