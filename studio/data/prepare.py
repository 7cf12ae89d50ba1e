"""The whole dataset made ready: every row down the road to tokens and masks, a validation split,
and a report of what was found, what trains and what was dropped and why.

Rows that cannot train are dropped and counted, never fatal one by one; only when nothing is left
does prepare() fail, with the cause and the fix.
"""
from __future__ import annotations


import json
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

import datasets
from jinja2 import TemplateError

from studio.data.errors import DataError
from studio.data.identity import teaches_identity
from studio.data.preferences import prepare_pairs
from studio.data.prepared import DataReport, PreparedData, dtype_name, eval_count, iter_rows
from studio.data.readers import load_rows, not_text_cells
from studio.data.shapes import (SHAPES, DetectedFormat, cell_text, parse_nested, row_messages,
                                why_no_answer, apply_role_mapping, detect_format)
from studio.data.templates import (REASONING_LOST, TOOL_CALLS_LOST, TOOLS_LOST, chat_kit, setting_or,
                                   tokenize_full, trains_tokens, template_features)
from studio.texts.message import Text, message_of


_EXAMPLES_KEPT = 5


def prepare(source_or_dataset, tokenizer, config, prompt_template=None,
            seconds: Optional[float] = None,
            cancelled: Optional[Callable[[], bool]] = None) -> PreparedData:
    """Load, detect, tokenize and mask every row, split off eval rows, and report problems.

    Rows that cannot train are dropped and counted (empty, empty response, unmappable, no trained
    tokens left after truncation); duplicates are reported but kept. When nothing is left, the
    DataError says why and how to fix it. With `seconds` (an analysis, never a run), the rows
    read within that time are prepared and the report says how many (report.rows_read); once
    `cancelled()` is true, a DataError ends it.
    """
    name = str(source_or_dataset) if isinstance(source_or_dataset, (str, Path)) else \
        Text("data.the_dataset")
    ds = load_rows(name) if isinstance(source_or_dataset, (str, Path)) else source_or_dataset
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"]
    try:
        fmt = detect_format(ds, setting_or(config, "dataset_format", "auto"),
                            setting_or(config, "column_mapping", None),
                            prompt_template or setting_or(config, "prompt_template", None))
        fmt = apply_role_mapping(fmt, setting_or(config, "role_mapping", None))
    except DataError as e:
        raise DataError(Text("data.in_file", name=name, problem=message_of(e))) from None
    if setting_or(config, "method", "sft") == "dpo":      # pairs, not answers
        return prepare_pairs(ds, name, fmt, tokenizer, config)
    if fmt.shape.chat_template:
        chat_kit(tokenizer)      # a tokenizer without a chat template fails here, once
    limit = setting_or(config, "max_seq_length", 2048)
    notes, examples = Counter(), {}
    kept, lengths, prompt_lengths, first_error, first_empty = [], [], [], None, None
    identity_rows = 0
    seen = set()

    def note(problem, i, n=1):
        notes[problem] += n
        if len(examples.setdefault(problem, [])) < _EXAMPLES_KEPT:
            examples[problem].append(i)

    not_text = not_text_cells(ds)
    deadline, rows_read = time.monotonic() + seconds if seconds else None, None
    for i, row in enumerate(iter_rows(ds)):
        if deadline and i and time.monotonic() > deadline:
            rows_read = i           # the time budget is spent: report on the rows read so far
            break
        if cancelled is not None and cancelled():
            raise DataError(Text("data.cancelled_after", name=name, rows=i))
        if _is_empty(row):
            note(EMPTY_ROWS, i)
            continue
        key = json.dumps(row, sort_keys=True, default=str)
        if key in seen:
            note(DUPLICATE_ROWS, i)
        seen.add(key)
        try:
            if _response_is_empty(row, fmt):
                note(EMPTY_RESPONSE, i)
                first_empty = first_empty or (i, row)
                continue
            if _response_not_text(row, fmt) or i in not_text.get(_response_column(fmt), ()):
                note(NOT_TEXT, i)
            row_notes = Counter()
            ids, mask = tokenize_full(tokenizer, row, fmt, config, row_notes)
        except (ValueError, TypeError, KeyError, TemplateError) as e:
            note(UNMAPPABLE, i)
            first_error = first_error or Text("data.row_problem", row=i, problem=message_of(e))
            continue
        for problem, n in row_notes.items():
            note(problem, i, n)
        if not any(mask[:limit]):
            note(NO_TRAINED_TOKENS, i)
            prompt_lengths.append(mask.index(1) if 1 in mask else len(ids))
            continue
        lengths.append(len(ids))
        kept.append((ids[:limit], mask[:limit]))
        if fmt.shape.chat_template:
            identity_rows += teaches_identity(row_messages(row, fmt)[0])
    if not kept:
        raise DataError(Text("data.in_file", name=name, problem=_nothing_left(
            fmt, notes, prompt_lengths, limit, first_error, first_empty)))

    n_eval = eval_count(len(kept), setting_or(config, "val_size", 0.0))
    eval_rows = set(random.Random(setting_or(config, "seed", 42)).sample(range(len(kept)), n_eval))
    train = _to_dataset([r for i, r in enumerate(kept) if i not in eval_rows])
    evals = _to_dataset([r for i, r in enumerate(kept) if i in eval_rows]) if n_eval else None
    report = DataReport(
        n_rows=len(ds), columns=list(ds.column_names),
        dtypes={c: dtype_name(f) for c, f in ds.features.items()}, format=fmt, lengths=lengths,
        n_truncated=sum(n > limit for n in lengths), n_train=len(train), n_eval=n_eval,
        problems=dict(notes),
        examples_of_problems={k: v for k, v in examples.items() if k in notes},
        rows_read=rows_read, identity_rows=identity_rows,
        **_template_report(tokenizer, fmt, config, notes))
    if rows_read:
        report.advice.append(Text("data.advice.time_budget", read=rows_read, total=len(ds),
                                  seconds=seconds))
    return PreparedData(train, evals, report, fmt)


