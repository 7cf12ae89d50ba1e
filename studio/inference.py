"""Loading a base model or a trained run, and generating with it the way it was trained.

A run's prompt format (chat template and thinking mode, or its custom prompt template) is read
from the run folder, so the chat playground, the CLI and the Python API prompt the model exactly
as training did.
"""
from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from backends import CHAT, ChatSettings
from studio.config import FineTuningConfig
from studio.runs.store import files, is_run_dir, last_checkpoint, read_config


@dataclass
class PromptFormat:
    enable_thinking: bool = False
    prompt_template: Optional[str] = None
    system_prompt: Optional[str] = None
    template_system_prompt: str = "keep"     # or drop the system prompt the template adds

    @classmethod
    def of(cls, config: FineTuningConfig) -> "PromptFormat":
        return cls(config.enable_thinking, config.prompt_template, config.system_prompt,
                   config.template_system_prompt)


@dataclass
class LoadedModel:
    """What the chat needs: the model, its tokenizer, the backend that runs it, how to prompt."""
    model: object
    tokenizer: object
    backend: str
    prompt_format: PromptFormat
    source: str


def resolve_source(source) -> tuple[FineTuningConfig, Optional[Path]]:
    """(config, adapter folder or None) for a run folder, an adapter folder, a model id or path,
    or a FineTuningConfig whose output_dir may hold a finished run."""
    if isinstance(source, FineTuningConfig):
        adapter = files(source.output_dir).adapter
        if (adapter / "adapter_config.json").is_file() or \
                (adapter / "adapters.safetensors").is_file():
            return source, adapter
        return source, None
    path = Path(str(source))
    if is_run_dir(path):
        config = read_config(path)
        adapter = files(path).adapter
        if not adapter.is_dir():
            adapter = last_checkpoint(path)
            if adapter is None:
                raise FileNotFoundError(f"{path} holds a run but no adapter yet "
                                        "(it has not saved a checkpoint)")
        return config, adapter
    if (path / "adapter_config.json").is_file():
        base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        return FineTuningConfig(model_name=base), path
    return FineTuningConfig(model_name=str(source)), None


def load_model(source, config: Optional[FineTuningConfig] = None) -> LoadedModel:
    """Base model plus adapter, on the hardware found, through the run's backend."""
    from backends import get_backend
    from studio.models.local import local_model_path
    from studio.plan.hardware import detect_hardware
    from studio.plan.plan import chat_backend

    run_config, adapter = resolve_source(source)
    config = (config or run_config).resolve()
    from studio.models.local import ModelError, model_problem

    if (why := model_problem(config.model_name)):    # a file, a missing folder, no network
        raise ModelError(why)
    local_model_path(config.model_name)      # the bundled models are built on first use
    backend = run_config.backend
    if adapter is not None and (adapter / "adapters.safetensors").is_file():
        backend = "mlx"     # an MLX adapter runs only on MLX, whatever the config said
    backend = chat_backend(backend, detect_hardware())
    model, tokenizer = get_backend(backend).load(config.model_name, adapter, config)
    return LoadedModel(model, tokenizer, backend, PromptFormat.of(run_config), str(source))


def prompt_ids(tokenizer, messages: list[dict], fmt: PromptFormat,
               enable_thinking: Optional[bool] = None) -> list[int]:
    """Token ids that ask the model for the next assistant turn, formatted as in training."""
    from studio.data import system_choice

    thinking = fmt.enable_thinking if enable_thinking is None else enable_thinking
    if fmt.prompt_template:
        return tokenizer(template_prompt(fmt.prompt_template, messages[-1]["content"]),
                         add_special_tokens=False)["input_ids"]
    # the system turn chosen as in training: the run's system prompt, or the template's own
    # default kept or dropped
    messages = system_choice(tokenizer, messages, fmt.system_prompt, fmt.template_system_prompt)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                        enable_thinking=thinking, return_dict=True)["input_ids"]
    return list(ids)


def template_prompt(template: str, user_text: str) -> str:
    """The prompt part of a custom template (everything before its response placeholder), with
    the user's text in the first placeholder and the others left empty."""
    head = re.split(r"\{(?:response|output|completion|answer)\}", template, maxsplit=1)[0]
    names = re.findall(r"\{(\w+)\}", head)
    values = {n: "" for n in names}
    if names:
        instruction = next((n for n in names if n in ("instruction", "prompt", "question",
                                                      "input", "query")), names[-1])
        values[instruction] = user_text
    return head.format(**values)


def stream_reply(loaded: LoadedModel, messages: list[dict], *,
                 max_new_tokens: int = CHAT.max_new_tokens, temperature: float = CHAT.temperature,
                 top_p: float = CHAT.top_p,
                 enable_thinking: Optional[bool] = None, bounds=None,
                 ids: Optional[list[int]] = None) -> Iterator[str]:
    """The reply to `messages`, piece by piece as the model writes it; closing the iterator
    stops the model within a token or a chunk. With `bounds` (studio.service.access.ReplyBounds), a
    request over them raises OverBounds before anything is generated. `ids`: the prompt, where
    the caller has tokenized it already."""
    from backends import get_backend

    if ids is None:
        ids = prompt_ids(loaded.tokenizer, messages, loaded.prompt_format, enable_thinking)
    if bounds is not None:
        bounds.check(len(ids), max_new_tokens)
    settings = ChatSettings(int(max_new_tokens), float(temperature), float(top_p))
    yield from get_backend(loaded.backend).stream(loaded.model, loaded.tokenizer, ids, settings)


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer) of a Qwen3 reply; the thinking is shown folded in the chat."""
    m = re.match(r"\s*<think>(.*?)(</think>|$)(.*)", text, re.S)
    if not m:
        return "", text
    return m.group(1).strip(), m.group(3).lstrip()


# ---------------------------------------------------------------------------- the guide's API
# The tokenizer of a model loaded through load_model_and_tokenizer -> how that model is prompted
# and which backend runs it, so generate_text(model, tokenizer, ...) prompts as training did.
# Kept here rather than as attributes set on the transformers objects (keyed by the tokenizer:
# an MLX model is a dict, which cannot be a key).
_LOADED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def load_model_and_tokenizer(config_or_path):
    """(model, tokenizer) of a base model, or of a run folder (base + adapter)."""
    loaded = load_model(config_or_path)
    _LOADED[loaded.tokenizer] = loaded
    return loaded.model, loaded.tokenizer


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = CHAT.max_new_tokens,
                  temperature: float = CHAT.temperature) -> str:
    """The model's answer to one user prompt (chat-formatted as in training)."""
    return "".join(stream_text(model, tokenizer, prompt, max_new_tokens, temperature))


def stream_text(model, tokenizer, prompt: str, max_new_tokens: int = CHAT.max_new_tokens,
                temperature: float = CHAT.temperature, top_p: float = CHAT.top_p) -> Iterator[str]:
    """generate_text, piece by piece: for chat UIs."""
    known = _LOADED.get(tokenizer)
    loaded = LoadedModel(model, tokenizer, known.backend if known else "transformers",
                         known.prompt_format if known else PromptFormat(), "")
    yield from stream_reply(loaded, [{"role": "user", "content": prompt}],
                            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
