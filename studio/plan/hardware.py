"""What this machine can train on: CUDA GPUs, Apple Silicon, CPU cores and memory."""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import platform
from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    capability: tuple[int, int]


@dataclass(frozen=True)
class Hardware:
    gpus: tuple[GPU, ...] = ()
    apple_silicon: bool = False
    cpu_name: str = ""
    cpu_cores: int = 1
    ram_bytes: int = 0
    ram_free_bytes: int = 0
    bf16_supported: bool = False     # on the GPU
    cpu_bf16: bool = False
    bitsandbytes: bool = False
    wandb: bool = False
    packages: dict = field(default_factory=dict)   # name -> importable, for the backends

    @property
    def has_cuda(self) -> bool:
        return bool(self.gpus)

    def summary(self) -> str:
        parts = [f"{g.name} ({g.total_bytes / 2**30:.0f} GiB, {g.free_bytes / 2**30:.0f} GiB free)"
                 for g in self.gpus]
        if self.apple_silicon:
            parts.append("Apple Silicon")
        parts.append(f"CPU {self.cpu_name or platform.machine()} ({self.cpu_cores} cores), "
                     f"RAM {self.ram_bytes / 2**30:.0f} GiB ({self.ram_free_bytes / 2**30:.0f} free)")
        return "; ".join(parts)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _cpuinfo(key: str) -> str:
    """The value of the first `key` line of /proc/cpuinfo ('' where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def release_memory() -> None:
    """Give back what finished work held: objects in reference cycles (a trainer and its model
    are one) collected now, and the GPU's cached blocks returned, so the next run or model
    plans with, and gets, the memory the card has."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():     # (nothing cached otherwise)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def detect_hardware() -> Hardware:
    """What this machine has, with free GPU memory and RAM read now: a decision that depends on
    free memory (4-bit or not, the batch plan, the memory check) must not use a start-up reading."""
    machine = _machine()
    gpus = machine.gpus
    if gpus:
        import torch

        gpus = tuple(dataclasses.replace(g, free_bytes=torch.cuda.mem_get_info(g.index)[0])
                     for g in gpus)
    return dataclasses.replace(machine, gpus=gpus,
                               ram_free_bytes=psutil.virtual_memory().available)


@functools.lru_cache(maxsize=1)
def _machine() -> Hardware:
    """The parts that stay as they are while the process lives (probed once: importing torch and
    looking up packages takes seconds)."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            gpus.append(GPU(i, p.name, total, free, (p.major, p.minor)))
    vm = psutil.virtual_memory()
    return Hardware(
        gpus=tuple(gpus),
        apple_silicon=platform.system() == "Darwin" and platform.machine() == "arm64",
        cpu_name=_cpuinfo("model name") or platform.processor() or platform.machine(),
        cpu_cores=os.cpu_count() or 1,
        ram_bytes=vm.total,
        ram_free_bytes=vm.available,
        bf16_supported=bool(gpus) and torch.cuda.is_bf16_supported(),
        # native bfloat16 arithmetic (Intel/AMD AVX-512 BF16 or AMX, Apple's arm64): there bf16
        # training is faster than float32; elsewhere torch emulates it, slowly
        cpu_bf16=bool({"avx512_bf16", "amx_bf16"} & set(_cpuinfo("flags").split())) or (
            platform.system() == "Darwin" and platform.machine() == "arm64"),
        bitsandbytes=_importable("bitsandbytes"),
        wandb=_importable("wandb"),
        packages={name: _importable(name) for name in ("unsloth", "mlx", "mlx_lm", "wandb",
                                                        "tensorboard", "trackio", "deepspeed",
                                                        "cut_cross_entropy")},
    )