def _template_report(tokenizer, fmt, config, notes) -> dict:
    """What the chat template adds by itself and what it cannot render, for the report."""
    if not fmt.shape.chat_template:
        return {}
    features = template_features(tokenizer)
    lost = [what for what, problem in ((Text("data.lost.tool_calls"), TOOL_CALLS_LOST),
                                       (Text("data.lost.tools"), TOOLS_LOST),
                                       (Text("data.lost.reasoning"), REASONING_LOST))
            if notes[problem]]
    what = (lost[0] if len(lost) == 1 else
            Text("data.lost.two", first=lost[0], second=lost[1]) if len(lost) == 2 else
            Text("data.lost.three", first=lost[0], second=lost[1], third=lost[2]) if lost
            else "")
    advice = [Text("data.advice.template_drops", what=what)] if lost else []
    return {"default_system": features.default_system,
            "default_system_kept": bool(features.default_system)
            and not setting_or(config, "system_prompt", None)
            and setting_or(config, "template_system_prompt", "keep") != "drop",
            "advice": advice}


def prepare_dataset(data_path, tokenizer, config, prompt_template=None
                    ) -> tuple[datasets.Dataset, Optional[datasets.Dataset]]:
    """The guide's API: the train and eval splits, ready for a trainer."""
    prepared = prepare(data_path, tokenizer, config, prompt_template)
    return prepared.train, prepared.eval


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
        return not cell_text(row.get(fmt.mapping[fmt.response_key])).strip()
    if fmt.shape.response in ("messages", "segments"):    # turns: one must train
        messages, _ = row_messages(row, fmt, None, Counter())
        return not any(m["role"] == "assistant" and trains_tokens(m)
                       and (m["content"].strip() or m.get("tool_calls")) for m in messages)
    value = row.get(fmt.mapping[SHAPES[fmt.name].response])
    if isinstance(value, list):
        return not value
    return not cell_text(value).strip()


