"""An incremental Server-Sent Events parser (the WHATWG event-stream format)."""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass, field
from typing import Any

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Event:
    """One dispatched event: its name and its data decoded as a JSON object.

    `text` is the raw data; `data` is `{}` when the text is not a JSON object.
    """

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    id: str | None = None


class SSEDecoder:
    """Feed it bytes or text as they arrive; it returns the events each chunk completes."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        # A chunk that ends in "\r" may be the first half of "\r\n".
        self._skip_lf = False
        self._name = ""
        self._data: list[str] = []
        self._has_data = False
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes | str) -> list[Event]:
        text = self._utf8.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text:
            self._skip_lf = False
            text = text.removeprefix("\n")
        self._buffer += text
        events: list[Event] = []
        consumed = 0
        for match in _LINE_END.finditer(self._buffer):
            event = self._line(self._buffer[consumed : match.start()])
            if event is not None:
                events.append(event)
            consumed = match.end()
        if consumed == len(self._buffer) and self._buffer.endswith("\r"):
            self._skip_lf = True
        self._buffer = self._buffer[consumed:]
        return events

    def flush(self) -> list[Event]:
        """At the end of the stream: an unterminated last event is discarded, as the spec says."""
        self._buffer = ""
        self._data, self._has_data, self._name = [], False, ""
        return []

    def _line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._name = value
        elif name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isdigit():
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        name, data, has_data = self._name or "message", self._data, self._has_data
        self._name, self._data, self._has_data = "", [], False
        if not has_data:
            return None
        text = "\n".join(data)
        return Event(name=name, data=_json_object(text), text=text, id=self.last_event_id)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
