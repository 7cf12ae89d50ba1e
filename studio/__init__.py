"""Qwen3 Studio: LoRA/QLoRA fine-tuning of Qwen3 models from the browser, the CLI or Python.

The public API is imported lazily, so `import studio` stays cheap (the CLI's --help, the UI's
start-up and packaging checks do not pay for torch and transformers).
"""
import os
import platform
import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__version__ = "0.1.0"
PROJECT = Path(__file__).resolve().parent.parent      # the folder holding studio/ and assets/


def _prefer_expandable_segments():
    """Let torch's allocator grow its segments instead of caching one block per size: the studio's
    micro-batches change length every step, and fixed segments fragment: runs reserved far more
    than their peak, and one ran out of memory that fits with these (bench/HISTORY.md, round
    eight). Torch reads the setting once, when CUDA starts, so it is set here, on importing the
    package, before anything of the studio's touches the GPU. A user's own setting stands. Linux
    only: under WSL, CUDA fails on them (unslothai/unsloth#3511). Torch 2.10 renamed the
    variable and warns on the old name."""
    names = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")
    wsl = "microsoft" in platform.uname().release.lower()
    if sys.platform != "linux" or wsl or any(name in os.environ for name in names):
        return
    try:
        major, minor = (int(part) for part in version("torch").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return
    os.environ[names[0] if (major, minor) >= (2, 10) else names[1]] = "expandable_segments:True"


_prefer_expandable_segments()

_API = {
    "FineTuningConfig": "studio.config",
    "run_fine_tuning": "studio.api",
    "TrainingError": "studio.api",
    "Refused": "studio.service.actions",
    "Service": "studio.service.actions",
    "load_model_and_tokenizer": "studio.inference",
    "generate_text": "studio.inference",
    "stream_text": "studio.inference",
    "prepare_dataset": "studio.data",
    "Job": "studio.runs.jobs",
    "detect_hardware": "studio.plan.hardware",
}
__all__ = list(_API)


def __getattr__(name):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'studio' has no attribute {name!r}")
