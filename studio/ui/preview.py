"""The data tab's table: dataset rows as short, readable strings, one page at a time.

Formatting for people, kept apart from studio.data (which says what the rows mean) and free of
gradio, so the tests call it directly.
"""
from __future__ import annotations

import json
import math
import re

from studio.data.shapes import content_text, turn_tag


def dataset_preview(ds, start: int = 0, n: int = 20, width: int = 160):
    """Rows start..start+n as a DataFrame of short, readable strings for a paginated table."""
    import pandas as pd

    start = max(0, min(start, len(ds)))
    end = min(len(ds), start + max(0, n))
    batch = ds[start:end]
    table = {"#": list(range(start, end))}
    for column in ds.column_names:
        table[column] = [_short(v, width) for v in batch[column]]
    return pd.DataFrame(table)


def _short(value, width: int) -> str:
    text = _readable(value)
    text = re.sub(r"\s*\n\s*", " ⏎ ", text)
    return text if len(text) <= width else text[:width - 1] + "…"


def _readable(value) -> str:
    """Nested values as people write them: "user: hi | assistant: hello", "key: value"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str) and value.lstrip()[:2] in ("[{", '{"'):
        try:
            return _readable(json.loads(value))   # JSON kept as text (e.g. a tools column)
        except json.JSONDecodeError:
            return value
    if isinstance(value, list):
        dicts = value and all(isinstance(v, dict) for v in value)
        if dicts and any(turn_tag(v) for v in value):
            return " | ".join(f"{turn_tag(t)}: {_readable_turn(t)}" for t in value)
        if dicts and all((v.get("function") or v).get("name") for v in value):
            return "tools: " + ", ".join(_signature(v.get("function") or v) for v in value)
        return ", ".join(_readable(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_readable(v)}" for k, v in value.items() if v is not None)
    return str(value)


def _signature(fn: dict) -> str:
    params = (fn.get("parameters") or {}).get("properties") or {}
    return f"{fn['name']}({', '.join(params)})"


def _readable_turn(turn: dict) -> str:
    content = turn.get("content") if turn.get("content") is not None else turn.get("value")
    text = content_text(content)
    calls = turn.get("tool_calls")
    if calls:
        names = [(c.get("function") or c).get("name") or "?" for c in calls
                 if isinstance(c, dict)]
        text = (text + " " if text else "") + f"[calls {', '.join(names)}]"
    return text
