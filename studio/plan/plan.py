"""The plan of a run, made once from the config, the hardware read now and the data's token
lengths: which backend trains and why, where and in which precision, how the batches are laid
out and which layers recompute in which micro-batch, how the loss is scored, whether layers
compile and replay as CUDA graphs, how several processes share the work, and the memory it will
take. Preflight, the page's estimate and checks, the command line's dry run, plan.yaml and every
backend read it; nothing else decides any of these. A backend adds only what it learns while
loading (the attention kernel it found) as a "plan" event of its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from studio.config import FineTuningConfig
from studio.models.shapes import model_shape
from studio.plan import batches
from studio.plan.compiling import AUTO_REASON, compile_pays, graph_bucket
from studio.plan.memory import GiB, MemoryEstimate, RowPlan, estimate_memory
from studio.texts.message import Text


@dataclass(frozen=True)
class Plan:
    config: FineTuningConfig          # as the run trains: resolved, nothing left to auto
    backend: str
    why: str                          # the backend, and why (a Text where the plan says it)
    rows: Optional[RowPlan] = None    # the GPU's whole rows: which layers recompute, when
    planner: str = ""                 # how the batches were laid out, and why (a Text)
    estimate: Optional[MemoryEstimate] = None
    free_bytes: float = 0.0
    where: str = "RAM"                # the memory the estimate is held against
    processes: str = ""               # how several processes share the work ("" for one)
    graph_bucket: int = 0             # tokens micro-batches are padded to for layer graphs
    steps: int = 0                    # optimizer steps the run takes (0: rows not known yet)
    tokens: float = 0.0               # tokens it trains on in them

    def seconds_at(self, tokens_per_s: float) -> float:
        """How long the run trains at this speed."""
        return self.tokens / tokens_per_s

    @property
    def recomputes_per_micro_batch(self) -> bool:
        """Whether checkpointing is decided for each micro-batch (left to auto, and some long
        micro-batch needs it): the backend recomputes rows.layers_for(tokens) layers."""
        return (self.rows is not None and self.rows.config.gradient_checkpointing is None
                and self.rows.gradient_checkpointing)

    @property
    def kernels(self) -> str:
        """Whose layers train: "unsloth", or "transformers" (every other backend's count)."""
        return "unsloth" if self.backend == "unsloth" else "transformers"

    def layout(self) -> dict:
        """What plan.yaml and the run's "plan" events hold of it: plain values, the catalog's
        English (yaml writes no str subclass; the page reads them back in its language)."""
        c = self.config
        out = {"backend": self.backend, "device": "CPU" if c.cpu_only else "GPU",
               "dtype": "bfloat16" if c.bf16 else "float16" if c.fp16 else "float32",
               "quantization": Text("plan.value.qlora") if c.load_in_4bit else
               Text("plan.value.8bit") if c.load_in_8bit else Text("plan.value.none"),
               "lora_dropout": c.lora_dropout,
               **batches.layout(c)}
        if self.recomputes_per_micro_batch:
            out["gradient_checkpointing"] = Text("plan.value.per_micro_batch")
        if self.planner:
            out["planner"] = self.planner
        if self.estimate is not None:
            out["estimate_gb"] = round(self.estimate.total / GiB, 2)
        if self.processes:
            out.update(processes=c.world_size, distributed=self.processes)
        return {k: str(v) if isinstance(v, str) else v for k, v in out.items()}


def backend_for(config: FineTuningConfig, hw) -> tuple[str, str]:
    """The backend a resolved config trains (or chats) on here, and why, before any rows are
    known: as asked, else the best that runs here (backends.choose_backend). Raises
    BackendError where the backend asked for cannot run."""
    from backends import choose_backend

    return choose_backend(config.backend, hw, config.world_size,
                          needs=config.transformers_only())


def chat_backend(asked: str, hw) -> str:
    """The backend that loads a run or a model for chat here: one process, as asked (an MLX
    adapter: "mlx"), else the best that runs here."""
    from backends import choose_backend

    return choose_backend(asked, hw)[0]


def make_plan(config: FineTuningConfig, hw, lengths: Optional[list[int]] = None,
              asked: Optional[str] = None, train_rows: Optional[float] = None) -> Plan:
    """The plan of `config` on `hw` (free memory as read) for rows of these token lengths (None:
    not known yet; the batches are then as asked). Raises BackendError where the backend asked
    for cannot run here. `asked`: the distribution as the config said it, for the description
    (the config resolves "auto"). `train_rows`: the rows that train, where `lengths` is a sample
    of them or holds the validation rows too (None: one row a length)."""
    from backends.torch import distributed

    asked = asked or config.distributed
    resolved = config.resolve(hw)
    if resolved.method != "sft":     # pairs train through trl's own trainer, as it comes
        resolved = resolved.replace(compile_layers=False, layer_graphs=False, fused_loss=False,
                                    whole_logits=False, packing=False)
    backend, why = backend_for(resolved, hw)
    if lengths and resolved.method == "sft" and compile_pays(resolved, hw, lengths):
        resolved, backend, why = resolved.replace(compile_layers=True), "transformers", AUTO_REASON
    kernels = "unsloth" if backend == "unsloth" else "transformers"
    laid = batches.lay_out(resolved, hw, lengths, kernels)
    on_gpu = bool(hw.gpus) and not resolved.cpu_only
    free = float(hw.gpus[0].free_bytes if on_gpu else hw.ram_free_bytes)
    where = f"GPU ({hw.gpus[0].name})" if on_gpu else "RAM"
    estimate = laid.estimate or _estimate(laid.config, lengths, kernels)
    steps, tokens = _work(resolved, lengths, train_rows)
    return Plan(laid.config, backend, why, laid.rows, laid.planner, estimate, free, where,
                distributed.describe(resolved, asked) if resolved.world_size > 1 else "",
                graph_bucket(model_shape(resolved.model_name)) if laid.config.layer_graphs else 0,
                steps, tokens)


def _work(config: FineTuningConfig, lengths: Optional[list[int]],
          train_rows: Optional[float]) -> tuple[int, float]:
    """(optimizer steps, tokens trained): rows as training truncates them, max_steps where
    given, else the epochs over the training rows."""
    if not lengths:
        return 0, 0.0
    rows = len(lengths) if train_rows is None else train_rows
    per_row = sum(min(n, config.max_seq_length) for n in lengths) / len(lengths)
    per_step = config.batch_size * config.gradient_accumulation_steps
    steps = config.max_steps or math.ceil(rows * config.num_train_epochs / per_step)
    return steps, steps * min(per_step, rows) * per_row


def _estimate(config, lengths: Optional[list[int]], kernels: str) -> Optional[MemoryEstimate]:
    """The memory estimate where the batch planner made none (a CPU, rows not known yet)."""
    try:
        return estimate_memory(config, longest_row=max(lengths) if lengths else None,
                               fused_loss=not batches.holds_whole_logits(config), kernels=kernels)
    except Exception:   # noqa: BLE001 - an unknown architecture: no estimate, not an error
        return None
