"""The one stream of training events, from a backend to whoever listens.

A backend only calls `emit(kind, step, **data)`. The `EventLog` stamps each event, appends it
to `metrics.jsonl` (one JSON object a line, flushed at once so another process or a reloaded
page sees it), keeps it in memory for `since(cursor)` polling, and hands it to listeners such
as the CLI progress bar.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

# kinds: status (what the job is doing), log (a line of text), plan (what the backend decided
# to run: batch layout, checkpointing, attention, dtype), train (step metrics), eval
# (validation loss), checkpoint (a folder was written), done (final state and why)
KINDS = ("status", "log", "plan", "train", "eval", "checkpoint", "done")


@dataclass
class Event:
    kind: str
    step: int = 0
    time: float = field(default_factory=time.time)
    data: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, line: str) -> "Event":
        return cls(**json.loads(line))


Emit = Callable[..., None]   # emit(kind, step=0, **data)


class EventLog:
    """Thread-safe, append-only event list mirrored to a JSONL file."""

    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path) if path else None
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Event], None]] = []
        if self.path and self.path.exists():
            self._events = read_events(self.path)

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def emit(self, kind: str, step: int = 0, **data) -> Event:
        assert kind in KINDS, kind
        event = Event(kind, int(step), time.time(), data)
        with self._lock:
            self._events.append(event)
            if self.path:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(event.to_json() + "\n")
        for listener in list(self._listeners):
            listener(event)
        return event

    def since(self, cursor: int = 0) -> tuple[list[Event], int]:
        """Events after `cursor`, and the cursor to pass next time."""
        with self._lock:
            return self._events[cursor:], len(self._events)

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)


def read_events(path: Path, cursor: int = 0) -> list[Event]:
    """Events of a metrics.jsonl, skipping a half-written last line."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return out
    for line in lines[cursor:]:
        try:
            out.append(Event.from_json(line))
        except (ValueError, TypeError):
            continue
    return out
