"""Evaluating a run: the base model and the fine-tuned one side by side on rows it did not train on.

    evaluate_run(run_dir)      the run's validation split (re-made as training made it), or a file
      held-out loss            token-weighted cross-entropy on response tokens only, and its exp
      answers                  greedy replies to the first N prompts: exact match, ROUGE-L, the
                               reference beside them (Qwen3 <think> blocks stripped before scoring)
      tasks (optional)         lm-eval benchmarks, named or local YAML/JSONL, with the peft adapter
      judge (optional)         a model behind any OpenAI-compatible endpoint scores each answer 1-10
    run_dir/eval/<time>/       report.json and report.html (studio.evaluate.report)
    export_evalscope(...)      the evaluation rows as EvalScope's general_qa JSONL

Both models are prompted the same way, the way the run trained (its chat template, thinking mode
and system prompt), and they are loaded one at a time: the fine-tuned one, then the base. lm-eval
and the judge's client are optional extras, refused up front with the pip command that adds them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from studio.config import FineTuningConfig
from studio.evaluate.report import Answer, EvalReport, ModelScores, PromptResult, last_user_turn
from studio.plan.hardware import release_memory
from studio.inference import LoadedModel, load_model, resolve_source, split_thinking, stream_reply
from studio.runs.store import files, is_run_dir, read_config, read_status
from studio.texts.message import Text

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class EvalSettings:
    """How much an evaluation asks of both models. Its defaults are the studio's, on the page,
    the command line and in Python."""
    n_prompts: int = 20
    max_new_tokens: int = 128


EVAL = EvalSettings()


class EvalError(RuntimeError):
    """An evaluation that cannot run as asked; the message says why and what to do."""


# ---------------------------------------------------------------------------- scores
def normalise(text: str) -> str:
    """An answer as exact match compares it: the thinking left out, case and runs of whitespace
    ignored, trailing punctuation dropped ("Quillby." and "quillby" match)."""
    answer = " ".join(split_thinking(text)[1].split()).lower()
    while answer and unicodedata.category(answer[-1])[0] in "PZ":
        answer = answer[:-1]
    return answer


def exact_match(answer: str, reference: str) -> float:
    return float(normalise(answer) == normalise(reference))


# Kana, CJK ideographs and Hangul count one character a token (they have no spaces between
# words); other letters and digits make words. Everything else separates.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")


def rouge_tokens(text: str) -> list[str]:
    return _TOKEN.findall(split_thinking(text)[1].lower())


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1: the longest common subsequence of words, over both lengths.

    Our own twenty lines rather than the rouge-score package: its tokenizer keeps only a-z and
    0-9, so a Chinese answer (Qwen's second language) scores 0 and accented words are cut, and it
    would bring nltk and absl into the main dependencies. On ASCII text both give the same F1
    (tests/test_evaluate.py checks it against rouge-score where that is installed).
    """
    a, r = rouge_tokens(answer), rouge_tokens(reference)
    if not a or not r:
        return float(a == r)
    lcs = _lcs_length(a, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def gives_reference(answer: str, reference: str) -> bool:
    """Whether an answer says its reference: exactly, or with at least 80% of the reference's
    words in order within it (a taught sentence reworded a little, or followed by more)."""
    r = rouge_tokens(reference)
    return bool(exact_match(answer, reference)) or \
        bool(r) and _lcs_length(rouge_tokens(answer), r) >= 0.8 * len(r)


def _lcs_length(a: list, b: list) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


# ---------------------------------------------------------------------------- held-out loss
@dataclass
class HeldOutLoss:
    loss: float          # mean cross-entropy per response token (nats)
    perplexity: float    # exp(loss)
    tokens: int          # response tokens counted


def response_loss(loaded: LoadedModel, rows: Iterable) -> HeldOutLoss:
    """Cross-entropy on response tokens only, as training counts it: each token whose
    assistant_masks is 1 is predicted from the tokens before it (labels -100 elsewhere), and the
    sum over all rows is divided by the number of such tokens (a token-weighted mean, so a long
    answer weighs more than a short one, as in the trainer's eval loss).

    rows: (input_ids, assistant_masks) pairs, or a dataset with those two columns.
    """
    nll = _NLL.get(loaded.backend)
    if nll is None:
        raise EvalError(f"held-out loss needs a model's logits: the {loaded.backend} backend "
                        f"runs no model")
    total, count = 0.0, 0
    for ids, mask in _pairs(rows):
        targets = [t for t in range(1, len(ids)) if mask[t]]
        if targets:
            total += nll(loaded.model, list(ids), targets)
            count += len(targets)
    if not count:
        raise EvalError("no response tokens to measure the loss on")
    loss = total / count
    return HeldOutLoss(loss, math.exp(min(loss, 700.0)), count)


def _pairs(rows):
    if hasattr(rows, "column_names"):
        return zip(rows["input_ids"], rows["assistant_masks"])
    return rows


def _torch_nll(model, ids: list[int], targets: list[int]) -> float:
    """Summed cross-entropy of ids[t] for each t in targets, given ids[:t] (transformers and
    Unsloth models, peft-wrapped or not)."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0]
        at = torch.tensor(targets, device=device)
        return F.cross_entropy(logits[at - 1].float(), torch.tensor(ids, device=device)[at],
                               reduction="sum").item()


def _mlx_nll(model, ids: list[int], targets: list[int]) -> float:
    """The same on an MLX model (mlx_lm's model(ids) returns the logits)."""
    import mlx.core as mx
    import mlx.nn as nn

    logits = model(mx.array([ids]))[0]
    at = mx.array(targets)
    ce = nn.losses.cross_entropy(logits[at - 1].astype(mx.float32), mx.array(ids)[at],
                                 reduction="sum")
    return ce.item()


# backend -> how it scores tokens; a backend not here (scripted) has no model to score with
_NLL = {"transformers": _torch_nll, "unsloth": _torch_nll, "mlx": _mlx_nll}


# ---------------------------------------------------------------------------- evaluation rows
@dataclass
class EvalRow:
    """One question: the conversation up to the turn to answer, and that turn's text."""
    messages: list[dict]
    reference: str
    raw: bool = False     # the prompt is plain text (a custom prompt template or segments),
    #                       given to the model as it is, not through a chat template

    @property
    def prompt(self) -> str:
        """The last user turn, for tables."""
        return last_user_turn(self.messages)


@dataclass
class EvalSet:
    """What a run is evaluated on: the tokenized rows (for the loss) and the questions."""
    config: FineTuningConfig      # the run's config, resolved
    source: str                   # "validation split" or the file
    tokens: object                # datasets.Dataset: input_ids, assistant_masks
    rows: list[EvalRow]           # the rows that end with an answer to ask for, in order


def eval_set(run_dir, data=None) -> EvalSet:
    """The run's validation split, re-made exactly as training made it (same data, tokenizer,
    settings and seed), or every row of `data` (a file) read with the run's settings."""
    from transformers import AutoTokenizer

    from studio.data import load_rows, prepare
    from studio.models.local import local_model_path

    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise EvalError(f"{run_dir} is not a run folder (it has no config.yaml)")
    config = read_config(run_dir).resolve()
    if data is None and not config.data_path:
        raise EvalError(f"{run_dir}'s config names no dataset: evaluate on a file (data=...)")
    if data is not None:
        config = config.replace(data_path=str(data), val_size=0)
    # the tokenizer studio.runs.execute.prepare_data trains with: the base model's
    tokenizer = AutoTokenizer.from_pretrained(local_model_path(config.model_name))
    source_rows = load_rows(config.data_path)
    prepared = prepare(source_rows, tokenizer, config)
    if data is None:
        if prepared.eval is None:
            raise EvalError(f"{run_dir} kept no validation split (val_size "
                            f"{config.val_size:g}, {prepared.report.n_train} rows): evaluate on a "
                            f"file of held-out rows instead (data=...)")
        tokens, guess = prepared.eval, _validation_indices(prepared, config.seed)
    else:
        tokens, guess = prepared.train, list(range(len(prepared.train)))
    found = _source_rows(source_rows, tokens["input_ids"], guess, tokenizer, prepared.format,
                         config)
    rows = [r for r in (_eval_row(row, prepared.format) for row in found if row is not None) if r]
    return EvalSet(config, "validation split" if data is None else str(data), tokens, rows)


def _validation_indices(prepared, seed: int) -> list[int]:
    """Where the validation rows stood among the kept rows, drawn as studio.data.prepare draws
    them; only a first guess at their source rows (checked by their tokens below)."""
    n = prepared.report.n_train + prepared.report.n_eval
    return sorted(random.Random(seed).sample(range(n), prepared.report.n_eval))


def _source_rows(ds, wanted: list, guess: list[int], tokenizer, fmt, config) -> list:
    """The source row behind each tokenized row in `wanted`: the guessed row when it tokenizes
    the same (nothing was dropped before it), else the row found by its tokens."""
    from studio.data import tokenize_row

    def ids_of(row):
        try:
            return tokenize_row(tokenizer, row, fmt, config).input_ids
        except Exception:   # noqa: BLE001 - a row prepare dropped as unmappable
            return None

    out, missing = [], []
    for k, (ids, i) in enumerate(zip(wanted, guess)):
        row = ds[i] if i < len(ds) else None
        out.append(row if row is not None and ids_of(row) == list(ids) else None)
        if out[-1] is None:
            missing.append(k)
    if missing:    # rows were dropped before these: find them by their tokens
        by_ids = {}
        for row in ds:
            by_ids.setdefault(tuple(ids_of(row) or ()), row)
        for k in missing:
            out[k] = by_ids.get(tuple(wanted[k]))
    return out


def _eval_row(row: dict, fmt) -> Optional[EvalRow]:
    """The question a row asks: its conversation up to the last assistant turn, and that turn;
    None for a row with nothing before its answer (plain text)."""
    from studio.data import row_messages

    messages, _ = row_messages(row, fmt)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None or last == 0:
        return None
    reference = split_thinking(messages[last]["content"])[1].strip()
    if not fmt.shape.chat_template:
        # the template's prompt (or the segments before the answer), as the model read it
        text = "".join(m["content"] for m in messages[:last])
        return EvalRow([{"role": "user", "content": text}], reference, raw=True)
    return EvalRow(messages[:last], reference)


# ---------------------------------------------------------------------------- answers
_AS_IS = "{prompt}{response}"     # a prompt template that gives the prompt text unchanged


def reply_to(loaded: LoadedModel, row: EvalRow,
             max_new_tokens: int = EVAL.max_new_tokens) -> str:
    """The model's greedy reply to one evaluation row, prompted as its run trained."""
    if row.raw:
        loaded = dataclasses.replace(loaded, prompt_format=dataclasses.replace(
            loaded.prompt_format, prompt_template=_AS_IS))
    return "".join(stream_reply(loaded, row.messages, max_new_tokens=max_new_tokens,
                                temperature=0.0))


# ---------------------------------------------------------------------------- the judge
JUDGE_RUBRIC = """You grade an assistant's answer against a reference answer.

Conversation:
{question}

Reference answer:
{reference}

Assistant's answer:
{answer}

Score the assistant's answer from 1 to 10. 10: it says what the reference says (the wording may
differ). 7: right, but it misses a detail or adds something wrong or unasked. 4: partly right.
1: wrong, off the question, or empty. Reply with "Score: N" on the first line, then one sentence
saying why."""


@dataclass
class Judge:
    """A model behind an OpenAI-compatible endpoint (a vLLM or llama.cpp server, Ollama, OpenAI)
    that scores answers 1-10 against the reference."""
    base_url: str
    model: str
    api_key: Optional[str] = None
    _client: object = field(default=None, init=False, repr=False, compare=False)

    def prompt(self, row: EvalRow, reply: str) -> str:
        return JUDGE_RUBRIC.format(question=conversation_text(row.messages),
                                   reference=row.reference, answer=split_thinking(reply)[1])

    def score(self, row: EvalRow, reply: str) -> Optional[float]:
        """The judge's score, or None when its reply holds none."""
        if self._client is None:
            from openai import OpenAI

            # local servers want no key, but the client insists on one
            self._client = OpenAI(base_url=self.base_url, api_key=self.api_key or "none")
        response = self._client.chat.completions.create(
            model=self.model, temperature=0, max_tokens=200,
            messages=[{"role": "user", "content": self.prompt(row, reply)}])
        return parse_score(response.choices[0].message.content or "")


def parse_score(text: str) -> Optional[float]:
    """1-10 from a judge's reply: "Score: 8", "8/10", or the first number; None if none fits."""
    m = (re.search(r"score\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", text, re.I)
         or re.search(r"(\d+(?:\.\d+)?)\s*/\s*10\b", text)
         or re.search(r"\b(\d+(?:\.\d+)?)\b", text))
    if not m:
        return None
    value = float(m.group(1))
    return value if 1 <= value <= 10 else None


def conversation_text(messages: list[dict]) -> str:
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


# ---------------------------------------------------------------------------- lm-eval tasks
def _lm_eval_missing() -> Optional[str]:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return ('benchmark tasks need lm-eval: pip install "qwen3-studio[eval]" '
                '(or pip install "lm-eval>=0.4.9")')
    return None


def task_config(path: Path, max_new_tokens: int = EVAL.max_new_tokens) -> dict:
    """An lm-eval task for a local JSONL file: rows with a question (question, query, prompt or
    instruction) and either an answer (answer, response, output: generated greedily and
    compared by exact match, case, punctuation and outer spaces ignored) or choices plus the
    right one's index (answer: multiple choice, scored by likelihood)."""
    path = Path(path)
    first = _first_record(path)
    question = next((k for k in ("question", "query", "prompt", "instruction") if k in first),
                    None)
    target = next((k for k in ("answer", "response", "output") if k in first), None)
    if question is None or target is None:
        raise EvalError(f"{path}: a task row needs a question (question, query, prompt or "
                        f"instruction) and an answer (answer, response or output); the first "
                        f"row has {', '.join(first) or 'nothing'}")
    name = "studio_" + re.sub(r"\W+", "_", path.stem).strip("_").lower()
    base = {"task": name, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(path.resolve())}},
            "test_split": "test", "doc_to_text": "{{" + question + "}}"}
    if "choices" in first:
        return {**base, "output_type": "multiple_choice", "doc_to_choice": "{{choices}}",
                "doc_to_target": "{{" + target + "}}",
                "metric_list": [{"metric": "acc", "aggregation": "mean",
                                 "higher_is_better": True}]}
    return {**base, "output_type": "generate_until", "doc_to_target": "{{" + target + "}}",
            "generation_kwargs": {"until": [], "do_sample": False,
                                  "max_gen_toks": max_new_tokens},
            "metric_list": [{"metric": "exact_match", "aggregation": "mean",
                             "higher_is_better": True, "ignore_case": True,
                             "ignore_punctuation": True,
                             "regexes_to_ignore": [r"^\s+", r"\s+$"]}]}


