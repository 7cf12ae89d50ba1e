"""The runs of a runs folder side by side: a summary of each for the Runs table and
`python -m studio runs`, their curves to overlay, and how their configs differ.

Everything here is read from the run folders (config.yaml, status.json, metrics.jsonl), so it
shows runs made by the page, the CLI or Python alike, finished or still training.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from studio.runs.store import (list_runs, read_config, read_status,
                               resumable, run_events)

# The settings a run is told apart by in the table (the rest are in its config diff).
KEY_SETTINGS = ("lora_r", "learning_rate", "num_train_epochs", "max_steps", "batch_size",
                "gradient_accumulation_steps", "max_seq_length", "backend")


@dataclass
class RunSummary:
    name: str
    run_dir: str
    state: str
    model: str
    dataset: str
    rows: Optional[int]                    # train + validation rows after preparation
    settings: dict = field(default_factory=dict)
    train_loss: Optional[float] = None     # the last logged
    eval_loss: Optional[float] = None
    steps: int = 0
    seconds: Optional[float] = None        # training time over every leg (resumes included)
    tokens_per_s: Optional[float] = None   # median over the logged steps
    peak_memory_gb: Optional[float] = None
    started: Optional[float] = None
    resumable: bool = False                # ended short with a checkpoint to go on from

    def row(self) -> dict:
        """Flat, for a table."""
        out = {k: v for k, v in asdict(self).items() if k != "settings"}
        return {**out, **self.settings}


@dataclass
class Curves:
    """A run's points: (step, tokens seen, epoch, value) for train loss and eval loss."""
    train: list = field(default_factory=list)
    eval: list = field(default_factory=list)


def summarize(run_dir: Path) -> RunSummary:
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    try:
        config = read_config(run_dir)
    except Exception:   # noqa: BLE001 - an unreadable config still lists the run
        config = None
    events, _ = run_events(run_dir)
    train = [e for e in events if e.kind == "train"]
    evals = [e for e in events if e.kind == "eval"]
    sizes = next((e.data for e in events if e.kind == "status" and "n_train" in e.data), {})
    speeds = [e.data["tokens_per_s"] for e in train[1:] if _number(e.data.get("tokens_per_s"))]
    peaks = [e.data["peak_memory_gb"] for e in train if _number(e.data.get("peak_memory_gb"))]
    return RunSummary(
        name=run_dir.name, run_dir=str(run_dir), state=status.state,
        model=config.model_name if config else "?",
        dataset=Path(str(config.data_path)).name if config and config.data_path else "",
        rows=(sizes.get("n_train", 0) + sizes.get("n_eval", 0)) if sizes else None,
        settings={k: getattr(config, k) for k in KEY_SETTINGS} if config else {},
        train_loss=_last(train, "loss"), eval_loss=_last(evals, "eval_loss"),
        steps=max([e.step for e in train] + [status.step]),
        seconds=status.elapsed(until=events[-1].time) if events else
        status.elapsed() if status.ended else None,     # still going (or killed): to its last event
        tokens_per_s=statistics.median(speeds) if speeds else None,
        peak_memory_gb=max(peaks) if peaks else None, started=status.started,
        resumable=resumable(run_dir, status))


def summaries(runs_dir: Path) -> list[RunSummary]:
    """Every run in the folder, newest first."""
    return [summarize(run.run_dir) for run in list_runs(runs_dir)]


def curves(run_dir: Path) -> Curves:
    """The run's train and eval losses against step, tokens seen and epoch (an eval point takes
    the tokens of the train point before it, where eval events carry none)."""
    out, tokens, epoch = Curves(), 0, 0.0
    for e in run_events(run_dir)[0]:
        if e.kind == "train" and _number(e.data.get("loss")):
            tokens = e.data.get("tokens") if _number(e.data.get("tokens")) else tokens
            epoch = e.data.get("epoch") if _number(e.data.get("epoch")) else epoch
            out.train.append((e.step, tokens, epoch, e.data["loss"]))
        elif e.kind == "eval" and _number(e.data.get("eval_loss")):
            epoch = e.data.get("epoch") if _number(e.data.get("epoch")) else epoch
            out.eval.append((e.step, tokens, epoch, e.data["eval_loss"]))
    return out


def config_diff(run_dirs: list[Path]) -> dict[str, list]:
    """Field -> each run's value, for the fields where the runs' configs differ (the output
    folder aside: it always does)."""
    configs = [read_config(d).to_dict() for d in run_dirs]
    fields = [f for f in configs[0] if f != "output_dir"]
    return {f: [c.get(f) for c in configs] for f in fields
            if any(c.get(f) != configs[0].get(f) for c in configs[1:])}


def _last(events, key: str) -> Optional[float]:
    values = [e.data[key] for e in events if _number(e.data.get(key))]
    return values[-1] if values else None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
