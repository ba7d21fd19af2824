"""Server-sent events, as the OpenAI streaming endpoints send them.

Bytes arrive in arbitrary pieces (a TCP read may hold half an event or ten); the parser
buffers them and yields the ``data:`` payload of every complete event. Comments
(``: ping``) and other fields are skipped; ``[DONE]`` is yielded as it is.
"""

from __future__ import annotations

import codecs


class SSEParser:
    """Incremental SSE parser: feed bytes, get complete events' data payloads."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""

    def feed(self, data: bytes) -> list[str]:
        self._buffer += self._decoder.decode(data)
        # Events end with a blank line; normalise CRLF/CR line ends first.
        if "\r" in self._buffer:
            self._buffer = self._buffer.replace("\r\n", "\n").replace("\r", "\n")
        events: list[str] = []
        while "\n\n" in self._buffer:
            block, self._buffer = self._buffer.split("\n\n", 1)
            payload = _data_of(block)
            if payload is not None:
                events.append(payload)
        return events

    def close(self) -> list[str]:
        """Whatever complete event is left when the stream ends without a blank line."""
        self._buffer += self._decoder.decode(b"", final=True)
        block, self._buffer = self._buffer, ""
        payload = _data_of(block)
        return [payload] if payload is not None else []


def _data_of(block: str) -> str | None:
    lines = []
    for line in block.split("\n"):
        if line.startswith("data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(" ") else value)
    return "\n".join(lines) if lines else None
