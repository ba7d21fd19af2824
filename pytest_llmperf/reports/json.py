"""``--llmperf-json``: the run as a versioned JSON file, validated against its schema.

The schema (``schema/report.v1.json``) refers to the baseline schema for the stored
baseline entry and the machine fingerprint, so the two can never disagree. A report
is validated before it is written (a bug here must not produce a file that tools
downstream reject) and when it is read back (``merge`` names the bad file and path).
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import json
import os
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..baselines import format_json_path, load_schema
from .model import SUPPORTED_REPORT_VERSIONS, RunReport

REPORT_SCHEMA_RESOURCE = "schema/report.v1.json"


class ReportError(ValueError):
    """A report file is unreadable or invalid; the message names the file and JSON path."""


def load_report_schema() -> dict[str, Any]:
    text = importlib.resources.files("pytest_llmperf").joinpath(REPORT_SCHEMA_RESOURCE).read_text(
        encoding="utf-8"
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema
    from referencing import Registry, Resource

    baseline = load_schema()
    registry = Registry().with_resource(baseline["$id"], Resource.from_contents(baseline))
    return jsonschema.Draft202012Validator(load_report_schema(), registry=registry)


def validate_report(data: Any, where: str = "report") -> None:
    """Raise ReportError naming the first invalid place (the deepest, most useful one)."""
    import jsonschema

    errors = list(_validator().iter_errors(data))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ReportError(f"{where}: {format_json_path(list(best.absolute_path))}: {best.message}")


def report_json(report: RunReport) -> dict[str, Any]:
    data = report.to_json()
    validate_report(data, "the report pytest-llmperf built")
    return data


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(report: RunReport, path: str | os.PathLike[str]) -> Path:
    """Validate, then write atomically (readers never see half a file)."""
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, dumps(report_json(report)).encode("utf-8"))
    return target


def read_json(path: str | os.PathLike[str]) -> RunReport:
    """A report file (``.gz``: gzipped, as benchmarks/results keeps them) back as a
    RunReport; ReportError names the file and the reason."""
    try:
        raw = Path(path).read_bytes()
        text = (gzip.decompress(raw) if str(path).endswith(".gz") else raw).decode("utf-8")
    except OSError as exc:  # gzip.BadGzipFile is one
        raise ReportError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, EOFError) as exc:
        raise ReportError(f"{path}: cannot read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version not in SUPPORTED_REPORT_VERSIONS:
        raise ReportError(
            f"{path}: schema_version {version!r} is not one this version reads "
            f"({', '.join(map(str, SUPPORTED_REPORT_VERSIONS))}); is it a pytest-llmperf report?"
        )
    validate_report(data, str(path))
    return RunReport.from_json(data)
