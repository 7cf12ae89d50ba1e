"""Run folders and the jobs that fill them.

A run folder is the whole truth about a run, so a reloaded page, a second tab, a restarted
server or the CLI can all read it:

    config.yaml     the FineTuningConfig, as asked for
    plan.yaml       what actually ran: backend, device, dtype, batch layout, checkpointing,
                    attention (from the run's "plan" events)
    status.json     state (running, finished, stopped, failed, interrupted), why, pid, times
    metrics.jsonl   every event, one JSON object a line (studio.events)
    log.txt         the job's own output when it runs as a separate process
    checkpoints/    trainer checkpoints (save_steps, save_total_limit), for resuming
    adapter/        the final LoRA adapter with the tokenizer and chat template used
    STOP            present when a stop was asked for; checked at every step

`execute()` runs a job to its end inside the current process. `Job` runs it in a thread (the
CLI and the Python API) or in a child process whose output goes to log.txt, never to a pipe that
someone must read (the page may go away, the job must not stall or die with it). Whether a job
may start at all is studio.service's to decide.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import yaml

from studio.config import ConfigError, FineTuningConfig
from studio.events import Event, EventLog, read_events

ACTIVE = ("starting", "running")


class RunError(RuntimeError):
    """A run that cannot start or go on; the message names the fix."""


# ---------------------------------------------------------------------------- folder layout
def status_path(run_dir: Path) -> Path:
    return Path(run_dir) / "status.json"


def read_status(run_dir: Path) -> dict:
    """The run's status; a job recorded as running whose process is gone (or is not this
    studio's job for this run) reads as 'interrupted'; a status.json that is not a status reads
    as 'unreadable', with the reason. Reading never writes: every page tick reads this."""
    try:
        text = status_path(run_dir).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"state": "new"}
    except (OSError, UnicodeDecodeError) as e:
        return {"state": "unreadable", "reason": f"status.json cannot be read: {e}"}
    status, problem = parse_status(text)
    if problem:
        return {"state": "unreadable", "reason": f"status.json {problem}; the run's other "
                                                 "files are untouched"}
    if status.get("state") in ACTIVE and not is_job_process(run_dir, status):
        status.update(state="interrupted",
                      reason="the training process ended without finishing (server restart, "
                             "crash or kill); Resume continues from the last checkpoint")
    return status


# What each field of status.json holds; a file that breaks this is not trusted at all.
_NUMBER = (int, float)
STATUS_FIELDS = {"state": (str,), "reason": (str,), "pid": (int,), "pid_started": _NUMBER,
                 "started": _NUMBER, "ended": _NUMBER, "step": (int,), "resumed": (bool,),
                 "earlier_seconds": _NUMBER, "estimate_gb": _NUMBER, "backend": (str,)}
STATES = ACTIVE + ("finished", "stopped", "failed", "interrupted")


def parse_status(text: str) -> tuple[dict, Optional[str]]:
    """(status, None) for a valid status.json text, else ({}, what is wrong with it)."""
    try:
        status = json.loads(text)
    except (ValueError, RecursionError):
        return {}, "is not JSON"
    if not isinstance(status, dict):
        return {}, f"holds a JSON {type(status).__name__}, not an object"
    for key, types in STATUS_FIELDS.items():
        value = status.get(key)
        if value is not None and (not isinstance(value, types)
                                  or (bool not in types and isinstance(value, bool))):
            return {}, f"field {key} is {type(value).__name__} {_plain(value)!r}, not " \
                       f"{' or '.join(t.__name__ for t in types)}"
    if status.get("state") not in STATES:
        return {}, f"state {_plain(status.get('state'))!r} is not a run state"
    return status, None


def _plain(value) -> str:
    """A value from the file, quoted for a reason: letters, digits and a few marks only (the
    reason is shown on the page; what the file holds is not markup)."""
    return re.sub(r"[^\w .:-]", "?", str(value))[:40]


def write_status(run_dir: Path, **fields) -> dict:
    path = status_path(run_dir)
    status = read_status_raw(run_dir)
    status.update(fields)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=1, default=str))
    tmp.replace(path)     # atomic: a reader never sees half a file
    return status


def read_status_raw(run_dir: Path) -> dict:
    """status.json as written, {} where there is none yet or it is not a valid status."""
    try:
        text = status_path(run_dir).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    return parse_status(text)[0]


def record_pid(run_dir: Path, pid: int) -> dict:
    """Write the job's process id with its start time, so that a reader can tell this process
    from any other that gets the same id later (or that a hand-edited file names)."""
    return write_status(run_dir, pid=int(pid), pid_started=_started_at(pid))


JOB_FILE = ".job"    # held open by the process that trains the run, for as long as it trains


def is_job_process(run_dir: Path, status: dict) -> bool:
    """Whether status.json's pid is this studio's job for run_dir, alive: the very process that
    was recorded (its start time is the one written with the pid), and either this process,
    `run-job` of this run folder (the page's job, before it opens its job file) or a process
    that holds the run's job file open (the CLI, or run_fine_tuning in a user's script, training
    in a thread). Only then is the run training. Any other studio process is not, whatever a
    status.json says (a forged one could make Stop kill another studio server)."""
    pid = status.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not _alive(pid):
        return False
    recorded, started = status.get("pid_started"), _started_at(pid)
    if recorded is None or started is None or abs(float(recorded) - started) > 1.0:
        return False
    return pid == os.getpid() or _runs_job_of(pid, run_dir) or \
        _holds(pid, Path(run_dir) / JOB_FILE)


def _runs_job_of(pid: int, run_dir: Path) -> bool:
    """Whether the process is `python -m studio run-job RUN_DIR` (a rank of it too) for this
    very run folder."""
    try:
        import psutil

        argv = psutil.Process(int(pid)).cmdline()
    except Exception:   # noqa: BLE001 - gone, or not ours to look at
        return False
    here = os.path.realpath(run_dir)
    return any(a == "run-job" and i + 1 < len(argv) and os.path.realpath(argv[i + 1]) == here
               for i, a in enumerate(argv)) and _studio_command(pid)


def _holds(pid: int, path: Path) -> bool:
    try:
        import psutil

        target = os.path.realpath(path)
        return any(f.path == target for f in psutil.Process(int(pid)).open_files())
    except Exception:   # noqa: BLE001 - gone, or not ours to look at
        return False


def may_signal(run_dir: Path, status: dict) -> bool:
    """Whether Stop may signal or kill status.json's pid: the recorded job process, and a
    studio command (`-m studio`, `qwen3-studio`, launch.py), never this process. A job in a
    thread of another program is only asked to stop (the STOP file)."""
    pid = status.get("pid")
    return is_job_process(run_dir, status) and pid != os.getpid() and _studio_command(pid)


def _started_at(pid: int) -> Optional[float]:
    try:
        import psutil

        return psutil.Process(int(pid)).create_time()
    except Exception:   # noqa: BLE001 - gone, or not ours to look at
        return None


def _studio_command(pid: int) -> bool:
    try:
        import psutil

        argv = psutil.Process(int(pid)).cmdline()
    except Exception:   # noqa: BLE001
        return False
    return any(a == "studio" and argv[i - 1] == "-m" for i, a in enumerate(argv) if i) or \
        any(Path(a).name in ("qwen3-studio", "launch.py") for a in argv[:3])


def _alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError, ValueError, OverflowError):
        return False
    try:   # a zombie child (finished, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def write_plan(run_dir: Path, **fields) -> dict:
    """Add to plan.yaml what the backend decided to run (beside config.yaml, as asked for)."""
    path = Path(run_dir) / "plan.yaml"
    plan = {**read_plan(run_dir), **fields}
    path.write_text(yaml.safe_dump(plan, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return plan


def read_plan(run_dir: Path) -> dict:
    """plan.yaml, {} before the backend has planned (or for runs older than plans)."""
    try:
        plan = yaml.safe_load((Path(run_dir) / "plan.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError):
        return {}
    return plan if isinstance(plan, dict) else {}


def last_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest complete checkpoint. Both backends write trainer_state.json last, so a job
    killed while saving leaves a folder without it, which cannot be resumed from."""
    checkpoints = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in checkpoints.glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))
             and (p / "trainer_state.json").is_file()]
    return max(found)[1] if found else None


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "config.yaml").is_file()


