"""Run-wide options, validated as one piece before any engine starts.

The plugin builds :class:`RunOptions` from pytest's parsed options (``vars(config.option)``)
and turns :class:`OptionError` into ``pytest.UsageError``; a script builds the same object
from a plain dict. Every rejection names the option, and a conflict names both options.

Paths (``--llmperf-baselines``, ``--llmperf-json``, ``--llmperf-log-dir``, ini
``llmperf_baselines``) follow one rule: a relative path is resolved against the rootdir
(not the working directory, so the same command finds the same files from any
sub-directory) and must stay inside it; an absolute path (``/...`` or ``~/...``) says
that a place outside the rootdir is meant and is taken as given. Paths that cannot be
written (a directory where a file is wanted, a file where a directory is wanted, a
read-only place) are rejected here, not after the engines ran.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import suggest
from .metrics import METRICS, tolerance_limit, tolerance_range
from .suitecheck import DEFAULT_SHARE as DEFAULT_SUITE_CHECK

DEFAULT_CPU_MEMORY_FRACTION = 0.25
DEFAULT_START_TIMEOUT_S = 900.0
DEFAULT_RUN_TIMEOUT_S = 900.0
DEFAULT_BASELINES_DIR = "baselines"

# Options that take a value, by pytest dest name. ``split_value_options`` uses it to
# spot the two-argument form ``--opt VALUE`` (see there).
VALUE_OPTIONS: tuple[str, ...] = (
    "llmperf_baseline_starts", "llmperf_baselines", "llmperf_tolerance", "llmperf_trials",
    "llmperf_min_duration", "llmperf_slowdown", "llmperf_start_timeout",
    "llmperf_run_timeout", "llmperf_cpu_memory", "llmperf_log_dir", "llmperf_json",
    "llmperf_markdown", "llmperf_plots", "llmperf_history", "llmperf_confirm", "llmperf_ab",
    "llmperf_ab_starts", "llmperf_ab_python",
    "llmperf_markdown", "llmperf_plots", "llmperf_history", "llmperf_gpu_cost_per_hour",
    "llmperf_memory_budget", "llmperf_suite_check",
)
# Output files and directories, by dest name (the baselines directory is handled apart).
OUTPUT_FILES: tuple[str, ...] = ("llmperf_json", "llmperf_markdown", "llmperf_history")
OUTPUT_DIRS: tuple[str, ...] = ("llmperf_log_dir", "llmperf_plots")
PATH_OPTIONS: tuple[str, ...] = ("llmperf_baselines", *OUTPUT_FILES, *OUTPUT_DIRS,
                                 "llmperf_ab_python")


def flag(dest: str) -> str:
    """``llmperf_json`` -> ``--llmperf-json``."""
    return "--" + dest.replace("_", "-")


class OptionError(ValueError):
    """A run option is invalid, or conflicts with another; ``option`` names it.

    ``other`` names the second option of a conflict (None otherwise).
    """

    def __init__(self, option: str, reason: str, *, other: str | None = None) -> None:
        self.option = option
        self.other = other
        self.reason = reason
        super().__init__(option + reason)


# ------------------------------------------------------------------------ numbers


def _number(dest: str, value: Any, kind: type) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        raise OptionError(flag(dest), f"={value!r}: expected a number")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise OptionError(flag(dest), f"={value!r}: expected {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(number):
        raise OptionError(flag(dest), f"={value!r}: must be a finite number")
    if kind is int and isinstance(value, float) and value != number:
        raise OptionError(flag(dest), f"={value!r}: expected an integer")
    return number


def parse_tolerances(values: Sequence[str]) -> tuple[float | None, dict[str, float]]:
    """``["0.05", "output_tok_s=0.02"]`` -> (0.05, {"output_tok_s": 0.02})."""
    overall: float | None = None
    per_metric: dict[str, float] = {}
    option = flag("llmperf_tolerance")
    for raw in values:
        name, _, number = str(raw).rpartition("=")
        try:
            tol = float(number)
        except ValueError:
            raise OptionError(
                option, f"={raw!r}: expected a fraction like 0.05 or METRIC=0.05"
            ) from None
        if name and name not in METRICS:
            raise OptionError(
                option, f"={raw!r}: unknown metric {name!r}{suggest(name, set(METRICS))}"
            )
        if not 0 < tol < (tolerance_limit(name) if name else 1.0):
            raise OptionError(option, f"={raw!r}: the fraction must be in "
                              + (tolerance_range(name) if name else "(0, 1)"))
        if not name:
            overall = tol
        else:
            per_metric[name] = tol
    return overall, per_metric


# -------------------------------------------------------------------------- paths


def resolve_path(option: str, raw: str | os.PathLike[str], rootdir: Path) -> Path:
    """Resolve ``raw`` by the rule in the module docstring; OptionError when it escapes."""
    text = os.fspath(raw)
    if not text.strip():
        raise OptionError(option, "=: empty path")
    expanded = Path(os.path.expanduser(text))
    if expanded.is_absolute():
        return Path(os.path.normpath(expanded))
    root = Path(os.path.normpath(Path(rootdir).absolute()))
    full = Path(os.path.normpath(root / expanded))
    if full != root and root not in full.parents:
        raise OptionError(
            option,
            f"={text}: climbs out of the rootdir {root}; relative paths are resolved against "
            "the rootdir and must stay inside it (give an absolute path to mean a place "
            "outside it)",
        )
    return full


def _first_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _check_writable_dir(option: str, shown: str, directory: Path) -> None:
    """``directory`` (which need not exist yet) can be created and written in: its
    first existing ancestor is a directory we may write in."""
    anchor = _first_existing(directory)
    if not anchor.is_dir():
        raise OptionError(option, f"={shown}: {anchor} is a file, so {directory} cannot be created")
    try:
        # O_TMPFILE where the filesystem has it: nothing visible is created.
        with tempfile.TemporaryFile(dir=anchor):
            pass
    except OSError as exc:
        raise OptionError(option, f"={shown}: {anchor} is not writable ({exc.strerror or exc})") from None


def check_output_file(option: str, shown: str, path: Path) -> None:
    """A report file: not a directory, and its directory can be created and written."""
    if path.is_dir():
        raise OptionError(
            option, f"={shown}: {path} is a directory; name a file, e.g. {path / 'results.json'}"
        )
    if path.exists() and not path.is_file():
        raise OptionError(option, f"={shown}: {path} exists and is not a regular file")
    _check_writable_dir(option, shown, path.parent)


def check_output_dir(option: str, shown: str, path: Path, *, writable: bool = True) -> None:
    """A directory: not a file; when ``writable``, it can be created and written in."""
    if path.exists() and not path.is_dir():
        raise OptionError(option, f"={shown}: {path} is a file, not a directory")
    if writable:
        _check_writable_dir(option, shown, path)


# ---------------------------------------------------------------------- conflicts


@dataclass(frozen=True)
class RunOptions:
    """Validated run-wide options (defaults are those of the command line)."""

    device: str = "cpu"
    update_baselines: bool = False
    baseline_starts: int = 1
    baseline_append: bool = False
    strict: bool = False
    baselines_dir: Path = Path(DEFAULT_BASELINES_DIR)
    tolerance: float | None = None
    tolerances: Mapping[str, float] = field(default_factory=dict)
    trials: int | None = None
    min_duration_s: float | None = None
    slowdown: float | None = None
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S
    cpu_memory: float = DEFAULT_CPU_MEMORY_FRACTION
    log_dir: Path | None = None
    json_path: Path | None = None
    markdown_path: Path | None = None
    plots_dir: Path | None = None
    history_path: Path | None = None
    confirm: int = 2
    ab_ref: str | None = None
    ab_starts: int = 2
    ab_python: str | None = None
    gpu_cost_per_hour: float | None = None
    memory_budget_bytes: int | None = None
    memory_budget: str | None = None  # as given, for messages
    suite_check: float | None = DEFAULT_SUITE_CHECK  # share of each tolerance; None: off

    @classmethod
    def from_mapping(
        cls,
        values: Mapping[str, Any],
        *,
        rootdir: str | os.PathLike[str],
        baselines_ini: str | None = None,
        check_paths: bool = True,
    ) -> RunOptions:
        """Validate options given by pytest dest name (``llmperf_trials``, ``gpu``, ...).

        Missing keys take their defaults. ``baselines_ini`` is the ini value used when
        ``llmperf_baselines`` is not given. With ``check_paths`` the output paths are
        checked for writability (this touches the filesystem, never leaving a file).
        Raises OptionError.
        """
        root = Path(rootdir)
        get = values.get
        update = bool(get("llmperf_update_baselines", False))
        strict = bool(get("llmperf_strict", False))

        overall, per_metric = parse_tolerances(list(get("llmperf_tolerance") or []))

        trials = _number("llmperf_trials", get("llmperf_trials"), int)
        if trials is not None and trials < 1:
            raise OptionError(flag("llmperf_trials"), f"={trials}: must be at least 1")
        starts_given = _number("llmperf_baseline_starts", get("llmperf_baseline_starts"), int)
        if starts_given is not None and starts_given < 1:
            raise OptionError(flag("llmperf_baseline_starts"), f"={starts_given}: must be at least 1")
        min_duration = _number("llmperf_min_duration", get("llmperf_min_duration"), float)
        if min_duration is not None and min_duration < 0:
            raise OptionError(flag("llmperf_min_duration"), f"={min_duration:g}: must be 0 or more")
        slowdown = _number("llmperf_slowdown", get("llmperf_slowdown"), float)
        if slowdown is not None and not 0 <= slowdown < 0.9:
            raise OptionError(flag("llmperf_slowdown"), f"={slowdown:g}: must be a fraction in [0, 0.9)")
        timeouts = {}
        for dest, default in (("llmperf_start_timeout", DEFAULT_START_TIMEOUT_S),
                              ("llmperf_run_timeout", DEFAULT_RUN_TIMEOUT_S)):
            value = _number(dest, get(dest), float)
            if value is None:
                value = default
            if value <= 0:
                raise OptionError(flag(dest), f"={value:g}: must be positive (seconds)")
            timeouts[dest] = value
        cpu_memory = _number("llmperf_cpu_memory", get("llmperf_cpu_memory"), float)
        if cpu_memory is None:
            cpu_memory = DEFAULT_CPU_MEMORY_FRACTION
        if not 0 < cpu_memory <= 0.9:
            raise OptionError(flag("llmperf_cpu_memory"), f"={cpu_memory:g}: must be a fraction in (0, 0.9]")

        cost = _number("llmperf_gpu_cost_per_hour", get("llmperf_gpu_cost_per_hour"), float)
        if cost is not None and not cost > 0:
            raise OptionError(flag("llmperf_gpu_cost_per_hour"), f"={cost:g}: must be a positive price")
        budget_text = get("llmperf_memory_budget")
        budget = None
        if budget_text is not None:
            from .budget import BudgetError, parse_size

            try:
                budget = parse_size(str(budget_text))
            except BudgetError as exc:
                raise OptionError(flag("llmperf_memory_budget"), f": {exc}") from None

        suite_check = parse_suite_check(get("llmperf_suite_check"))

        # Conflicts: options that together would record a wrong baseline or be ignored.
        if update and slowdown:
            raise OptionError(
                flag("llmperf_update_baselines"),
                f" with --llmperf-slowdown={slowdown:g}: the recorded baseline would carry the "
                "injected slowdown; record without --llmperf-slowdown, then gate with it",
                other=flag("llmperf_slowdown"),
            )
        append = bool(get("llmperf_baseline_append", False))
        if append and not update:
            raise OptionError(
                flag("llmperf_baseline_append"),
                " without --llmperf-update-baselines: it says how to record and would be "
                "ignored; add --llmperf-update-baselines or drop it",
                other=flag("llmperf_update_baselines"),
            )
        if starts_given is not None and not update:
            raise OptionError(
                flag("llmperf_baseline_starts"),
                f"={starts_given} without --llmperf-update-baselines: it only applies when "
                "recording baselines and would be ignored; add --llmperf-update-baselines or drop it",
                other=flag("llmperf_update_baselines"),
            )

        confirm = _number("llmperf_confirm", get("llmperf_confirm"), int)
        if confirm is None:
            confirm = 2
        if confirm < 0:
            raise OptionError(flag("llmperf_confirm"), f"={confirm}: must be 0 or more")
        ab_ref, ab_starts, ab_python = _ab_options(get, update)

        # Paths.
        raw_baselines = get("llmperf_baselines")
        baselines_option = flag("llmperf_baselines")
        if raw_baselines is None:
            raw_baselines = baselines_ini or DEFAULT_BASELINES_DIR
            baselines_option = "ini llmperf_baselines"
        baselines_dir = resolve_path(baselines_option, raw_baselines, root)
        outputs: dict[str, Path] = {}
        for dest in (*OUTPUT_FILES, *OUTPUT_DIRS):
            raw = get(dest)
            if raw is not None:
                outputs[dest] = resolve_path(flag(dest), raw, root)
        seen: dict[Path, str] = {}
        for dest, path in outputs.items():
            if path in seen:
                raise OptionError(flag(dest), f"={get(dest)}: is also where {flag(seen[path])} "
                                  "writes; give each output its own path", other=flag(seen[path]))
            seen[path] = dest
            if dest in OUTPUT_FILES and baselines_dir in path.parents[1:]:
                # baselines/<hardware key>/<suite>.json: a report could replace a baseline file
                raise OptionError(
                    flag(dest),
                    f"={get(dest)}: lies inside the baselines directory {baselines_dir}, where a "
                    "report would overwrite or pass for a baseline file; write it elsewhere",
                    other=baselines_option,
                )
        if check_paths:
            check_output_dir(baselines_option, str(raw_baselines), baselines_dir, writable=update)
            for dest, path in outputs.items():
                if dest in OUTPUT_FILES:
                    check_output_file(flag(dest), str(get(dest)), path)
                else:
                    check_output_dir(flag(dest), str(get(dest)), path)

        return cls(
            device="gpu" if get("gpu") else "cpu",
            update_baselines=update,
            baseline_starts=starts_given or 1,
            baseline_append=append,
            strict=strict,
            baselines_dir=baselines_dir,
            tolerance=overall,
            tolerances=per_metric,
            trials=trials,
            min_duration_s=min_duration,
            slowdown=slowdown,
            start_timeout_s=timeouts["llmperf_start_timeout"],
            run_timeout_s=timeouts["llmperf_run_timeout"],
            cpu_memory=cpu_memory,
            log_dir=outputs.get("llmperf_log_dir"),
            json_path=outputs.get("llmperf_json"),
            markdown_path=outputs.get("llmperf_markdown"),
            plots_dir=outputs.get("llmperf_plots"),
            history_path=outputs.get("llmperf_history"),
            confirm=confirm,
            ab_ref=ab_ref,
            ab_starts=ab_starts,
            ab_python=ab_python,
            gpu_cost_per_hour=cost,
            memory_budget_bytes=budget,
            memory_budget=None if budget_text is None else str(budget_text),
            suite_check=suite_check,
        )


def parse_suite_check(raw: Any) -> float | None:
    """--llmperf-suite-check SHARE|off: None when off, else the share in (0, 1]."""
    if raw is None:
        return DEFAULT_SUITE_CHECK
    if str(raw).strip().lower() == "off":
        return None
    option = flag("llmperf_suite_check")
    try:
        share = float(raw)
    except (TypeError, ValueError):
        raise OptionError(option, f"={raw!r}: expected a share of the tolerance like 0.25, "
                          "or off") from None
    if not 0 < share <= 1:
        raise OptionError(option, f"={raw!r}: the share must be in (0, 1], or off")
    return share


def _ab_options(get: Any, update: bool) -> tuple[str | None, int, str | None]:
    """--llmperf-ab REF and its companions (paired A/B against a base commit)."""
    ref = get("llmperf_ab")
    starts = _number("llmperf_ab_starts", get("llmperf_ab_starts"), int)
    python = get("llmperf_ab_python")
    if ref is None:
        for dest, given in (("llmperf_ab_starts", starts is not None and starts != 2),
                            ("llmperf_ab_python", python is not None)):
            if given:
                raise OptionError(flag(dest), " needs --llmperf-ab REF: it only applies to paired "
                                  "A/B runs and would be ignored", other=flag("llmperf_ab"))
        return None, 2, None
    if not str(ref).strip():
        raise OptionError(flag("llmperf_ab"), "=: needs a git ref, e.g. --llmperf-ab=origin/main")
    starts = 2 if starts is None else starts
    if starts < 1:
        raise OptionError(flag("llmperf_ab_starts"), f"={starts}: must be at least 1")
    if update:
        raise OptionError(
            flag("llmperf_ab"),
            f"={ref} with --llmperf-update-baselines: a paired run compares with the base "
            "commit and recording baselines compares with nothing; use one at a time",
            other=flag("llmperf_update_baselines"),
        )
    if python is not None:
        exe = os.path.expanduser(str(python))
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            raise OptionError(flag("llmperf_ab_python"), f"={python}: not an executable file")
        python = os.path.abspath(exe)
    return str(ref), starts, python


# ------------------------------------------------------- the two-argument form


def split_value_options(args: Sequence[str], dests: Sequence[str] = VALUE_OPTIONS) -> list[tuple[str, str]]:
    """(option, value) for every ``--opt VALUE`` given as two arguments.

    pytest picks its rootdir from the positional arguments before plugins have added
    their options, so there the VALUE of ``--llmperf-baselines /abs/dir`` counts as a
    test path and can move the rootdir (and with it every test id and baseline key).
    ``--opt=VALUE`` is one argument and cannot be mistaken.
    """
    wanted = {flag(d) for d in dests}
    found = []
    for i, arg in enumerate(args[:-1]):
        if arg in wanted and not args[i + 1].startswith("-"):
            found.append((arg, args[i + 1]))
    return found
