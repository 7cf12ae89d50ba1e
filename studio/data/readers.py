"""Rows from a file, a saved dataset folder or the Hub, always as a datasets.Dataset.

CSV/TSV cells stay text, JSON documents of several layouts are accepted, and free-form nested
values (tool schemas, tool-call arguments) are kept as JSON text so Arrow does not pad them.
Errors name the file, line or byte at fault and say how to fix it.
"""
from __future__ import annotations

import io
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

import datasets

from studio import PROJECT
from studio.data.errors import DataError
from studio.models.local import hub_reachable
from studio.texts.message import Text

EXAMPLES = PROJECT / "assets"
_SAVED_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
_SUPPORTED = Text("data.supported")


def examples() -> list[Path]:
    """The example datasets shipped in the studio's assets folder, by name."""
    return sorted(EXAMPLES.glob("example_*"))


def load_rows(source: str, split: str = "train") -> datasets.Dataset:
    """Rows from a local file or folder, or else from the Hub: always a datasets.Dataset."""
    path = Path(str(source)).expanduser()
    if path.is_dir():
        ds = _read_saved(path, split)
    elif path.is_file():
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise DataError(Text("data.unknown_file_type", path=str(path),
                                 suffix=path.suffix or Text("data.none_parens"),
                                 supported=_SUPPORTED))
        ds = _guarded(reader, path, split)
    elif path.suffix.lower() in _READERS or str(source).startswith((".", "/", "~")):
        relative = "" if Path(str(source)).expanduser().is_absolute() else \
            Text("data.relative_path")
        raise DataError(Text("data.file_not_found", source=str(source), relative=relative))
    else:
        ds = _read_hub(str(source), split)
    if len(ds) == 0:
        raise DataError(Text("data.empty_file", name=str(source)))
    return ds


def _guarded(reader, path: Path, split: str) -> datasets.Dataset:
    """The reader's rows; whatever else goes wrong inside a parser (nesting deeper than Python
    recurses, a value Arrow cannot hold) is a DataError naming the file, never a raw error."""
    try:
        return reader(path, split)
    except DataError:
        raise
    except RecursionError:
        raise DataError(Text("data.nested_too_deeply", path=str(path),
                             limit=sys.getrecursionlimit())) from None
    except Exception as e:   # noqa: BLE001 - a parser's own error, said with the file's name
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise DataError(Text("data.unreadable_file", path=str(path),
                             kind=path.suffix.lstrip('.').upper(), error=type(e).__name__,
                             detail=first)) from None


def _read_text(path: Path) -> str:
    """The file as text, refusing anything but UTF-8 with the byte, offset and line at fault."""
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(Text("data.empty_file", name=str(path)))
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(Text("data.utf16", path=str(path)))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        guess = ""
        try:
            raw.decode("cp1252")
            guess = Text("data.looks_cp1252")
        except UnicodeDecodeError:
            pass
        raise DataError(Text("data.not_utf8", path=str(path), byte=raw[e.start], offset=e.start,
                             line=line, guess=guess)) from None


def _read_csv(path: Path, split: str, sep: str = ",") -> datasets.Dataset:
    import pandas as pd

    text = _read_text(path)
    try:
        # Every cell as text, and an empty cell as "" not NaN: these are prompts, not numbers.
        # At most MAX_COLUMNS columns: a very wide file would take minutes to hold in Arrow.
        total = len(pd.read_csv(io.StringIO(text), sep=sep, dtype=str, nrows=0).columns)
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False,
                         usecols=range(MAX_COLUMNS) if total > MAX_COLUMNS else None)
    except pd.errors.EmptyDataError:
        raise DataError(Text("data.empty_file", name=str(path))) from None
    except pd.errors.ParserError as e:
        raise DataError(Text("data.malformed_csv", path=str(path), detail=str(e).strip())
                        ) from None
    ds = datasets.Dataset.from_pandas(df, preserve_index=False)
    return _mark(ds, columns_total=total) if total > MAX_COLUMNS else ds


def _read_tsv(path: Path, split: str) -> datasets.Dataset:
    return _read_csv(path, split, sep="\t")


def _read_json(path: Path, split: str) -> datasets.Dataset:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and text.lstrip().startswith("{"):
            return _read_jsonl(path, split)   # JSON Lines saved with a .json name
        raise DataError(Text("data.invalid_json", path=str(path), line=e.lineno,
                             column=e.colno, detail=e.msg)) from None
    return _from_records(_records_in(data, path, split), path)


def _records_in(data, path: Path, split: str) -> list:
    """The list of row objects inside a JSON document: a list, {"data": [...]}, or columns."""
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise DataError(Text("data.json_not_rows", path=str(path), kind=type(data).__name__))
    lists = {k: v for k, v in data.items() if isinstance(v, list)}
    for key in (split, "data", "rows", "examples", "records", "items", "train"):
        if key in lists:
            return lists[key]
    if len(lists) == 1:
        return next(iter(lists.values()))
    if lists and len(lists) == len(data) and len({len(v) for v in lists.values()}) == 1:
        n = len(next(iter(lists.values())))     # {"col": [...], "col2": [...]}: columns
        return [{k: v[i] for k, v in lists.items()} for i in range(n)]
    raise DataError(Text("data.json_object_keys", path=str(path),
                         keys=', '.join(map(str, data)) or Text("data.none_parens")))