def task_manager(tasks):
    """lm-eval's task index. Its thousands of built-in task files are slow to index, so they
    are indexed only when a task is named (or a YAML file may refer to one); our JSONL tasks
    are configs that need no index."""
    from lm_eval.tasks import TaskManager

    jsonl_only = all(Path(t).suffix.lower() in (".jsonl", ".json") for t in tasks)
    return TaskManager(include_defaults=not jsonl_only)


def _first_record(path: Path) -> dict:
    """The first row of a JSONL file (or of a JSON array)."""
    text = path.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            first = next(iter(json.loads(text)), None)
        else:
            first = next((json.loads(line) for line in text.splitlines() if line.strip()), None)
    except ValueError as e:
        raise EvalError(f"{path}: not JSON lines ({e})") from None
    if not isinstance(first, dict):
        raise EvalError(f"{path}: no rows (one JSON object a line)")
    return first


def run_tasks(config: FineTuningConfig, adapter: Optional[Path], tasks,
              max_new_tokens=EVAL.max_new_tokens, manager=None) -> dict:
    """{task: {metric: value}} for the base model (adapter None) or base + peft adapter, through
    lm_eval.simple_evaluate on the transformers model, prompted with the run's chat template,
    system prompt and thinking mode; Qwen3's thinking is cut at </think> before scoring.
    manager: a task_manager(tasks), made once for both models."""
    import lm_eval
    import torch

    from studio.models.local import local_model_path
    from backends.torch.trl_recipe import torch_dtype

    pretrained = local_model_path(config.model_name)
    args = {"pretrained": pretrained, "dtype": str(torch_dtype(config)).replace("torch.", ""),
            "think_end_token": "</think>", "enable_thinking": bool(config.enable_thinking)}
    if adapter is not None:
        # lm-eval sizes the embeddings to the tokenizer before it attaches the adapter: on Qwen3
        # that drops the padding rows no token maps to (the base keeps them; scores barely move)
        args["peft"] = str(adapter)
        if (Path(adapter) / "tokenizer_config.json").is_file():
            args["tokenizer"] = str(adapter)    # it carries the chat template used in training
    on_gpu = torch.cuda.is_available() and not config.cpu_only
    results = lm_eval.simple_evaluate(
        model="hf", model_args=args, device="cuda" if on_gpu else "cpu", batch_size=1,
        tasks=[_task(t, max_new_tokens) for t in tasks], apply_chat_template=True,
        system_instruction=config.system_prompt or None, log_samples=False,
        task_manager=manager or task_manager(tasks))
    return {name: {_metric_name(k): v for k, v in values.items()
                   if isinstance(v, (int, float)) and "stderr" not in k}
            for name, values in (results or {}).get("results", {}).items()}


