"""How a run's batches are laid out and its loss scored, decided for the plan (studio.plan.plan).

On a GPU the micro-batches are sized to the free memory: whole rows padding-free by default
(memory.plan_rows), or packs of tokens_per_batch with packing on (memory.plan_batch), with the
layers a long micro-batch needs recomputed in that micro-batch alone where checkpointing is left
to auto. The loss: the transformers backend takes whole logits where they fit beside the same
rows with no layer recomputed (in one process); elsewhere both torch backends score it in one
kernel where that runs and pays, else in trl's chunks. On a CPU, the batch as asked, with whole
logits where they stay small. Layer graphs where compiled layers' micro-batches suit them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from studio.models.shapes import model_shape
from studio.plan.compiling import layer_graphs_pay
from studio.plan.memory import GiB, MemoryEstimate, RowPlan, logits_bytes, plan_batch, plan_rows
from studio.texts.message import Text

# A CPU run holds a micro-batch's whole logits up to this many bytes (the model's own loss is
# faster than trl's chunks, on a CPU as on a GPU); beyond it, the chunks.
WHOLE_LOGITS_ON_CPU = 2 * GiB

# Auto takes the loss in one kernel where a micro-batch holds this many tokens on average or
# more. What Unsloth's saves grows with the tokens, at 0.6B as at 8B, but below this a step is
# bound by the host and took longer with either kernel than with trl's chunks, while
# micro-batches well above it were faster at both sizes (measured: bench/HISTORY.md, issue #16,
# 'when a kernel pays' and the pairs measured after it).
FUSED_LOSS_MIN_TOKENS = 4096


@dataclass(frozen=True)
class Batches:
    """The batch layout and loss decided: the config with batch_size, accumulation,
    tokens_per_batch, gradient_checkpointing, layer_graphs, whole_logits and fused_loss set
    (none left to auto); the GPU's row plan for whole rows (which layers a micro-batch
    recomputes, where checkpointing was left to auto: RowPlan.layers_for); why."""
    config: object
    rows: Optional[RowPlan] = None
    planner: str = ""           # a Text (studio.texts): said in the reader's language
    estimate: Optional[MemoryEstimate] = None


def fused_loss_runs(config, hw, kernels: str) -> bool:
    """Where a kernel scores the loss: a CUDA GPU, training through Unsloth (whose loss comes
    with it) or with cut-cross-entropy installed (the cuda extra)."""
    return (not config.cpu_only and hw.has_cuda
            and (kernels == "unsloth" or bool(hw.packages.get("cut_cross_entropy"))))


def fused_loss_in_effect(config, hw, kernels: str, tokens: Optional[float] = None) -> bool:
    """Whether this run scores its loss in one kernel: as set, else wherever it runs in one
    process (it was measured on one GPU; several keep the loss they were measured with), unless
    whole_logits were asked for, for micro-batches of FUSED_LOSS_MIN_TOKENS tokens or more on
    average (tokens: the plan's; None: not known). kernels: whose layers train."""
    if config.fused_loss is not None:
        return config.fused_loss
    return (fused_loss_runs(config, hw, kernels) and config.world_size == 1
            and not config.whole_logits
            and (tokens is None or tokens >= FUSED_LOSS_MIN_TOKENS))


def rows_and_loss(config, hw, free: float, lengths: list[int], kernels: str):
    """The row plan (memory.plan_rows) and the config with the loss decided. Left to auto in
    one process, the transformers backend takes whole logits where the same rows fit with them
    and no layer recomputed: bound by the host at short micro-batches, they are faster than the
    loss in one kernel, which reads its row count back. Elsewhere both backends score in one
    kernel where it runs and pays, else in trl's chunks."""
    ours = kernels == "transformers"              # whole logits: the transformers backend only
    plan = plan_rows(config, free, lengths, fused_loss=not (ours and config.whole_logits),
                     kernels=kernels)
    rows = plan.rows if plan else config.batch_size
    fused = fused_loss_in_effect(config, hw, kernels,
                                 rows * sum(lengths) / max(1, len(lengths)))
    # in one process only: each rank plans on its own GPU's free memory, and ranks that read
    # slightly different amounts must not pick different losses (several GPUs measured chunks)
    if not (ours and config.whole_logits is None and config.fused_loss is None
            and plan is not None and config.world_size == 1):
        return plan, config.replace(fused_loss=fused, whole_logits=bool(config.whole_logits))
    whole = plan_rows(config, free, lengths, fused_loss=False, kernels=kernels)
    fits = whole is not None and whole.rows == plan.rows and not whole.gradient_checkpointing
    return (whole if fits else plan), config.replace(whole_logits=fits,
                                                     fused_loss=fused and not fits)


def lay_out(config, hw, lengths: Optional[list[int]], kernels: str) -> Batches:
    """The batches of a resolved config on this hardware (its free GPU memory as read), for rows
    of these token lengths (None: not known yet, the batch as asked)."""
    if config.cpu_only or not hw.gpus:
        return Batches(config.replace(
            gradient_checkpointing=bool(config.gradient_checkpointing), layer_graphs=False,
            fused_loss=False, whole_logits=whole_logits_on_cpu(config)))
    ours = kernels == "transformers"     # whole logits and layer graphs are this backend's
    free = hw.gpus[0].free_bytes
    if not lengths:
        return _as_asked(config.replace(fused_loss=fused_loss_in_effect(config, hw, kernels),
                                        whole_logits=bool(config.whole_logits)),
                         Text("plan.no_rows"))
    if config.packing:   # packs fill the memory: whole logits only where asked for
        plan = plan_batch(config.replace(gradient_checkpointing=None), free,
                          sum(lengths) / max(1, len(lengths)),
                          fused_loss=not (ours and config.whole_logits),
                          longest_row=max(lengths, default=None), kernels=kernels)
        packed = config.tokens_per_batch or (plan.tokens_per_batch if plan else
                                             config.max_seq_length)
        changes = plan and dict(tokens_per_batch=packed)
        config = config.replace(fused_loss=fused_loss_in_effect(config, hw, kernels, packed),
                                whole_logits=bool(config.whole_logits))
    else:
        plan, config = rows_and_loss(config, hw, free, lengths, kernels)
        changes = plan and dict(batch_size=plan.rows)
    if plan is None:   # nothing to plan with, or nothing fits: what was asked, recomputing
        why = (Text("plan.unknown_architecture") if model_shape(config.model_name) is None else
               Text("plan.nothing_fits", gib=free / GiB))
        return _as_asked(config, why)
    checkpointing = (plan.gradient_checkpointing if config.gradient_checkpointing is None
                     else config.gradient_checkpointing)
    adaptive = not config.packing and config.gradient_checkpointing is None and checkpointing
    graphs = config.layer_graphs
    if graphs is None:    # packs are all one size; rows make micro-batches of many
        graphs = bool(ours and config.compile_layers and config.world_size == 1) and (
            not checkpointing if config.packing else layer_graphs_pay(plan, lengths))
    # where every layer recomputes in every micro-batch, none would replay as a graph
    # (compiled_layers.recompute_outside_graphs): the plan says so, even where they were asked
    graphs = bool(graphs) and not (checkpointing and not adaptive)
    planned = config.replace(**changes, gradient_checkpointing=checkpointing, layer_graphs=graphs,
                             gradient_accumulation_steps=plan.gradient_accumulation_steps)
    return Batches(planned, None if config.packing else plan, plan.reason, plan.estimate)


def _as_asked(config, why: Text) -> Batches:
    """The batch as asked for, recomputing every layer unless told not to: where there is
    nothing to plan with, or nothing fits."""
    planned = config.replace(gradient_checkpointing=config.gradient_checkpointing is not False,
                             layer_graphs=bool(config.layer_graphs)
                             and config.gradient_checkpointing is False)
    return Batches(planned, None, Text("plan.as_asked", why=why))


def whole_logits_on_cpu(config) -> bool:
    """A CPU run's loss: whole logits as set, else where the longest micro-batch's stay under
    WHOLE_LOGITS_ON_CPU."""
    if config.whole_logits is not None:
        return config.whole_logits
    shape = model_shape(config.model_name)
    tokens = (config.tokens_per_batch or config.max_seq_length) if config.packing else \
        config.batch_size * config.max_seq_length
    return shape is not None and logits_bytes(config, shape, tokens) <= WHOLE_LOGITS_ON_CPU


def holds_whole_logits(config) -> bool:
    """Whether a micro-batch's whole logits are held at once (a decided config): the model's own
    loss, not scored in one kernel nor in trl's chunks."""
    return bool(config.whole_logits) and not config.fused_loss


def layout(config) -> dict:
    """The batch fields of a plan: what one micro-batch and one update hold."""
    if config.method != "sft":
        micro = Text("plan.value.pairs", pairs=config.batch_size)
    elif config.packing:
        micro = Text("plan.value.packs", tokens=config.tokens_per_batch or config.max_seq_length)
    else:
        micro = Text("plan.value.rows", rows=config.batch_size)
    return {"micro_batch": micro, "batch_size": config.batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
            "packing": bool(config.packing), "fused_loss": bool(config.fused_loss),
            "whole_logits": holds_whole_logits(config),
            "layer_graphs": bool(config.layer_graphs),
            "gradient_checkpointing": Text("plan.value.on") if config.gradient_checkpointing
            else Text("plan.value.off")}
