"""Run folders: the one place that knows their files, and the run's status.

A run folder is the whole truth about a run, so a reloaded page, a second tab, a restarted
server or the CLI can all read it:

    config.yaml     the FineTuningConfig, as asked for
    plan.yaml       what actually ran: backend, device, dtype, batch layout, checkpointing,
                    attention (from the run's "plan" events)
    status.json     state (running, finished, stopped, failed, interrupted), why, pid, times
    metrics.jsonl   every event, one JSON object a line (studio.runs.events)
    log.txt         the job's own output when it runs as a separate process
    checkpoints/    trainer checkpoints (save_steps, save_total_limit), for resuming
    adapter/        the final LoRA adapter with the tokenizer and chat template used
    samples.jsonl   the sample prompts' answers at each evaluation
    eval/, exports/ evaluation reports and exported models
    STOP            present when a stop was asked for; checked at every step

Nothing else spells these names (RunFiles), and each file reads as a typed object: Status,
the config, the plan, the events. A job training the run is this process, `run-job` of the
folder, or a process holding its job file; anything else a status.json names is not
(is_job_process).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Optional

import yaml

from studio.config import FineTuningConfig
from studio.runs.events import Event, read_events
from studio.texts.message import Text

ACTIVE = ("starting", "running")
RESUMABLE = ("interrupted", "stopped", "failed")


class RunError(RuntimeError):
    """A run that cannot start or go on; the message names the fix."""


# ---------------------------------------------------------------------------- folder layout
@dataclass(frozen=True)
class RunFiles:
    """Where a run folder keeps each thing: the one place these names are spelled."""
    folder: Path

    config = property(lambda self: self.folder / "config.yaml")
    plan = property(lambda self: self.folder / "plan.yaml")
    status = property(lambda self: self.folder / "status.json")
    metrics = property(lambda self: self.folder / "metrics.jsonl")
    log = property(lambda self: self.folder / "log.txt")
    samples = property(lambda self: self.folder / "samples.jsonl")
    stop = property(lambda self: self.folder / "STOP")
    job = property(lambda self: self.folder / ".job")   # held open while a process trains it
    checkpoints = property(lambda self: self.folder / "checkpoints")
    adapter = property(lambda self: self.folder / "adapter")
    evals = property(lambda self: self.folder / "eval")
    exports = property(lambda self: self.folder / "exports")


def files(run_dir: str | Path) -> RunFiles:
    return RunFiles(Path(run_dir))


# ---------------------------------------------------------------------------- status
@dataclass(frozen=True)
class Status:
    """status.json, typed: the run's state and why, the job's process, its clock and step."""
    state: str = "new"
    reason: str = ""
    pid: Optional[int] = None
    pid_started: Optional[float] = None     # the process's start time, told from a reused id
    started: Optional[float] = None         # this leg's start
    ended: Optional[float] = None
    step: int = 0
    resumed: bool = False
    earlier_seconds: float = 0.0            # the legs before a resume
    estimate_gb: Optional[float] = None     # the plan's memory estimate
    backend: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def elapsed(self, until: Optional[float] = None) -> Optional[float]:
        """Seconds trained over every leg, to `ended`, else to `until` (now where None)."""
        if not self.started:
            return None
        end = self.ended or (time.time() if until is None else until)
        return float(self.earlier_seconds or 0) + max(0.0, end - self.started)

    def to_dict(self) -> dict:
        return asdict(self)


_STATUS_KEYS = {f.name for f in fields(Status)}


def read_status(run_dir: Path) -> Status:
    """The run's status; a job recorded as running whose process is gone (or is not this
    studio's job for this run) reads as 'interrupted'; a status.json that is not a status reads
    as 'unreadable', with the reason. Reading never writes: every page tick reads this."""
    try:
        text = files(run_dir).status.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Status()
    except (OSError, UnicodeDecodeError) as e:
        return Status("unreadable", Text("run.status_unreadable", error=str(e)))
    status, problem = parse_status(text)
    if problem:
        return Status("unreadable", Text("run.status_bad", problem=problem))
    if status.active and not is_job_process(run_dir, status):
        status = replace(status, state="interrupted",
                         reason=Text("run.ended_unfinished"))
    return status


# What each field of status.json holds; a file that breaks this is not trusted at all.
_NUMBER = (int, float)
STATUS_FIELDS = {"state": (str,), "reason": (str,), "pid": (int,), "pid_started": _NUMBER,
                 "started": _NUMBER, "ended": _NUMBER, "step": (int,), "resumed": (bool,),
                 "earlier_seconds": _NUMBER, "estimate_gb": _NUMBER, "backend": (str,)}
STATES = ACTIVE + ("finished", "stopped", "failed", "interrupted")


def parse_status(text: str) -> tuple[Status, Optional[str]]:
    """(status, None) for a valid status.json text, else (Status(), what is wrong with it)."""
    try:
        status = json.loads(text)
    except (ValueError, RecursionError):
        return Status(), "is not JSON"
    if not isinstance(status, dict):
        return Status(), f"holds a JSON {type(status).__name__}, not an object"
    for key, types in STATUS_FIELDS.items():
        value = status.get(key)
        if value is not None and (not isinstance(value, types)
                                  or (bool not in types and isinstance(value, bool))):
            return Status(), f"field {key} is {type(value).__name__} {_plain(value)!r}, not " \
                             f"{' or '.join(t.__name__ for t in types)}"
    if status.get("state") not in STATES:
        return Status(), f"state {_plain(status.get('state'))!r} is not a run state"
    return Status(**{k: v for k, v in status.items() if k in _STATUS_KEYS and v is not None}), \
        None


def _plain(value) -> str:
    """A value from the file, quoted for a reason: letters, digits and a few marks only (the
    reason is shown on the page; what the file holds is not markup)."""
    return re.sub(r"[^\w .:-]", "?", str(value))[:40]


def write_status(run_dir: Path, **changes) -> Status:
    """Change these fields of status.json (atomically: a reader never sees half a file)."""
    path = files(run_dir).status
    status = replace(written_status(run_dir), **changes)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status.to_dict(), indent=1, default=str))
    tmp.replace(path)
    return status


def written_status(run_dir: Path) -> Status:
    """status.json as written (no process check), Status() where there is none yet or it is
    not a valid status."""
    try:
        text = files(run_dir).status.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return Status()
    return parse_status(text)[0]


def record_pid(run_dir: Path, pid: int) -> Status:
    """Write the job's process id with its start time, so that a reader can tell this process
    from any other that gets the same id later (or that a hand-edited file names)."""
    return write_status(run_dir, pid=int(pid), pid_started=started_at(pid))


def is_job_process(run_dir: Path, status: Status) -> bool:
    """Whether status.json's pid is this studio's job for run_dir, alive: the very process that
    was recorded (its start time is the one written with the pid), and either this process,
    `run-job` of this run folder (the page's job, before it opens its job file) or a process
    that holds the run's job file open (the CLI, or run_fine_tuning in a user's script, training
    in a thread). Only then is the run training. Any other studio process is not, whatever a
    status.json says (a forged one could make Stop kill another studio server)."""
    pid = status.pid
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not _alive(pid):
        return False
    recorded, started = status.pid_started, started_at(pid)
    if recorded is None or started is None or abs(float(recorded) - started) > 1.0:
        return False
    return pid == os.getpid() or _runs_job_of(pid, run_dir) or _holds(pid, files(run_dir).job)


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


def may_signal(run_dir: Path, status: Status) -> bool:
    """Whether Stop may signal or kill status.json's pid: the recorded job process, and a
    studio command (`-m studio`, `qwen3-studio`, launch.py), never this process. A job in a
    thread of another program is only asked to stop (the STOP file)."""
    return is_job_process(run_dir, status) and status.pid != os.getpid() and \
        _studio_command(status.pid)


def started_at(pid: int) -> Optional[float]:
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


# ---------------------------------------------------------------------------- the other files
def write_plan(run_dir: Path, **fields) -> dict:
    """Add to plan.yaml what the backend decided to run (beside config.yaml, as asked for); a
    catalog message is written as its English (yaml writes no str subclass)."""
    plan = {**read_plan(run_dir), **{k: str(v) if isinstance(v, str) else v
                                     for k, v in fields.items()}}
    files(run_dir).plan.write_text(yaml.safe_dump(plan, sort_keys=False, allow_unicode=True),
                                   encoding="utf-8")
    return plan


def read_plan(run_dir: Path) -> dict:
    """plan.yaml, {} before the backend has planned (or for runs older than plans)."""
    try:
        plan = yaml.safe_load(files(run_dir).plan.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError):
        return {}
    return plan if isinstance(plan, dict) else {}


def read_config(run_dir: Path) -> FineTuningConfig:
    """The run's config.yaml, as asked for (ConfigError where it is not a config)."""
    return FineTuningConfig.load(files(run_dir).config)


