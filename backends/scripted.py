"""A backend that trains no model: it plays a known sequence of events, so the page, the command
line and the service can be tried and tested in seconds.

Where the studio can see it, it behaves as a real backend: a plan, a train event every
logging_steps with a loss that falls as 2 / (1 + step / 10), an eval event and the sample
prompts answered ("scripted answer at step N") every eval_steps and at the last step, a
checkpoint every save_steps (checkpoint-N/trainer_state.json, so Resume goes on from there), stop
honoured at the next step with a checkpoint and an adapter, and an adapter folder. load() and
stream() answer a chat with a scripted sentence, word by word. auto never picks it.
"""
from __future__ import annotations

import json
import math
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from studio.texts.message import Text

SECONDS_PER_STEP = 0.05     # long enough to watch a run and stop it, short enough for tests
SECONDS_PER_WORD = 0.02


def unavailable(hw) -> Optional[str]:
    return None   # needs nothing


def scripted_loss(step: int) -> float:
    """The loss logged at `step`: known in advance, so tests can assert on it."""
    return 2.0 / (1 + step / 10)


def train(plan, data, run_dir: Path, emit, should_stop, resume_from=None) -> Path:
    config = plan.config
    run_dir = Path(run_dir)
    per_update = config.batch_size * config.gradient_accumulation_steps
    total = config.max_steps or max(1, math.ceil(len(data.train) * config.num_train_epochs
                                                 / per_update))
    start = _step_of(resume_from) if resume_from else 0
    emit("plan", 0, micro_batch=Text("plan.value.scripted_rows", rows=config.batch_size),
         batch_size=config.batch_size,
         gradient_accumulation_steps=config.gradient_accumulation_steps,
         gradient_checkpointing=Text("plan.value.off"),
         attention=Text("plan.value.scripted_attention"))
    emit("status", start, message=Text("run.training"), max_steps=total)
    step = start
    while step < total:
        time.sleep(SECONDS_PER_STEP)
        step += 1
        if step % config.logging_steps == 0 or step in (1, total):
            emit("train", step, loss=scripted_loss(step), max_steps=total,
                 learning_rate=config.learning_rate * (1 - step / total),
                 epoch=step * per_update / max(1, len(data.train)), tokens=step * per_update * 64,
                 tokens_per_s=per_update * 64 / SECONDS_PER_STEP, grad_norm=1.0,
                 peak_memory_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        due = step % config.eval_steps == 0 or step == total     # as transformers evaluates
        if data.eval is not None and due:
            emit("eval", step, eval_loss=scripted_loss(step) + 0.1)
        if due:
            for sample in getattr(data, "samples", []):
                emit("sample", step, prompt=sample["prompt"], reference=sample["reference"],
                     answer=f"scripted answer at step {step}")
        stop = should_stop()
        if step % config.save_steps == 0 or stop:
            _checkpoint(run_dir, step, config, emit)
        if stop:
            break
    return _adapter(run_dir / "adapter", config, step)


def _checkpoint(run_dir: Path, step: int, config, emit) -> None:
    folder = run_dir / "checkpoints" / f"checkpoint-{step}"
    _adapter(folder, config, step)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))  # written last
    kept = sorted((run_dir / "checkpoints").glob("checkpoint-*"),
                  key=lambda p: int(p.name.split("-")[1]))
    for old in kept[:-config.save_total_limit]:
        shutil.rmtree(old, ignore_errors=True)
    emit("checkpoint", step, path=str(folder))


def _adapter(folder: Path, config, step: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": config.model_name, "backend": "scripted", "steps": step}))
    return folder


def _step_of(checkpoint: Path) -> int:
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]


# ---------------------------------------------------------------------------- chat
@dataclass(eq=False)
class ScriptedModel:
    """What load() returns in place of a model: the steps its adapter was trained for."""
    steps: int


def load(model_name: str, adapter_dir, config) -> tuple:
    from transformers import AutoTokenizer

    from studio.models.local import local_model_path

    steps = 0
    if adapter_dir and (Path(adapter_dir) / "adapter_config.json").is_file():
        steps = json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("steps", 0)
    return ScriptedModel(steps), AutoTokenizer.from_pretrained(local_model_path(model_name))


def stream(model, tokenizer, prompt_ids: list[int], settings) -> Iterator[str]:
    words = (f"A scripted reply from a run of {model.steps} steps to a prompt of "
             f"{len(prompt_ids)} tokens.").split()
    for i, word in enumerate(words[:settings.max_new_tokens]):
        time.sleep(SECONDS_PER_WORD)
        yield word if i == 0 else " " + word


def merge(adapter_dir, out_dir, config) -> Path:
    from backends import BackendError

    raise BackendError("the scripted backend trains no model: there are no weights to export")