def _read_jsonl(path: Path, split: str) -> datasets.Dataset:
    rows = []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(Text("data.invalid_jsonl", path=str(path), line=n,
                                 column=e.colno, detail=e.msg)) from None
        if not isinstance(row, dict):
            raise DataError(Text("data.jsonl_not_object", path=str(path), line=n,
                                 kind=type(row).__name__))
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
            raise DataError(Text("data.item_not_object", path=str(path), item=i,
                                 kind=type(row).__name__))
        _freeze_free_form(row)
    if not rows:
        raise DataError(Text("data.empty_file", name=str(path)))
    keys = list(dict.fromkeys(k for row in rows for k in row))
    if len(keys) > MAX_COLUMNS:    # a very wide file would take minutes to hold in Arrow
        kept = set(keys[:MAX_COLUMNS])
        rows = [{k: v for k, v in row.items() if k in kept} for row in rows]
        return _mark(_from_rows(rows), columns_total=len(keys))
    return _from_rows(rows)


def _from_rows(rows: list) -> datasets.Dataset:
    try:
        return datasets.Dataset.from_list(rows)
    except Exception:   # mixed types in one column (a number here, a list there): keep as text
        columns = {k for row in rows for k in row}
        not_text = {k: [i for i, row in enumerate(rows)
                        if row.get(k) is not None and not isinstance(row.get(k), str)]
                    for k in columns}
        for row in rows:
            for k in columns:
                v = row.get(k)
                row[k] = v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        # which cells were not text before, so the data report can still count them
        return _mark(datasets.Dataset.from_list(rows),
                     not_text={k: v for k, v in not_text.items() if v})


# ---------------------------------------------------------------------------- what reading changed
MAX_COLUMNS = 256       # columns read from a file; the rest are left out, and said so


def _mark(ds: datasets.Dataset, **facts) -> datasets.Dataset:
    """Note on the dataset what reading it changed (columns left out, cells kept as text)."""
    ds.info.description = json.dumps({_MARKS: {**read_marks(ds), **facts}})
    return ds


_MARKS = "qwen3_studio_reader"


def read_marks(ds) -> dict:
    try:
        marks = json.loads(ds.info.description or "{}").get(_MARKS, {})
    except (ValueError, AttributeError, TypeError):
        return {}
    return marks if isinstance(marks, dict) else {}


def not_text_cells(ds) -> dict[str, set[int]]:
    """Column -> rows whose cell was a list, number or object in the file but is held as its
    JSON text (a column of mixed types); {} for anything else."""
    return {k: set(v) for k, v in (read_marks(ds).get("not_text") or {}).items()}


def columns_left_out(ds) -> int:
    """How many of the file's columns were not read (over MAX_COLUMNS)."""
    total = read_marks(ds).get("columns_total") or 0
    return max(0, total - MAX_COLUMNS)


TOOLS_COLUMNS = ("tools", "functions", "tool_schemas")


def _freeze_free_form(row: dict) -> None:
    for key, value in row.items():
        if key.lower() in TOOLS_COLUMNS and value is not None and not isinstance(value, str):
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
        names = pq.read_schema(path).names
        table = pq.read_table(path, columns=names[:MAX_COLUMNS])
    except Exception as e:
        raise DataError(Text("data.bad_parquet", path=str(path), detail=str(e))) from None
    ds = datasets.Dataset(InMemoryTable(table))
    return _mark(ds, columns_total=len(names)) if len(names) > MAX_COLUMNS else ds


def _read_saved(path: Path, split: str) -> datasets.Dataset:
    if not any((path / m).is_file() for m in _SAVED_MARKERS):
        raise DataError(Text("data.folder_not_saved", path=str(path)))
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(Text("data.bad_saved", path=str(path), detail=str(e))) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(Text("data.no_split", path=str(path), split=split,
                                 splits=', '.join(loaded)))
        loaded = loaded[split]
    return loaded


def _read_hub(name: str, split: str) -> datasets.Dataset:
    """A Hub dataset through datasets.load_dataset; without a network, fail in a second
    (the cache is still tried) instead of after half a minute of retries."""
    offline_mode, online = datasets.config.HF_HUB_OFFLINE, hub_reachable()
    try:
        with _hub_offline(not online):
            ds = datasets.load_dataset(name, split=split)
    except Exception as e:
        raise DataError(hub_dataset_problem(name, offline_mode, online, e)) from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[split]
    return ds


def hub_dataset_problem(name: str, offline_mode: bool, online: bool,
                        error: Optional[Exception] = None) -> str:
    """Why the Hub dataset `name` could not be loaded, in the words every caller uses."""
    if offline_mode or not online:
        why = Text("data.hub.offline") if offline_mode else Text("data.hub.no_network")
        return Text("data.hub.failed", name=name, why=why, supported=_SUPPORTED)
    first = str(error).splitlines()[0] if str(error) else ''
    # the error's own message kept as a Text where it is one (a refusal), so it is said in Chinese
    problems = getattr(error, "problems", None)
    said = problems[0] if isinstance(problems, list) and len(problems) == 1 else \
        error.args[0] if error is not None and len(error.args) == 1 else None
    return Text("data.hub.error", name=name, error=type(error).__name__,
                detail=said if isinstance(said, Text) and said == first else first,
                supported=_SUPPORTED)


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