def run_events(run_dir: Path, offset: int = 0, *, tail: Optional[int] = None
               ) -> tuple[list[Event], int]:
    """The run's events from byte `offset` (or the last `tail` bytes), and where to read from
    next time (studio.runs.events.read_events)."""
    return read_events(files(run_dir).metrics, offset, tail=tail)


def ask_to_stop(run_dir: Path) -> None:
    """The STOP file: the job stops at its next step, whichever process trains it."""
    files(run_dir).stop.touch()


def stop_asked(run_dir: Path) -> bool:
    return files(run_dir).stop.exists()


def log_size(run_dir: Path) -> int:
    try:
        return files(run_dir).log.stat().st_size
    except OSError:
        return 0


def read_log(run_dir: Path, tail: int) -> str:
    """The job's own output, its whole lines within the last `tail` bytes; "" where it wrote
    none."""
    try:
        with open(files(run_dir).log, "rb") as f:
            start = max(0, f.seek(0, 2) - tail)
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return text.split("\n", 1)[-1] if start else text


def last_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest complete checkpoint. Both backends write trainer_state.json last, so a job
    killed while saving leaves a folder without it, which cannot be resumed from."""
    checkpoints = files(run_dir).checkpoints
    found = [(int(m.group(1)), p) for p in checkpoints.glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))
             and (p / "trainer_state.json").is_file()]
    return max(found)[1] if found else None


def is_run_dir(path: Path) -> bool:
    return files(path).config.is_file()


def resumable(run_dir: Path, status: Optional[Status] = None) -> bool:
    """Whether Resume can go on with the run: it ended short and left a checkpoint."""
    status = status or read_status(run_dir)
    return status.state in RESUMABLE and last_checkpoint(run_dir) is not None


def has_adapter(run_dir: Path) -> bool:
    """Whether the run saved an adapter to chat with or export (a stopped run has one too)."""
    return files(run_dir).adapter.is_dir()


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
        if read_status(run_dir).active:
            raise RunError(f"{run_dir} is still training: stop it before replacing it")
        shutil.rmtree(run_dir)
    if resume:
        if not is_run_dir(run_dir):
            raise RunError(f"nothing to resume in {run_dir}: it holds no run")
        if read_status(run_dir).active:
            raise RunError(f"{run_dir} is still training")
        if last_checkpoint(run_dir) is None:
            raise RunError(f"{run_dir} has no checkpoint to resume from yet "
                           f"(one is written every save_steps={config.save_steps} steps)")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} exists and is not empty: choose a new output folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    config.replace(output_dir=str(run_dir)).save(files(run_dir).config)
    files(run_dir).stop.unlink(missing_ok=True)
    write_status(run_dir, state="starting", reason="", pid=os.getpid(),
                 pid_started=started_at(os.getpid()), started=time.time(),
                 ended=None, resumed=bool(resume),
                 earlier_seconds=_seconds_trained(run_dir) if resume else 0.0)
    return run_dir


def _seconds_trained(run_dir: Path) -> float:
    """How long the run has trained over all its legs so far (a resumed run's clock goes on
    from there, not from 0). A killed leg ended when it last wrote its status."""
    status = written_status(run_dir)
    if not status.started:
        return 0.0
    return status.elapsed(until=files(run_dir).status.stat().st_mtime)


def _nothing_to_lose(run_dir: Path) -> bool:
    return read_status(run_dir).state == "failed" and last_checkpoint(run_dir) is None \
        and not has_adapter(run_dir)


@dataclass(frozen=True)
class RunEntry:
    """A run of a runs folder, as a list shows it: its folder and status."""
    run_dir: Path
    status: Status

    @property
    def name(self) -> str:
        return self.run_dir.name

    def to_dict(self) -> dict:
        """For JSON answers (the page's list_runs)."""
        return {"run_dir": str(self.run_dir), "name": self.name, **self.status.to_dict()}


def list_runs(runs_dir: Path) -> list[RunEntry]:
    """Every run under runs_dir, newest first, with its status."""
    return [RunEntry(d, read_status(d)) for d in
            sorted(Path(runs_dir).glob("*/"), key=lambda p: p.stat().st_mtime, reverse=True)
            if is_run_dir(d)]


def active_run(runs_dir: Path) -> Optional[Path]:
    """The run under runs_dir that is training now, if any (one job at a time)."""
    return next((run.run_dir for run in list_runs(runs_dir) if run.status.active), None)
