"""Figures derived from a measured result: what it costs, and how close it is to the hardware.

- Cost: a GPU-hour price turns throughput into dollars per million output tokens and
  per successful request, the figures a capacity plan is made of.
- Roofline: a decode step reads every weight once plus the KV cache of every running
  sequence, so bytes per step / time per step is the memory bandwidth a decode-bound
  run achieves; over the GPU's peak (NVML: 2 x max memory clock x bus width / 8) it
  says how far the run is from the physical limit (on an H100, 3.35 TB/s).

Arithmetic over results and the model cards' shapes (cards.py): no pytest, no vLLM, no
NVML here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cards import draft_model, has_draft_model, predicted_weight_bytes, resolve_model
from .results import PerfResult

GIB = 2**30
# The figures this module derives (metrics.py describes each); a report's "derived" holds them.
FIGURES = ("cost_per_mtok_usd", "cost_per_request_usd", "roofline_share", "decode_bytes_s")


def cost_figures(result: PerfResult, usd_per_gpu_hour: float, gpus: int) -> dict[str, float]:
    """``cost_per_mtok_usd`` and ``cost_per_request_usd`` at a price per GPU-hour."""
    usd_per_s = usd_per_gpu_hour * gpus / 3600.0
    out: dict[str, float] = {}
    if result.output_tok_s > 0:
        out["cost_per_mtok_usd"] = usd_per_s / result.output_tok_s * 1e6
    if result.requests_s > 0:
        out["cost_per_request_usd"] = usd_per_s / result.requests_s
    return out


def decode_bound(result: PerfResult) -> bool:
    """True when decoding, not prefill, takes most of a request's time."""
    e2e = result.e2e.mean
    tpot = result.tpot.p50
    if not e2e or e2e != e2e or tpot != tpot or result.workload.output_len < 2:
        return False
    return tpot * (result.workload.output_len - 1) > 0.5 * e2e


@dataclass(frozen=True)
class Speculation:
    """What speculative decoding adds to a decode step: each step verifies the drafts and
    emits ``tokens_per_step`` tokens per sequence (1 + accepted / drafts, from vLLM's
    counters), and a draft model reads its weights and its KV ``draft_passes`` times (one
    pass per proposed token; 0 for n-gram proposers, which read no weights)."""

    tokens_per_step: float
    draft_passes: int = 0
    draft_weights_bytes: float = 0.0
    draft_kv_bytes_per_token: int = 0


@dataclass(frozen=True)
class Roofline:
    """Bytes one decode step reads, the bandwidth that achieves, and its share of peak."""

    bytes_per_step: float
    achieved_bytes_s: float
    peak_bytes_s: float

    @property
    def share(self) -> float:
        return self.achieved_bytes_s / self.peak_bytes_s


def roofline(
    result: PerfResult, weights_bytes: float, kv_bytes_per_token: int, peak_bytes_s_per_gpu: float,
    spec: Speculation | None = None,
) -> Roofline | None:
    """Achieved decode bandwidth of a run, or None when it cannot be worked out.

    Every running sequence reads, on average over the run, its prompt plus half its
    output of KV cache per step; the step time is the median TPOT (one token per
    sequence per step, or ``spec.tokens_per_step`` with speculative decoding, where a
    draft model's passes add their own reads). ``weights_bytes`` and
    ``kv_bytes_per_token`` are the target model's. With tensor parallelism the bytes
    and the peak both split across the GPUs, so the share is the same per GPU and in total.
    """
    tpot_s = result.tpot.p50 / 1e3
    if not tpot_s or tpot_s != tpot_s or weights_bytes <= 0 or peak_bytes_s_per_gpu <= 0:
        return None
    w = result.workload
    concurrent = min(w.batch, result.engine.max_num_seqs or w.batch)
    kv_tokens = concurrent * (w.input_len + (w.output_len - 1) / 2)
    per_step = weights_bytes + kv_tokens * kv_bytes_per_token
    step_s = tpot_s
    if spec is not None:
        if spec.tokens_per_step < 1:
            return None
        step_s = tpot_s * spec.tokens_per_step
        per_step += spec.draft_passes * (spec.draft_weights_bytes + kv_tokens * spec.draft_kv_bytes_per_token)
    return Roofline(per_step, per_step / step_s, peak_bytes_s_per_gpu * result.engine.tp)


