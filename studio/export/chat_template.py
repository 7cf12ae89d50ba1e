"""The prompt format a run trained with, carried out of the studio.

A model that answers well in the studio and babbles in Ollama or llama.cpp almost always lost
its prompt format on the way: the system prompt the run added or dropped, the thinking mode, the
template itself. Here the run's format (the tokenizer's chat template as `system_choice` and
`enable_thinking` applied it in training) is written two ways:

- `trained_chat_template`: a Jinja chat template for the merged model's tokenizer (and so the
  GGUF's metadata and vLLM): the model's own template, with the run's system turn and thinking
  default put in front of it.
- `ollama_template`: a Go template for an Ollama Modelfile. Go cannot run Jinja, so the pieces
  a conversation is made of (what comes before and after each role's text, what stands for a
  missing system turn, the generation prompt with thinking on and off) are read off the Jinja
  template by rendering marker conversations, then put together again. Both renderings are
  compared on probe conversations before anything is written, so a template that cannot be
  taken apart this way is refused rather than exported wrong.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from studio.data.templates import system_choice, template_features
from studio.inference import PromptFormat, template_prompt


class TemplateError(ValueError):
    """The run's prompt format cannot be written in the asked form."""


def render(tokenizer, fmt: PromptFormat, messages: list[dict], *, generation: bool,
           thinking: Optional[bool] = None) -> str:
    """The text the run's model is shown for `messages`, as training and the chat render it."""
    think = fmt.enable_thinking if thinking is None else thinking
    if fmt.prompt_template:
        users = [m["content"] for m in messages if m["role"] == "user"]
        return template_prompt(fmt.prompt_template, users[-1] if users else "")
    messages = system_choice(tokenizer, messages, fmt.system_prompt, fmt.template_system_prompt)
    return tokenizer.apply_chat_template(messages, tokenize=False, enable_thinking=think,
                                         add_generation_prompt=generation)


# ---------------------------------------------------------------------------- Jinja
def trained_chat_template(tokenizer, fmt: PromptFormat) -> str:
    """The tokenizer's chat template with the run's system turn and thinking default in front,
    so `apply_chat_template` on the exported tokenizer renders what training rendered."""
    if fmt.prompt_template:
        return _prompt_template_jinja(fmt.prompt_template)
    template = tokenizer.chat_template
    if not template:
        raise TemplateError("the model has no chat template to export")
    head = ""
    system = fmt.system_prompt or (
        "" if fmt.template_system_prompt == "drop" and template_features(tokenizer).default_system
        else None)
    if system is not None:
        head += ("{%- if not messages or messages[0]['role'] != 'system' %}"
                 "{%- set messages = [{'role': 'system', 'content': " + _jinja_string(system)
                 + "}] + messages %}{%- endif %}\n")
    if template_features(tokenizer).thinking:
        head += ("{%- if enable_thinking is not defined %}{%- set enable_thinking = "
                 + ("true" if fmt.enable_thinking else "false") + " %}{%- endif %}\n")
    exported = head + template
    _check(lambda messages, generation, thinking: tokenizer.apply_chat_template(
        messages, chat_template=exported, tokenize=False, add_generation_prompt=generation,
        **({} if thinking is None else {"enable_thinking": thinking})),
        tokenizer, fmt, "the exported chat template")
    return exported


def _prompt_template_jinja(prompt_template: str) -> str:
    """A custom prompt template as a chat template: its prompt part around the last user text."""
    before, after = _split(template_prompt(prompt_template, _USER), _USER)
    return ("{%- set ns = namespace(text='') %}{%- for m in messages %}{%- if m['role'] == "
            "'user' %}{%- set ns.text = m['content'] %}{%- endif %}{%- endfor %}"
            + "{{- " + _jinja_string(before) + " + ns.text + " + _jinja_string(after) + " }}")


def _jinja_string(text: str) -> str:
    # a JSON string is a valid Jinja string literal for every character JSON escapes
    return json.dumps(text)


# ---------------------------------------------------------------------------- Go (Ollama)
_SYSTEM, _USER, _USER2, _ANSWER = "Sys7QzX", "Usr7QzX", "Two7QzX", "Ans7QzX"


@dataclass(frozen=True)
class ChatPieces:
    """A chat template taken apart: a conversation renders as `no_system` (when it does not
    open with a system turn), then each turn's text between its role's before/after, then the
    generation prompt."""
    no_system: str
    before: dict        # role -> text before the turn's content
    after: dict         # role -> text after it
    prompt_trained: str
    prompt_thinking: str
    prompt_plain: str

    def render(self, messages: list[dict], generation: bool = True,
               thinking: Optional[bool] = None) -> str:
        """What the Go template renders, in Python, to check the pieces before writing them."""
        text = "" if messages and messages[0]["role"] == "system" else self.no_system
        for m in messages:
            text += self.before[m["role"]] + m["content"] + self.after[m["role"]]
        if generation and messages and messages[-1]["role"] != "assistant":
            text += (self.prompt_trained if thinking is None else
                     self.prompt_thinking if thinking else self.prompt_plain)
        return text