def _task(task, max_new_tokens: int):
    """A task as lm-eval takes it: a name, a YAML file's path, or our config for a JSONL file."""
    path = Path(str(task))
    if path.suffix.lower() in (".jsonl", ".json") and path.is_file():
        return task_config(path, max_new_tokens)
    if path.suffix.lower() in (".yaml", ".yml") and not path.is_file():
        raise EvalError(f"task file not found: {task}")
    return str(path.resolve()) if path.is_file() else str(task)


def _metric_name(key: str) -> str:
    metric, _, filter_ = key.partition(",")
    return metric if filter_ in ("", "none") else f"{metric} ({filter_})"


# ---------------------------------------------------------------------------- the evaluation
class _Stages:
    """progress(fraction, message) across the stages of one evaluation, each weighted by about
    how long it takes."""

    def __init__(self, progress: Optional[Progress], weights: dict[str, float]):
        self.progress = progress or (lambda fraction, message: None)
        self.weights = weights

    def __call__(self, stage: str, done: float, message: str) -> None:
        names = list(self.weights)
        before = sum(self.weights[n] for n in names[:names.index(stage)])
        total = sum(self.weights.values())
        self.progress(min(1.0, (before + done * self.weights[stage]) / total), message)


def evaluate_run(run_dir, data=None, n_prompts: int = EVAL.n_prompts,
                 max_new_tokens: int = EVAL.max_new_tokens, tasks=(), judge: Optional[Judge] = None,
                 progress: Optional[Progress] = None) -> EvalReport:
    """The base model and the run's fine-tuned one side by side, on the run's validation split
    (or every row of the file `data`): held-out loss and perplexity on response tokens, greedy
    answers to the first n_prompts rows scored by exact match and ROUGE-L, the lm-eval `tasks`
    and the `judge`'s scores when asked for. Saved as run_dir/eval/<time>/report.json and
    report.html; the report is returned."""
    run_dir = Path(run_dir)
    tasks = [str(t) for t in tasks or ()]
    run_config, adapter = resolve_source(run_dir)     # refuses a run with no adapter yet
    _refuse_missing_extras(tasks, judge, adapter, run_config)
    weights = {"data": 0.1, "tuned": 1.0, "base": 1.0, "tasks": 2.0, "judge": 0.5}
    stages = _Stages(progress, {k: w for k, w in weights.items()
                                if (k != "tasks" or tasks) and (k != "judge" or judge)})
    stages("data", 0, Text("progress.eval.data"))
    evalset = eval_set(run_dir, data)
    rows = evalset.rows[:max(0, n_prompts)]
    notes = []
    if read_status(run_dir).active:
        notes.append(f"the run is still training: {adapter.name} was evaluated")
    if len(evalset.rows) < len(evalset.tokens):
        notes.append(f"{len(evalset.tokens) - len(evalset.rows)} rows have no question before "
                     f"their answer (plain text) or could not be traced to the file: they count "
                     f"in the loss only")

    # one model at a time: the fine-tuned one first (its backend is the one both run on)
    scores, replies = {}, {}
    tuned = load_model(run_dir)
    backend = tuned.backend
    scores["tuned"], replies["tuned"] = _measure(tuned, "tuned", evalset, rows, max_new_tokens,
                                                 stages, notes)
    del tuned
    release_memory()
    # the base alone, on the same backend and prompted as the run was: a config whose
    # output_dir holds no adapter (the report's folder, not made yet) makes load_model load
    # the base
    folder = _new_folder(run_dir)
    base = load_model(run_config.replace(backend=backend, output_dir=str(folder)))
    scores["base"], replies["base"] = _measure(base, "base", evalset, rows, max_new_tokens,
                                               stages, notes)
    del base
    release_memory()

    results = [PromptResult(row.messages, row.reference,
                            _scored(replies["base"][i], row), _scored(replies["tuned"][i], row))
               for i, row in enumerate(rows)]
    for which in ("base", "tuned"):
        mine = [getattr(r, which) for r in results]
        if mine:
            scores[which].exact_match = sum(a.exact_match for a in mine) / len(mine)
            scores[which].rouge_l = sum(a.rouge_l for a in mine) / len(mine)
    # what fails from here on (a task lm-eval does not know, a judge that does not answer)
    # becomes a note in the report: the models' answers and losses above are kept
    if tasks:
        try:
            manager = task_manager(tasks)
            for k, (which, path) in enumerate((("base", None), ("tuned", adapter))):
                stages("tasks", k / 2, Text("progress.eval.tasks.base") if which == "base"
                       else Text("progress.eval.tasks.tuned"))
                scores[which].tasks = run_tasks(evalset.config, path, tasks, max_new_tokens,
                                                manager)
                release_memory()
        except Exception as e:  # noqa: BLE001
            notes.append(f"lm-eval tasks failed: {type(e).__name__}: {_first_line(e)}")
    if judge is not None:
        try:
            _judge_all(judge, rows, results, scores, stages)
        except Exception as e:  # noqa: BLE001
            notes.append(f"the judge at {judge.base_url} failed: {type(e).__name__}: "
                         f"{_first_line(e)}")

    report = EvalReport(
        run_dir=str(run_dir), folder=str(folder),
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
        settings={"data": evalset.source, "rows": len(evalset.tokens),
                  "n_prompts": len(rows), "max_new_tokens": max_new_tokens, "tasks": tasks,
                  "judge": {"base_url": judge.base_url, "model": judge.model} if judge else None,
                  "model_name": run_config.model_name, "adapter": str(adapter),
                  "backend": backend, "enable_thinking": bool(run_config.enable_thinking)},
        base=scores["base"], tuned=scores["tuned"], prompts=results, notes=notes)
    report.save()
    stages.progress(1.0, Text("progress.eval.saved", path=str(report.html_path)))
    return report


