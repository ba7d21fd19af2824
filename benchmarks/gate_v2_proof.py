"""Prove gate v2: detection of small model changes and A/A false alarms, over engine starts.

    # collect (GPU host: source .gpu-stage/remote-env first; CPU: --device cpu)
    python benchmarks/gate_v2_proof.py --budget-s 480 --out $OUT/gate-v2.json
    # analyse offline, on any machine
    python benchmarks/gate_v2_proof.py --analyse gate-v2.json [more.json ...]

Collect: model-change cards are made from ``--model`` by widening the MLP
(``intermediate_size``) of every layer so that the bytes a decode step reads (weights
plus KV, ``cards.decode_bytes_per_step``) grow by about ``--changes`` percent (1, 2, 4).
Engine starts then run in the cycle ``base, +2%, base, +4%, base, +1%, base, +2%``
(``--cycle``), repeated: every variant start sits between two base starts, as
``--llmperf-ab`` interleaves them; every change gets a start before the one the
targets hinge on (2%) gets a second.
Each start runs the short workload (``--trials`` trials after a warm-up) and is saved
(atomically) to ``--out`` before the next one, so a run cut short keeps what it has.
A start is only begun when the time it is expected to take (the config's last
start, or the slowest cold start so far for a config not yet compiled) fits in
what is left of ``--budget-s``.

Analyse (no engine, no GPU): over engine starts, never trials,

* paired gate (``startgate.compare_paired``): each variant against its neighbouring
  base starts, with 1, 2 and 3 pairs; A/A: base starts against other base starts paired
  the same way. Sets of pairs are counterbalanced in time as the plugin runs them (as
  many pairs with the head first as with the base first; ``--order alternating``: any).
  The runner's noise prior comes from up to 3 other base starts, as from a baseline
  recorded with ``--llmperf-baseline-starts 3``;
* stored-baseline gate, v2 (``startgate.compare_to_starts``: 3 base starts as the
  baseline, one start as the run) and v1 (``regression.compare_to_baseline``: their
  pooled trials against the run's trials).

A change counts as detected when the test's verdict is "regression" (any gated
metric); "inconclusive" verdicts are counted separately.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_llmperf.atomic import write_atomic
from pytest_llmperf.cards import decode_bytes_per_step, resolve_model
from pytest_llmperf.config import EngineConfig, Workload

BASE = "base"


# ----------------------------------------------------------------------------- cards


WIDEN = {"mlp": "intermediate_size", "vocab": "vocab_size"}


def make_cards(model: str, changes: Sequence[float], *, batch: int, context_len: float,
               granule: int, directory: Path, widen: str = "mlp") -> dict[str, dict[str, Any]]:
    """Base card plus one widened card per change (``widen``: the MLP in every layer, or
    the vocabulary, whose LM head every decode step reads); name -> facts (path,
    expected cost)."""
    key = WIDEN[widen]
    config = resolve_model(model).config
    if config is None:
        raise SystemExit(f"--model {model!r}: need a card or a model directory with config.json")
    cost = decode_bytes_per_step(config, batch=batch, context_len=context_len)
    cfg = config.get("text_config", config)
    per_unit = (decode_bytes_per_step({**config, key: cfg[key] + granule},
                                      batch=batch, context_len=context_len) - cost) / granule
    cards: dict[str, dict[str, Any]] = {}
    for change in [0.0, *changes]:
        extra = int(round(change / 100.0 * cost / per_unit / granule)) * granule
        variant = {**config, key: cfg[key] + extra}
        variant["_llmperf_card"] = (f"{model} with {key} +{extra} "
                                    "(gate v2 proof; weights random, load_format=dummy)")
        name = BASE if change == 0 else f"{widen}+{extra}"
        path = directory / name
        path.mkdir(parents=True, exist_ok=True)
        write_atomic(path / "config.json", (json.dumps(variant, indent=2) + "\n").encode())
        expected = decode_bytes_per_step(variant, batch=batch, context_len=context_len) / cost - 1
        cards[name] = {"path": str(path.resolve()), key: variant[key],
                       "target_change": change / 100.0, "expected_decode_cost_change": expected,
                       "decode_bytes_per_step": cost * (1 + expected)}
    return cards


def schedule(cards: dict[str, dict[str, Any]], cycle: Sequence[float]) -> list[str]:
    """One cycle of engine starts: a base start before every variant start, variants in
    the order of ``cycle`` (target changes in percent; a change may recur, so the
    change that matters most gets the most starts when the budget is short)."""
    by_target = {round(f["target_change"] * 100, 6): n for n, f in cards.items() if n != BASE}
    missing = [c for c in cycle if round(c, 6) not in by_target]
    if missing:
        raise SystemExit(f"--cycle {missing}: not among --changes {sorted(by_target)}")
    return [c for t in cycle for c in (BASE, by_target[round(t, 6)])]


# --------------------------------------------------------------------------- collect


def collect(args: argparse.Namespace) -> None:
    from pytest_llmperf.engine import EngineError, EngineManager

    t0 = time.monotonic()
    out = Path(args.out)
    changes = [float(c) for c in args.changes.split(",") if c]
    cards = make_cards(args.model, changes, batch=args.batch,
                       context_len=args.input_len + args.output_len / 2,
                       granule=args.granule, widen=args.widen,
                       directory=Path(args.cards_dir) if args.cards_dir
                       else out.with_name(out.stem + "-cards"))
    eager = args.eager if args.eager is not None else args.device == "cpu"
    workload = Workload(batch=args.batch, input_len=args.input_len, output_len=args.output_len,
                        trials=args.trials, warmup=1)
    engines = {name: EngineConfig(model=facts["path"], max_model_len=args.max_model_len,
                                  max_num_seqs=args.batch, enforce_eager=eager,
                                  gpu_memory_utilization=args.memory)
               for name, facts in cards.items()}
    doc: dict[str, Any] = {
        "meta": {"device": args.device, "model": args.model, "eager": eager,
                 "workload": workload.to_json(), "budget_s": args.budget_s, "cards": cards,
                 "python": sys.version.split()[0]},
        "starts": [],
    }
    manager = EngineManager(device=args.device, log_dir=str(out.with_name(out.stem + "-logs")))
    took: dict[str, list[float]] = {}
    cycle = schedule(cards, [float(c) for c in args.cycle.split(",") if c])
    position = 0
    failures: dict[str, int] = {}
    for name, facts in cards.items():
        print(f"{name}: {WIDEN[args.widen]} {facts[WIDEN[args.widen]]}, expected decode cost "
              f"{facts['expected_decode_cost_change']:+.2%}", flush=True)
    while True:
        left = args.budget_s - (time.monotonic() - t0)
        cold = max((v[0] for v in took.values()), default=args.cold_estimate_s)
        chosen = None
        for k in range(len(cycle)):
            name = cycle[(position + k) % len(cycle)]
            expect = took[name][-1] if name in took else max(cold, args.cold_estimate_s)
            if expect <= left:
                chosen, position = name, (position + k + 1) % len(cycle)
                break
        if chosen is None:
            break
        t = time.monotonic()
        try:
            result = manager.get(engines[chosen]).run(workload)
        except EngineError as exc:
            print(f"{chosen}: engine failed: {exc}", flush=True)
            manager.failed.clear()
            failures[chosen] = failures.get(chosen, 0) + 1
            if failures[chosen] >= 2:  # give up on this config, keep the others
                if chosen == BASE:
                    break
                cycle = [c for c in cycle if c != chosen]
                position = 0
            continue
        finally:
            manager.close()
        wall = time.monotonic() - t
        took.setdefault(chosen, []).append(wall)
        doc["meta"]["vllm_version"] = result.vllm_version
        doc["starts"].append({"seq": len(doc["starts"]), "config": chosen, "wall_s": wall,
                              "result": result.to_json()})
        write_atomic(out, (json.dumps(doc) + "\n").encode())
        print(json.dumps({"seq": len(doc["starts"]) - 1, "config": chosen,
                          "wall_s": round(wall, 1), "engine_start_s": round(result.start_time_s, 1),
                          "output_tok_s": round(result.output_tok_s, 1),
                          "tpot_p50_ms": round(result.tpot.p50, 4),
                          "elapsed_s": round(time.monotonic() - t0)}), flush=True)
    print(f"{len(doc['starts'])} engine starts in {time.monotonic() - t0:.0f} s -> {out}", flush=True)


# --------------------------------------------------------------------------- analyse


def _load(paths: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Starts of every file in order, with ids unique across files; and the first meta.

    Also reads ``gate_proof.py`` files (issue 3's H100 data: each engine start ran the
    workload plainly and with injected throughput slowdowns): plain runs are base
    starts, slowed ones variant ``slow-N%`` starts of the same engine start, which are
    only ever paired with base starts of *other* engine starts. ``PATH:plain`` keeps a
    file's plain runs only.
    """
    from pytest_llmperf.gate import CPU_UNGATED
    from pytest_llmperf.results import PerfResult

    starts: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    for i, spec in enumerate(paths):
        path, plain_only = (spec[:-6], True) if spec.endswith(":plain") else (spec, False)
        with open(path) as f:
            doc = json.load(f)
        if "runs" in doc:  # gate_proof.py
            runs = [r for r in doc["runs"] if not (plain_only and r["slowdown"] > 0)]
            meta = meta or {"device": "gpu", "cards": {}}
            rows = []
            for r in runs:
                name = BASE if r["slowdown"] == 0 else f"slow-{r['slowdown']:.0%}"
                if name != BASE:
                    meta["cards"][name] = {"expected_decode_cost_change": r["slowdown"]}
                rows.append((2 * r["start"], name, r["result"]))
        else:
            if meta:  # later files may bring other cards
                meta["cards"] = {**doc["meta"]["cards"], **meta["cards"]}
            meta = meta or doc["meta"]
            rows = [(s["seq"], s["config"], s["result"]) for s in doc["starts"]
                    if not (plain_only and s["config"] != BASE)]
        for seq, name, data in rows:
            result = PerfResult.from_json(data)
            # zero counts (no preemption) are no relative figure: a baseline drops them too
            values = {k: v for k, v in result.metric_values().items()
                      if v and all(math.isfinite(x) and x > 0 for x in v)}
            if result.device == "cpu":
                values = {k: v for k, v in values.items() if k not in CPU_UNGATED}
            starts.append({"id": f"{i}:{seq}:{name}", "file": i, "seq": seq, "config": name,
                           "values": values})
        meta.setdefault("vllm_version", rows and PerfResult.from_json(rows[0][2]).vllm_version)
    return starts, meta