# What the report counts (its problems), by name; the first four are rows dropped.
EMPTY_ROWS = Text("data.problem.empty_rows")
DUPLICATE_ROWS = Text("data.problem.duplicate_rows")
EMPTY_RESPONSE = Text("data.problem.empty_response")
UNMAPPABLE = Text("data.problem.unmappable")
NO_TRAINED_TOKENS = Text("data.problem.no_trained_tokens")
NOT_TEXT = Text("data.problem.not_text")


def _response_not_text(row: dict, fmt: DetectedFormat) -> bool:
    """True when the response cell is a list, number or object rather than text (turns aside):
    it trains as its JSON spelling, which is rarely what was meant, so it is counted."""
    column = _response_column(fmt)
    if column is None:
        return False
    value = row.get(column)
    if value is None or isinstance(value, str):
        return False
    return not (isinstance(value, (list, tuple)) and value
                and all(isinstance(t, dict) for t in value))     # conversational turns


def _response_column(fmt: DetectedFormat):
    """The column holding the response text; None for rows of turns."""
    if fmt.name == "template":
        return fmt.mapping.get(fmt.response_key)
    if fmt.shape.response in ("messages", "segments"):
        return None
    return fmt.mapping.get(SHAPES[fmt.name].response)


_DROPS = (EMPTY_ROWS, EMPTY_RESPONSE, UNMAPPABLE, NO_TRAINED_TOKENS)


def _nothing_left(fmt, notes, prompt_lengths, limit, first_error, first_empty) -> str:
    """Why no row is left to train: the counts, and the fix for the commonest cause."""
    drops = {k: notes[k] for k in _DROPS if notes[k]}
    cause = max(drops, key=drops.get)
    if fmt.name == "segments" and first_empty:
        empty = Text("data.left.no_segment", column=fmt.mapping['segments'],
                     row=first_empty[0], example=_shortened(first_empty[1]))
    elif fmt.shape.response == "messages" and first_empty:
        i, row = first_empty
        why = why_no_answer(row, fmt) or Text("data.left.role_tags", seen=str(fmt.role_map))
        empty = Text("data.left.no_answer", column=fmt.mapping['messages'], why=why, row=i,
                     example=_shortened(row))
    else:
        role = fmt.response_key if fmt.name == "template" else SHAPES[fmt.name].response
        empty = Text("data.left.empty_responses", column=fmt.mapping[role], role=role)
    fixes = {
        EMPTY_ROWS: Text("data.left.empty_rows"),
        EMPTY_RESPONSE: empty,
        UNMAPPABLE: Text("data.left.unmappable", name=fmt.name, error=first_error),
        NO_TRAINED_TOKENS: Text("data.left.no_trained_tokens",
                                shortest=min(prompt_lengths or [0]),
                                longest=max(prompt_lengths or [0]), limit=limit),
    }
    if len(drops) == 1:
        return fixes[cause]
    counts = None
    for k, n in drops.items():
        counts = Text("data.left.count", n=n, problem=k) if counts is None else \
            Text("data.left.counts", counts=counts, n=n, problem=k)
    return Text("data.left.several", counts=counts, fix=fixes[cause])


def _shortened(row: dict, limit: int = 300) -> str:
    """One row for an error message, as JSON cut to `limit` characters, looking as it did in the
    file: nested values the reader kept as JSON text are nested again, and the nulls Arrow pads
    nested objects with are left out."""
    text = json.dumps(_as_written(row), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def _as_written(value):
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            value = parse_nested(value)
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: _as_written(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_as_written(v) for v in value]
    return value


def _to_dataset(rows: list) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"input_ids": [r[0] for r in rows],
                                       "assistant_masks": [r[1] for r in rows]})
