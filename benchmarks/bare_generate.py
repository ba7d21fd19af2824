"""The reference figure: a bare ``LLM.generate`` loop, no plugin in the way.

    python benchmarks/bare_generate.py --model llama-3.1-8b --batch 24 \
        --input-len 256 --output-len 256 --max-model-len 1024 --trials 5

Prints one JSON line with each trial's output tok/s and the median, so the plugin's
figure for the same config can be checked against it (within 2%).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--enforce-eager", action="store_true")
    args = ap.parse_args()

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from pytest_llmperf.cards import resolve_model

    src = resolve_model(args.model)
    t0 = time.perf_counter()
    llm = LLM(model=src.path, load_format=src.load_format, skip_tokenizer_init=True,
              max_model_len=args.max_model_len, max_num_seqs=args.batch,
              gpu_memory_utilization=args.gpu_memory_utilization,
              enforce_eager=args.enforce_eager, seed=0)
    start_s = time.perf_counter() - t0
    vocab = llm.llm_engine.model_config.get_vocab_size()
    params = SamplingParams(max_tokens=args.output_len, min_tokens=args.output_len,
                            ignore_eos=True, detokenize=False)

    def prompts(seed: int) -> list[TokensPrompt]:
        rng = random.Random(seed)
        return [TokensPrompt(prompt_token_ids=[rng.randrange(100, vocab) for _ in range(args.input_len)])
                for _ in range(args.batch)]

    llm.generate(prompts(-1), params, use_tqdm=False)  # warm-up
    rates = []
    for trial in range(args.trials):
        batch = prompts(trial)
        t = time.perf_counter()
        outs = llm.generate(batch, params, use_tqdm=False)
        elapsed = time.perf_counter() - t
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        rates.append(tokens / elapsed)
    print(json.dumps({"bare_generate": True, "model": args.model, "batch": args.batch,
                      "start_s": round(start_s, 1), "output_tok_s": [round(r, 1) for r in rates],
                      "median": round(statistics.median(rates), 1)}))


if __name__ == "__main__":
    main()