def _prior(bases: Sequence[dict[str, Any]], exclude: set[str], near: int, k: int = 3) -> Any:
    """Noise learned from up to ``k`` other base starts nearest in time (a stored baseline)."""
    from pytest_llmperf.noise import estimate_all
    from pytest_llmperf.startgate import start_value

    others = sorted((b for b in bases if b["id"] not in exclude), key=lambda b: abs(b["seq"] - near))[:k]
    if len(others) < 2:
        return None
    per_start: dict[str, list[float]] = {}
    for b in others:
        for metric, values in b["values"].items():
            per_start.setdefault(metric, []).append(start_value(values))
    return estimate_all(per_start)


def _neighbours(start: dict[str, Any], bases: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Base starts right before and after ``start`` in the same file."""
    same = [b for b in bases if b["file"] == start["file"]]
    before = [b for b in same if b["seq"] < start["seq"]]
    after = [b for b in same if b["seq"] > start["seq"]]
    out = []
    if before:
        out.append(max(before, key=lambda b: b["seq"]))
    if after:
        out.append(min(after, key=lambda b: b["seq"]))
    return out


def _tally(states: list[str]) -> dict[str, Any]:
    n = len(states)
    return {"comparisons": n, "regression": states.count("regression"),
            "inconclusive": states.count("inconclusive"), "pass": states.count("pass")}


def balanced(combo: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> bool:
    """Whether the pairs (base, head) are counterbalanced in time as ``ab.run_paired``
    orders them (head, base, base, head, ...): as many pairs with the head first as
    with the base first, give or take one, so that a linear drift cancels."""
    head_first = sum(h["seq"] < b["seq"] for b, h in combo)
    return abs(2 * head_first - len(combo)) <= 1


def _paired_sets(heads: Sequence[dict[str, Any]], bases: Sequence[dict[str, Any]], pairs: int,
                 limit: int, order: str = "counterbalanced"
                 ) -> list[list[tuple[dict[str, Any], dict[str, Any]]]]:
    """Every choice of ``pairs`` head starts, each with one neighbouring base start
    (``order="counterbalanced"``: only sets ``balanced`` in time)."""
    out = []
    for chosen in itertools.combinations(heads, pairs):
        options = [[(b, h) for b in _neighbours(h, bases) if b["id"] != h["id"]] for h in chosen]
        for combo in itertools.product(*options):
            if order == "counterbalanced" and not balanced(combo):
                continue
            if len({b["id"] for b, _ in combo} | {h["id"] for _, h in combo}) == 2 * pairs:
                out.append(list(combo))
                if len(out) >= limit:
                    return out
    return out


def _aa_sets(bases: Sequence[dict[str, Any]], pairs: int, limit: int, order: str = "counterbalanced"
             ) -> list[list[tuple[dict[str, Any], dict[str, Any]]]]:
    """A/A: disjoint ordered pairs of base starts at most two apart among the base starts
    of their file (a variant start sits between two base starts), both orders
    (``order="counterbalanced"``: only sets ``balanced`` in time)."""
    links = []
    by_file: dict[int, list[dict[str, Any]]] = {}
    for b in bases:
        by_file.setdefault(b["file"], []).append(b)
    for same in by_file.values():
        same.sort(key=lambda b: b["seq"])
        for i, x in enumerate(same):  # next and next-but-one base start
            for y in same[i + 1:i + 3]:
                links += [(x, y), (y, x)]
    out = []
    for combo in itertools.combinations(links, pairs):
        if order == "counterbalanced" and not balanced(combo):
            continue
        ids = [s["id"] for pair in combo for s in pair]
        if len(set(ids)) == len(ids):
            out.append(list(combo))
            if len(out) >= limit:
                break
    return out


def analyse(paths: Sequence[str], limit: int = 2000, order: str = "counterbalanced") -> dict[str, Any]:
    from pytest_llmperf.regression import compare_to_baseline
    from pytest_llmperf.startgate import compare_paired, compare_to_starts, start_value

    starts, meta = _load(paths)
    bases = [s for s in starts if s["config"] == BASE]
    variants = sorted({s["config"] for s in starts} - {BASE},
                      key=lambda n: meta["cards"][n]["expected_decode_cost_change"])
    report: dict[str, Any] = {"files": list(paths), "device": meta.get("device"),
                              "vllm_version": meta.get("vllm_version"), "eager": meta.get("eager"),
                              "workload": meta.get("workload"), "order": order,
                              "starts": {c: sum(s["config"] == c for s in starts)
                                         for c in [BASE, *variants]},
                              "paired": {}, "stored_v2": {}, "stored_v2_confirmed": {},
                              "stored_v1": {}, "measured": {}}

    def paired(pairs_sets: list[list[tuple[dict[str, Any], dict[str, Any]]]],
               confirm_from: list[list[tuple[dict[str, Any], dict[str, Any]]]] | None = None
               ) -> dict[str, Any]:
        """Tally paired verdicts; with ``confirm_from``, an inconclusive set takes the
        verdict of the first larger set that contains it (one confirmation pair)."""
        states, alarms = [], []
        for combo in pairs_sets:
            cmp = _decide_paired(combo)
            if cmp.state == "inconclusive" and confirm_from:
                ids = {s["id"] for pair in combo for s in pair}
                bigger = next((c for c in confirm_from
                               if ids <= {s["id"] for pair in c for s in pair}), None)
                if bigger is not None:
                    cmp = _decide_paired(bigger)
            states.append(cmp.state)
            if cmp.state == "regression":
                alarms.append(" ".join(f"{r.metric} {r.change:+.2%}" for r in cmp.regressions))
        return {**_tally(states), "regressions_seen": sorted(set(alarms))[:5]}

    def _decide_paired(combo: list[tuple[dict[str, Any], dict[str, Any]]]) -> Any:
        used = {s["id"] for pair in combo for s in pair}
        prior = _prior(bases, used, combo[0][1]["seq"])
        return compare_paired([b["values"] for b, _ in combo], [h["values"] for _, h in combo],
                              noise=prior)

    sets: dict[tuple[str, int], list[Any]] = {}
    for pairs in (1, 2, 3):
        sets[("A/A", pairs)] = _aa_sets(bases, pairs, limit, order)
        for v in variants:
            heads = [s for s in starts if s["config"] == v]
            sets[(v, pairs)] = _paired_sets(heads, bases, pairs, limit, order)
    for v in ["A/A", *variants]:
        for pairs in (1, 2, 3):
            key = f"{pairs}_pair{'s' if pairs > 1 else ''}"
            report["paired"].setdefault(v, {})[key] = paired(sets[(v, pairs)])
        report["paired"][v]["2_pairs_confirmed"] = paired(sets[(v, 2)], sets[(v, 3)])

    # Stored-baseline gates: 3 base starts recorded as the baseline, one start as the
    # run; v2 also with one confirmation start (the run's config, next in time).
    for v in ["A/A", *variants]:
        runs = bases if v == "A/A" else [s for s in starts if s["config"] == v]
        v2, v2c, v1 = [], [], []
        for baseline in itertools.combinations(bases, 3):
            ids = {b["id"] for b in baseline}
            medians: dict[str, list[float]] = {}
            pooled: dict[str, list[float]] = {}
            for b in baseline:
                for metric, values in b["values"].items():
                    medians.setdefault(metric, []).append(start_value(values))
                    pooled.setdefault(metric, []).extend(values)
            from pytest_llmperf.noise import estimate_all

            noise = estimate_all(medians)
            for run in runs:
                if run["id"] in ids:
                    continue
                state = compare_to_starts([run["values"]], medians, noise=noise).state
                v2.append(state)
                if state == "inconclusive":
                    more = sorted((r for r in runs if r["id"] not in ids and r["id"] != run["id"]
                                   and r["file"] == run["file"]),
                                  key=lambda r: abs(r["seq"] - run["seq"]))
                    if more:
                        state = compare_to_starts([run["values"], more[0]["values"]], medians,
                                                  noise=noise).state
                v2c.append(state)
                old = compare_to_baseline(run["values"], pooled)
                v1.append("regression" if old.regressions else "pass")
                if len(v2) >= limit:
                    break
        report["stored_v2"][v] = _tally(v2)
        report["stored_v2_confirmed"][v] = _tally(v2c)
        report["stored_v1"][v] = _tally(v1)

    # What each change measured: median over neighbouring (base, variant) start pairs.
    for v in variants:
        diffs: dict[str, list[float]] = {}
        for h in (s for s in starts if s["config"] == v):
            for b in _neighbours(h, bases):
                for metric in ("output_tok_s", "tpot_p50_ms", "itl_p50_ms"):
                    if metric in h["values"] and metric in b["values"]:
                        ratio = start_value(h["values"][metric]) / start_value(b["values"][metric])
                        diffs.setdefault(metric, []).append(ratio - 1)
        report["measured"][v] = {
            "expected_decode_cost": round(meta["cards"][v]["expected_decode_cost_change"], 4),
            **{m: round(statistics.median(d), 4) for m, d in diffs.items()},
        }
    base_tok = [start_value(b["values"]["output_tok_s"]) for b in bases]
    base_tpot = [start_value(b["values"]["tpot_p50_ms"]) for b in bases]
    report["base_per_start"] = {
        "output_tok_s": [round(x, 1) for x in base_tok],
        "tpot_p50_ms": [round(x, 4) for x in base_tpot],
        "output_tok_s_cv": round(statistics.pstdev(base_tok) / statistics.mean(base_tok), 4)
        if len(base_tok) > 1 else None,
        "tpot_p50_ms_cv": round(statistics.pstdev(base_tpot) / statistics.mean(base_tpot), 4)
        if len(base_tpot) > 1 else None,
    }
    return report


def markdown(report: dict[str, Any]) -> str:
    """The tables for benchmarks/RESULTS.md."""
    lines = ["| gate | change (expected decode cost) | measured TPOT p50 / out tok/s | "
             "regression | inconclusive | pass |", "| --- | --- | --- | --- | --- | --- |"]
    variants = [v for v in report["measured"]]
    for gate, key in (("paired, 1 pair", "1_pair"), ("paired, 2 pairs", "2_pairs"),
                      ("paired, 2 pairs + 1 confirmation", "2_pairs_confirmed"),
                      ("paired, 3 pairs", "3_pairs")):
        for v in ["A/A", *variants]:
            t = report["paired"][v][key]
            if not t["comparisons"]:
                continue
            lines.append(_md_row(gate, v, report, t))
    for gate, key in (("stored v2 (3-start baseline)", "stored_v2"),
                      ("stored v2 + 1 confirmation", "stored_v2_confirmed"),
                      ("stored v1 (3-start pooled trials)", "stored_v1")):
        for v in ["A/A", *variants]:
            t = report[key][v]
            if t["comparisons"]:
                lines.append(_md_row(gate, v, report, t))
    return "\n".join(lines)


def _md_row(gate: str, v: str, report: dict[str, Any], t: dict[str, Any]) -> str:
    n = t["comparisons"]
    if v == "A/A":
        what, measured = "none (A/A)", "-"
    else:
        m = report["measured"][v]
        what = f"{v} ({m['expected_decode_cost']:+.2%})"
        measured = f"{m.get('tpot_p50_ms', math.nan):+.2%} / {m.get('output_tok_s', math.nan):+.2%}"
    return (f"| {gate} | {what} | {measured} | {t['regression']}/{n} | {t['inconclusive']}/{n} | "
            f"{t['pass']}/{n} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--analyse", metavar="JSON", nargs="+", help="analyse collected files")
    ap.add_argument("--markdown", action="store_true", help="with --analyse: print the tables")
    ap.add_argument("--order", choices=["counterbalanced", "alternating"], default="counterbalanced",
                    help="with --analyse: which start pairs to combine; counterbalanced (head, base, "
                         "base, head: the plugin's order) or alternating (head, base, head, base: "
                         "the plugin's order before 2026-12-03)")
    ap.add_argument("--out", default="gate-v2.json", help="collect into this file")
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="wall-clock budget for collecting, in seconds (default: 480)")
    ap.add_argument("--cold-estimate-s", type=float, default=None,
                    help="expected first start of a config (default: 90 on GPU, 45 on CPU)")
    ap.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    ap.add_argument("--model", default=None,
                    help="base card (default: llama-3.1-8b on GPU, tiny-llama-2l on CPU)")
    ap.add_argument("--changes", default="4,2,1", help="decode-cost changes in percent")
    ap.add_argument("--cycle", default="2,4,1,2",
                    help="order of the variants' engine starts, each after a base start "
                         "(default: 2,4,1,2: every change gets a start before the 2%% change, "
                         "which the targets hinge on, gets a second)")
    ap.add_argument("--granule", type=int, default=None,
                    help="intermediate_size step (default: 32 on GPU, 8 on CPU)")
    ap.add_argument("--widen", choices=sorted(WIDEN), default="mlp",
                    help="what the variant cards widen: the MLP of every layer (default) or "
                         "the vocabulary (LM head), a smoother cost on GPUs")
    ap.add_argument("--cards-dir", default=None,
                    help="where the cards go (default: beside --out); keep it fixed across "
                         "calls on one host, since vLLM's compile cache is keyed by the model path")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--max-model-len", type=int, default=1024,
                    help="default 1024: the suites' decode-heavy config, whose vLLM compile "
                         "cache a warm host may already hold")
    ap.add_argument("--memory", type=float, default=None,
                    help="gpu_memory_utilization (default: 0.9 on GPU, 0.2 of RAM on CPU)")
    ap.add_argument("--eager", action=argparse.BooleanOptionalAction, default=None,
                    help="enforce_eager (default: off on GPU, so CUDA graphs as in production; "
                         "on for the CPU build)")
    args = ap.parse_args()
    if args.analyse:
        report = analyse(args.analyse, order=args.order)
        print(markdown(report) if args.markdown else json.dumps(report, indent=2))
        return
    gpu = args.device == "gpu"
    args.model = args.model or ("llama-3.1-8b" if gpu else "tiny-llama-2l")
    args.granule = args.granule or (32 if gpu else 8)
    args.memory = args.memory or (0.9 if gpu else 0.2)
    args.cold_estimate_s = args.cold_estimate_s or (90.0 if gpu else 45.0)
    collect(args)


if __name__ == "__main__":
    main()
