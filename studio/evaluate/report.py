"""An evaluation's report: the scores of the base and the fine-tuned model side by side, every
answer beside its reference, saved as report.json (read back by the Evaluate tab and the CLI) and
report.html (a self-contained page in which every string from the data or a model is escaped).
"""
from __future__ import annotations

import dataclasses
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from studio.inference import split_thinking
from studio.runs.store import files


def last_user_turn(messages: list[dict]) -> str:
    """The question a conversation ends on, for tables."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"),
                messages[-1]["content"] if messages else "")


@dataclass
class Answer:
    text: str                        # as the model wrote it (thinking included)
    exact_match: float
    rouge_l: float
    judge: Optional[float] = None


@dataclass
class PromptResult:
    messages: list[dict]
    reference: str
    base: Answer
    tuned: Answer

    @property
    def prompt(self) -> str:
        return last_user_turn(self.messages)


@dataclass
class ModelScores:
    name: str
    loss: Optional[float] = None             # held-out, response tokens only
    perplexity: Optional[float] = None
    tokens: int = 0                          # response tokens the loss counted
    exact_match: Optional[float] = None      # mean over the prompts
    rouge_l: Optional[float] = None
    judge: Optional[float] = None            # mean 1-10 over the answers the judge scored
    tasks: dict = field(default_factory=dict)   # lm-eval task -> {metric: value}


@dataclass
class EvalReport:
    run_dir: str
    folder: str                      # run_dir/eval/<time>: report.json, report.html
    created: str
    settings: dict                   # what was evaluated and how
    base: ModelScores
    tuned: ModelScores
    prompts: list[PromptResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # what was skipped, and why

    @property
    def json_path(self) -> Path:
        return Path(self.folder) / "report.json"

    @property
    def html_path(self) -> Path:
        return Path(self.folder) / "report.html"

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        models = {"base": out.pop("base"), "tuned": out.pop("tuned")}
        notes = out.pop("notes")
        prompts = [{"prompt": result.prompt, **p}
                   for p, result in zip(out.pop("prompts"), self.prompts)]
        return {**out, "models": models, "notes": notes, "prompts": prompts}

    @classmethod
    def from_dict(cls, d: dict) -> "EvalReport":
        prompts = [PromptResult(p["messages"], p["reference"], Answer(**p["base"]),
                                Answer(**p["tuned"])) for p in d.get("prompts", [])]
        return cls(d["run_dir"], d["folder"], d["created"], d["settings"],
                   ModelScores(**d["models"]["base"]), ModelScores(**d["models"]["tuned"]),
                   prompts, d.get("notes", []))

    @classmethod
    def load(cls, path) -> "EvalReport":
        """A report from its report.json or its folder; ValueError, saying what is wrong, for a
        file that is not a report as the studio writes them (a score that is not a number once
        stopped the Evaluate tab with "Unknown format code 'f'")."""
        path = Path(path)
        path = path / "report.json" if path.is_dir() else path
        try:
            report = cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
            report.check()
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
            what = f"{type(e).__name__} {e}" if isinstance(e, KeyError) else str(e)
            raise ValueError(f"{path} is not an evaluation report the studio can read: "
                             f"{what.splitlines()[0][:200] if what else type(e).__name__}") \
                from None
        return report

    def check(self) -> None:
        """ValueError naming the first value that is not what a report holds there."""
        for scores in (self.base, self.tuned):
            for name in ("loss", "perplexity", "exact_match", "rouge_l", "judge"):
                _number(getattr(scores, name), f"{scores.name}'s {name}")
            for task, metrics in scores.tasks.items():
                for metric, value in metrics.items():
                    _number(value, f"{scores.name}'s {task} {metric}")
        for n, result in enumerate(self.prompts, 1):
            for which, answer in (("base", result.base), ("fine-tuned", result.tuned)):
                if not isinstance(answer.text, str):
                    raise ValueError(f"answer {n} of the {which} model is not text")
                for name in ("exact_match", "rouge_l", "judge"):
                    _number(getattr(answer, name), f"answer {n} of the {which} model's {name}")

    def save(self) -> Path:
        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.json_path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False),
                                  encoding="utf-8")
        self.html_path.write_text(report_html(self), encoding="utf-8")
        return self.json_path

    def summary(self) -> str:
        """A few lines for the command line: base vs fine-tuned, then the notes."""
        lines = [f"{'':22}{'base':>12}{'fine-tuned':>12}"]
        for label, a, b in _summary_rows(self):
            lines.append(f"{label:22}{a:>12}{b:>12}")
        return "\n".join(lines + [f"note: {n}" for n in self.notes]
                         + [f"report: {self.html_path}"])


def _number(value, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{what} is {str(value)[:40]!r}, not a number")


def latest_report(run_dir) -> Optional[EvalReport]:
    """The run's newest evaluation report, or None."""
    folders = sorted(p for p in files(run_dir).evals.glob("*")
                     if (p / "report.json").is_file())
    return EvalReport.load(folders[-1]) if folders else None


