"""Training and inference engines behind one small interface, chosen by what the machine has.

Each backend module (hf, unsloth, mlx) exposes the same functions; nothing inherits from
anything. Heavy imports stay inside each module, so importing this registry is cheap.

    unavailable(hw) -> str | None
        Why this backend cannot run here, or None when it can.
    train(config, data, run_dir, emit, should_stop, resume_from=None) -> Path
        Train LoRA adapters on `data` (a studio.data.PreparedData), writing checkpoints under
        run_dir/checkpoints and the final adapter + tokenizer to run_dir/adapter, which it
        returns. Reports through emit(kind, step, **data) (see studio.events) and returns early,
        with a usable adapter, once should_stop() is true.
    load(model_name, adapter_dir, config) -> (model, tokenizer)
        Base model plus adapter (adapter_dir None: the base alone), ready to generate.
    stream(model, tokenizer, prompt_ids, settings) -> Iterator[str]
        Decoded text pieces of the reply to prompt_ids (a list of token ids), as they come.
"""
from __future__ import annotations

import importlib
from types import ModuleType

# name -> module, in the order auto prefers them where available
BACKENDS = {"unsloth": "backends.unsloth", "mlx": "backends.mlx", "transformers": "backends.hf"}


class BackendError(RuntimeError):
    """A backend that cannot run here; the message says why and what to choose instead."""


def get_backend(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}: choose one of auto, {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def availability(hw) -> dict[str, str | None]:
    """Backend name -> None when usable here, else the reason it is not."""
    out = {}
    for name in BACKENDS:
        try:
            out[name] = get_backend(name).unavailable(hw)
        except ImportError as e:
            out[name] = f"cannot be imported ({e})"
    return out


def choose_backend(requested: str, hw) -> tuple[str, str]:
    """The backend to use and a sentence saying why."""
    reasons = availability(hw)
    if requested != "auto":
        if requested not in reasons:
            get_backend(requested)   # raises the unknown-name message
        if reasons[requested]:
            raise BackendError(f"the {requested} backend cannot run here: {reasons[requested]}")
        return requested, f"{requested} (chosen explicitly)"
    if reasons["unsloth"] is None:
        return "unsloth", "unsloth: an NVIDIA GPU was found and unsloth is installed"
    if reasons["mlx"] is None and hw.apple_silicon:
        return "mlx", "mlx: Apple Silicon was found and mlx-lm is installed"
    why = {"unsloth": reasons["unsloth"],
           "mlx": reasons["mlx"] or "auto picks it only on Apple Silicon"}
    return "transformers", ("transformers, the fallback (" +
                            "; ".join(f"{n}: {r}" for n, r in why.items()) + ")")
