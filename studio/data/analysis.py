"""Datasets as the studio sees them before a run: read, shape detected, prepared and reported.

The Data tab draws an analysis and the service's preflight refuses a run by one, so both read
the same cache: a file is read once per change on disk, a tokenizer loaded once per model, and
an analysis made once per file and data settings. Only the newest analysis keeps its prepared
rows, which a run started in this process then trains on without preparing them again.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from studio.config import GROUPS, FineTuningConfig
from studio.models.local import model_problem, unloadable
from studio.texts.message import Text

# The settings an analysis depends on (the model's tokenizer, template, lengths and split).
DATA_FIELDS = [f.name for f in dataclasses.fields(FineTuningConfig)
               if f.metadata["group"] == GROUPS[0]] + ["seed"]


class ModelUnavailable(Exception):
    """The model whose tokenizer the data needs cannot be loaded; the message says why."""


@dataclass
class Analysis:
    """A dataset as the Data tab shows it: rows, detected shape, and the prepared report."""
    path: str
    dataset: object                  # datasets.Dataset
    fmt: object = None               # studio.data.DetectedFormat
    report: object = None            # studio.data.DataReport
    tokenizer: object = None
    error: str = ""                  # why detection, the tokenizer or preparation failed
    prepared: object = None          # studio.data.PreparedData, on the newest analysis only
    sampled: Optional[tuple] = None  # (rows analysed, rows in the file) when a sample was used

    @property
    def scale(self) -> float:
        """Rows in the file per row analysed (1 unless a sample was)."""
        return self.sampled[1] / self.sampled[0] if self.sampled else 1.0


MAX_UPLOAD_BYTES = 2**30          # the default upload limit; --max-file-size
UPLOAD_KEPT_SECONDS = 24 * 3600   # an upload no run uses is deleted after a day

# A bigger file is analysed on evenly spaced rows, so the Data tab answers in seconds; a run
# still prepares every row.
ANALYSIS_ROWS = 5000
ANALYSIS_SECONDS = 30.0      # and tokenizes for at most this long (huge cells), saying so


class Analyses:
    """The caches behind every analysis; safe to share between a server's threads."""

    def __init__(self, uploads_dir: Path, max_upload_bytes: int = MAX_UPLOAD_BYTES, paths=None):
        """`paths` checks each dataset and model before it is read (its dataset, source and
        config: studio.service.paths.Paths, the service's); None takes every path."""
        self.uploads_dir = Path(uploads_dir)
        self.max_upload_bytes = max_upload_bytes
        self.paths = paths
        self._lock = threading.RLock()          # held briefly, never while loading
        self._datasets: OrderedDict = OrderedDict()
        self._tokenizers: dict = {}
        self._analyses: OrderedDict = OrderedDict()
        self._cancels = 0                        # cancel() ends every analysis begun before

    def cancel(self) -> None:
        """End the analyses under way (the Data tab's Cancel): each stops at its next row and
        raises a DataError; nothing of it is kept."""
        with self._lock:
            self._cancels += 1

    def keep_upload(self, tmp_path: str) -> str:
        """Move an uploaded file into the uploads folder, so a run's config.yaml names a file
        that outlives gradio's temporary cache (moved, not copied: one copy on disk). A file
        over the upload limit is deleted and refused."""
        from studio.data import DataError

        src = Path(tmp_path)
        size = src.stat().st_size
        if size > self.max_upload_bytes:
            src.unlink(missing_ok=True)
            raise DataError(Text("data.upload_too_big", name=src.name, mib=size / 2**20,
                                 limit=self.max_upload_bytes / 2**20))
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", src.name)
        dest = self.uploads_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
        try:
            shutil.move(src, dest)
        except OSError:      # gradio's cache not ours to move from: copy
            shutil.copyfile(src, dest)
        return str(dest)

    def clean_uploads(self, runs_dir: Path, older_than: float = UPLOAD_KEPT_SECONDS) -> list[Path]:
        """Delete uploads older than `older_than` seconds that no run's config names as its
        data (or its evaluation data); returns what was deleted."""
        from studio.runs.store import files, list_runs

        if not self.uploads_dir.is_dir():
            return []
        used = set()
        for run in list_runs(runs_dir):
            try:
                text = files(run.run_dir).config.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            used.update(f.name for f in self.uploads_dir.iterdir() if f.name in text)
        deleted, now = [], time.time()
        for f in self.uploads_dir.iterdir():
            if f.is_file() and f.name not in used and now - f.stat().st_mtime > older_than:
                f.unlink(missing_ok=True)
                deleted.append(f)
        return deleted

    def dataset(self, path: str):
        """Rows of a file, folder or Hub id (DataError says what is wrong), cached by mtime."""
        from studio.data import load_rows

        if self.paths is not None:
            path = self.paths.dataset(path)
        key = (str(path), _mtime(path))
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

        from studio.models.local import local_model_path

        if self.paths is not None:
            model_name = self.paths.source(model_name)
        with self._lock:
            if model_name in self._tokenizers:
                return self._tokenizers[model_name]
        problem = model_problem(model_name)
        if problem:
            raise ModelUnavailable(problem)
        try:
            tokenizer = AutoTokenizer.from_pretrained(local_model_path(model_name))
        except Exception as e:   # noqa: BLE001 - said whole, on one line, naming the file
            raise ModelUnavailable(unloadable(model_name, e)) from None
        with self._lock:
            self._tokenizers[model_name] = tokenizer
        return tokenizer

    def cached(self, config: FineTuningConfig) -> Optional[Analysis]:
        if not config.data_path:
            return None
        with self._lock:
            return self._analyses.get(_key(config))

    def analyse(self, config: FineTuningConfig) -> Analysis:
        """Load, detect, tokenize and report on config.data_path as training would.

        Raises DataError when the rows cannot even be read; later failures (shape, tokenizer,
        nothing to train) are kept in Analysis.error so the preview still shows the rows."""
        from studio.data import DataError, apply_role_mapping, detect_format, prepare

        if self.paths is not None:
            self.paths.dataset(config.data_path)
            config = self.paths.config(config)
        cached = self.cached(config)
        if cached:
            return cached
        from studio.data.readers import MAX_COLUMNS, columns_left_out
        from studio.texts.message import message_of

        begun = self._cancels

        def cancelled() -> bool:
            return self._cancels != begun

        ds = self.dataset(config.data_path)
        a = Analysis(str(config.data_path), ds)
        rows, said = ds, []
        if len(ds) > ANALYSIS_ROWS:
            every = -(-len(ds) // ANALYSIS_ROWS)
            rows = ds.select(range(0, len(ds), every))
            a.sampled = (len(rows), len(ds))
            said.append(Text("data.advice.sample", every=every, rows=len(rows), total=len(ds)))
        if (left := columns_left_out(ds)):
            said.append(Text("data.advice.columns_left_out", columns=MAX_COLUMNS + left,
                             kept=MAX_COLUMNS))
        try:
            a.fmt = apply_role_mapping(detect_format(rows, config.dataset_format,
                                                     config.column_mapping,
                                                     config.prompt_template),
                                       config.role_mapping)
            a.tokenizer = self.tokenizer(config.model_name)
            a.prepared = prepare(rows, a.tokenizer, config, seconds=ANALYSIS_SECONDS,
                                 cancelled=cancelled)
            a.report = a.prepared.report
            a.report.advice.extend(said)
            if a.report.rows_read:
                a.sampled = (a.report.rows_read, len(ds) if a.sampled is None else a.sampled[1])
        except (DataError, ModelUnavailable) as e:
            a.error = _named(message_of(e), Path(a.path).name)
        except Exception as e:   # noqa: BLE001 - shown in the page, never a dead server
            a.error = Text("data.prepare_failed", model=config.model_name,
                           detail=(str(e).strip() or type(e).__name__).splitlines()[0])
        if cancelled():
            raise DataError(Text("data.cancelled", name=Path(a.path).name))
        if a.error and said:
            a.error = (Text("data.error_and_note", error=a.error, note=said[0]) if len(said) == 1
                       else Text("data.error_and_notes", error=a.error, note=said[0],
                                 other=said[1]) if len(said) == 2
                       else a.error + " (" + "; ".join(said) + ")")
        if a.sampled:
            a.prepared = None       # a sample is not the run's data: a run prepares every row
        with self._lock:
            for older in self._analyses.values():
                older.prepared = None             # one prepared dataset in memory at most
            self._analyses[_key(config)] = a
            while len(self._analyses) > 16:
                self._analyses.popitem(last=False)
        return a


def _named(problem, name: str):
    """A problem prepare() said of "the dataset", said of the file `name` instead."""
    english = str(problem).replace("the dataset: ", f"{name}: ", 1)
    if isinstance(problem, Text) and problem.key == "data.in_file" and \
            problem.values["name"] == Text("data.the_dataset"):
        named = Text("data.in_file", name=name, problem=problem.values["problem"])
        if named == english:
            return named
    return english if english != problem else problem


def _mtime(path) -> Optional[float]:
    p = Path(str(path)).expanduser()
    return p.stat().st_mtime if p.exists() else None


def _key(config: FineTuningConfig):
    return (str(config.data_path), _mtime(config.data_path),
            repr([getattr(config, n) for n in DATA_FIELDS]))
