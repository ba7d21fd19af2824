"""Bare ``LLM.generate`` reference on the CPU build: one engine start, then repeated batches.

Prints one JSON line: the start time, the output tok/s of each repeat, and the /proc/stat
jiffies per second over each repeat (user, nice, system, idle, iowait, irq, softirq, steal).
Run: ``scripts/cpu-env python benchmarks/results/cpu-2026-12-04-s30/engine-reference.py``
(the first three starts of 2026-12-04 used 5 repeats, the last three 8).
"""

import json
import pathlib
import time

REPEATS = 8
PROMPTS = 16
TOKENS = 64


def cpu_jiffies() -> list[int]:
    with open("/proc/stat") as stat:
        return [int(x) for x in stat.readline().split()[1:]]


def main() -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    root = pathlib.Path(__file__).resolve().parents[3]
    path = str(root / "pytest_llmperf/cards/tiny-llama-2l")
    t0 = time.perf_counter()
    llm = LLM(model=path, load_format="dummy", skip_tokenizer_init=True, enforce_eager=True,
              max_model_len=512, max_num_seqs=PROMPTS, seed=0, kv_cache_memory_bytes=256 << 20)
    start_s = time.perf_counter() - t0
    sp = SamplingParams(max_tokens=TOKENS, ignore_eos=True, detokenize=False, temperature=0)
    prompts = [TokensPrompt(prompt_token_ids=[(7 * i + j) % 1000 + 10 for j in range(TOKENS)])
               for i in range(PROMPTS)]
    llm.generate(prompts[:2], sp, use_tqdm=False)
    rates, jiffies = [], []
    for _ in range(REPEATS):
        before = cpu_jiffies()
        t = time.perf_counter()
        llm.generate(prompts, sp, use_tqdm=False)
        dt = time.perf_counter() - t
        after = cpu_jiffies()
        jiffies.append([round((y - x) / dt, 1) for x, y in zip(before, after, strict=True)][:8])
        rates.append(PROMPTS * TOKENS / dt)
    print(json.dumps({"start": start_s, "rates": [round(r) for r in rates], "jps": jiffies}),
          flush=True)


if __name__ == "__main__":
    main()