def new_run_dir(runs_dir: Path, config: FineTuningConfig) -> Path:
    """A fresh folder named after the time and model, never an existing run's."""
    model = re.sub(r"[^A-Za-z0-9.]+", "-", Path(config.model_name).name).strip("-")[:40]
    base = Path(runs_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def prepare_run_dir(run_dir: Path, config: FineTuningConfig, *, resume=False,
                    overwrite=False) -> Path:
    """Make run_dir ready for this config. An existing run is never reused silently."""
    run_dir = Path(run_dir)
    if is_run_dir(run_dir) and not resume and _nothing_to_lose(run_dir):
        overwrite = True    # a run that failed before saving anything: fix and go again
    if is_run_dir(run_dir) and not resume:
        if not overwrite:
            raise RunError(f"{run_dir} already holds a run: choose another output folder, "
                           "resume it (--resume), or replace it (--overwrite)")
        if read_status(run_dir).get("state") in ACTIVE:
            raise RunError(f"{run_dir} is still training: stop it before replacing it")
        shutil.rmtree(run_dir)
    if resume:
        if not is_run_dir(run_dir):
            raise RunError(f"nothing to resume in {run_dir}: it holds no run")
        if read_status(run_dir).get("state") in ACTIVE:
            raise RunError(f"{run_dir} is still training")
        if last_checkpoint(run_dir) is None:
            raise RunError(f"{run_dir} has no checkpoint to resume from yet "
                           f"(one is written every save_steps={config.save_steps} steps)")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} exists and is not empty: choose a new output folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    config.replace(output_dir=str(run_dir)).save(run_dir / "config.yaml")
    (run_dir / "STOP").unlink(missing_ok=True)
    write_status(run_dir, state="starting", reason="", pid=os.getpid(),
                 pid_started=_started_at(os.getpid()), started=time.time(),
                 ended=None, resumed=bool(resume),
                 earlier_seconds=_seconds_trained(run_dir) if resume else 0.0)
    return run_dir


