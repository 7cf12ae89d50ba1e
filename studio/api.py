"""The guide's Python API: fine-tune, load, generate, in a few calls.

    from studio import FineTuningConfig, run_fine_tuning, load_model_and_tokenizer, generate_text
    path = run_fine_tuning(data_path="data.jsonl", config=FineTuningConfig(model_name=...))
    model, tokenizer = load_model_and_tokenizer(path)
    print(generate_text(model, tokenizer, "Hello", max_new_tokens=64, temperature=0.7))

Everything here goes through studio.service.actions, like the CLI and the page: a run they would refuse
(over memory, a second job in the same runs folder) raises Refused here with the same words, and
a run made one way can be repeated any other way from its saved config.yaml.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from studio.config import FineTuningConfig
from studio.runs.store import files
from studio.service.actions import Service


class TrainingError(RuntimeError):
    """The run failed; the message is the run's recorded reason."""


def run_fine_tuning(data_path: Optional[str] = None, config: Optional[FineTuningConfig] = None,
                    *, resume: bool = False, overwrite: bool = False,
                    allow_over_memory: bool = False, listeners=()) -> str:
    """Train in this process and return the saved adapter's folder (inside config.output_dir,
    whose parent is the runs folder where one job trains at a time).

    A stopped run also returns its adapter; a run that may not start raises studio.Refused, and
    a failed one TrainingError, each with the reason.
    """
    config = config or FineTuningConfig()
    if data_path is not None:
        config = config.replace(data_path=str(data_path))
    run_dir = Path(config.output_dir).expanduser().resolve()
    service = Service(run_dir.parent)
    if resume:
        job = service.resume(run_dir, config, in_process=True, listeners=listeners)
    else:
        job = service.start(config, run_dir, allow_over_memory=allow_over_memory,
                            overwrite=overwrite, in_process=True, listeners=listeners)
    status = job.wait()
    if status.state == "failed":
        raise TrainingError(status.reason)
    return str(files(run_dir).adapter)
