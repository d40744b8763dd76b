"""Job events: one JSON object per line, appended to `events.jsonl` and optionally streamed to a callback.

    events = EventLog(output_dir / "events.jsonl", sink=None)
    events.emit("progress", step=10, total_steps=100, loss=2.3)

Every event is `{"time": ISO-8601 UTC, "type": TYPE, ...fields}`. Each line is flushed as it is written, so a
reader tailing the file sees it at once; `start`, `checkpoint`, `done` and `error` are also fsynced, because they
are the ones a resumed or crashed run is judged by. Non-finite floats (a NaN loss) are written as null: bare
`NaN` is not JSON and would break strict readers such as JavaScript's JSON.parse.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

EventSink = Callable[[dict[str, Any]], None]

# Events worth an fsync: losing them would misreport the state of the run.
DURABLE_TYPES = frozenset({"start", "checkpoint", "done", "error"})


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_jsonable(value: Any) -> Any:
    """Plain JSON values: non-finite floats → None, paths → str, tensor/numpy scalars → Python numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item"):  # 0-d torch tensors and numpy scalars
        return to_jsonable(value.item())
    raise TypeError(f"cannot write a {type(value).__name__} into an event")


def dumps(obj: Any) -> str:
    """One line of strict JSON (UTF-8 text kept as is)."""
    return json.dumps(to_jsonable(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class EventLog:
    """Append-only event file plus an optional sink (the worker streams the same events to its caller)."""

    def __init__(self, path: str | os.PathLike[str] | None, sink: EventSink | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.sink = sink
        self._file: TextIO | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        """Write one event and return it (as written)."""
        if "time" in fields or "type" in fields:
            raise ValueError("event fields may not be named 'time' or 'type'")
        event = to_jsonable({"time": utc_now(), "type": type, **fields})
        if self._file is not None:
            self._file.write(dumps(event) + "\n")
            self._file.flush()
            if type in DURABLE_TYPES:
                os.fsync(self._file.fileno())
        if self.sink is not None:
            self.sink(event)
        return event

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
