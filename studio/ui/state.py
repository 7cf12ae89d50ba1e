"""What the studio's pages share on the server: the runs folder, caches, and the jobs it started.

One `Studio` per server. A browser tab keeps only small values in gr.State (the run it watches
and its byte cursor into metrics.jsonl); everything durable lives in the run folders, so a
reload, a second tab or a restarted server sees the same runs. Nothing here draws: the tabs call
these methods and show what they return or the message of what they raise.

Heavy libraries (torch, transformers, datasets) are imported inside the methods that need them,
so the server starts in seconds.
"""
from __future__ import annotations

import dataclasses
import gc
import os
import re
import shutil
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from studio.catalog import CATALOG, DEMO_MODEL_ID, hub_cache_has, is_local_model
from studio.config import GROUPS, FineTuningConfig
from studio.runs import (Job, active_run, is_run_dir, last_checkpoint, list_runs,
                         new_run_dir, read_status, write_status)

GiB = 2**30
# The settings the data preview depends on (the tokenizer, template, lengths and split).
DATA_FIELDS = [f.name for f in dataclasses.fields(FineTuningConfig)
               if f.metadata["group"] == GROUPS[0]] + ["seed"]


class Refused(Exception):
    """A start that cannot work; the message says why and what to change."""


@dataclass
class Analysis:
    """A dataset as the Data tab shows it: rows, detected shape, and the prepared report."""
    path: str
    dataset: object                  # datasets.Dataset
    fmt: object = None               # studio.data.DetectedFormat
    report: object = None            # studio.data.DataReport
    tokenizer: object = None
    error: str = ""                  # why detection, the tokenizer or preparation failed


def default_model() -> str:
    """The smallest catalog model already in the Hub cache, else the bundled demo model, which
    needs no network."""
    cached = [m for m in CATALOG if "/" in m.id and hub_cache_has(m.id)]
    return min(cached, key=lambda m: m.params).id if cached else DEMO_MODEL_ID


def hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        socket.getaddrinfo("huggingface.co", 443)
        return True
    except OSError:
        return False


def model_problem(name: str) -> Optional[str]:
    """Why `name` cannot be loaded here, or None."""
    if name.startswith("demo:") or is_local_model(name):
        return None
    path = Path(name).expanduser()
    if name.startswith((".", "/", "~")) or path.exists():
        return (f"{name} is not a model folder (no config.json in it): pick a folder that holds "
                "a saved model, or a model from the list")
    if "/" not in name:
        return f"{name} is neither a local folder nor a Hub id (owner/name): pick one from the list"
    if not hub_cache_has(name) and not hub_reachable():
        return (f"{name} is not downloaded and the Hugging Face Hub cannot be reached: pick the "
                f"bundled demo model ({DEMO_MODEL_ID}) or a local model folder, or connect to "
                "the network")
    return None


def first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