def _seconds_trained(run_dir: Path) -> float:
    """How long the run has trained over all its legs so far (a resumed run's clock goes on
    from there, not from 0). A killed leg ended when it last wrote its status."""
    status = read_status_raw(run_dir)
    if not status.get("started"):
        return 0.0
    ended = status.get("ended") or status_path(run_dir).stat().st_mtime
    return float(status.get("earlier_seconds") or 0) + max(0.0, ended - status["started"])


def _nothing_to_lose(run_dir: Path) -> bool:
    return (read_status(run_dir).get("state") == "failed" and last_checkpoint(run_dir) is None
            and not (Path(run_dir) / "adapter").exists())


# ---------------------------------------------------------------------------- one job, to the end
def execute(run_dir: Path, should_stop: Callable[[], bool] = lambda: False,
            resume: bool = False, listeners=(), data=None) -> dict:
    """Train the run described by run_dir/config.yaml in this process; record everything.

    `data` is the prepared dataset when the caller already has it (the service's preflight
    prepared it in this process); otherwise it is prepared here. Never raises for a training
    failure: the failure is the run's outcome, written to status.json and metrics.jsonl with a
    reason a person can act on. Returns the final status.
    """
    from backends import choose_backend, get_backend
    from studio import compiled_layers, distributed
    from studio.hardware import detect_hardware

    run_dir = Path(run_dir)
    distributed.bind_device()
    if not distributed.is_main():      # another rank of a multi-GPU run: rank 0 records it
        return _execute_as_rank(run_dir, should_stop, resume, data)
    if patched_by_unsloth():
        return _execute_in_fresh_process(run_dir, should_stop, resume, listeners)
    log = EventLog(run_dir / "metrics.jsonl")
    log.subscribe(lambda e: e.kind == "plan" and write_plan(run_dir, **e.data))
    log.subscribe(lambda e: e.kind == "sample" and _append(run_dir / "samples.jsonl", e))
    for listener in listeners:
        log.subscribe(listener)
    stop_file = run_dir / "STOP"
    stopped = distributed.agreed(lambda: should_stop() or stop_file.exists())
    held = open(run_dir / JOB_FILE, "a")        # is_job_process: this process trains the run
    if distributed.in_worker():       # the supervisor's pid stays the job's (it ends every rank)
        write_status(run_dir, state="running")
    else:
        write_status(run_dir, state="running", pid=os.getpid(),
                     pid_started=_started_at(os.getpid()))
    step, trackers = 0, []
    try:
        config = FineTuningConfig.load(run_dir / "config.yaml")
        hw = detect_hardware()
        problems = config.validate(hw)
        if problems:
            raise ConfigError("; ".join(problems))
        asked = config.distributed
        config = config.resolve(hw)
        if config.world_size > 1:
            spread = distributed.describe(config, asked)
            log.emit("status", 0, message="processes: " + spread)
            log.emit("plan", 0, processes=config.world_size, distributed=spread)
        for tracker in _trackers(config, run_dir, log):
            log.subscribe(tracker)
            trackers.append(tracker)
        name, why = choose_backend(config.backend, hw, config.world_size,
                                   needs=config.transformers_only())
        data = prepare_data(config, log.emit, data)
        if compiled_layers.compile_pays(config, hw, data.report.lengths):   # small, short steps
            config = config.replace(compile_layers=True)
            name, why = "transformers", compiled_layers.AUTO_REASON
        write_status(run_dir, backend=name)
        log.emit("status", 0, message=f"backend: {why}", backend=name, hardware=hw.summary())
        log.emit("plan", 0, **resolved_plan(config, name))
        resume_from = last_checkpoint(run_dir) if resume else None
        if resume_from:
            log.emit("status", 0, message=f"resuming from {resume_from.name}")

        def emit(kind, step_=0, **kw):
            nonlocal step
            step = max(step, step_)
            log.emit(kind, step_, **kw)

        adapter = get_backend(name).train(config, data, run_dir, emit, stopped, resume_from)
        if stopped():
            state, reason = "stopped", f"stopped at step {step} as asked; the adapter saved " \
                                       "there is usable and Resume continues"
        else:
            state, reason = "finished", f"trained {step} steps"
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
        from studio.hardware import release_memory

        release_memory()      # the model and trainer go now, not at some later collection
    return write_status(run_dir, state=state, reason=reason, ended=time.time(), step=step)


