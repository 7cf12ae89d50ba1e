"""Training and inference engines behind one small interface, chosen by what the machine has.

Each backend is a module registered here by name that satisfies `Backend`; nothing inherits from
anything, and no backend imports another (what the transformers and Unsloth backends share is
in backends/torch/). Heavy imports stay inside each module, so this registry is cheap to
import. Which backend a run takes is the plan's to decide (studio.plan.plan), through
choose_backend here.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Protocol, runtime_checkable

from studio.texts.message import Text

# name -> module, in the order auto prefers them where available. "scripted" trains no model: it
# plays a known event sequence, for trying the page's wiring and for fast tests; auto never picks it.
BACKENDS = {"unsloth": "backends.unsloth", "mlx": "backends.mlx", "transformers": "backends.hf",
            "scripted": "backends.scripted"}

# emit(kind, step=0, **data): the one stream of training events (studio.runs.events)
Emit = Callable[..., None]


@dataclass(frozen=True)
class ChatSettings:
    """How a reply is sampled. Its defaults are the studio's wherever it samples one: the
    page's chat, the /v1 server, the command line, the Python API and the Ollama Modelfile."""
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95


CHAT = ChatSettings()


@runtime_checkable
class Backend(Protocol):
    """What the studio asks of a training engine (docs/architecture.md)."""

    def unavailable(self, hw) -> Optional[str]:
        """Why this backend cannot run on `hw` (studio.plan.hardware.Hardware), or None when it can."""

    def train(self, plan, data, run_dir: Path, emit: Emit, should_stop: Callable[[], bool],
              resume_from: Optional[Path] = None) -> Path:
        """Train LoRA adapters on `data` (a studio.data.PreparedData) as the run's plan says
        (studio.plan.plan.Plan: plan.config is the config to train with, nothing left to auto;
        plan.rows the layers to recompute per micro-batch). It decides nothing the plan holds.
        Checkpoints go under run_dir/checkpoints (each finished by a trainer_state.json), the
        final adapter and tokenizer to run_dir/adapter, which is returned. Reports through emit:
        a "plan" event with only what it learns while loading (the attention kernel found),
        then "status", "train", "eval" and "checkpoint" events. Once should_stop() is true it
        saves a checkpoint and a usable adapter at the next step and returns."""

    def load(self, model_name: str, adapter_dir: Optional[Path], config) -> tuple:
        """(model, tokenizer): the base model plus the adapter (None: the base alone), ready
        to generate; the tokenizer is a transformers one (chat template, encode, decode)."""

    def stream(self, model, tokenizer, prompt_ids: list[int],
               settings: ChatSettings) -> Iterator[str]:
        """The reply to prompt_ids, as decoded text pieces while they are generated."""

    def merge(self, adapter_dir: Path, out_dir: Path, config) -> Path:
        """The adapter merged into its base model's 16-bit weights: a standalone Hugging Face
        folder (config.json, safetensors, tokenizer) at out_dir, for GGUF, Ollama and vLLM."""


class BackendError(RuntimeError):
    """A backend that cannot run here; the message says why and what to choose instead."""


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise BackendError(Text("backend.unknown", name=name, names=", ".join(BACKENDS)))
    module = importlib.import_module(BACKENDS[name])
    assert isinstance(module, Backend), f"{BACKENDS[name]} does not define the Backend functions"
    return module


def availability(hw) -> dict[str, str | None]:
    """Backend name -> None when usable here, else the reason it is not."""
    out = {}
    for name in BACKENDS:
        try:
            out[name] = get_backend(name).unavailable(hw)
        except ImportError as e:
            out[name] = Text("backend.not_importable", error=str(e))
    return out


def choose_backend(requested: str, hw, world_size: int = 1,
                   needs: tuple = ()) -> tuple[str, str]:
    """The backend to use and a sentence saying why. Several processes train through the
    transformers backend (Unsloth runs on one GPU), with the same padding-free batches; so do
    settings that only that backend honours (`needs`: FineTuningConfig.transformers_only)."""
    reasons = availability(hw)
    if world_size > 1 and requested in ("auto", "unsloth"):
        return "transformers", Text("backend.why.processes", n=world_size)
    if needs and requested == "auto":
        return "transformers", Text("backend.why.needs", needs=" and ".join(needs))
    if requested != "auto":
        if requested not in reasons:
            get_backend(requested)   # raises the unknown-name message
        if reasons[requested]:
            raise BackendError(Text("backend.cannot_run", name=requested,
                                    why=reasons[requested]))
        return requested, Text("backend.why.explicit", name=requested)
    if reasons["unsloth"] is None:
        return "unsloth", Text("backend.why.unsloth")
    if reasons["mlx"] is None and hw.apple_silicon:
        return "mlx", Text("backend.why.mlx")
    return "transformers", Text("backend.why.fallback", unsloth=reasons["unsloth"],
                                mlx=reasons["mlx"] or Text("backend.mlx.apple_only"))
