"""The studio's one set of actions on runs: check, start, resume, stop, list, attach, evaluate,
rename and delete.

The page, the command line (`python -m studio train`) and the Python API (`run_fine_tuning`)
all go through a `Service` for its runs folder, so a run that one of them refuses, all refuse,
with the same words. Preflight collects every problem that would stop a run, each naming its
fix: a job already training in this runs folder, the config, the backend, the model, the data,
nothing to train, and the memory estimate against what is free now. One start at a time per
runs folder, across processes (a lock on the folder), so two starts never both pass the check.

Heavy libraries (torch, transformers, datasets) are imported inside the methods that need
them, so a server that holds a Service starts in seconds.
"""
from __future__ import annotations

import dataclasses
import fcntl
import gc
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from studio.service.access import ReplyBounds
from studio.data.analysis import MAX_UPLOAD_BYTES, Analyses
from studio.config import FineTuningConfig
from studio.errors import Note
from studio.models.local import model_problem
from studio.plan.presets import fill_unset
from studio.runs.store import (RunEntry, RunError, active_run, files, has_adapter, is_run_dir,
                               last_checkpoint, list_runs, new_run_dir, prepare_run_dir,
                               read_config, read_status, run_events, write_status)
from studio.runs.jobs import Job
from studio.service.errors import Refused
from studio.service.paths import Paths
from studio.texts.message import Text, message_of

GiB = 2**30


@dataclass(frozen=True)
class Speed:
    """How fast a run trained: from its train events after the first (which warms up)."""
    seconds_per_step: float
    tokens_per_s: float

    @classmethod
    def of(cls, events) -> Optional["Speed"]:
        train = [e for e in events if e.kind == "train"
                 and isinstance(e.data.get("tokens"), (int, float))]
        if len(train) < 3:
            return None
        first, last = train[1], train[-1]
        seconds, steps = last.time - first.time, last.step - first.step
        tokens = last.data["tokens"] - first.data["tokens"]
        if seconds <= 0 or steps <= 0 or tokens <= 0:
            return None
        return cls(seconds / steps, tokens / seconds)


@dataclass(frozen=True)
class TimeEstimate:
    steps: int
    tokens: float
    seconds: float
    speed: Speed
    source: Text          # where the speed comes from, for people


def _speed_key(config: FineTuningConfig) -> tuple:
    """The settings a step's speed depends on."""
    return (config.model_name, config.backend, config.cpu_only, config.bf16, config.fp16,
            config.load_in_4bit, config.load_in_8bit, config.batch_size,
            config.gradient_accumulation_steps, config.max_seq_length, config.lora_r,
            tuple(config.target_modules), config.packing, config.gradient_checkpointing)