class Studio:
    """The server's state: runs folder, caches of datasets, tokenizers and chat models, jobs."""

    def __init__(self, runs_dir: str | Path):
        self.runs_dir = Path(runs_dir).expanduser().resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.RLock()          # the caches (held briefly)
        self._start_lock = threading.Lock()     # one start or resume at a time
        self._datasets: OrderedDict = OrderedDict()
        self._tokenizers: dict = {}
        self._analyses: OrderedDict = OrderedDict()
        self._models: OrderedDict = OrderedDict()

    # ------------------------------------------------------------------ hardware and memory
    def hardware(self):
        from studio.hardware import detect_hardware

        return detect_hardware()

    def free_memory(self, resolved: FineTuningConfig) -> tuple[float, str]:
        """Bytes free now where this run would train, and where that is."""
        hw = self.hardware()
        if hw.has_cuda and not resolved.cpu_only:
            import torch

            free, _ = torch.cuda.mem_get_info()
            return float(free), f"GPU ({hw.gpus[0].name})"
        import psutil

        return float(psutil.virtual_memory().available), "RAM"

    def estimate(self, config: FineTuningConfig):
        """(MemoryEstimate or None, free bytes, where, resolved config) for this config."""
        from studio.memory import estimate_memory

        resolved = config.resolve(self.hardware())
        analysis = self.cached_analysis(config)
        longest = max(analysis.report.lengths) if analysis and analysis.report and \
            analysis.report.lengths else None
        try:
            est = estimate_memory(resolved, longest_row=longest)
        except Exception:   # noqa: BLE001 - an unknown architecture: no estimate, not an error
            est = None
        free, where = self.free_memory(resolved)
        return est, free, where, resolved

    # ------------------------------------------------------------------ data
    def keep_upload(self, tmp_path: str) -> str:
        """Copy an uploaded file under the runs folder, so the run's config.yaml names a file
        that outlives gradio's temporary cache."""
        src = Path(tmp_path)
        folder = self.runs_dir / "uploads"
        folder.mkdir(exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", src.name)
        dest = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
        shutil.copyfile(src, dest)
        return str(dest)

    def dataset(self, path: str):
        """Rows of a file, folder or Hub id (DataError says what is wrong), cached by mtime."""
        from studio.data import load_rows

        p = Path(path).expanduser()
        key = (str(path), p.stat().st_mtime if p.exists() else None)
        with self._lock:
            if key in self._datasets:
                self._datasets.move_to_end(key)
                return self._datasets[key]
        ds = load_rows(str(path))
        with self._lock:
            self._datasets[key] = ds
            while len(self._datasets) > 4:
                self._datasets.popitem(last=False)
        return ds

    def tokenizer(self, model_name: str):
        """The base model's tokenizer (bundled models are built on first use)."""
        from transformers import AutoTokenizer

        from studio.models import local_model_path

        with self._lock:
            if model_name in self._tokenizers:
                return self._tokenizers[model_name]
        problem = model_problem(model_name)
        if problem:
            raise Refused(problem)
        tokenizer = AutoTokenizer.from_pretrained(local_model_path(model_name))
        with self._lock:
            self._tokenizers[model_name] = tokenizer
        return tokenizer

    def _analysis_key(self, config: FineTuningConfig):
        p = Path(str(config.data_path)).expanduser()
        return (str(config.data_path), p.stat().st_mtime if p.exists() else None,
                repr([getattr(config, n) for n in DATA_FIELDS]))

    def cached_analysis(self, config: FineTuningConfig) -> Optional[Analysis]:
        if not config.data_path:
            return None
        with self._lock:
            return self._analyses.get(self._analysis_key(config))

    def analyse(self, config: FineTuningConfig) -> Analysis:
        """Load, detect, tokenize and report on config.data_path as training would.

        Raises DataError when the rows cannot even be read; later failures (shape, tokenizer,
        nothing to train) are kept in Analysis.error so the preview still shows the rows."""
        from studio.data import DataError, apply_role_mapping, detect_format, prepare

        cached = self.cached_analysis(config)
        if cached:
            return cached
        ds = self.dataset(config.data_path)
        a = Analysis(str(config.data_path), ds)
        try:
            a.fmt = apply_role_mapping(detect_format(ds, config.dataset_format,
                                                     config.column_mapping,
                                                     config.prompt_template),
                                       config.role_mapping)
            a.tokenizer = self.tokenizer(config.model_name)
            a.report = prepare(ds, a.tokenizer, config).report
        except (DataError, Refused) as e:
            a.error = str(e).replace("the dataset: ", f"{Path(a.path).name}: ", 1)
        except Exception as e:   # noqa: BLE001 - shown in the page, never a dead server
            a.error = (f"the data could not be prepared with {config.model_name}'s tokenizer: "
                       f"{first_line(e)}")
        with self._lock:
            self._analyses[self._analysis_key(config)] = a
            while len(self._analyses) > 16:
                self._analyses.popitem(last=False)
        return a

    # ------------------------------------------------------------------ runs
    def job(self, run_dir: str | Path) -> Job:
        """The Job this server started for run_dir, or a watcher attached to it."""
        key = str(run_dir)
        with self._lock:
            if key not in self._jobs:
                self._jobs[key] = Job.attach(Path(run_dir))
            return self._jobs[key]

    def runs(self) -> list[dict]:
        return list_runs(self.runs_dir)

    def active(self) -> Optional[Path]:
        return active_run(self.runs_dir)

    def check(self, config: FineTuningConfig, allow_over_memory: bool = False) -> list[str]:
        """Everything that would stop this run, each naming the fix; empty: it can start."""
        from backends import BackendError, choose_backend
        from studio.data import DataError
        from studio.memory import out_of_memory_advice

        running = self.active()
        if running:
            status = read_status(running)
            return [f"A run is already training: {running.name} ({status.get('state')}, step "
                    f"{status.get('step') or '…'}). One job runs at a time, so two runs never "
                    "fight over memory: stop it on the Train tab, or wait for it to finish."]
        hw = self.hardware()
        problems = list(config.validate(hw))
        try:
            choose_backend(config.backend, hw)
        except BackendError as e:
            problems.append(str(e))
        if (why := model_problem(config.model_name)):
            problems.append(why)
        if not config.data_path:
            problems.append("No dataset yet: on the Data tab drop a file, give a path or a Hub "
                            "dataset id, or click an example.")
        if problems:
            return problems
        try:
            analysis = self.analyse(config)
        except DataError as e:
            return [str(e)]
        if analysis.error:
            return [analysis.error]
        if analysis.report.n_train == 0:
            return ["No row has trained tokens after templating: check the column mapping on the "
                    "Data tab (the response column must hold the answers)."]
        est, free, where, resolved = self.estimate(config)
        if est and est.total > free and not allow_over_memory:
            problems.append(
                f"The memory estimate ({est.total / GiB:.1f} GiB) is more than the "
                f"{free / GiB:.1f} GiB free in {where}. To fit, "
                f"{out_of_memory_advice(resolved).removeprefix('out of memory: ')}. Or tick "
                "'Start even if the estimate does not fit'.")
        return problems

    def start(self, config: FineTuningConfig, allow_over_memory: bool = False) -> Job:
        """Check, then train in a child process in a new run folder; Refused says why not."""
        with self._start_lock:
            problems = self.check(config, allow_over_memory)
            if problems:
                raise Refused("\n".join(problems))
            est, _, _, _ = self.estimate(config)
            run_dir = new_run_dir(self.runs_dir, config)
            job = Job.start(config, run_dir, in_process=False)
            write_status(run_dir, estimate_gb=round(est.total / GiB, 2) if est else None,
                         step=0)
            with self._lock:
                self._jobs[str(run_dir)] = job
            return job

    def resume(self, run_dir: str | Path) -> Job:
        """Continue a stopped or interrupted run from its last checkpoint, in the same folder."""
        from studio.runs import RunError

        run_dir = Path(run_dir)
        with self._start_lock:
            running = self.active()
            if running:
                raise Refused(f"A run is already training: {running.name}. Stop it first; one "
                              "job runs at a time.")
            if not is_run_dir(run_dir):
                raise Refused(f"{run_dir} holds no run to resume")
            if last_checkpoint(run_dir) is None:
                raise Refused(f"{run_dir.name} has no checkpoint yet, so it cannot resume: start "
                              "a new run (checkpoints are written every save_steps steps).")
            config = FineTuningConfig.load(run_dir / "config.yaml")
            try:
                job = Job.start(config, run_dir, resume=True, in_process=False)
            except RunError as e:
                raise Refused(str(e)) from None
            with self._lock:
                self._jobs[str(run_dir)] = job
            return job

    def stop(self, run_dir: str | Path) -> None:
        """Ask the run to stop (it saves an adapter at its next step); a job that does not stop
        within a minute is killed, which frees its memory. Returns at once."""
        job = self.job(run_dir)
        threading.Thread(target=job.stop, kwargs={"timeout": 60}, daemon=True,
                         name=f"stop-{Path(run_dir).name}").start()

    # ------------------------------------------------------------------ chat
    def model(self, source: str, base_of_run: bool = False):
        """A LoadedModel for a run folder (base + adapter) or a model id/folder; with
        base_of_run, the run's base model alone, prompted with the run's template and thinking
        mode so the comparison is fair. The last two are kept loaded."""
        from studio.inference import PromptFormat, load_model

        key = (source, base_of_run)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        if base_of_run:
            run_config = FineTuningConfig.load(Path(source) / "config.yaml")
            loaded = load_model(run_config.model_name, config=run_config)
            loaded = dataclasses.replace(loaded, prompt_format=PromptFormat.of(run_config),
                                         source=f"{run_config.model_name} (base)")
        else:
            if (why := model_problem(source)) and not is_run_dir(Path(source)):
                raise Refused(why)
            loaded = load_model(source)
        with self._lock:
            self._models[key] = loaded
            while len(self._models) > 2:
                self._models.popitem(last=False)
        gc.collect()
        return loaded

    def chat_sources(self) -> list[tuple[str, str]]:
        """(label, value) for the chat picker: runs with an adapter, then base models."""
        out = []
        for run in self.runs():
            run_dir = Path(run["run_dir"])
            if (run_dir / "adapter").is_dir() or last_checkpoint(run_dir):
                try:
                    base = FineTuningConfig.load(run_dir / "config.yaml").model_name
                except Exception:   # noqa: BLE001
                    base = "?"
                out.append((f"Fine-tuned: {run['name']} ({run.get('state')}, base "
                            f"{Path(base).name if is_local_model(base) else base})", str(run_dir)))
        return out