FRESH_PROCESS = ("training in a fresh process: Unsloth, loaded into this one by an earlier run or "
                 "chat, rewrote trl's SFTTrainer and transformers' layers for its own models, "
                 "and a second run here would train on them")


def patched_by_unsloth() -> bool:
    """Whether Unsloth was imported into this process: its import replaces trl's trainers and,
    once it loads a model, transformers' layer code, for good (a transformers-backend run after
    an Unsloth run failed at once: 'Qwen3ForCausalLM' object has no attribute
    'get_base_model')."""
    return "unsloth" in sys.modules


def _execute_in_fresh_process(run_dir: Path, should_stop, resume: bool, listeners) -> dict:
    """execute() in a child process (`run-job`), its events handed to `listeners` as they come
    and a stop asked here passed on through the STOP file; returns its final status."""
    metrics = run_dir / "metrics.jsonl"
    cursor = metrics.stat().st_size if metrics.exists() else 0    # a resumed run's are old
    EventLog(metrics).emit("status", 0, message=FRESH_PROCESS)
    job = Job(run_dir, process=spawn(run_dir, resume))
    record_pid(run_dir, job.process.pid)
    ended = False
    while not ended:
        ended = job.process.poll() is not None
        if should_stop():
            (run_dir / "STOP").touch()
        events, cursor = job.events_since(cursor)
        for event in events:
            for listener in listeners:
                listener(event)
        time.sleep(0 if ended else 0.5)
    return read_status(run_dir)


def _execute_as_rank(run_dir: Path, should_stop, resume: bool, data) -> dict:
    """A rank above 0 trains the same config on its share of the data and writes nothing: its
    events go nowhere, and a failure is raised for torchrun to report (the supervisor writes it
    as the run's reason)."""
    from backends import choose_backend, get_backend
    from studio import distributed
    from studio.hardware import detect_hardware

    hw = detect_hardware()
    config = FineTuningConfig.load(run_dir / "config.yaml").resolve(hw)
    name, _ = choose_backend(config.backend, hw, config.world_size)
    emit = EventLog().emit
    stopped = distributed.agreed(lambda: should_stop() or (run_dir / "STOP").exists())
    get_backend(name).train(config, prepare_data(config, emit, data), run_dir, emit, stopped,
                            last_checkpoint(run_dir) if resume else None)
    stopped()          # rank 0 asks once more after training (stopped or finished): answer it
    return {"state": "finished"}


