"""A synthetic word-level tokenizer for model cards, so an OpenAI server can run them.

Cards are config.json-only; the offline engine feeds token ids and never detokenizes,
but the OpenAI server needs a tokenizer (to render text, chat templates and the
``random`` dataset of ``vllm bench serve``). Token ``i`` is the word ``t<i>``; special
tokens (BOS/EOS/UNK) are named ``<...>`` so they never occur inside a word. Text is
words separated by spaces, so ``encode(decode(ids)) == ids`` for every non-special id:
prompts sent as text reach the engine as exactly the ids a workload chose.

Generated once per card shape into a cache directory (``$LLMPERF_CACHE_DIR``, default
``~/.cache/pytest-llmperf``), written to a temp directory and renamed, so a reader never
sees half a tokenizer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cards import ModelSource

TOKENIZER_VERSION = 1
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }} {% endfor %}"


def cache_root() -> Path:
    root = os.environ.get("LLMPERF_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "pytest-llmperf"
    )
    return Path(root)


def word(token_id: int) -> str:
    return f"t{token_id}"


def text_of(ids: Sequence[int]) -> str:
    """The prompt text that the synthetic tokenizer encodes back to exactly ``ids``."""
    return " ".join(word(i) for i in ids)


def ids_of(text: str) -> list[int]:
    """Token ids of a synthetic-tokenizer text (the inverse of :func:`text_of`)."""
    return [int(w[1:]) for w in text.split() if w.startswith("t") and w[1:].isdigit()]


def _special_ids(config: dict[str, Any]) -> dict[int, str]:
    cfg = config.get("text_config", config)
    special: dict[int, str] = {}
    for key, name in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "pad")):
        value = cfg.get(key)
        ids = value if isinstance(value, list) else [value]
        for n, tid in enumerate(i for i in ids if isinstance(i, int)):
            special.setdefault(tid, f"<{name}>" if n == 0 else f"<{name}{n}>")
    return special


def tokenizer_files(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The JSON documents of a word-level tokenizer for a card's vocabulary."""
    cfg = config.get("text_config", config)
    vocab_size = int(cfg["vocab_size"])
    special = _special_ids(config)
    unk_id = next((i for i in range(vocab_size) if i not in special), 0)
    special.setdefault(unk_id, "<unk>")
    vocab = {special.get(i, word(i)): i for i in range(vocab_size)}
    added = [
        {"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, name in sorted(special.items())
    ]
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": special[unk_id]},
    }
    by_role = {name.strip("<>"): name for name in special.values()}
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(cfg.get("max_position_embeddings") or 1 << 20),
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
        "chat_template": CHAT_TEMPLATE,
        "unk_token": special[unk_id],
        "_llmperf_tokenizer": f"synthetic word-level tokenizer v{TOKENIZER_VERSION}: token i is 't<i>'",
    }
    for role in ("bos", "eos", "pad"):
        if role in by_role:
            tokenizer_config[f"{role}_token"] = by_role[role]
    return {"tokenizer.json": tokenizer_json, "tokenizer_config.json": tokenizer_config}


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / name).is_file() for name in (
        "tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json"))


def served_model_dir(source: ModelSource) -> str:
    """A directory (or hub id) an OpenAI server can load ``source`` from, tokenizer included.

    Cards and tokenizer-less local directories get a cached copy of their config.json
    beside a synthetic tokenizer; anything else is served as it is.
    """
    if source.config is None:
        return source.path  # hub id: vLLM fetches the real tokenizer
    directory = Path(source.path)
    if directory.is_dir() and _has_tokenizer(directory):
        return str(directory)
    config_text = (directory / "config.json").read_text(encoding="utf-8")
    digest = hashlib.sha256(f"v{TOKENIZER_VERSION}\n{config_text}".encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in source.name)[-40:]
    target = cache_root() / "served-models" / f"{safe}-{digest}"
    if (target / "tokenizer_config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        (tmp / "config.json").write_text(config_text, encoding="utf-8")
        for name, doc in tokenizer_files(json.loads(config_text)).items():
            (tmp / name).write_text(json.dumps(doc), encoding="utf-8")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "tokenizer_config.json").is_file():  # not a lost race: a real error
                raise
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    return str(target)
