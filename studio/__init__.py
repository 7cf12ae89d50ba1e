"""Qwen3 Studio: LoRA/QLoRA fine-tuning of Qwen3 models from the browser, the CLI or Python.

The public API is imported lazily, so `import studio` stays cheap (the CLI's --help, the UI's
start-up and packaging checks do not pay for torch and transformers).
"""
from importlib import import_module

__version__ = "0.1.0"

_API = {
    "FineTuningConfig": "studio.config",
    "run_fine_tuning": "studio.api",
    "TrainingError": "studio.api",
    "Refused": "studio.service",
    "Service": "studio.service",
    "load_model_and_tokenizer": "studio.inference",
    "generate_text": "studio.inference",
    "stream_text": "studio.inference",
    "prepare_dataset": "studio.data",
    "Job": "studio.runs",
    "detect_hardware": "studio.hardware",
}
__all__ = list(_API)


def __getattr__(name):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'studio' has no attribute {name!r}")