def _fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and 0 < abs(value) < 0.01:
        return f"{value:.2g}"       # a loss near 0 (a learnt fact) shown, not rounded away
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _summary_rows(report: EvalReport) -> list[tuple[str, str, str]]:
    b, t = report.base, report.tuned
    rows = [("held-out loss", _fmt(b.loss), _fmt(t.loss)),
            ("perplexity", _fmt(b.perplexity, 2), _fmt(t.perplexity, 2)),
            ("exact match", _fmt(b.exact_match), _fmt(t.exact_match)),
            ("ROUGE-L", _fmt(b.rouge_l), _fmt(t.rouge_l))]
    if b.judge is not None or t.judge is not None:
        rows.append(("judge (1-10)", _fmt(b.judge, 1), _fmt(t.judge, 1)))
    for task in sorted(set(b.tasks) | set(t.tasks)):
        for metric in sorted(set(b.tasks.get(task, {})) | set(t.tasks.get(task, {}))):
            rows.append((f"{task} {metric}", _fmt(b.tasks.get(task, {}).get(metric)),
                         _fmt(t.tasks.get(task, {}).get(metric))))
    return rows


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.8em 0 1.6em; }}
th, td {{ border: 1px solid #ccc; padding: 0.35em 0.6em; vertical-align: top; text-align: left; }}
th {{ background: #f3f3f3; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.text {{ white-space: pre-wrap; max-width: 28em; }}
.better {{ background: #e6f4e6; }}
.hit {{ color: #1a7f1a; font-weight: bold; }}
.small {{ color: #666; font-size: 0.9em; }}
</style></head><body>
<h2>{title}</h2>
<p class="small">{meta}</p>
<table><tr><th></th><th>base</th><th>fine-tuned</th></tr>
{summary}
</table>
{notes}
<h3>Answers</h3>
<table><tr><th>#</th><th>prompt</th><th>reference</th><th>base</th><th>fine-tuned</th></tr>
{prompts}
</table>
</body></html>
"""

# summary rows where a lower number is the better one
_LOWER_IS_BETTER = ("held-out loss", "perplexity")


def report_html(report: EvalReport) -> str:
    """A self-contained page: the summary base vs fine-tuned, then every answer beside the
    reference. Every string from the data or the models is escaped."""
    e = html.escape
    summary = []
    for label, a, b in _summary_rows(report):
        better = _better(label, a, b)
        summary.append(f"<tr><th>{e(label)}</th>"
                       f"<td class=\"num{' better' if better == 'a' else ''}\">{e(a)}</td>"
                       f"<td class=\"num{' better' if better == 'b' else ''}\">{e(b)}</td></tr>")
    s = report.settings
    meta = (f"{e(str(s.get('model_name', '')))} + {e(str(s.get('adapter', '')))} &middot; "
            f"{e(str(s.get('data', '')))}: {s.get('rows', 0)} rows, "
            f"{report.tuned.tokens} response tokens, {len(report.prompts)} prompts &middot; "
            f"{e(report.created)}")
    notes = "".join(f"<p class=\"small\">{e(n)}</p>" for n in report.notes)
    prompts = [f"<tr><td class=\"num\">{i}</td><td class=\"text\">{_conversation_html(p)}</td>"
               f"<td class=\"text\">{e(p.reference)}</td>{_answer_html(p.base)}"
               f"{_answer_html(p.tuned)}</tr>" for i, p in enumerate(report.prompts, 1)]
    return _PAGE.format(title=e(f"Evaluation of {Path(report.run_dir).name}"), meta=meta,
                        summary="\n".join(summary), notes=notes, prompts="\n".join(prompts))


def _better(label: str, a: str, b: str) -> str:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return ""
    if x == y:
        return ""
    lower = any(label.startswith(k) for k in _LOWER_IS_BETTER)
    return "a" if (x < y) == lower else "b"


def _conversation_html(p: PromptResult) -> str:
    e = html.escape
    if len(p.messages) == 1:
        return e(p.messages[0]["content"])
    return "<br>".join(f"<b>{e(m['role'])}:</b> {e(m['content'])}" for m in p.messages)


def _answer_html(a: Answer) -> str:
    e = html.escape
    thinking, text = split_thinking(a.text)
    folded = (f"<details><summary class=\"small\">thinking</summary>{e(thinking)}</details>"
              if thinking else "")
    marks = (f"<span class=\"{'hit' if a.exact_match else 'small'}\">"
             f"{'exact match' if a.exact_match else 'no match'}</span>"
             f" &middot; ROUGE-L {a.rouge_l:.2f}"
             + (f" &middot; judge {a.judge:g}" if a.judge is not None else ""))
    return f"<td class=\"text\">{folded}{e(text)}<br><span class=\"small\">{marks}</span></td>"
