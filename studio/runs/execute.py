"""One run trained to its end: `execute()` in this process, or `spawn()` in a child process
(`python -m studio run-job`) whose output goes to log.txt, never to a pipe that someone must read.
Every failure becomes the run's outcome, written to its folder with a reason a person can act on.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from studio.config import ConfigError, FineTuningConfig
from studio import PROJECT
from studio.runs.events import Event, EventLog
from studio.texts.message import Text, message_of
from studio.runs.store import (RunError, Status, files, last_checkpoint, read_config,
                               read_status, record_pid, run_events, started_at, stop_asked,
                               ask_to_stop, write_plan, write_status)

def execute(run_dir: Path, should_stop: Callable[[], bool] = lambda: False,
            resume: bool = False, listeners=(), data=None) -> Status:
    """Train the run described by run_dir/config.yaml in this process; record everything.

    `data` is the prepared dataset when the caller already has it (the service's preflight
    prepared it in this process); otherwise it is prepared here. Never raises for a training
    failure: the failure is the run's outcome, written to status.json and metrics.jsonl with a
    reason a person can act on. Returns the final status.
    """
    from backends import get_backend
    from backends.torch import distributed

    run_dir = Path(run_dir)
    distributed.bind_device()
    if not distributed.is_main():      # another rank of a multi-GPU run: rank 0 records it
        return _execute_as_rank(run_dir, should_stop, resume, data)
    if patched_by_unsloth():
        return _execute_in_fresh_process(run_dir, should_stop, resume, listeners)
    log = EventLog(files(run_dir).metrics)
    log.subscribe(lambda e: e.kind == "plan" and write_plan(run_dir, **e.data))
    log.subscribe(lambda e: e.kind == "sample" and _append(files(run_dir).samples, e))
    for listener in listeners:
        log.subscribe(listener)
    stopped = distributed.agreed(lambda: should_stop() or stop_asked(run_dir))
    held = open(files(run_dir).job, "a")        # is_job_process: this process trains the run
    if distributed.in_worker():       # the supervisor's pid stays the job's (it ends every rank)
        write_status(run_dir, state="running")
    else:
        write_status(run_dir, state="running", pid=os.getpid(),
                     pid_started=started_at(os.getpid()))
    step, trackers = 0, []
    try:
        hw, config, data, plan = _planned(run_dir, log.emit, data)
        if plan.processes:
            log.emit("status", 0, message=Text("run.processes", how=plan.processes))
        for tracker in _trackers(config, run_dir, log):
            log.subscribe(tracker)
            trackers.append(tracker)
        write_status(run_dir, backend=plan.backend)
        log.emit("status", 0, message=Text("run.backend", why=plan.why), backend=plan.backend,
                 hardware=hw.summary())
        if plan.planner:
            log.emit("status", 0, message=Text("run.batch_plan", planner=plan.planner),
                     **({"estimate_gb": round(plan.estimate.total / 2**30, 2)}
                        if plan.estimate else {}))
        log.emit("plan", 0, **plan.layout())
        resume_from = last_checkpoint(run_dir) if resume else None
        if resume_from:
            log.emit("status", 0, message=Text("run.resuming", checkpoint=resume_from.name))

        def emit(kind, step_=0, **kw):
            nonlocal step
            step = max(step, step_)
            log.emit(kind, step_, **kw)

        adapter = get_backend(plan.backend).train(plan, data, run_dir, emit, stopped,
                                                  resume_from)
        if stopped():
            state, reason = "stopped", Text("run.stopped", step=step)
        else:
            state, reason = "finished", Text("run.trained", steps=step)
        log.emit("done", step, state=state, reason=reason, adapter=str(adapter))
    except BaseException as e:   # noqa: BLE001 - every failure becomes the run's outcome
        state, reason = "failed", explain_failure(e, run_dir)
        log.emit("done", step, state=state, reason=reason,
                 traceback="".join(traceback.format_exception(e))[-4000:])
        if isinstance(e, KeyboardInterrupt):
            write_status(run_dir, state=state, reason=reason, ended=time.time())
            raise
    finally:
        for tracker in trackers:
            try:
                tracker.close()
            except Exception:   # noqa: BLE001 - a tracker's hiccup is not the run's outcome
                pass
        held.close()
        from studio.plan.hardware import release_memory

        release_memory()      # the model and trainer go now, not at some later collection
    return write_status(run_dir, state=state, reason=reason, ended=time.time(), step=step)


def patched_by_unsloth() -> bool:
    """Whether Unsloth was imported into this process: its import replaces trl's trainers and,
    once it loads a model, transformers' layer code, for good (a transformers-backend run after
    an Unsloth run failed at once: 'Qwen3ForCausalLM' object has no attribute
    'get_base_model')."""
    return "unsloth" in sys.modules


def _execute_in_fresh_process(run_dir: Path, should_stop, resume: bool, listeners) -> Status:
    """execute() in a child process (`run-job`), its events handed to `listeners` as they come
    and a stop asked here passed on through the STOP file; returns its final status."""
    metrics = files(run_dir).metrics
    cursor = metrics.stat().st_size if metrics.exists() else 0    # a resumed run's are old
    EventLog(metrics).emit("status", 0, message=Text("run.fresh_process"))
    child = spawn(run_dir, resume)
    record_pid(run_dir, child.pid)
    ended = False
    while not ended:
        ended = child.poll() is not None
        if should_stop():
            ask_to_stop(run_dir)
        events, cursor = run_events(run_dir, cursor)
        for event in events:
            for listener in listeners:
                listener(event)
        time.sleep(0 if ended else 0.5)
    return read_status(run_dir)


def _execute_as_rank(run_dir: Path, should_stop, resume: bool, data) -> Status:
    """A rank above 0 trains the same config on its share of the data and writes nothing: its
    events go nowhere, and a failure is raised for torchrun to report (the supervisor writes it
    as the run's reason)."""
    from backends import get_backend
    from backends.torch import distributed

    emit = EventLog().emit
    _, _, data, plan = _planned(run_dir, emit, data)
    stopped = distributed.agreed(lambda: should_stop() or stop_asked(run_dir))
    get_backend(plan.backend).train(plan, data, run_dir, emit, stopped,
                                    last_checkpoint(run_dir) if resume else None)
    stopped()          # rank 0 asks once more after training (stopped or finished): answer it
    return Status("finished")


def _trackers(config: FineTuningConfig, run_dir: Path, log: EventLog) -> list:
    """The trackers the config asks for (studio.runs.tracking); one that cannot start is said in the
    log and left out, never the end of the run."""
    from studio.runs.tracking import TRACKERS, chosen

    out = []
    for name in chosen(config):
        try:
            out.append(TRACKERS[name](config, run_dir))
            log.emit("status", 0, message=Text("run.reporting", name=name))
        except Exception as e:   # noqa: BLE001
            log.emit("log", 0, message=f"{name} could not start, so this run does not report "
                                       f"to it: {type(e).__name__}: {str(e)[:300]}")
    return out


def _planned(run_dir: Path, emit, data=None):
    """(hardware, config, data, plan) of the run: its config.yaml checked on the hardware read
    now (caches freed first, so the free memory is the card's), its data prepared (unless
    given), and its plan made once from all three (studio.plan.plan)."""
    from studio.plan.hardware import detect_hardware, release_memory
    from studio.plan.plan import make_plan

    config = read_config(run_dir)
    release_memory()
    hw = detect_hardware()
    problems = config.validate(hw)
    if problems:
        raise ConfigError("; ".join(problems))
    data = prepare_data(config.resolve(hw), emit, data)
    plan = make_plan(config, hw, data.train_lengths)
    return hw, plan.config, data, plan


def prepare_data(config: FineTuningConfig, emit, data=None):
    """Tokenize and mask the run's dataset with the base model's tokenizer, unless that was done
    already (`data`), pick the prompts to answer at each evaluation, and say what it holds."""
    from transformers import AutoTokenizer

    from studio.data import prepare
    from studio.models.local import local_model_path

    if not config.data_path:
        raise RunError("no dataset: give data_path (a file, a saved dataset folder or a Hub id)")
    tokenizer = AutoTokenizer.from_pretrained(local_model_path(config.model_name))
    if data is None:
        emit("status", 0, message=Text("run.preparing", path=config.data_path))
        data = prepare(config.data_path, tokenizer, config)
    data = dataclasses.replace(data, samples=sample_prompts(config, data, tokenizer))
    emit("status", 0, message=Text("run.data", train=data.report.n_train, eval=data.report.n_eval,
                                   format=data.format.name),
         n_train=data.report.n_train, n_eval=data.report.n_eval, format=data.format.name)
    emit("log", 0, message=data.report.summary().replace("\n", "; "))     # the details
    return data


def sample_prompts(config: FineTuningConfig, data, tokenizer) -> list[dict]:
    """What the run answers at each evaluation: the user's own prompts, prompted as the chat
    will prompt them, or the first validation rows up to where their answer starts (exactly as
    training sees them), with that answer as the reference."""
    from studio.inference import PromptFormat, prompt_ids

    if config.sample_prompts:
        return [{"prompt": p, "reference": "",
                 "ids": prompt_ids(tokenizer, [{"role": "user", "content": p}],
                                   PromptFormat.of(config))} for p in config.sample_prompts]
    if data.eval is None or not config.num_samples:
        return []
    rows = data.eval.select(range(min(config.num_samples, len(data.eval))))
    if "chosen" in data.eval.column_names:      # preference pairs: the chosen answer is the mark
        return [{"prompt": row["prompt"][-1]["content"], "reference": row["chosen"][-1]["content"],
                 "ids": prompt_ids(tokenizer, row["prompt"], PromptFormat.of(config))}
                for row in rows]
    out = []
    for row in rows:
        ids, mask = row["input_ids"], row["assistant_masks"]
        start = mask.index(1) if 1 in mask else len(ids)
        end = start + (mask[start:].index(0) if 0 in mask[start:] else len(ids) - start)
        out.append({"prompt": _last_turn(tokenizer.decode(ids[:start], skip_special_tokens=True)),
                    "reference": tokenizer.decode(ids[start:end], skip_special_tokens=True).strip(),
                    "ids": list(ids[:start])})
    return out


def _last_turn(prompt: str) -> str:
    """The user's last turn in a decoded prompt, for people: the lines after the last line that
    is just "user", up to the line "assistant" (the rendered prompt's tail where there is none)."""
    lines = prompt.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() in ("user", "human")]
    if not starts:
        return prompt.strip()[-300:]
    turn = lines[starts[-1] + 1:]
    if "assistant" in [line.strip() for line in turn]:
        turn = turn[:[line.strip() for line in turn].index("assistant")]
    return "\n".join(turn).strip()