def _trackers(config: FineTuningConfig, run_dir: Path, log: EventLog) -> list:
    """The trackers the config asks for (studio.tracking); one that cannot start is said in the
    log and left out, never the end of the run."""
    from studio.tracking import TRACKERS, chosen

    out = []
    for name in chosen(config):
        try:
            out.append(TRACKERS[name](config, run_dir))
            log.emit("status", 0, message=f"reporting to {name}")
        except Exception as e:   # noqa: BLE001
            log.emit("log", 0, message=f"{name} could not start, so this run does not report "
                                       f"to it: {type(e).__name__}: {str(e)[:300]}")
    return out


def resolved_plan(config: FineTuningConfig, backend: str) -> dict:
    """The plan's first fields, from the config as resolved on this hardware: where it trains,
    in which precision, quantised or not. The backend adds its batch layout and attention."""
    dtype = "bfloat16" if config.bf16 else "float16" if config.fp16 else "float32"
    quantization = "4-bit NF4 (QLoRA)" if config.load_in_4bit else \
        "8-bit" if config.load_in_8bit else "none"
    return {"backend": backend, "device": "CPU" if config.cpu_only else "GPU", "dtype": dtype,
            "quantization": quantization, "lora_dropout": config.lora_dropout}


def prepare_data(config: FineTuningConfig, emit, data=None):
    """Tokenize and mask the run's dataset with the base model's tokenizer, unless that was done
    already (`data`), pick the prompts to answer at each evaluation, and say what it holds."""
    from transformers import AutoTokenizer

    from studio.data import prepare
    from studio.models import local_model_path

    if not config.data_path:
        raise RunError("no dataset: give data_path (a file, a saved dataset folder or a Hub id)")
    tokenizer = AutoTokenizer.from_pretrained(local_model_path(config.model_name))
    if data is None:
        emit("status", 0, message=f"preparing {config.data_path}")
        data = prepare(config.data_path, tokenizer, config)
    data = dataclasses.replace(data, samples=sample_prompts(config, data, tokenizer))
    emit("status", 0, message="data: " + data.report.summary().replace("\n", "; "),
         n_train=data.report.n_train, n_eval=data.report.n_eval, format=data.format.name)
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
    out = []
    for row in data.eval.select(range(min(config.num_samples, len(data.eval)))):
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
    from studio.memory import out_of_memory_advice

    text = str(e) or type(e).__name__
    if isinstance(e, KeyboardInterrupt):
        return "interrupted from the keyboard; Resume continues from the last checkpoint"
    if "out of memory" in text.lower() or type(e).__name__ == "OutOfMemoryError":
        try:
            config = FineTuningConfig.load(Path(run_dir) / "config.yaml")
        except Exception:   # noqa: BLE001
            return "out of memory: lower batch_size or max_seq_length, or turn on load_in_4bit"
        return out_of_memory_advice(config)
    if isinstance(e, (ConfigError, RunError)) or type(e).__name__ in ("DataError", "BackendError",
                                                                        "ModelError"):
        return text
    if isinstance(e, OSError) and ("does not appear to have" in text or "not a local folder"
                                   in text or "offline" in text.lower() or "hub" in text.lower()):
        return f"the model could not be loaded: {text.splitlines()[0]}"
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