def chat_pieces(tokenizer, fmt: PromptFormat) -> ChatPieces:
    """Read the pieces off the run's rendering of marker conversations; TemplateError where the
    rendering is not made of such pieces."""
    def text(messages, generation=False, thinking=None):
        return render(tokenizer, fmt, messages, generation=generation, thinking=thinking)

    s, u, u2, a = ({"role": r, "content": c} for r, c in (
        ("system", _SYSTEM), ("user", _USER), ("user", _USER2), ("assistant", _ANSWER)))
    try:
        one = text([u])
        lead, user_after = _split(one, _USER)
        between_users = _split(text([u, u2]), _USER, _USER2)[1]
        user_before = _strip_start(between_users, user_after)
        no_system = _strip_end(lead, user_before)
        system_before, rest = _split(text([s, u]), _SYSTEM)
        system_after = _strip_end(_split(rest, _USER)[0], user_before)
        _, user_to_answer, answer_to_user, _ = _split(text([u, a, u2]), _USER, _ANSWER, _USER2)
        answer_before = _strip_start(user_to_answer, user_after)
        answer_after = _strip_end(answer_to_user, user_before)
        prompts = {t: _strip_start(text([u], True, t), one) for t in (None, True, False)}
    except (TemplateError, ValueError) as e:
        raise TemplateError(f"the chat template cannot be written as an Ollama template ({e})")
    pieces = ChatPieces(no_system, {"system": system_before, "user": user_before,
                                    "assistant": answer_before},
                        {"system": system_after, "user": user_after, "assistant": answer_after},
                        prompts[None], prompts[True], prompts[False])
    _check(pieces.render, tokenizer, fmt, "the Ollama template")
    return pieces


def ollama_template(tokenizer, fmt: PromptFormat) -> str:
    """The Modelfile TEMPLATE that renders Ollama's messages as the run trained: every literal
    is a quoted Go string, so the layout's trim markers never eat a newline of the format.
    Think/IsThinkSet are Ollama's thinking switch (`ollama run --think`); unset, the run's own
    mode applies. Tool turns are not rendered (Ollama's tool calling needs its own template)."""
    if fmt.prompt_template:
        before, after = _split(template_prompt(fmt.prompt_template, _USER), _USER)
        return "{{ " + _go(before) + " }}{{ .Prompt }}{{ " + _go(after) + " }}"
    p = chat_pieces(tokenizer, fmt)
    roles = "\n".join(
        ("{{- if" if i == 0 else "{{- else if") + f' eq $m.Role "{role}" }}}}'
        + "{{ " + _go(p.before[role]) + " }}{{ $m.Content }}{{ " + _go(p.after[role]) + " }}"
        for i, role in enumerate(("system", "user", "assistant")))
    prompt = ("{{- " + _go(p.prompt_trained) + " }}" if p.prompt_thinking == p.prompt_plain else
              "{{- if $.IsThinkSet }}{{ if $.Think }}{{ " + _go(p.prompt_thinking)
              + " }}{{ else }}{{ " + _go(p.prompt_plain) + " }}{{ end }}{{ else }}{{ "
              + _go(p.prompt_trained) + " }}{{ end }}")
    no_system = ('{{- if not (and .Messages (eq (index .Messages 0).Role "system")) }}{{ '
                 + _go(p.no_system) + " }}{{ end }}\n") if p.no_system else ""
    return (
        no_system + "{{- range $i, $m := .Messages }}\n" + roles + "\n{{- end }}\n"
        "{{- if and (eq (len (slice $.Messages $i)) 1) (ne $m.Role \"assistant\") }}\n"
        + prompt + "\n{{- end }}\n{{- end }}")


def stop_words(tokenizer, fmt: PromptFormat) -> list[str]:
    """What ends an answer: the end-of-sequence token and the special token that closes an
    assistant turn in the template."""
    words = [tokenizer.eos_token] if tokenizer.eos_token else []
    if not fmt.prompt_template:
        after = chat_pieces(tokenizer, fmt).after["assistant"].strip()
        special = set(getattr(tokenizer, "all_special_tokens", []))
        words += [t for t in special if t and after.startswith(t)]
    return list(dict.fromkeys(words))


def _go(text: str) -> str:
    # a JSON string is a valid Go interpreted string literal
    return json.dumps(text, ensure_ascii=False)


# ---------------------------------------------------------------------------- checks
_CONVERSATIONS = [
    [{"role": "user", "content": "What is LoRA?"}],
    [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Name a colour.\nJust one."}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"},
     {"role": "user", "content": "e"}],
]


def _check(rendered, tokenizer, fmt: PromptFormat, what: str) -> None:
    """`rendered(messages, generation, thinking)` must equal the run's own rendering."""
    for messages in _CONVERSATIONS:
        for thinking in (None, True, False):
            for generation in (True, False):
                want = render(tokenizer, fmt, messages, generation=generation, thinking=thinking)
                if rendered(messages, generation, thinking) != want:
                    raise TemplateError(f"{what} does not render as the run trained")


def _split(text: str, *markers: str) -> list[str]:
    parts, rest = [], text
    for marker in markers:
        if rest.count(marker) != 1:
            raise TemplateError(f"the template changes or repeats a turn's text ({marker})")
        head, rest = rest.split(marker)
        parts.append(head)
    return parts + [rest]


def _strip_start(text: str, start: str) -> str:
    if not text.startswith(start):
        raise TemplateError("turns are not rendered one after another")
    return text[len(start):]


def _strip_end(text: str, end: str) -> str:
    if not text.endswith(end):
        raise TemplateError("turns are not rendered one after another")
    return text[:len(text) - len(end)]