def _refuse_missing_extras(tasks, judge, adapter, config) -> None:
    """Say before any model loads what cannot run, and how to make it run."""
    problems = []
    if tasks:
        why = _lm_eval_missing()
        if why:
            problems.append(why)
        elif (Path(adapter) / "adapters.safetensors").is_file():
            problems.append("lm-eval tasks run a transformers model with a peft adapter; this "
                            "run's adapter is MLX: evaluate it without tasks")
        elif config.backend == "scripted":
            problems.append("lm-eval tasks need a trained model: a scripted run has none")
        for task in tasks:
            path = Path(task)
            if path.suffix.lower() in (".jsonl", ".json", ".yaml", ".yml") and not path.is_file():
                problems.append(f"task file not found: {task}")
            elif path.suffix.lower() in (".jsonl", ".json"):
                try:
                    task_config(path)
                except EvalError as e:
                    problems.append(str(e))
    if judge is not None:
        try:
            import openai  # noqa: F401
        except ImportError:
            problems.append('the judge needs the openai client: pip install "qwen3-studio[judge]"'
                            ' (or pip install "openai>=1.0")')
    if problems:
        raise EvalError("; ".join(problems))


def _measure(loaded: LoadedModel, which: str, evalset: EvalSet, rows: list[EvalRow],
             max_new_tokens: int, stages: _Stages, notes: list) -> tuple[ModelScores, list]:
    """One model's held-out loss and its replies to the rows."""
    tuned = which == "tuned"
    name = loaded.source if which == "tuned" else f"{evalset.config.model_name} (base)"
    scores = ModelScores(name)
    rows_held = len(evalset.tokens)
    stages(which, 0, Text("progress.eval.loss.tuned", rows=rows_held) if tuned
           else Text("progress.eval.loss.base", rows=rows_held))
    if loaded.backend in _NLL:
        held_out = response_loss(loaded, evalset.tokens)
        scores.loss, scores.perplexity, scores.tokens = (held_out.loss, held_out.perplexity,
                                                         held_out.tokens)
    elif which == "tuned":
        notes.append(f"held-out loss skipped: the {loaded.backend} backend runs no model")
    replies = []
    for i, row in enumerate(rows):
        stages(which, 0.3 + 0.7 * i / max(1, len(rows)),
               Text("progress.eval.answer.tuned", i=i + 1, n=len(rows)) if tuned
               else Text("progress.eval.answer.base", i=i + 1, n=len(rows)))
        replies.append(reply_to(loaded, row, max_new_tokens))
    return scores, replies


