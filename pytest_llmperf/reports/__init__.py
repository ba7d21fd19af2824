"""Report writers: one module per format, each reading a :class:`RunReport`.

A ``RunReport`` is built from the session's verdicts (``RunReport.from_verdicts``) or
read back from a JSON report (``RunReport.from_json``); every writer reads only it, so
a merged fleet report renders exactly like a single run's. Nothing here imports
pytest, vLLM or the engine.
"""

from __future__ import annotations

from .model import OUTCOMES, RunReport, TestRecord, merge_reports

__all__ = ["OUTCOMES", "RunReport", "TestRecord", "merge_reports"]
