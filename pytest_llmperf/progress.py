"""What a long run is doing: which engine starts, its start-up phases, trial progress.

The engine process writes vLLM's log and its own trial lines to one log file; while the
parent waits on the engine it reads whatever is new in that file and turns the lines
it recognises into :class:`ProgressEvent` s for a callback (the plugin prints them in
pytest's terminal; a script can log them). Reading the log needs no change to vLLM and
no extra channel to the engine. Nothing here imports pytest or vLLM.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# The engine worker prints these into its log; the follower reads them back.
TRIAL_PREFIX = "[llmperf] "


@dataclass(frozen=True)
class ProgressEvent:
    """``kind``: ``starting``, ``phase``, ``ready``, ``trial``, ``warmup`` or ``stopped``;
    ``text`` for people."""

    kind: str
    text: str


Progress = Callable[[ProgressEvent], None]

# vLLM's start-up, in the order it happens (0.25 on GPUs, 0.32's CPU build). A phase
# is reported once per engine start, at its first matching line.
_PHASES: tuple[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    ("engine", re.compile(r"Initializing a V1 LLM engine \(v([^)]+)\)"),
     lambda m: f"initialising vLLM {m.group(1)}"),
    ("load", re.compile(r"Starting to load model"), lambda m: "loading weights"),
    ("loaded", re.compile(r"Model loading took ([\d.]+) GiB(?: memory)? and ([\d.]+) seconds"),
     lambda m: f"weights loaded: {m.group(1)} GiB in {float(m.group(2)):.1f} s"),
    ("compile", re.compile(r"torch\.compile takes|Compiling a graph for|Dynamo bytecode transform"),
     lambda m: "compiling (torch.compile; cached after the first start)"),
    ("kv", re.compile(r"KV cache size: ([\d,]+) tokens"), lambda m: f"KV cache: {m.group(1)} tokens"),
    ("graphs", re.compile(r"Capturing CUDA graphs?"), lambda m: "capturing CUDA graphs"),
    ("warm", re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) sec"),
     lambda m: f"profiled, KV cache allocated, warmed up in {float(m.group(1)):.1f} s"),
)


class LogFollower:
    """Reads a growing log file and yields progress events for the lines it knows."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0
        self._partial = ""
        self._seen: set[str] = set()

    def skip_existing(self) -> None:
        """Start from the current end (an engine's log also holds its earlier runs)."""
        try:
            self._offset = os.path.getsize(self.path)
        except OSError:
            self._offset = 0
        self._partial = ""

    def _new_lines(self) -> list[str]:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                f.seek(self._offset)
                chunk = f.read()
                self._offset = f.tell()
        except OSError:
            return []
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()  # an unfinished last line waits for its end
        return lines

    def events(self) -> Iterator[ProgressEvent]:
        for line in self._new_lines():
            if TRIAL_PREFIX in line:
                kind, _, text = line.split(TRIAL_PREFIX, 1)[1].partition(": ")
                yield ProgressEvent(kind.strip() or "trial", text.strip())
                continue
            for name, pattern, describe in _PHASES:
                if name in self._seen:
                    continue
                m = pattern.search(line)
                if m:
                    self._seen.add(name)
                    yield ProgressEvent("phase", describe(m))


def watcher(path: str, progress: Progress | None, *, from_end: bool = False) -> Callable[[], None]:
    """A function to call while waiting on the engine: it reports what the log shows."""
    if progress is None:
        return lambda: None
    follower = LogFollower(path)
    if from_end:
        follower.skip_existing()

    def tick() -> None:
        for event in follower.events():
            progress(event)

    return tick


def trial_line(kind: str, text: str) -> str:
    """The line the engine worker prints for the follower (``kind``: trial or warmup)."""
    return f"{TRIAL_PREFIX}{kind}: {text}"
