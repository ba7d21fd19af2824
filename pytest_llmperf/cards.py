"""Model cards: config.json-only copies of real architectures, run with dummy weights.

Serving speed depends on a model's shapes (layers, heads, hidden size, vocabulary),
not on its trained values, so a card plus ``load_format="dummy"`` measures what the
real model would, without a model hub or gigabytes of weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CARDS_DIR = Path(__file__).parent / "cards"

_DTYPE_BYTES = {
    "float32": 4, "float": 4, "fp32": 4,
    "bfloat16": 2, "float16": 2, "half": 2, "fp16": 2, "bf16": 2,
    "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1,
}


class UnknownModelError(ValueError):
    """``model=`` names neither a card, nor a directory, nor a hub id."""


def known_cards() -> list[str]:
    """Names of the cards shipped in the package."""
    return sorted(p.parent.name for p in CARDS_DIR.glob("*/config.json"))


@dataclass(frozen=True)
class ModelSource:
    """Where vLLM loads a model from and whether its weights are real."""

    name: str
    path: str
    is_card: bool
    load_format: str  # "dummy" for cards and weightless directories, else "auto"
    config: dict[str, Any] | None

    def kv_bytes_per_token(self, kv_cache_dtype: str = "auto", dtype: str = "auto") -> int | None:
        """Predicted KV-cache bytes per token: 2 (K and V) x layers x kv_heads x head_dim x bytes."""
        if not self.config:
            return None
        return predicted_kv_bytes_per_token(self.config, kv_cache_dtype=kv_cache_dtype, dtype=dtype)

    def engine_kv_bytes_per_token(self, speculative_config: dict[str, Any] | None = None,
                                  kv_cache_dtype: str = "auto", dtype: str = "auto") -> int | None:
        """KV bytes per token of the whole engine: a draft model (speculative decoding with
        its own ``model``) keeps its own KV in the same blocks, so each token costs the
        target's bytes plus the draft's (Llama-3.1-8B with a Llama-3.2-1B draft: 131,072 +
        32,768 B, so 80% of the target-only count). None where the draft's shapes are
        unknown, rather than a count the engine cannot reach."""
        own = self.kv_bytes_per_token(kv_cache_dtype, dtype)
        if own is None or not has_draft_model(speculative_config):
            return own
        draft = draft_model(speculative_config)
        # the draft runs in the target's dtype and shares its KV-cache dtype
        extra = draft.kv_bytes_per_token(kv_cache_dtype, dtype) if draft else None
        return None if extra is None else own + extra


# speculative methods whose proposer keeps no KV cache of its own
_NO_DRAFT_LAYERS = frozenset({"ngram", "suffix"})


def has_draft_model(speculative_config: dict[str, Any] | None) -> bool:
    """True when a speculative config loads a draft model (not an n-gram/suffix proposer)."""
    spec = speculative_config or {}
    return bool(spec.get("model")) and spec.get("method") not in _NO_DRAFT_LAYERS


def draft_model(speculative_config: dict[str, Any] | None) -> ModelSource | None:
    """The draft model a speculative config loads; None where it loads none or the
    model cannot be resolved here."""
    if not has_draft_model(speculative_config):
        return None
    try:
        return resolve_model(str((speculative_config or {})["model"]))
    except (ValueError, OSError):
        return None


def _has_weights(directory: Path) -> bool:
    return any(directory.glob("*.safetensors")) or any(directory.glob("*.bin")) or any(
        directory.glob("*.pt")
    )


def resolve_model(model: str) -> ModelSource:
    """Map ``model=`` to a card, a local directory or a name vLLM resolves itself.

    A bare name that is not a card (no ``/``, not a directory) is almost always a
    typo of a card name, so it is an error listing the cards rather than a slow
    failed hub lookup on an offline machine.
    """
    card_dir = CARDS_DIR / model
    if "/" not in model and (card_dir / "config.json").is_file():
        return ModelSource(model, str(card_dir), True, "dummy", _read_config(card_dir))
    local = Path(os.path.expanduser(model))
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UnknownModelError(f"model directory {model!r} has no config.json")
        fmt = "auto" if _has_weights(local) else "dummy"
        return ModelSource(model, str(local.resolve()), False, fmt, _read_config(local))
    if "/" in model and not model.startswith((".", "/", "~")):
        return ModelSource(model, model, False, "auto", None)  # hub id: vLLM resolves it
    raise UnknownModelError(
        f"unknown model {model!r}: not a shipped card, not a directory. "
        f"Known cards: {', '.join(known_cards())}"
    )


def _read_config(directory: Path) -> dict[str, Any]:
    with open(directory / "config.json", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def predicted_kv_bytes_per_token(
    config: dict[str, Any], *, kv_cache_dtype: str = "auto", dtype: str = "auto"
) -> int | None:
    """KV bytes per token from a HF config; None when the shape keys are missing."""
    cfg = config.get("text_config", config)
    try:
        layers = int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError):
        return None
    if kv_cache_dtype != "auto":
        nbytes = _DTYPE_BYTES.get(kv_cache_dtype, 1 if kv_cache_dtype.startswith("fp8") else 2)
    else:
        name = dtype if dtype != "auto" else str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
        nbytes = _DTYPE_BYTES.get(name, 2)
    return 2 * layers * kv_heads * head_dim * nbytes


def decode_bytes_per_step(
    config: dict[str, Any], *, batch: int, context_len: float, dtype: str = "auto"
) -> float:
    """Bytes one decode step reads from memory: every weight once, plus each sequence's KV.

    Decode is memory-bound on GPUs, so this is its cost model: the weights of every
    layer (attention projections, gated MLP, norms) and the LM head are read once per
    step for the whole batch; the embedding table only for ``batch`` rows (ignored);
    the KV cache of ``context_len`` tokens once per sequence.
    """
    cfg = config.get("text_config", config)
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    inter = int(cfg["intermediate_size"])
    layers = int(cfg["num_hidden_layers"])
    vocab = int(cfg["vocab_size"])
    name = dtype if dtype != "auto" else str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    nbytes = _DTYPE_BYTES.get(name, 2)
    attn = hidden * (heads + 2 * kv_heads) * head_dim + heads * head_dim * hidden
    mlp = 3 * hidden * inter
    weights = (layers * (attn + mlp + 2 * hidden) + hidden + vocab * hidden) * nbytes
    kv = predicted_kv_bytes_per_token(config, dtype=dtype) or 0
    return float(weights + batch * context_len * kv)


def predicted_weight_bytes(config: dict[str, Any], dtype: str = "auto") -> int | None:
    """Weight bytes of a dense decoder (Llama, Qwen2, Mistral shapes) from its config.

    Embedding and LM head (unless tied), per layer the Q/K/V/O projections, the gated
    MLP (three matrices) and two norms; biases are ignored (under 0.1%). For the
    Llama-3.1-8B card: 8.03e9 parameters, 14.96 GiB in bf16 (vLLM loads 15.0 GiB).
    None when the config lacks a shape key or is not a plain dense decoder.
    """
    cfg = config.get("text_config", config)
    try:
        hidden = int(cfg["hidden_size"])
        layers = int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        inter = int(cfg["intermediate_size"])
        vocab = int(cfg["vocab_size"])
    except (KeyError, TypeError, ValueError):
        return None
    if cfg.get("num_local_experts") or cfg.get("num_experts"):
        return None  # mixture of experts: not this formula
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    per_layer = attention + 3 * hidden * inter + 2 * hidden
    embeddings = vocab * hidden * (1 if cfg.get("tie_word_embeddings") else 2)
    params = embeddings + layers * per_layer + hidden
    name = dtype if dtype != "auto" else str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    return params * _DTYPE_BYTES.get(name, 2)