def _append(path: Path, event: Event) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": event.step, "time": event.time, **event.data},
                           ensure_ascii=False) + "\n")


def explain_failure(e: BaseException, run_dir: Path) -> str:
    """One paragraph a person can act on: what failed and what would fix it."""
    from studio.plan.memory import out_of_memory_advice

    text = str(e) or type(e).__name__
    if isinstance(e, KeyboardInterrupt):
        return Text("run.keyboard")
    if "out of memory" in text.lower() or type(e).__name__ == "OutOfMemoryError":
        try:
            config = read_config(run_dir)
        except Exception:   # noqa: BLE001
            return Text("run.oom")
        return out_of_memory_advice(config)
    if isinstance(e, (ConfigError, RunError)) or type(e).__name__ in ("DataError", "BackendError",
                                                                        "ModelError"):
        return message_of(e)
    if isinstance(e, OSError) and ("does not appear to have" in text or "not a local folder"
                                   in text or "offline" in text.lower() or "hub" in text.lower()):
        return Text("run.model_not_loaded", error=text.splitlines()[0])
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"



def spawn(run_dir: Path, resume: bool) -> subprocess.Popen:
    """Start `python -m studio run-job RUN_DIR` in its own process group, output to log.txt."""
    run_dir = Path(run_dir).resolve()
    log = open(files(run_dir).log, "ab")
    cmd = [sys.executable, "-m", "studio", "run-job", str(run_dir)] + (["--resume"] if resume else [])
    # The child starts where we are (relative data paths keep their meaning) and imports this
    # very copy of the project, installed or not.
    path = os.pathsep.join(p for p in (str(PROJECT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    finally:
        log.close()   # the child holds its own copy
