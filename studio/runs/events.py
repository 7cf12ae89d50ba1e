"""The one stream of training events, from a backend to whoever listens.

A backend only calls `emit(kind, step, **data)`. The `EventLog` stamps each event, appends it
to `metrics.jsonl` (one JSON object a line, flushed at once so another process or a reloaded
page sees it), keeps it in memory for `since(cursor)` polling, and hands it to listeners such
as the CLI progress bar.
"""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

# kinds: status (what the job is doing), log (a line of text), plan (what the backend decided
# to run: batch layout, checkpointing, attention, dtype), train (step metrics), eval
# (validation loss), sample (a prompt answered greedily at an evaluation), checkpoint (a folder
# was written), done (final state and why)
KINDS = ("status", "log", "plan", "train", "eval", "sample", "checkpoint", "done")


@dataclass
class Event:
    kind: str
    step: int = 0
    time: float = field(default_factory=time.time)
    data: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def parse(cls, line: str) -> Optional["Event"]:
        """The event on one line of metrics.jsonl, or None when the line is not one (torn by a
        crash, or edited by hand): readers skip it rather than fail."""
        try:
            raw = json.loads(line)
            event = cls(str(raw["kind"]), int(raw.get("step", 0)), float(raw.get("time", 0)),
                        raw.get("data") or {})
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError):
            return None
        if event.kind not in KINDS or not isinstance(event.data, dict):
            return None
        # a value the page computes with must be a number: a hand-edited `"loss": "low"` is a
        # line that is not an event, not a blank Train tab
        if any(event.data.get(k) is not None and not _is_number(event.data[k], k)
               for k in NUMBERS):
            return None
        return event


# The event values that are numbers wherever they appear (train, eval, status, done).
NUMBERS = ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens", "tokens_per_s", "epoch",
           "peak_memory_gb", "mfu", "max_steps", "n_train", "n_eval", "reward_chosen",
           "reward_rejected", "reward_margin", "preference_accuracy")


def _is_number(value, key: str) -> bool:
    """A real number; finite, but for the losses (a diverged run logs nan or inf)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return key in ("loss", "eval_loss", "grad_norm") or math.isfinite(value)


Emit = Callable[..., None]   # emit(kind, step=0, **data)


class EventLog:
    """Thread-safe, append-only event list mirrored to a JSONL file."""

    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path) if path else None
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Event], None]] = []
        if self.path:
            self._events, _ = read_events(self.path)

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


def read_events(path: Path, offset: int = 0, *, tail: Optional[int] = None
                ) -> tuple[list[Event], int]:
    """The one reader of metrics.jsonl: events from byte `offset` (or from the last `tail`
    bytes), and the offset to read from next time. A half-written last line is left for then;
    a line that is not an event is skipped."""
    try:
        with open(path, "rb") as f:
            if tail is not None:
                offset = max(0, f.seek(0, 2) - tail)
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    lines = chunk[:end].decode("utf-8", "replace").splitlines()
    if tail is not None and offset > 0:
        lines = lines[1:]          # the first line was cut by the seek
    events = [e for e in map(Event.parse, lines) if e is not None]
    return events, offset + end