# ---------------------------------------------------------------------------- jobs
@dataclass
class Job:
    """A run being trained in a thread of this process or in a child process, or watched.

    Events are read from the run's metrics.jsonl by byte offset, so a watcher that attaches
    late (a reloaded page) still gets the whole history, and polling costs only the new lines.
    Jobs are started by studio.service, which checks first whether they may start.
    """
    run_dir: Path
    thread: Optional[threading.Thread] = None
    process: Optional[subprocess.Popen] = None

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        self._stop = threading.Event()

    # ---- starting
    @classmethod
    def start(cls, run_dir: Path, *, resume=False, in_process=True, listeners=(),
              data=None) -> "Job":
        """Train the prepared run folder in the background (see prepare_run_dir)."""
        from studio.torchrun import spread

        job = cls(Path(run_dir))
        if in_process and spread(job.run_dir):
            in_process = False        # torchrun's workers are processes: follow their events
            threading.Thread(target=job._follow, args=(listeners,), daemon=True,
                             name=f"follow-{job.run_dir.name}").start()
        if in_process:
            # held from now, not from when the thread gets to it: another process that reads
            # the status meanwhile sees this process as the job
            held = open(job.run_dir / JOB_FILE, "a")

            def train():
                try:
                    execute(job.run_dir, job._stop.is_set, resume, listeners, data)
                finally:
                    held.close()
            job.thread = threading.Thread(target=train, name=f"train-{job.run_dir.name}",
                                          daemon=True)
            job.thread.start()
        else:
            job.process = spawn(job.run_dir, resume)
            record_pid(job.run_dir, job.process.pid)
            # reaped as soon as it ends, so a finished job never lingers as a zombie process
            threading.Thread(target=job.process.wait, daemon=True,
                             name=f"reap-{job.run_dir.name}").start()
        return job

    # ---- watching
    def _follow(self, listeners) -> None:
        """Hand a job's events to `listeners` as its metrics file grows, until it ends (a run
        trained in other processes, watched by an in-process caller such as the CLI)."""
        cursor, ended = 0, False
        while not ended:
            time.sleep(0.5)
            ended = self.process is not None and self.process.poll() is not None
            events, cursor = self.events_since(cursor)
            for event in events:
                for listener in listeners:
                    listener(event)

    @property
    def status(self) -> dict:
        if self.thread is not None and self.thread.is_alive():
            return {**read_status_raw(self.run_dir), "state": "running"}
        if self.process is not None:
            self.process.poll()   # reap, so a finished child is not left a zombie
        return read_status(self.run_dir)

    @property
    def running(self) -> bool:
        return self.status.get("state") in ACTIVE

    def events_since(self, cursor: int = 0) -> tuple[list[Event], int]:
        """Events written after byte offset `cursor`, and the next cursor."""
        return read_events(self.run_dir / "metrics.jsonl", cursor)

    @property
    def events(self) -> list[Event]:
        return read_events(self.run_dir / "metrics.jsonl")[0]

    # ---- stopping
    def stop(self, timeout: float = 60) -> None:
        """Ask the job to stop at its next step (it saves a usable adapter). A process that does
        not stop in time is killed, which frees all of its memory; a thread of this process
        cannot be killed, so it is only asked."""
        self._stop.set()
        (self.run_dir / "STOP").touch()
        if self.thread is not None:
            return
        if self.process is not None:
            pid = self.process.pid
        else:   # a job started elsewhere: only ever a process that is that job (is_job_process)
            status = read_status_raw(self.run_dir)
            pid = status.get("pid") if may_signal(self.run_dir, status) else None
        if not pid or pid == os.getpid():
            return
        deadline = time.time() + timeout
        while time.time() < deadline and self._process_alive(pid):
            time.sleep(0.2)
        if self._process_alive(pid):
            _kill_group(int(pid))
            if self.process is not None:
                self.process.wait(10)
            write_status(self.run_dir, state="stopped", ended=time.time(),
                         reason=f"killed after not stopping within {timeout:.0f} s; its memory "
                                "is freed")

    def _process_alive(self, pid) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return is_job_process(self.run_dir, read_status_raw(self.run_dir))

    def wait(self, timeout: float | None = None) -> dict:
        if self.thread is not None:
            self.thread.join(timeout)
        elif self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.status


def spawn(run_dir: Path, resume: bool) -> subprocess.Popen:
    """Start `python -m studio run-job RUN_DIR` in its own process group, output to log.txt."""
    run_dir = Path(run_dir).resolve()
    log = open(run_dir / "log.txt", "ab")
    cmd = [sys.executable, "-m", "studio", "run-job", str(run_dir)] + (["--resume"] if resume else [])
    # The child starts where we are (relative data paths keep their meaning) and imports this
    # very copy of the project, installed or not.
    here = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    finally:
        log.close()   # the child holds its own copy


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def list_runs(runs_dir: Path) -> list[dict]:
    """Every run under runs_dir, newest first, with its status and config."""
    out = []
    for d in sorted(Path(runs_dir).glob("*/"), key=lambda p: p.stat().st_mtime, reverse=True):
        if is_run_dir(d):
            out.append({"run_dir": str(d), "name": d.name, **read_status(d)})
    return out


def active_run(runs_dir: Path) -> Optional[Path]:
    """The run under runs_dir that is training now, if any (one job at a time)."""
    for run in list_runs(runs_dir):
        if run.get("state") in ACTIVE:
            return Path(run["run_dir"])
    return None
