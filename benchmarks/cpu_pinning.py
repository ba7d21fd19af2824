"""Does pinning the engine's helper threads off the model's core steady the CPU build?

vLLM's CPU build (VLLM_CPU_OMP_THREADS_BIND=auto) binds the model worker's OpenMP threads
to one core and *reserves* the other for "the scheduler proc", but pins nothing to it: the
busy-polling EngineCore, the LLM front end and their helper threads float over both cores
and can land on the model's core. This experiment alternates engine starts in two modes
on the tiny card and compares the spread between starts:

* ``default``: as vLLM leaves it;
* ``pinned``: after the engine is up, every thread of the process tree that is not bound
  to a single CPU (OpenMP binds the model's threads) is pinned to the reserved CPUs.

Each start runs in a fresh interpreter and prints one JSON line (mode, start time,
output tok/s of each repeat, the affinity of the threads it found).

Run: ``scripts/cpu-env python benchmarks/cpu_pinning.py --starts 6 > OUT.jsonl``, then
``python3 benchmarks/cpu_pinning.py --summary OUT.jsonl``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import statistics
import subprocess
import sys
import time

REPEATS = 8
PROMPTS = 16
TOKENS = 64


def pin_helpers() -> dict[str, int]:
    """Pin every thread of this process tree that may run on more than one CPU to the
    CPUs no single-CPU-bound thread uses. Returns counts of threads by what happened."""
    import os

    import psutil

    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    allowed = set(os.sched_getaffinity(0))
    tids: list[int] = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            tids += [t.id for t in p.threads()]
    bound: set[int] = set()
    loose: list[int] = []
    for tid in tids:
        try:
            mask = os.sched_getaffinity(tid)
        except OSError:
            continue
        if len(mask) == 1:
            bound |= mask
        else:
            loose.append(tid)
    spare = allowed - bound
    counts = {"bound": len(tids) - len(loose), "pinned": 0, "spare": len(spare)}
    if not spare:
        return counts
    for tid in loose:
        try:
            os.sched_setaffinity(tid, spare)
            counts["pinned"] += 1
        except OSError:
            pass
    return counts


def one_start(mode: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    root = pathlib.Path(__file__).resolve().parents[1]
    path = str(root / "pytest_llmperf/cards/tiny-llama-2l")
    t0 = time.perf_counter()
    llm = LLM(model=path, load_format="dummy", skip_tokenizer_init=True, enforce_eager=True,
              max_model_len=512, max_num_seqs=PROMPTS, seed=0, kv_cache_memory_bytes=256 << 20)
    start_s = time.perf_counter() - t0
    sp = SamplingParams(max_tokens=TOKENS, ignore_eos=True, detokenize=False, temperature=0)
    prompts = [TokensPrompt(prompt_token_ids=[(7 * i + j) % 1000 + 10 for j in range(TOKENS)])
               for i in range(PROMPTS)]
    llm.generate(prompts[:2], sp, use_tqdm=False)
    counts = pin_helpers() if mode == "pinned" else {}
    llm.generate(prompts, sp, use_tqdm=False)
    rates = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        llm.generate(prompts, sp, use_tqdm=False)
        rates.append(PROMPTS * TOKENS / (time.perf_counter() - t))
    print(json.dumps({"mode": mode, "start_s": round(start_s, 1), "rates": [round(r) for r in rates],
                      "threads": counts}), flush=True)


def summary(path: str) -> None:
    text = pathlib.Path(path).read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    for mode in ("default", "pinned"):
        meds = [statistics.median(r["rates"]) for r in rows if r["mode"] == mode]
        within = [(max(r["rates"]) - min(r["rates"])) / statistics.median(r["rates"])
                  for r in rows if r["mode"] == mode]
        if len(meds) < 2:
            continue
        mean = statistics.mean(meds)
        print(f"{mode:8s} starts {len(meds)}  start medians {[round(m) for m in meds]}  "
              f"mean {mean:,.0f}  between-start CV {statistics.stdev(meds) / mean:.1%}  "
              f"range {(max(meds) - min(meds)) / mean:.1%}  "
              f"within-start range (median) {statistics.median(within):.1%}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=6, help="starts per mode (alternating)")
    ap.add_argument("--one", choices=("default", "pinned"))
    ap.add_argument("--summary")
    args = ap.parse_args()
    if args.summary:
        summary(args.summary)
    elif args.one:
        one_start(args.one)
    else:
        for i in range(args.starts):
            order = ("default", "pinned") if i % 2 == 0 else ("pinned", "default")
            for mode in order:
                out = subprocess.run([sys.executable, __file__, "--one", mode], capture_output=True,
                                     text=True, timeout=300)
                line = next((x for x in out.stdout.splitlines() if x.startswith("{")), None)
                print(line or json.dumps({"mode": mode, "error": out.stderr[-500:]}), flush=True)


if __name__ == "__main__":
    main()
