"""What the rows are and what they say: each shape of dataset, telling them apart, and turning
one row into OpenAI-style chat messages (the model's chat template then renders those).

A shape is one small class, as mlx-lm's dataset classes are: the roles it maps to columns and
how a row of it becomes messages. SHAPES is the one table of them, by name.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import math
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from studio.data.errors import DataError
from studio.data.readers import TOOLS_COLUMNS
from studio.texts.message import Text


@dataclass
class DetectedFormat:
    name: str                 # one of FORMATS, or "template"
    mapping: dict             # role -> column, e.g. {"instruction": "question", ...};
    #                           for "template": placeholder -> column
    reason: str               # why this shape was chosen, for people
    role_map: dict = field(default_factory=dict)   # sharegpt/messages: raw tag (lower case) -> role
    template: Optional[str] = None                 # the custom prompt template, for "template"
    response_key: Optional[str] = None             # its placeholder whose text is trained

    @property
    def shape(self) -> Shape:
        """The Shape behind `name`; a custom template is not in SHAPES (it is never detected)."""
        return TEMPLATE if self.name == "template" else SHAPES[self.name]


# ---------------------------------------------------------------------------------- shapes

@dataclass(frozen=True)
class Shape:
    """A shape of rows: the roles it maps to columns, and how one row becomes chat messages."""
    required: tuple = ()      # roles that must be mapped to a column
    optional: tuple = ()      # roles used when a column is found
    names: dict = field(default_factory=dict)   # role -> column names auto-detection recognises
    response: str = ""        # the role holding the trained text
    describe: str = ""
    auto_required: tuple = () # roles auto-detection insists on (defaults to `required`)

    # True: rows go through the model's chat template. False: the shape has no prompt turns to
    # template and tokenizes its rows itself, in tokens(tokenizer, row, fmt).
    chat_template: ClassVar[bool] = True

    def to_messages(self, row: dict, fmt: DetectedFormat, notes: Counter
                    ) -> tuple[list[dict], Optional[list]]:
        """OpenAI-style messages for one row, and its tool schemas (or None)."""
        raise NotImplementedError


class ConversationShape(Shape):
    """A column of turns, ShareGPT {from, value} or OpenAI {role, content}, with tool schemas."""

    def to_messages(self, row, fmt, notes):
        messages = _system_turn(row, fmt.mapping) + _convert_turns(
            _as_list(row.get(fmt.mapping["messages"])), fmt, notes)
        return messages, _tools(row.get(fmt.mapping["tools"])) if "tools" in fmt.mapping else None


class PairShape(Shape):
    """One prompt column and one response column (strings, or lists of turns), after any
    earlier turns in a history column."""

    @property
    def prompt(self) -> str:
        return self.required[0]

    def to_messages(self, row, fmt, notes):
        m = fmt.mapping
        return (_system_turn(row, m) + _history(row, m)
                + _turns(row.get(m[self.prompt]), "user", fmt, notes)
                + _turns(row.get(m[self.response]), "assistant", fmt, notes)), None


class AlpacaShape(Shape):
    """Instruction, optional input appended to it after a blank line, and output; LLaMA-Factory's
    alpaca adds a history of earlier [prompt, response] pairs and a tools column."""

    def to_messages(self, row, fmt, notes):
        m = fmt.mapping
        instruction, extra = cell_text(row.get(m["instruction"])), cell_text(row.get(m.get("input")))
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        answer = cell_text(row.get(m["output"]))
        tools = _tools(row.get(m["tools"])) if "tools" in m else None
        return (_system_turn(row, m) + _history(row, m)
                + [{"role": "user", "content": prompt},
                   {"role": "assistant", "content": answer}], tools)


class TextShape(Shape):
    """Plain text: no prompt, so no chat template; every token trains."""
    chat_template = False

    def to_messages(self, row, fmt, notes):
        return [{"role": "assistant", "content": cell_text(row.get(fmt.mapping["text"]))}], None

    def tokens(self, tokenizer, row, fmt) -> tuple[list, list]:
        """Plain text: every token trains, then the end-of-sequence token."""
        ids = tokenizer(cell_text(row.get(fmt.mapping["text"])))["input_ids"] + _eos(tokenizer)
        return ids, [1] * len(ids)


class TemplateShape(Shape):
    """A custom prompt template (prompt_template): its {placeholders} map to columns, and the
    response placeholder (DetectedFormat.response_key) and what follows it train."""
    chat_template = False

    def to_messages(self, row, fmt, notes):
        prompt, response = _render_template(row, fmt)
        return ([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                None)

    def tokens(self, tokenizer, row, fmt) -> tuple[list, list]:
        """Custom template: tokens overlapping the text from the response placeholder on train,
        plus the end-of-sequence token appended so the model learns to stop."""
        prompt, response = _render_template(row, fmt)
        enc = tokenizer(prompt + response, return_offsets_mapping=True)
        cut = len(prompt)
        mask = [1 if end > cut and end > start else 0 for start, end in enc["offset_mapping"]]
        eos = _eos(tokenizer)
        return list(enc["input_ids"]) + eos, mask + [1] * len(eos)


class SegmentsShape(Shape):
    """Axolotl's input_output: a column of [{text, label}] segments joined as they are, with no
    chat template and no special tokens added; the segments labelled true train."""
    chat_template = False

    def to_messages(self, row, fmt, notes):
        return [{"role": "assistant" if label else "user", "content": text}
                for text, label in _segments(row.get(fmt.mapping["segments"]))], None

    def tokens(self, tokenizer, row, fmt) -> tuple[list, list]:
        """Each segment tokenized on its own, as Axolotl does, so a label never splits a token."""
        ids, mask = [], []
        for text, label in _segments(row.get(fmt.mapping["segments"])):
            part = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += part
            mask += [int(label)] * len(part)
        return ids, mask


class PreferenceShape(Shape):
    """Preference pairs: a prompt, the answer to prefer (chosen) and the one to avoid (rejected).
    The prompt is a column (text, or a history of turns with one chosen and one rejected turn)
    or, without one, the turns the two conversations share before their last answer (ShareGPT's
    or OpenAI's turns, typed parts too). As messages
    (a supervised run, the Data tab's example) a row is its prompt and the chosen answer."""

    def pair(self, row, fmt, notes) -> tuple[list[dict], str, str]:
        """(prompt turns, chosen answer, rejected answer) of one row."""
        m = fmt.mapping
        chosen = self._turns(row.get(m["chosen"]), fmt, notes)
        rejected = self._turns(row.get(m["rejected"]), fmt, notes)
        asked = self._turns(row.get(m["prompt"]), fmt, notes, "user") if "prompt" in m else []
        prompt = _system_turn(row, m) + (asked or chosen[:-1])
        return prompt, _answer(chosen), _answer(rejected)

    def to_messages(self, row, fmt, notes):
        prompt, chosen, _ = self.pair(row, fmt, notes)
        return prompt + [{"role": "assistant", "content": chosen}], None

    @staticmethod
    def _turns(cell, fmt, notes, role: str = "assistant") -> list[dict]:
        """A cell as turns: a list of turns, one turn (a dict), or a text said by `role`."""
        turns = [cell] if isinstance(cell, dict) else _as_list(cell)
        if turns:
            return _convert_turns(turns, fmt, notes)
        text = cell_text(cell)
        return [{"role": role, "content": text}] if text.strip() else []


def _answer(turns: list[dict]) -> str:
    """The last turn's text where the assistant gave it; "" where there is none."""
    last = turns[-1] if turns else {}
    return cell_text(last.get("content")) if last.get("role") == "assistant" else ""


def _segments(value) -> list[tuple[str, bool]]:
    out = []
    for k, seg in enumerate(_as_list(value)):
        if not isinstance(seg, dict) or not isinstance(seg.get("label"), bool):
            raise DataError(Text("data.bad_segment", segment=k, item=repr(seg)[:60]))
        out.append((cell_text(seg.get("text")), seg["label"]))
    return out


def _eos(tokenizer) -> list:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


_PROMPT_NAMES = ("instruction", "question", "prompt", "query", "input", "problem", "request",
                 "user", "human")
_RESPONSE_NAMES = ("response", "answer", "output", "completion", "reply", "solution",
                   "assistant", "gpt", "target")
_CONVERSATION_NAMES = ("messages", "conversations", "conversation", "chat", "dialogue", "dialog",
                       "turns")
_SYSTEM_NAMES = ("system", "system_prompt")
# LLaMA-Factory's history: the [prompt, response] pairs before this row's turn.
_COMMON = {"system": _SYSTEM_NAMES, "tools": TOOLS_COLUMNS, "history": ("history",)}
_PAIR_EXTRAS = ("system", "history")

SHAPES: dict[str, Shape] = {
    "preference": PreferenceShape(("chosen", "rejected"), ("prompt", "system"),
                                  {"chosen": ("chosen", "chosen_messages", "chosen_response"),
                                   "rejected": ("rejected", "rejected_messages",
                                                "rejected_response"),
                                   "prompt": ("prompt", "question", "instruction", "query",
                                              *_CONVERSATION_NAMES)},
                                  "chosen", Text("data.shape.preference")),
    "sharegpt": ConversationShape(("messages",), ("tools", "system"),
                                  {"messages": _CONVERSATION_NAMES}, "messages",
                                  Text("data.shape.sharegpt")),
    "messages": ConversationShape(("messages",), ("tools", "system"),
                                  {"messages": _CONVERSATION_NAMES}, "messages",
                                  Text("data.shape.messages")),
    # LLaMA-Factory names alpaca's columns prompt, query and response by default.
    "alpaca": AlpacaShape(("instruction", "output"), ("input", "system", "history", "tools"),
                          {"instruction": ("instruction", "prompt"),
                           "input": ("input", "context", "query"),
                           "output": ("output", "response")}, "output",
                          Text("data.shape.alpaca"),
                          ("instruction", "input", "output")),
    "prompt_completion": PairShape(("prompt", "completion"), _PAIR_EXTRAS,
                                   {"prompt": ("prompt",), "completion": ("completion",)},
                                   "completion", Text("data.shape.prompt_completion")),
    "input_output": PairShape(("input", "output"), _PAIR_EXTRAS,
                              {"input": ("input",), "output": ("output",)}, "output",
                              Text("data.shape.input_output")),
    "instruction": PairShape(("instruction", "response"), _PAIR_EXTRAS,
                             {"instruction": _PROMPT_NAMES, "response": _RESPONSE_NAMES},
                             "response",
                             Text("data.shape.instruction")),
    "text": TextShape(("text",), (), {"text": ("text", "content", "document", "body")}, "text",
                      Text("data.shape.text")),
    "segments": SegmentsShape(("segments",), (), {"segments": ("segments",)}, "segments",
                              Text("data.shape.segments")),
}
FORMATS = tuple(SHAPES)
# Chosen by prompt_template, never detected nor a dataset_format: so not in SHAPES or FORMATS.
TEMPLATE = TemplateShape(describe=Text("data.shape.template"))
_HOW_TO_MAP = Text("data.how_to_map")


# ---------------------------------------------------------------------------------- detection

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
            raise _no_column(column, columns, Text("data.where.mapping", role=role,
                                                   column=column))
    known_roles = {r for s in SHAPES.values() for r in s.required + s.optional}
    unknown = sorted(set(mapping) - known_roles)
    if unknown:
        raise DataError(Text("data.unknown_roles", roles=', '.join(unknown),
                             known=', '.join(sorted(known_roles))))
    if dataset_format and dataset_format != "auto":
        if dataset_format not in SHAPES:
            raise DataError(Text("data.unknown_format", name=dataset_format,
                                 formats=', '.join(FORMATS)))
        return _fill(dataset_format, ds, mapping, forced=True)
    # Names first; only then a column that merely holds lists of turns (so a prompt/completion
    # dataset whose prompts are lists of turns is not taken for a conversation column).
    candidates = [n for n, s in SHAPES.items() if set(mapping) <= set(s.required + s.optional)]
    attempts = [(n, False) for n in candidates] + [("messages", True)] * ("messages" in candidates)
    for name, by_content in attempts:
        found = _fill(name, ds, mapping, forced=False, by_content=by_content)
        if found:
            return found
    describes = [s.describe for s in SHAPES.values()]
    shapes = describes[0]
    for describe in describes[1:]:      # "a; b; c", each said in the reader's language
        shapes = Text("data.shape.or", shapes=shapes, shape=describe)
    raise DataError(Text("data.shape_unknown", columns=', '.join(columns), shapes=shapes,
                         how=_HOW_TO_MAP))


def _fill(name: str, ds, mapping: dict, forced: bool, by_content: bool = True
          ) -> Optional[DetectedFormat]:
    """Map the roles of shape `name` to columns; None (auto) or DataError (forced) if it cannot."""
    shape, columns = SHAPES[name], list(ds.column_names)
    filled, used = {}, set(mapping.values())
    pinned = forced or set(mapping) - {"system", "tools", "history"}
    must = shape.required if pinned else (shape.auto_required or shape.required)
    for role in shape.required + tuple(r for r in shape.optional if r not in shape.required):
        names = {**_COMMON, **shape.names}.get(role, ())
        column = mapping.get(role) or _find_column(columns, names, used)
        if column is None and role == "messages" and (forced or by_content):
            column = _find_conversation_column(ds, used)
        if column is None:
            if role in must:
                if forced:
                    raise DataError(Text("data.format_needs_column", name=name, role=role,
                                         columns=', '.join(columns)))
                return None
            continue
        filled[role] = column
        used.add(column)
    if shape.response == "messages":
        return _fill_conversation(name, ds, filled, forced, bool(mapping))
    pairs = ", ".join(f"{role}={col}" for role, col in filled.items())
    reason = (Text("data.reason.mapped", pairs=pairs, shape=shape.describe) if mapping else
              Text("data.reason.forced", name=name, pairs=pairs, shape=shape.describe) if forced
              else Text("data.reason.found", pairs=pairs, shape=shape.describe))
    return DetectedFormat(name, filled, reason)


def _fill_conversation(name, ds, filled, forced, mapped) -> Optional[DetectedFormat]:
    """Conversations: tell ShareGPT ({from, value}) from OpenAI messages ({role, content}) by the
    turns themselves, and map every role tag seen to a canonical role."""
    column = filled["messages"]
    turns = [t for row in _sample(ds, column) for t in _as_list(row) if isinstance(t, dict)]
    if not turns:
        if forced or mapped:
            raise DataError(Text("data.no_conversations", column=column))
        return None
    keys = Counter(k for t in turns for k in t if t.get(k) is not None)
    if not (keys["role"] or keys["from"]):
        if forced or mapped:
            raise DataError(Text("data.turns_no_role", column=column, keys=', '.join(keys)))
        return None
    sharegpt = keys["from"] + keys["value"] > keys["role"] + keys["content"]
    kind = "sharegpt" if sharegpt else "messages"
    if not forced:
        name = kind
    tags = Counter(str(turn_tag(t)).strip().lower() for t in turns)
    role_map = {tag: _ROLE_TAGS.get(tag, "user") for tag in tags}
    unknown = {tag: n for tag, n in tags.items() if tag not in _ROLE_TAGS}
    reason = Text("data.reason.turns", column=column,
                  keys='{from, value}' if kind == 'sharegpt' else '{role, content}', kind=kind)
    if "tools" in filled:
        reason = Text("data.reason.tools", reason=reason, column=filled['tools'])
    if unknown:
        reason = Text("data.reason.unknown_tags", reason=reason, tags=", ".join(
            f"{tag} ({n})" for tag, n in unknown.items()))
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
            raise DataError(Text("data.role_mapping.role", tag=tag, role=role,
                                 roles=', '.join(CHAT_ROLES)))
        if tag not in role_map:
            raise DataError(Text("data.role_mapping.tag", tag=tag, role=role,
                                 seen=', '.join(role_map) or Text("data.none")))
        if role_map[tag] != role:
            changed[tag] = role_map[tag] = role
    if not changed:
        return fmt
    return dataclasses.replace(fmt, role_map=role_map,
                               reason=Text("data.reason.remapped", reason=fmt.reason,
                                           pairs=", ".join(f"{t}={r}"
                                                           for t, r in changed.items())))


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
    hint = Text("data.did_you_mean", column=lower[close[0]]) if close else ""
    return DataError(Text("data.no_column", column=column, where=what, hint=hint,
                          columns=', '.join(columns)))

# ---------------------------------------------------------------------- custom prompt templates

# Placeholders that hold the trained text of a custom template, in the order they are looked for.
_RESPONSE_PLACEHOLDERS = ("response", "output", "completion", "answer")


def _detect_template(columns: list, template: str, mapping: dict) -> DetectedFormat:
    """A custom prompt template: every {placeholder} must be a column (or be mapped to one).

    The trained placeholder is {response} if present; else the one column_mapping["response"]
    names; else {output}, {completion} or {answer}, in that order. Text before it is the prompt.
    """
    fields = list(dict.fromkeys(f for _, f, _, _ in _template_parts(template) if f is not None))
    if not fields or any(not f for f in fields):
        raise DataError(Text("data.template.unnamed"))
    placeholders = {f: mapping.get(f, f) for f in fields}
    for ph, column in placeholders.items():
        if column not in columns:
            raise _no_column(column, columns, Text("data.where.placeholder", placeholder=ph))
    response = ("response" if "response" in fields else
                mapping.get("response") if mapping.get("response") in fields else
                next((f for f in _RESPONSE_PLACEHOLDERS if f in fields), None))
    if response is None:
        raise DataError(Text("data.template.no_response",
                             fields=', '.join('{' + f + '}' for f in fields)))
    return DetectedFormat("template", placeholders,
                          Text("data.reason.template", placeholder=response,
                               column=placeholders[response]),
                          template=template, response_key=response)


def _template_parts(template: str) -> list:
    try:
        return list(string.Formatter().parse(template))
    except ValueError as e:
        raise DataError(Text("data.template.malformed", detail=str(e))) from None



def _render_template(row: dict, fmt: DetectedFormat) -> tuple[str, str]:
    """The custom template filled in, split where the response placeholder begins."""
    prompt, out = None, []
    for literal, name, spec, _ in _template_parts(fmt.template):
        out.append(literal)
        if name is None:
            continue
        if name == fmt.response_key and prompt is None:
            prompt, out = "".join(out), []
        value = cell_text(row.get(fmt.mapping[name]))
        try:
            out.append(format(value, spec) if spec else value)
        except ValueError:
            out.append(value)
    return prompt or "", "".join(out)



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
_UNKNOWN_TAGS = Text("data.problem.unknown_tags")
_REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")


def row_messages(row: dict, fmt: DetectedFormat, system_prompt: str | None = None,
                 notes: Counter | None = None) -> tuple[list[dict], list | None]:
    """OpenAI-style messages for one row, and its tool schemas (or None); what had to be
    left out of it is counted in `notes`."""
    messages, tools = fmt.shape.to_messages(row, fmt, Counter() if notes is None else notes)
    return with_system_prompt(messages, system_prompt), tools


def with_system_prompt(messages: list, system_prompt: str | None) -> list:
    """system_prompt before a conversation that does not open with a system turn of its own."""
    if system_prompt and not (messages and messages[0]["role"] == "system"):
        return [{"role": "system", "content": system_prompt}] + messages
    return messages


def _system_turn(row, mapping) -> list:
    text = cell_text(row.get(mapping["system"])) if "system" in mapping else ""
    return [{"role": "system", "content": text}] if text.strip() else []


def _history(row, mapping) -> list:
    """LLaMA-Factory's history column: [prompt, response] pairs, as earlier user and assistant
    turns."""
    turns = []
    for k, pair in enumerate(_as_list(row.get(mapping["history"])) if "history" in mapping else []):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise DataError(Text("data.bad_history", item=k, pair=repr(pair)[:60]))
        turns += [{"role": "user", "content": cell_text(pair[0])},
                  {"role": "assistant", "content": cell_text(pair[1])}]
    return turns


def _turns(value, role, fmt, notes) -> list:
    """A prompt or response cell: text, or a list of turns (conversational prompt/completion).
    Only real lists count as turns: a string answer that happens to be JSON stays an answer."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(t, dict) for t in value):
        return _convert_turns(list(value), fmt, notes)
    return [{"role": role, "content": cell_text(value)}]


def _convert_turns(turns: list, fmt, notes: Counter) -> list:
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(Text("data.turn_not_object", turn=i, kind=type(turn).__name__))
        tag = str(turn_tag(turn)).strip().lower()
        role = _role_of(turn, fmt)
        if tag not in _ROLE_TAGS and role == "user":   # unknown and not re-mapped by the user
            notes[_UNKNOWN_TAGS] += 1
        content = _turn_content(turn)
        if tag in _TOOL_CALL_TAGS:
            messages.append({"role": "assistant", "content": "",
                             "tool_calls": _tool_calls(content, i)})
            continue
        message = {"role": role, "content": content_text(content, notes)}
        if role == "assistant":
            # OpenAI's function_call is the legacy spelling of one tool call.
            calls = turn.get("tool_calls") or turn.get("function_call")
            if calls:
                message["tool_calls"] = _tool_calls(calls, i)
            reasoning = next((turn[k] for k in _REASONING_KEYS if isinstance(turn.get(k), str)),
                             None)
            if reasoning:
                message["reasoning_content"] = reasoning
            if _untrained(turn):
                message["weight"] = 0
        if role == "tool" and isinstance(turn.get("name"), str):
            message["name"] = turn["name"]
        messages.append(message)
    return messages


def turn_tag(turn: dict):
    return turn.get("role") if turn.get("role") is not None else turn.get("from")


def _role_of(turn: dict, fmt: DetectedFormat) -> str:
    tag = str(turn_tag(turn)).strip().lower()
    return fmt.role_map.get(tag) or _ROLE_TAGS.get(tag) or "user"


def _turn_content(turn: dict):
    return turn.get("value") if turn.get("content") is None else turn.get("content")


def _untrained(turn: dict) -> bool:
    """An assistant turn the data marks as not to be trained: OpenAI's "weight": 0, or Axolotl's
    per-turn "training"/"train": false."""
    return turn.get("weight") == 0 or turn.get("training") is False or turn.get("train") is False


# Typed content parts that hold text (OpenAI chat, and its Responses API's input/output text).
_TEXT_PARTS = ("text", "input_text", "output_text")


def content_text(content, notes: Counter | None = None) -> str:
    """Message content as text: strings pass; of a list of typed parts the text ones are joined
    (their text under "text" or "value") and the others (image, audio, file, ...) are skipped,
    counted by type in `notes`."""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict):
                texts.append(str(part))
                continue
            kind = str(part.get("type") or "text")
            if kind in _TEXT_PARTS:
                texts.append(_part_text(part))
            elif notes is not None:
                notes[Text("data.problem.non_text_parts", kind=kind)] += 1
        return "".join(texts)
    if isinstance(content, dict):
        return json.dumps(content, ensure_ascii=False)
    return cell_text(content)


def _part_text(part: dict) -> str:
    text = part.get("text") if part.get("text") is not None else part.get("value")
    if isinstance(text, dict):      # OpenAI Assistants: {"text": {"value": ..., "annotations"}}
        text = text.get("value")
    return text if isinstance(text, str) else ""


def why_no_answer(row: dict, fmt: DetectedFormat) -> Optional[str]:
    """Why a row of turns has nothing to train, read from the raw turns (the converted messages
    no longer show it); None when no turn is an assistant's, so the role tags are the cause."""
    turns = [t for t in _as_list(row.get(fmt.mapping["messages"])) if isinstance(t, dict)]
    answers = [t for t in turns if _role_of(t, fmt) == "assistant"]
    if not answers:
        return None
    if all(_untrained(t) for t in answers):
        return Text("data.no_answer.untrained")
    contents = [_turn_content(t) for t in answers]
    if all(c is None for c in contents):
        keys = sorted({k for t in answers for k, v in t.items() if v is not None})
        return Text("data.no_answer.no_content", keys=', '.join(keys))
    parts = [p for c in contents if isinstance(c, list) for p in c if isinstance(p, dict)]
    if parts:
        kinds = Counter(str(p.get("type") or "text") for p in parts)
        return Text("data.no_answer.no_text_parts",
                    parts=', '.join(f'{k} ({n})' for k, n in kinds.items()))
    return Text("data.no_answer.empty")


def _tool_calls(value, turn: int) -> list:
    """Tool calls as [{"type": "function", "function": {"name", "arguments": dict}}]."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(Text("data.tool_call.not_json", turn=turn,
                                 value=repr(value[:60]))) from None
    calls = []
    for call in value if isinstance(value, list) else [value]:
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not fn.get("name"):
            raise DataError(Text("data.tool_call.no_name", turn=turn, item=repr(call)[:60]))
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
            value = parse_nested(value)
        except ValueError as e:
            raise DataError(Text("data.tools_not_json", detail=str(e))) from None
    tools = value if isinstance(value, list) else [value]
    # Bare {name, description, parameters} schemas get the OpenAI wrapper chat templates expect.
    return [t if not isinstance(t, dict) or "function" in t or "name" not in t
            else {"type": "function", "function": t} for t in tools] or None


def _as_list(value) -> list:
    """A list cell; a list kept as text (a CSV column) is parsed."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = parse_nested(value)
        except ValueError:
            return []
    return list(value) if isinstance(value, (list, tuple)) else []


def parse_nested(text: str):
    """Nested data kept as text: JSON, or the Python repr pandas writes for nested values into
    a CSV (literals only, never code). ValueError if it is neither."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        try:
            return ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(f"{e.msg} at character {e.pos}") from None


def cell_text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)

