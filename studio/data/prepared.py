"""What preparing a dataset gives back (the rows that train and the report on them), and the
row helpers the supervised and the preference preparations share."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Optional

import datasets

from studio.data.shapes import DetectedFormat

MIN_ROWS_FOR_EVAL = 4


@dataclass
class DataReport:
    n_rows: int
    columns: list[str]
    dtypes: dict[str, str]
    format: DetectedFormat
    lengths: list[int]                 # token length per kept row (before truncation)
    n_truncated: int                   # kept rows longer than max_seq_length (cut)
    n_train: int
    n_eval: int
    problems: dict[str, int]
    examples_of_problems: dict[str, list[int]]
    default_system: Optional[str] = None   # the system prompt the chat template adds by itself
    default_system_kept: bool = False      # rows with no system turn get it (keep, no
    #                                        system_prompt to replace it)
    identity_rows: int = 0             # kept rows that teach the assistant a name or maker
    advice: list[str] = field(default_factory=list)   # one line each: what to change, and why
    rows_read: Optional[int] = None    # rows looked at when a time budget cut the analysis short

    def summary(self) -> str:
        """A few lines for people: what was found, what trains, what was wrong."""
        lines = [f"{self.n_rows} rows, columns: {', '.join(self.columns)}",
                 f"format: {self.format.name} ({self.format.reason})",
                 f"train {self.n_train} rows, eval {self.n_eval} rows"]
        if self.lengths:
            lines.append(f"tokens per row: min {min(self.lengths)}, median "
                         f"{int(statistics.median(self.lengths))}, max {max(self.lengths)}; "
                         f"{self.n_truncated} rows cut at max_seq_length")
        for problem, n in self.problems.items():
            rows = self.examples_of_problems.get(problem, [])
            where = f" (e.g. rows {', '.join(map(str, rows))})" if rows else ""
            lines.append(f"{problem}: {n}{where}")
        if self.default_system:
            lines.append(f"the chat template's own system prompt ({self.default_system!r}): "
                         f"{'kept' if self.default_system_kept else 'not used'}")
        return "\n".join(lines + self.advice)


@dataclass
class PreparedData:
    train: datasets.Dataset            # columns input_ids, assistant_masks (pairs: prompt,
    eval: Optional[datasets.Dataset]   # chosen, rejected, chat_template_kwargs)
    report: DataReport
    format: DetectedFormat
    # prompts a run answers at every evaluation: [{"prompt", "ids", "reference"}] (studio.runs.execute)
    samples: list = field(default_factory=list)

    @property
    def train_lengths(self) -> list[int]:
        """Tokens in each training row, for the plan; for pairs, the prompt and the chosen
        answer of every pair (the held-out ones too: trl tokenizes pairs itself)."""
        if "input_ids" in self.train.column_names:
            return [len(ids) for ids in self.train["input_ids"]]
        return list(self.report.lengths)


def iter_rows(ds):
    for batch in ds.iter(batch_size=1000):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns)):
            yield dict(zip(columns, values))


def eval_count(n: int, val_size: float) -> int:
    """Eval rows: a fraction (<1) or a count (>=1); none for tiny data; never all of it."""
    if not val_size or val_size <= 0 or n < MIN_ROWS_FOR_EVAL:
        return 0
    k = int(val_size) if val_size >= 1 else max(1, round(n * val_size))
    return max(0, min(k, n - 1))


def dtype_name(feature) -> str:
    return getattr(feature, "dtype", None) or type(feature).__name__.lower()
