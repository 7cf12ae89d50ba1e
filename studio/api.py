"""The guide's Python API: fine-tune, load, generate, in a few calls.

    from studio import FineTuningConfig, run_fine_tuning, load_model_and_tokenizer, generate_text
    path = run_fine_tuning(data_path="data.jsonl", config=FineTuningConfig(model_name=...))
    model, tokenizer = load_model_and_tokenizer(path)
    print(generate_text(model, tokenizer, "Hello", max_new_tokens=64, temperature=0.7))

Everything here goes through studio.runs, like the CLI and the UI, so a run made one way can
be repeated any other way from its saved config.yaml.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from studio.config import FineTuningConfig
from studio.runs import execute, prepare_run_dir


class TrainingError(RuntimeError):
    """The run failed; the message is the run's recorded reason."""


def run_fine_tuning(data_path: Optional[str] = None, config: Optional[FineTuningConfig] = None,
                    *, resume: bool = False, overwrite: bool = False, listeners=()) -> str:
    """Train in this thread and return the saved adapter's folder (inside config.output_dir).

    A stopped run also returns its adapter; a failed one raises TrainingError with the reason.
    """
    config = config or FineTuningConfig()
    if data_path is not None:
        config = config.replace(data_path=str(data_path))
    run_dir = prepare_run_dir(Path(config.output_dir), config, resume=resume, overwrite=overwrite)
    status = execute(run_dir, resume=resume, listeners=listeners)
    if status["state"] == "failed":
        raise TrainingError(status["reason"])
    return str(run_dir / "adapter")