def weights_bytes(result: PerfResult, predicted: int | None) -> float | None:
    """Weight bytes of the whole model: vLLM's per-GPU load size times TP, else the card's."""
    if result.memory.weights_gib:
        return result.memory.weights_gib * GIB * result.engine.tp
    return float(predicted) if predicted else None


def figures_text(result: PerfResult, figures: dict[str, float]) -> str:
    """Cost, roofline and vLLM's counters of a result as one line for the reports."""
    parts = []
    if "cost_per_mtok_usd" in figures:
        parts.append(f"${figures['cost_per_mtok_usd']:,.3f} per M output tokens")
    if "cost_per_request_usd" in figures:
        parts.append(f"${figures['cost_per_request_usd']:,.5f} per request")
    if "roofline_share" in figures:
        parts.append(f"decode reads {figures.get('decode_bytes_s', 0.0) / 1e12:.2f} TB/s, "
                     f"{figures['roofline_share']:.0%} of peak memory bandwidth")
    if result.preemptions:
        parts.append(f"{result.preemptions} preemption(s)")
    if result.spec_acceptance_rate is not None:
        parts.append(f"draft acceptance {result.spec_acceptance_rate:.0%}")
    return "; ".join(parts)


def derived_figures(result: PerfResult, *, usd_per_gpu_hour: float | None = None,
                    peak_bytes_s: float | None = None) -> dict[str, float]:
    """The figures of ``FIGURES`` that apply to ``result``: cost when a GPU-hour price is
    given, and the roofline of a decode-bound run when the GPU's peak memory bandwidth
    (bytes/s per GPU) is known and the card's shapes give the bytes a step reads."""
    out: dict[str, float] = {}
    if usd_per_gpu_hour is not None:
        gpus = result.engine.tp if result.device == "gpu" else 1
        out.update(cost_figures(result, usd_per_gpu_hour, gpus))
    kv = result.memory.predicted_kv_bytes_per_token
    if peak_bytes_s and kv and decode_bound(result):
        source = resolve_model(result.engine.model)
        predicted = predicted_weight_bytes(source.config, result.engine.dtype) if source.config else None
        w = weights_bytes(result, predicted)
        spec = None
        if w and result.engine.speculative_config:
            w, kv, spec = speculation_reads(result, w, kv, logged=bool(result.memory.weights_gib))
        line = roofline(result, w, kv, peak_bytes_s, spec) if w and kv else None
        if line is not None:
            out["roofline_share"] = line.share
            out["decode_bytes_s"] = line.achieved_bytes_s
    return out


def speculation_reads(result: PerfResult, w: float, kv: int,
                      logged: bool) -> tuple[float, int, Speculation | None]:
    """(target weights, target KV bytes per token, Speculation) of a speculative run: vLLM
    logs the draft's weights inside its load size and the engine's KV bytes per token
    count the draft's layers, so the draft's share moves to the passes it makes; (0, 0,
    None) where the tokens per step or the draft's shapes are unknown (no roofline)."""
    config = result.engine.speculative_config or {}
    per_step = result.spec_tokens_per_step
    if per_step is None:
        return 0.0, 0, None
    if not has_draft_model(config):
        return w, kv, Speculation(per_step)
    draft = draft_model(config)
    draft_w = predicted_weight_bytes(draft.config, result.engine.dtype) if draft and draft.config else None
    draft_kv = draft.kv_bytes_per_token(result.engine.kv_cache_dtype, result.engine.dtype) if draft else None
    if not draft_w or not draft_kv or kv <= draft_kv:
        return 0.0, 0, None
    passes = int(config.get("num_speculative_tokens") or 1)
    return (w - draft_w if logged else w), kv - draft_kv, Speculation(per_step, passes, draft_w, draft_kv)