def _scored(reply: str, row: EvalRow) -> Answer:
    return Answer(reply, exact_match(reply, row.reference), rouge_l(reply, row.reference))


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def _judge_all(judge: Judge, rows, results, scores, stages) -> None:
    for which in ("base", "tuned"):
        for i, (row, result) in enumerate(zip(rows, results)):
            stages("judge", (i + (which == "tuned") * len(rows)) / max(1, 2 * len(rows)),
                   Text("progress.eval.judge.tuned", i=i + 1) if which == "tuned"
                   else Text("progress.eval.judge.base", i=i + 1))
            mine = getattr(result, which)
            mine.judge = judge.score(row, mine.text)
        marks = [getattr(r, which).judge for r in results if getattr(r, which).judge is not None]
        scores[which].judge = sum(marks) / len(marks) if marks else None


def _new_folder(run_dir: Path) -> Path:
    """run_dir/eval/<time> (made when the report is saved), unique within the second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, n = files(run_dir).evals / stamp, 1
    while folder.exists():
        n += 1
        folder = files(run_dir).evals / f"{stamp}-{n}"
    return folder


# ---------------------------------------------------------------------------- EvalScope export
def export_evalscope(rows_or_run_dir, path, data=None) -> Path:
    """The evaluation rows as EvalScope's general_qa JSONL, one row a line: {"system"?, "query",
    "response"} where every row is one question, else {"messages", "response"} for every row
    (EvalScope asks for one layout within a file). rows_or_run_dir: a run folder (its
    validation split, or the file `data`, as evaluate_run reads them), or EvalRows or
    PromptResults. Point EvalScope at it with datasets=['general_qa'] and dataset_args
    {'general_qa': {'local_path': <folder>, 'subset_list': [<file name without .jsonl>]}}."""
    system = None
    if isinstance(rows_or_run_dir, (str, Path)):
        evalset = eval_set(rows_or_run_dir, data)
        rows, system = evalset.rows, evalset.config.system_prompt
    else:
        rows = list(rows_or_run_dir)
    lines = []
    for row in rows:
        messages = [{"role": m["role"], "content": m["content"]} for m in row.messages]
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}] + messages
        lines.append((messages, row.reference))
    single = all(len([m for m in ms if m["role"] != "system"]) == 1 for ms, _ in lines)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for messages, reference in lines:
            if single:
                record = {"query": messages[-1]["content"], "response": reference}
                if messages[0]["role"] == "system":
                    record = {"system": messages[0]["content"], **record}
            else:
                record = {"messages": messages, "response": reference}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
