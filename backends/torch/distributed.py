"""What a process of a run over several processes needs to know and do (torch.distributed as
torchrun launches it, with DDP or FSDP2 inside transformers' Trainer): its rank, its GPU, a stop
all ranks agree on, and the Trainer's arguments. studio.runs.torchrun launches and supervises them.
"""
from __future__ import annotations

import os
from typing import Callable

from studio.texts.message import Text


def in_worker() -> bool:
    """Whether this process is one of torchrun's workers."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """Rank 0 (or no distributed run at all): the process that writes the run folder."""
    return rank() == 0


def bind_device() -> None:
    """A worker on a GPU works on its own (LOCAL_RANK), from its first allocation on."""
    if in_worker():
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())


def agreed(flag: Callable[[], bool]) -> Callable[[], bool]:
    """`flag` asked on every rank and answered as one: true on all ranks when true on any, so
    every rank stops at the same step (one rank leaving alone would hang the others)."""
    def ask() -> bool:
        import torch
        import torch.distributed as dist

        mine = bool(flag())
        if not (dist.is_available() and dist.is_initialized()):
            return mine
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        vote = torch.tensor([int(mine)], device=device)
        dist.all_reduce(vote, op=dist.ReduceOp.MAX)
        return bool(vote.item())
    return ask


def describe(config, asked: str) -> str:
    """How a resolved config spreads over its processes, and why (`asked`: the setting before
    resolving), for the run's log and plan."""
    where = (Text("dist.where.machines", n=config.world_size, machines=config.nnodes)
             if config.nnodes > 1 else Text("dist.where", n=config.world_size))
    if config.cpu_only:
        return Text("dist.cpu", where=where)
    if config.distributed == "fsdp":
        how = Text("dist.fsdp", where=where, why=Text("dist.why.set") if asked == "fsdp"
                   else Text("dist.why.fsdp"))
    elif config.distributed == "deepspeed":
        how = Text("dist.deepspeed", where=where)
    else:
        how = Text("dist.ddp", where=where, why=Text("dist.why.set") if asked == "ddp"
                   else Text("dist.why.ddp"))
    rows = config.batch_size * config.gradient_accumulation_steps
    if rows < 16:     # two GPUs scale well at 16 rows each, not at 8 (bench/HISTORY.md, #17)
        how = Text("dist.few_rows", how=how, rows=rows)
    return how


def trainer_arguments(config) -> dict:
    """What transformers' Trainer needs to train this config over several processes."""
    if config.world_size <= 1:
        return {}
    args = {"ddp_find_unused_parameters": False,
            "ddp_backend": "gloo" if config.cpu_only else "nccl"}
    if config.distributed == "fsdp":
        # FSDP2, a unit per decoder layer (the model's _no_split_modules), resharded after each
        # forward; rank 0 alone reads the weights and broadcasts them. The full state dict is
        # what lets a checkpoint resume on another number of GPUs (trl_recipe gathers only the
        # LoRA weights into it, never the frozen base)
        args.update(fsdp=True,
                    fsdp_config={"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                 "reshard_after_forward": True,
                                 "cpu_ram_efficient_loading": True,
                                 "state_dict_type": "FULL_STATE_DICT"})
    elif config.distributed == "deepspeed":
        args.update(deepspeed={"zero_optimization": {"stage": 3}, "bf16": {"enabled": "auto"},
                               "train_micro_batch_size_per_gpu": "auto",
                               "gradient_accumulation_steps": "auto"})
    return args
