"""``--llmperf-plots``: PNG charts a person would rather look at than read.

* ``throughput-<group>.png``: output tok/s (and TPOT p50) against the load (batch, or
  a served concurrency or request rate) for tests that differ only in it, knee marked;
* ``latency-<test>.png``: latency CDFs (TTFT, TPOT, ITL, E2E) per test, from the
  percentiles every trial records, baseline or base side drawn beside;
* ``compare-<test>.png``: baseline (or, in paired runs, base) and now side by side,
  key metrics with every trial as a dot;
* ``history-<hardware>-<test>.png``: each key metric across stored runs, change point
  marked (needs a history file).

matplotlib is imported when a chart is drawn (Agg, no display), never at start-up.
Figures are built with ``matplotlib.figure.Figure``, not pyplot, so no global state
is touched, and each PNG is written atomically.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..metrics import METRICS, Distribution
from ..sweep import KNEE_GAIN, knee_index
from .model import RunReport, TestRecord

HEAD = "#1f6feb"     # now / head
BASE = "#8b949e"     # baseline / base
BAD = "#cf222e"
GOOD = "#1a7f37"
KNEE = "#bf8700"

# Percentiles a trial records, as cumulative fractions; "max" is drawn at p99.9.
_QUANTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99), ("max", 0.999))
_LATENCIES: tuple[tuple[str, str], ...] = (
    ("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL"), ("e2e_ms", "E2E latency"))
# (metric, title, how to read per-trial values off a result)
_COMPARED: tuple[tuple[str, str], ...] = (
    ("output_tok_s", "output tok/s"), ("ttft_p50_ms", "TTFT p50 (ms)"),
    ("tpot_p50_ms", "TPOT p50 (ms)"), ("e2e_p99_ms", "E2E p99 (ms)"))
HISTORY_METRICS: tuple[str, ...] = ("output_tok_s", "ttft_p50_ms", "tpot_p50_ms", "e2e_p99_ms")


def slug(text: str, limit: int = 80) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("::", "-")).strip("-.")
    return s[-limit:] or "test"


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    fig.set_facecolor("white")
    return fig


def _style(ax: Any) -> None:
    ax.grid(True, color="#d0d7de", linewidth=0.6, alpha=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    write_atomic(path, buf.getvalue())
    return path


def _short(test_id: str) -> str:
    return test_id.rpartition("::")[2] or test_id


# ----------------------------------------------------------------------- throughput curve


@dataclass(frozen=True)
class CurvePoint:
    x: float
    tok_s: float
    tok_s_low: float
    tok_s_high: float
    tpot_ms: float
    test_id: str


def knee(points: Sequence[CurvePoint]) -> CurvePoint | None:
    """The knee of ``sweep.knee_index`` (the definition the tests' notes use), or None
    while the curve still scales at its last point (no knee measured yet)."""
    i = knee_index([(p.x, p.tok_s) for p in points])
    return None if i is None else points[i]


# Workload keys that say how long or how often we measure, not what: never split a curve.
_NOT_A_CURVE_KEY = frozenset({"trials", "warmup", "min_duration_s", "seed", "slowdown",
                              "num_requests"})


def load_axis(workload: Any) -> tuple[str, float]:
    """The load a result was measured at: (axis name, value).

    Served loads (``backend="server"``) are a concurrency or a request rate; the
    offline engine's load is the batch submitted at once.
    """
    for name in ("concurrency", "rate"):
        value = getattr(workload, name, None)
        if value:
            return name, float(value)
    return "batch", float(workload.batch)


def curve_groups(report: RunReport) -> dict[str, tuple[str, list[CurvePoint]]]:
    """Tests that differ only in their load (same hardware, engine and workload otherwise).

    Returns title -> (load axis name, points sorted by load), for groups of two loads
    or more.
    """
    groups: dict[tuple[Any, ...], list[CurvePoint]] = {}
    names: dict[tuple[Any, ...], tuple[str, str]] = {}
    for t in report.tests:
        r = t.result
        if r is None:
            continue
        axis, x = load_axis(r.workload)
        eng = {k: v for k, v in r.engine.to_json().items() if k != "max_num_seqs"}
        work = {k: v for k, v in r.workload.to_json().items()
                if k not in _NOT_A_CURVE_KEY and k != axis and not (axis == "batch" and k == "batch")}
        key = (t.hardware_key, r.device, axis, repr(sorted(eng.items())), repr(sorted(work.items())))
        groups.setdefault(key, []).append(_curve_point(x, r, t.test_id))
        title = (f"{r.engine.model} tp{r.engine.tp} {r.workload.input_len}/"
                 f"{r.workload.output_len} [{r.device}]" + (f" {t.hardware_key}" if t.hardware_key else ""))
        names[key] = (title, axis)
    out: dict[str, tuple[str, list[CurvePoint]]] = {}
    for key, pts in groups.items():
        best: dict[float, CurvePoint] = {}
        for p in pts:
            best.setdefault(p.x, p)
        if len(best) >= 2:
            title, axis = names[key]
            while title in out:
                title += " (2)"
            out[title] = (axis, sorted(best.values(), key=lambda p: p.x))
    return out


def _curve_point(x: float, result: Any, test_id: str) -> CurvePoint:
    """One measured point: its median throughput, the trials' range and TPOT p50."""
    tok = [tr.output_tok_s for tr in result.trials]
    return CurvePoint(x, result.output_tok_s, min(tok), max(tok), result.tpot.p50, test_id)


def _settings(result: Any) -> dict[str, Any]:
    """A result's engine keys (``engine.`` prefixed) and workload keys, as one row."""
    row = {f"engine.{k}": v for k, v in result.engine.to_json().items()}
    row.update({k: v for k, v in result.workload.to_json().items() if k not in _NOT_A_CURVE_KEY})
    return row


def _varying_key(rows: Sequence[dict[str, Any]]) -> str | None:
    """The one key whose value differs between ``rows`` (``_settings``), when it is
    numeric; None for a grid (several keys vary) or nothing to draw."""
    keys = sorted({k for row in rows for k in row})
    varying = [k for k in keys if len({json.dumps(row.get(k), sort_keys=True) for row in rows}) > 1]
    if len(varying) != 1:
        return None
    values = [row.get(varying[0]) for row in rows]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return varying[0]


def sweep_curves(report: RunReport) -> dict[str, tuple[str, list[CurvePoint]]]:
    """Each test that swept one key itself (``llmperf.sweep``, e.g. the batch curve):
    title -> (that key, its points sorted by it), throughput against the key."""
    out: dict[str, tuple[str, list[CurvePoint]]] = {}
    for t in report.tests:
        rows = [_settings(r) for r in t.points]
        axis = _varying_key(rows) if len(rows) >= 2 else None
        if axis is None:
            continue
        pts = {float(row[axis]): _curve_point(float(row[axis]), r, t.test_id)
               for row, r in zip(rows, t.points, strict=True)}
        # the test's own name: a suite path and the hardware key would not fit the title
        title = f"{t.test_id.rpartition('::')[2]} [{t.points[0].device}]"
        while title in out:
            title += " (2)"
        out[title] = (axis.removeprefix("engine."), sorted(pts.values(), key=lambda p: p.x))
    return out


def plot_curve(title: str, points: Sequence[CurvePoint], path: Path, xlabel: str = "batch") -> Path:
    fig = _figure(7.5, 4.4)
    ax = fig.add_subplot()
    _style(ax)
    xs = [p.x for p in points]
    ys = [p.tok_s for p in points]
    err = [[p.tok_s - p.tok_s_low for p in points], [p.tok_s_high - p.tok_s for p in points]]
    ax.errorbar(xs, ys, yerr=err, color=HEAD, marker="o", linewidth=2, capsize=3,
                label="output tok/s (median, trial range)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("output tokens / s", color=HEAD)
    ax.set_ylim(bottom=0, top=max(p.tok_s_high for p in points) * 1.15)
    ax2 = ax.twinx()
    ax2.plot(xs, [p.tpot_ms for p in points], color=BASE, marker="s", linestyle="--",
             linewidth=1.3, label="TPOT p50 (ms)")
    ax2.set_ylabel("TPOT p50 (ms)", color=BASE)
    ax2.set_ylim(bottom=0, top=max(p.tpot_ms for p in points) * 1.3)
    ax2.spines["top"].set_visible(False)
    ax2.tick_params(labelsize=8)
    k = knee(points)
    if k is not None:
        ax.axvline(k.x, color=KNEE, linestyle=":", linewidth=1.5)
        ax.annotate(f"knee: {xlabel} {k.x:g}\n{k.tok_s:,.0f} tok/s", (k.x, k.tok_s),
                    xytext=(12, -34), textcoords="offset points", color=KNEE, fontsize=9,
                    arrowprops={"arrowstyle": "->", "color": KNEE})
        sub = f"knee at {xlabel} {k.x:g}: doubling beyond it adds < {KNEE_GAIN:.0%} tok/s"
    else:
        sub = f"no knee yet: tok/s still grows >= {KNEE_GAIN:.0%} per doubling of {xlabel}"
    ax.set_title(f"Throughput vs {xlabel}: {title}\n{sub}", fontsize=10, loc="left")
    handles = [*ax.get_legend_handles_labels()[0], *ax2.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, loc="lower right", fontsize=8, frameon=False)
    return _save(fig, path)


# ----------------------------------------------------------------------- latency CDFs


def _nines(q: float) -> float:
    return -math.log10(1.0 - q)


def _cdf(ax: Any, dist: Distribution, color: str, width: float, alpha: float,
         label: str | None) -> None:
    pts = [(getattr(dist, name), _nines(q)) for name, q in _QUANTILES
           if isinstance(getattr(dist, name), float) and math.isfinite(getattr(dist, name))]
    if pts:
        ax.plot([x for x, _ in pts], [y for _, y in pts], color=color, linewidth=width,
                alpha=alpha, marker="o", markersize=3 if width < 1.5 else 4, label=label)


def plot_latency(t: TestRecord, path: Path) -> Path | None:
    r = t.result
    if r is None:
        return None
    other, other_name = (t.base, "base") if t.base is not None else (None, "")
    fig = _figure(9, 6)
    axes = fig.subplots(2, 2)
    for ax, (attr, name) in zip(axes.flat, _LATENCIES, strict=True):
        _style(ax)
        if other is not None:
            _cdf(ax, getattr(other, attr.removesuffix("_ms")), BASE, 2.0, 0.9, other_name)
        for i, trial in enumerate(r.trials):
            _cdf(ax, getattr(trial, attr), HEAD, 0.8, 0.35, "trials" if i == 0 else None)
        _cdf(ax, getattr(r, attr.removesuffix("_ms")), HEAD, 2.2, 1.0,
             f"{'head' if other is not None else 'now'} (median of trials)")
        ax.set_yticks([_nines(q) for _, q in _QUANTILES], [n for n, _ in _QUANTILES])
        ax.set_ylim(_nines(0.5) - 0.15, _nines(0.999) + 0.2)
        ax.set_xlabel(f"{name} (ms)")
        ax.set_title(name, fontsize=10, loc="left")
    axes.flat[0].legend(fontsize=8, frameon=False, loc="lower right")
    fig.suptitle(f"Latency distribution: {_short(t.test_id)}\n"
                 f"{r.engine.label()}, {r.workload.label()} [{r.device}]; "
                 f"percentile (y) reached at latency (x), tail stretched", fontsize=10, x=0.01,
                 ha="left")
    return _save(fig, path)


# ----------------------------------------------------------------------- side by side


def _values(source: Any, metric: str) -> list[float]:
    values = source.metric_values() if source is not None else {}
    return list(values.get(metric, []))


def plot_compare(t: TestRecord, path: Path) -> Path | None:
    """Baseline (or paired base) vs now, per key metric, every trial a dot."""
    if t.result is None:
        return None
    other: Any = t.base if t.base is not None else t.baseline
    if other is None:
        return None
    side, now_name = ("base", "head") if t.base is not None else ("baseline", "now")
    fig = _figure(10, 3.6)
    axes = fig.subplots(1, len(_COMPARED))
    for ax, (metric, title) in zip(axes, _COMPARED, strict=True):
        _style(ax)
        before, now = _values(other, metric), _values(t.result, metric)
        if not before or not now:
            ax.set_visible(False)
            continue
        import numpy as np

        meds = [float(np.median(before)), float(np.median(now))]
        ax.bar([0, 1], meds, color=[BASE, HEAD], width=0.6, alpha=0.85)
        for i, vals in enumerate((before, now)):
            jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else [0.0]
            ax.scatter(i + np.asarray(jitter), vals, color="black", s=10, zorder=3)
        ax.set_xticks([0, 1], [side, now_name])
        change = meds[1] / meds[0] - 1.0
        row = t.comparison_row(metric)
        verdict = row.verdict if row is not None else "ok"
        color = BAD if verdict == "regression" else GOOD if verdict == "improvement" else "black"
        ax.set_title(f"{title}\n{change:+.1%}" + ("" if verdict == "ok" else f"  {verdict}"),
                     fontsize=9, color=color)
        ax.set_ylim(0, max(max(before), max(now)) * 1.15)
    fig.suptitle(f"{side.capitalize()} vs {now_name}: {_short(t.test_id)}: {t.label}",
                 fontsize=10, x=0.01, ha="left")
    return _save(fig, path)


# ----------------------------------------------------------------------- history


def plot_history(store: Any, hardware_key: str, test_id: str, path: Path,
                 metrics: Sequence[str] = HISTORY_METRICS) -> Path | None:
    """Each metric across the stored runs of one test, change point marked."""
    from .history import by_commit, metric_change_points

    present = [m for m in metrics if m in store.metrics(hardware_key, test_id)]
    series = {m: by_commit(store.series(hardware_key, test_id, m)) for m in present}
    series = {m: s for m, s in series.items() if len(s) >= 2}
    if not series:
        return None
    fig = _figure(9, 2.3 * len(series) + 0.8)
    axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    labels: list[str] = []
    for ax, (metric, commits) in zip(axes, series.items(), strict=True):
        _style(ax)
        labels = [c.commit[:8] for c in commits]
        for i, c in enumerate(commits):
            ax.scatter([i] * len(c.runs), [p.median for p in c.runs], color=BASE, s=12, zorder=3)
        ax.plot(range(len(commits)), [c.value for c in commits], color=HEAD, marker="o",
                linewidth=1.8)
        spec = METRICS.get(metric)
        ax.set_ylabel(f"{metric}\n({spec.unit})" if spec else metric, fontsize=8)
        for cp in metric_change_points(metric, commits):
            worse = (cp.change < 0) == (spec is not None and spec.direction == "higher")
            color = BAD if worse else GOOD
            ax.axvline(cp.index - 0.5, color=color, linestyle="--", linewidth=1.4)
            ax.hlines([cp.before], -0.3, cp.index - 0.5, colors=color, linewidth=1, alpha=0.5)
            ax.hlines([cp.after], cp.index - 0.5, len(commits) - 0.7, colors=color, linewidth=1,
                      alpha=0.5)
            ax.annotate(f"change point {cp.change:+.1%}", (cp.index - 0.5, cp.after),
                        xytext=(6, 6), textcoords="offset points", color=color, fontsize=8)
        lo = min(min(p.median for p in c.runs) for c in commits)
        hi = max(max(p.median for p in c.runs) for c in commits)
        pad = (hi - lo) * 0.25 or abs(hi) * 0.05 or 1.0
        ax.set_ylim(lo - pad, hi + pad)
    axes[-1].set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axes[-1].set_xlabel("commit (in the order first measured; dots: single runs)")
    fig.suptitle(f"History: {_short(test_id)} on {hardware_key}", fontsize=10, x=0.01, ha="left")
    return _save(fig, path)


def write_history_plots(store: Any, directory: str | os.PathLike[str],
                        hardware_key: str | None = None,
                        keep: Callable[[str], bool] | None = None) -> list[Path]:
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, test_id in store.tests(hardware_key):
        if keep is not None and not keep(test_id):
            continue
        p = plot_history(store, key, test_id, out_dir / f"history-{slug(key, 40)}-{slug(test_id)}.png")
        if p is not None:
            written.append(p)
    return written


# ----------------------------------------------------------------------- all of them


def write_plots(report: RunReport, directory: str | os.PathLike[str],
                history: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every chart the report has data for; returns the files written."""
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for title, (axis, points) in {**curve_groups(report), **sweep_curves(report)}.items():
        written.append(plot_curve(title, points, out_dir / f"throughput-{slug(title)}.png",
                                  xlabel=axis))
    for t in report.tests:
        name = slug(t.test_id) + (f"-{slug(t.hardware_key, 40)}" if len(report.machines) > 1
                                  and t.hardware_key else "")
        for fn, prefix in ((plot_latency, "latency"), (plot_compare, "compare")):
            p = fn(t, out_dir / f"{prefix}-{name}.png")
            if p is not None:
                written.append(p)
    if history is not None and Path(history).exists():
        from .history import HistoryStore

        ids = {t.test_id for t in report.tests}
        with HistoryStore(history) as store:
            written.extend(write_history_plots(store, out_dir, keep=ids.__contains__))
    return written