class Service:
    """Runs under one runs folder, the caches that checking and chatting need, and the jobs
    started from this process. Every path given to it goes through `paths` first (the page's
    service: Service.served), and so does every dataset and model its analyses read."""

    def __init__(self, runs_dir: str | Path, max_upload_bytes: int = MAX_UPLOAD_BYTES,
                 paths: Optional[Paths] = None):
        self.runs_dir = Path(runs_dir).expanduser().resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.paths = paths or Paths()
        self.data = Analyses(self.runs_dir / "uploads", max_upload_bytes, self.paths)
        try:      # uploads a day old that no run uses are not kept forever
            self.data.clean_uploads(self.runs_dir)
        except OSError:
            pass
        self._jobs: dict[str, Job] = {}
        self._lock = threading.RLock()          # the dicts (held briefly)
        self._models: OrderedDict = OrderedDict()
        self._loading: dict[tuple, threading.Lock] = {}   # one load at a time per model
        # measured, and when, by the settings that matter
        self._speeds: dict[tuple, tuple[Speed, float]] = {}
        self.bounds = ReplyBounds()      # what one chat request may ask (server flags)

    # ------------------------------------------------------------------ hardware and memory
    @classmethod
    def served(cls, runs_dir: str | Path, allow=(), **kwargs) -> "Service":
        """The page's service: it takes only paths inside its runs folder, the example data,
        the model caches and the operator's `allow` folders (Paths.served)."""
        return cls(runs_dir, paths=Paths.served(Path(runs_dir).expanduser().resolve(), allow),
                   **kwargs)

    def hardware(self):
        from studio.plan.hardware import detect_hardware

        return detect_hardware()

    def plan(self, config: FineTuningConfig, hw=None, fallback: bool = True):
        """The run's plan here and now (studio.plan.plan.make_plan: backend, batches, loss,
        memory estimate against what is free now) for the config as it would run (its unset
        settings from the Auto preset) and the rows as last analysed (none yet: the batches as
        asked). Where the backend asked for cannot run here, the plan of the
        transformers backend instead (the preflight says why), unless `fallback` is off: then
        BackendError."""
        from backends import BackendError
        from studio.plan.plan import make_plan

        config = self.paths.config(config)
        hw = hw or self.hardware()
        config, _ = self.with_auto_preset(config)
        analysis = self.data.cached(config)
        lengths = rows = None
        if analysis and analysis.report:        # truncated as training truncates them
            lengths = [min(n, config.max_seq_length) for n in analysis.report.lengths]
            rows = analysis.report.n_train * analysis.scale     # sampled: the whole file's
        try:
            return make_plan(config, hw, lengths, train_rows=rows)
        except BackendError:
            if not fallback:
                raise
            return make_plan(config.replace(backend="transformers"), hw, lengths, train_rows=rows)

    def backend(self, config: FineTuningConfig) -> str:
        """The backend a run of this config would train on here (its plan's). Raises
        BackendError where the backend asked for cannot run."""
        return self.plan(config, fallback=False).backend

    # ------------------------------------------------------------------ preflight
    def check(self, config: FineTuningConfig, allow_over_memory: bool = False) -> list[str]:
        """Everything that would stop this run, each naming the fix; empty: it can start."""
        from backends import BackendError
        from studio.data import DataError
        from studio.plan.memory import fitting_advice
        from studio.plan.plan import backend_for

        config = self.paths.config(config)
        running = self.active()
        if running:
            return [Text("refuse.one_job", training=self._training(running), run=running)]
        hw = self.hardware()
        problems = list(config.validate(hw))
        try:
            backend_for(config.resolve(hw), hw)
        except BackendError as e:
            problems.append(message_of(e))
        if (why := model_problem(config.model_name)):
            problems.append(why)
        if not config.data_path:
            problems.append(Text("refuse.no_data"))
        if problems:
            return problems
        try:
            analysis = self.data.analyse(config)
        except DataError as e:
            return [message_of(e)]
        if analysis.error:
            return [analysis.error]
        if analysis.report.n_train == 0:
            return [Text("refuse.no_trained_tokens")]
        plan = self.plan(config, hw)
        est = plan.estimate
        if est and est.total > plan.free_bytes and not allow_over_memory:
            problems.append(Text("refuse.memory", total=est.total / GiB,
                                 free=plan.free_bytes / GiB, where=plan.where,
                                 advice=fitting_advice(plan.config)))
        return problems

    # ------------------------------------------------------------------ starting and stopping
    def start(self, config: FineTuningConfig, run_dir: Optional[Path] = None, *,
              allow_over_memory: bool = False, overwrite: bool = False, in_process: bool = False,
              listeners=()) -> Job:
        """Check, then train in a new run folder (run_dir, else a fresh one under the runs
        folder): in a thread of this process, or a child process that outlives a page or a
        server. Refused says why not. Settings the config's maker left unset take the preset
        Auto picks for the data's size, as on the page (a Note says which)."""
        if run_dir is not None:
            self.paths.path(run_dir)
        config, preset = self.with_auto_preset(self.paths.config(config))
        with self._starting():
            problems = self.check(config, allow_over_memory)
            if problems:
                raise Refused(problems)
            if preset:
                warnings.warn(preset, Note, stacklevel=2)
            est = self.plan(config).estimate
            run_dir = Path(run_dir) if run_dir else new_run_dir(self.runs_dir, config)
            try:
                prepare_run_dir(run_dir, config, overwrite=overwrite)
            except RunError as e:
                raise Refused([message_of(e)]) from None
            write_status(run_dir, estimate_gb=round(est.total / GiB, 2) if est else None, step=0)
            analysis = self.data.cached(config)
            job = Job.start(run_dir, in_process=in_process, listeners=listeners,
                            data=analysis.prepared if analysis and in_process else None)
        with self._lock:
            self._jobs[str(run_dir)] = job
        return job

    def with_auto_preset(self, config: FineTuningConfig) -> tuple[FineTuningConfig,
                                                                   Optional[str]]:
        """The config with its unset settings from the Auto preset for the data's size, and
        the chat template's own system prompt dropped where the rows teach the assistant an
        identity of its own (data.identity); a note saying which and why (said once the run
        may start: the command line prints it, Python shows it as a warning), None where
        nothing was unset."""
        from studio.data import DataError
        from studio.data.identity import drop_template_system

        try:
            rows = len(self.data.dataset(config.data_path)) if config.data_path else None
        except (DataError, OSError):
            rows = None            # the preflight says what is wrong with the data
        config, note = fill_unset(config, rows)
        if rows is None or config.system_prompt or "template_system_prompt" in config.given:
            return config, note
        try:
            report = self.data.analyse(config).report
        except (DataError, OSError):
            return config, note
        why = report and drop_template_system(report)
        if not why:
            return config, note
        config = config.replace(template_system_prompt="drop")
        return config, why if note is None else Text("preset.auto.and", first=note, second=why)

    def resume(self, run_dir: str | Path, config: Optional[FineTuningConfig] = None, *,
               in_process: bool = False, listeners=()) -> Job:
        """Continue a stopped, failed or interrupted run from its last checkpoint, in its folder,
        with its saved config or a changed one (more max_steps, say)."""
        run_dir = Path(self.paths.path(run_dir))
        config = config and self.paths.config(config)
        with self._starting():
            running = self.active()
            if running:
                raise Refused([Text("refuse.one_job.resume", training=self._training(running))])
            if not is_run_dir(run_dir):
                raise Refused([Text("refuse.resume.no_run", run=run_dir)])
            if last_checkpoint(run_dir) is None:
                raise Refused([Text("refuse.resume.no_checkpoint", name=run_dir.name)])
            saved = read_config(run_dir)
            # a config given to resume changes what its maker set (more max_steps, say); the
            # rest stays as the run was saved, not the defaults
            config = saved.replace(**{k: getattr(config, k) for k in config.given}) \
                if config else saved
            if (problems := config.validate(self.hardware())):
                raise Refused(problems)
            try:
                prepare_run_dir(run_dir, config, resume=True)
            except RunError as e:
                raise Refused([message_of(e)]) from None
            job = Job.start(run_dir, resume=True, in_process=in_process, listeners=listeners)
        with self._lock:
            self._jobs[str(run_dir)] = job
        return job

    def stop(self, run_dir: str | Path, wait: bool = False) -> None:
        """Ask the run to stop: it saves an adapter at its next step. A job that does not stop
        within a minute is killed, which frees its memory. Returns at once unless `wait`."""
        job = self.attach(run_dir)
        if wait:
            job.stop(timeout=60)
            return
        threading.Thread(target=job.stop, kwargs={"timeout": 60}, daemon=True,
                         name=f"stop-{Path(run_dir).name}").start()

    @contextmanager
    def _starting(self):
        """One start at a time in this runs folder, whichever process asks (a lock on the
        folder itself, so no lock file is left behind)."""
        fd = os.open(self.runs_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)          # closing releases the lock

    # ------------------------------------------------------------------ time
    def measure_speed(self, config: FineTuningConfig, steps: int = 4) -> Speed:
        """Train a few steps of this config on this machine, as a run would (a child process,
        the same backend and batch plan), and time the steps after the first (which warms up).
        Refused like a start; one job at a time still holds while it measures."""
        config = self.paths.config(config)
        with self._starting():
            problems = self.check(config)
            if problems:
                raise Refused(problems)
            work = Path(tempfile.mkdtemp(prefix="qwen3-studio-measure-"))
            try:
                trial = config.replace(max_steps=steps, logging_steps=1, val_size=0,
                                       save_steps=10**6, use_wandb=False)
                prepare_run_dir(work / "run", trial)
                job = Job.start(work / "run", in_process=False)
                status = job.wait(900)
                if status.state != "finished":
                    job.stop(timeout=10)
                    raise Refused([Text("refuse.measure.unfinished", reason=status.reason)])
                speed = Speed.of(job.events)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        with self._lock:
            self._speeds[_speed_key(config)] = (speed, time.time())
        return speed

    def time_estimate(self, config: FineTuningConfig) -> Optional[TimeEstimate]:
        """How long this run would train: its plan's tokens at the newest speed known, the one
        measured for these settings (measure_speed) or the newest run of this model's, so a
        run that just ended on a busy machine corrects a measurement made before it; the
        source says which. None when neither or no data is known."""
        plan = self.plan(config)
        if not plan.steps:
            return None
        with self._lock:
            measured, measured_at = self._speeds.get(_speed_key(config), (None, 0.0))
        past, run = self._past_speed(config.model_name)
        if measured is not None and (past is None or measured_at >= (run.status.ended or 0)):
            speed, source = measured, Text("plan.speed.measured")
        elif past is not None:
            speed, source = past, Text("plan.speed.last_run", run=run.name)
        else:
            return None
        return TimeEstimate(plan.steps, plan.tokens, plan.seconds_at(speed.tokens_per_s), speed,
                            source)

    def _past_speed(self, model_name: str) -> tuple[Optional[Speed], Optional[RunEntry]]:
        """The speed of the newest run of this model that logged steps, and that run."""
        for run in self.runs():
            try:
                if read_config(run.run_dir).model_name != model_name:
                    continue
            except Exception:   # noqa: BLE001 - an unreadable old run is skipped
                continue
            speed = Speed.of(run_events(run.run_dir, tail=50_000)[0])
            if speed:
                return speed, run
        return None, None

    # ------------------------------------------------------------------ evaluating
    def evaluate(self, run_dir: str | Path, data: Optional[str] = None, **options):
        """The run's base and fine-tuned models side by side (studio.evaluate.evaluation), saved in the
        run's folder. Two models are loaded one after the other, so nothing may train in this
        runs folder meanwhile: refused like a second job."""
        from studio.evaluate.evaluation import EvalError, evaluate_run

        if options.get("judge") is not None:
            self.paths.judge(options["judge"].base_url)
        run_dir, data = self._own(run_dir), self.paths.source(data, "dataset")
        with self._starting():
            self._waits_for_training(Text("refuse.waits.evaluate"))
            try:
                return evaluate_run(run_dir, data=data, **options)
            except EvalError as e:
                raise Refused([message_of(e)]) from None

    def export_evalscope(self, run_dir: str | Path, data: Optional[str] = None) -> Path:
        """The run's held-out rows (or the file `data`'s) as an EvalScope general_qa file in
        the run's eval/ folder (studio.evaluate.evaluation.export_evalscope); returns its path."""
        from studio.evaluate.evaluation import EvalError, export_evalscope

        run_dir, data = self._own(run_dir), self.paths.source(data, "dataset")
        try:
            return export_evalscope(run_dir, files(run_dir).evals / "evalscope_general_qa.jsonl",
                                    data=data)
        except EvalError as e:
            raise Refused([message_of(e)]) from None

    def export(self, run_dir: str | Path, fmt: str, out: str | Path | None = None,
               quant: Optional[str] = None, progress=lambda done, what: None):
        """The run taken out as `fmt` (studio.export) into `out`, by default a new folder under
        the run's exports/. Merging loads the base model, so, like evaluation, it waits for a
        run training in this folder."""
        from studio.export import ExportError, export_run

        run_dir = self._own(run_dir) if out is None else Path(self.paths.path(run_dir))
        if out is not None:
            self.paths.path(out)
        out = Path(out) if out is not None else self._export_folder(run_dir, fmt, quant)
        with self._starting():
            self._waits_for_training(Text("refuse.waits.export"))
            try:
                return export_run(run_dir, fmt, out, quant, progress)
            except ExportError as e:
                raise Refused([message_of(e)]) from None

    def export_estimate(self, run_dir: str | Path, fmt: str, quant: Optional[str] = None):
        """(bytes or None, where it would go) for the page to show before an export starts."""
        from studio.export import ExportError, estimate

        run_dir = self._own(run_dir)
        try:
            return estimate(run_dir, fmt, quant), self._export_folder(run_dir, fmt, quant)
        except ExportError as e:
            raise Refused([message_of(e)]) from None

    @staticmethod
    def _export_folder(run_dir: Path, fmt: str, quant: Optional[str]) -> Path:
        from studio.export import DEFAULT_QUANT

        if fmt in ("gguf", "ollama"):
            fmt = f"{fmt}-{quant or DEFAULT_QUANT}"
        folder, n = files(run_dir).exports / fmt, 1
        while folder.exists():
            n += 1
            folder = files(run_dir).exports / f"{fmt}-{n}"
        return folder

    # ------------------------------------------------------------------ keeping runs
    def rename(self, run_dir: str | Path, new_name: str) -> Path:
        """Give a run a new folder name in this runs folder; never a run that is training."""
        run_dir = self._own(run_dir)
        new_name = new_name.strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}", new_name):
            raise Refused([Text("refuse.rename.bad_name", name=new_name)])
        target = self.runs_dir / new_name
        if target.exists():
            raise Refused([Text("refuse.rename.taken", name=new_name, runs=self.runs_dir)])
        with self._starting():
            self._not_training(run_dir, Text("refuse.busy.renamed"))
            run_dir.rename(target)
        read_config(target).replace(output_dir=str(target)).save(files(target).config)
        self._forget(run_dir)
        return target

    def delete(self, run_dir: str | Path) -> None:
        """Delete a run's folder for good; never a run that is training."""
        run_dir = self._own(run_dir)
        with self._starting():
            self._not_training(run_dir, Text("refuse.busy.deleted"))
            shutil.rmtree(run_dir)
        self._forget(run_dir)

    def _training(self, running: Path) -> Text:
        """The first sentence of every refusal while a run trains in this folder."""
        return Text("refuse.training", runs=self.runs_dir, name=running.name)

    def _waits_for_training(self, why: Text) -> None:
        """Refuse work that loads a model while a run trains in this folder (memory)."""
        running = self.active()
        if running:
            raise Refused([Text("refuse.one_job.waits", training=self._training(running),
                                why=why)])

    def _own(self, run_dir: str | Path) -> Path:
        """A run folder directly inside this runs folder: nothing else is renamed, deleted,
        evaluated or exported there."""
        path = Path(self.paths.path(run_dir)).expanduser()
        path = (path if path.is_absolute() else self.runs_dir / path).resolve()
        if path.parent != self.runs_dir or not is_run_dir(path):
            raise Refused([Text("refuse.not_own_run", run=run_dir, runs=self.runs_dir)])
        return path

    def _not_training(self, run_dir: Path, what: Text) -> None:
        if read_status(run_dir).active:
            raise Refused([Text("refuse.busy", name=run_dir.name, what=what)])

    def _forget(self, run_dir: Path) -> None:
        with self._lock:
            self._jobs.pop(str(run_dir), None)
            for key in [k for k in self._models if k[0] == str(run_dir)]:
                self._models.pop(key)

    # ------------------------------------------------------------------ watching
    def runs(self) -> list[RunEntry]:
        """Every run in the runs folder, newest first, with its status."""
        return list_runs(self.runs_dir)

    def active(self) -> Optional[Path]:
        """The run training now in this runs folder, if any."""
        return active_run(self.runs_dir)

    def attach(self, run_dir: str | Path) -> Job:
        """The Job this process started for run_dir, or a watcher of a run started elsewhere
        (another process, before a server restart)."""
        key = str(self.paths.path(run_dir))
        with self._lock:
            if key not in self._jobs:
                self._jobs[key] = Job(Path(run_dir))
            return self._jobs[key]

    def latest(self) -> Optional[Path]:
        """The run a page opens on: the live one, else the newest."""
        return self.active() or next((run.run_dir for run in self.runs()), None)

    def run_config(self, run_dir: str | Path) -> FineTuningConfig:
        """The run's config.yaml, as asked for."""
        if not is_run_dir(Path(self.paths.path(run_dir))):
            raise Refused([Text("refuse.no_config", run=run_dir)])
        return read_config(run_dir)

    def run_events(self, run_dir: str | Path, tail: Optional[int] = None) -> list:
        """The run's events (the last `tail` bytes of them)."""
        return run_events(self.paths.path(run_dir), tail=tail)[0]

    def latest_report(self, run_dir: str | Path):
        """The run's newest evaluation report (studio.evaluate.report.EvalReport), or None."""
        from studio.evaluate.report import latest_report

        return latest_report(self.paths.path(run_dir))

    # ------------------------------------------------------------------ chat
    def model(self, source: str, base_of_run: bool = False):
        """A LoadedModel for a run folder (base + adapter) or a model id/folder; with
        base_of_run, the run's base model alone, prompted with the run's template and thinking
        mode so the comparison is fair. The last two are kept loaded."""
        source = self.paths.source(source)
        key = (source, base_of_run)
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:   # ten first requests for one model: one loads, nine wait and share it
            with self._lock:
                if key in self._models:
                    self._models.move_to_end(key)
                    return self._models[key]
            return self._load(source, base_of_run, key)

    def loaded(self, source: str, base_of_run: bool = False) -> bool:
        """Whether model(source, base_of_run) answers from memory, without loading."""
        with self._lock:
            return (source, base_of_run) in self._models

    def _load(self, source: str, base_of_run: bool, key: tuple):
        from studio.inference import PromptFormat, load_model

        if base_of_run:
            run_config = read_config(source)
            loaded = load_model(run_config.model_name, config=run_config)
            loaded = dataclasses.replace(loaded, prompt_format=PromptFormat.of(run_config),
                                         source=f"{run_config.model_name} (base)")
        else:
            if (why := model_problem(source)) and not is_run_dir(Path(source)):
                raise Refused([why])
            loaded = load_model(source)
        with self._lock:
            self._models[key] = loaded
            while len(self._models) > 2:
                self._models.popitem(last=False)
        gc.collect()
        return loaded

    def chat_source(self, source: str) -> Optional[FineTuningConfig]:
        """The run's config where `source` is a run folder; None where it names a model (an id
        or a model folder), which the chat loads as it is."""
        source = self.paths.source(source)
        if source and is_run_dir(Path(source)):
            return read_config(source)
        return None

    def chat_runs(self) -> list[tuple[RunEntry, str]]:
        """Runs that can answer in a chat (an adapter or a checkpoint saved), with their base
        model."""
        out = []
        for run in self.runs():
            if has_adapter(run.run_dir) or last_checkpoint(run.run_dir):
                try:
                    base = read_config(run.run_dir).model_name
                except Exception:   # noqa: BLE001 - an unreadable config still lists the run
                    base = "?"
                out.append((run, base))
        return out

