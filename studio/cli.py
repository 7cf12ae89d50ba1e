"""The command line: everything the UI does, on the same engine.

    python -m studio train --data data.jsonl --model Qwen/Qwen3-0.6B --output-dir runs/a
    python -m studio generate --run runs/a --prompt "Hello"
    python -m studio chat --run runs/a
    python -m studio ui [--host --port --auth --runs-dir]
    python -m studio serve --run RUN [--host --port --auth --runs-dir]   (OpenAI-compatible /v1)
    python -m studio runs [list|show|diff|rename|rm] | stop RUN | attach RUN
    python -m studio eval --run RUN [--data FILE] [--tasks ...] [--judge-url URL]
    python -m studio export --run RUN --format merged|lora|gguf|ollama [--out DIR] [--quant Q]
    python -m studio tiny-qwen3 DIR | demo-model [DIR]

Every FineTuningConfig field is a flag named after it (--lora-r, and the guide's --lora_r);
values come from the defaults, then --config FILE, then the flags. Bad input ends with one
line saying what to fix and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path

import yaml

from backends import CHAT
from studio.evaluate.evaluation import EVAL
from studio.config import GROUPS, ConfigError, FineTuningConfig, field_kind, flag_names
from studio.errors import Note
from studio.export import DEFAULT_QUANT, FORMATS, QUANTS
from studio.plan.presets import PRESETS
from studio.serve.v1 import add_flags as add_serve_flags
from studio.texts.fields import field_help
from studio.ui.server import add_server_flags


# ---------------------------------------------------------------------------- flags from fields
def _preset_name(text: str) -> str:
    """'teach-facts', 'Teach facts' and 'auto' all name a preset."""
    names = {n.lower().replace(" ", "-"): n for n in ["Auto", *PRESETS]}
    key = text.strip().lower().replace(" ", "-")
    if key not in names:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}: choose {', '.join(names)}")
    return names[key]


def _key_values(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"mappings want KEY=VALUE pairs (e.g. instruction=question or "
                              f"bot=assistant), got {item!r}")
        out[key.strip()] = value.strip()
    return out


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, dashed and underscored, grouped as in the UI."""
    groups = {g: parser.add_argument_group(g) for g in GROUPS}
    for f in dataclasses.fields(FineTuningConfig):
        kind, meta = field_kind(f.name), f.metadata
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=field_help(f.name))
        if kind in ("bool", "tristate"):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind == "list":
            kwargs.update(nargs="+", metavar="NAME")
        elif kind == "dict":
            kwargs.update(nargs="+", metavar="KEY=VALUE", type=str)
        else:
            kwargs.update(type={"int": int, "float": float}.get(kind, str),
                          choices=meta.get("choices"))
        groups[meta["group"]].add_argument(*flag_names(f.name), **kwargs)


def config_from_args(args: argparse.Namespace, base: Path | None = None) -> FineTuningConfig:
    """Defaults, then the YAML file (--config, else `base`), then --preset, then the flags."""
    values = {}
    if getattr(args, "config", None) or base:
        values = FineTuningConfig.load(args.config or base).to_dict()
    flags = {f.name: _key_values(getattr(args, f.name)) if field_kind(f.name) == "dict"
             else getattr(args, f.name)
             for f in dataclasses.fields(FineTuningConfig) if hasattr(args, f.name)}
    if getattr(args, "preset", None):
        values.update(_preset_fields(args.preset, flags.get("data_path") or
                                     values.get("data_path")))
    return FineTuningConfig.from_dict({**values, **flags})


def _preset_fields(name: str, data_path: str | None) -> dict:
    """The fields of preset `name`; auto picks one from the dataset's size (and says why)."""
    from studio.plan.presets import AUTO, PRESETS, choose_preset

    if name == AUTO:
        from studio.data import load_rows

        name, why = choose_preset(len(load_rows(data_path)) if data_path else None)
        print(f"note: preset auto -> {name}: {why}", file=sys.stderr)
    return dict(PRESETS[name].fields)


# ---------------------------------------------------------------------------- commands
DEFAULT_RUNS_DIR = "runs"      # the page's default runs folder (python -m studio ui)


def cmd_train(args) -> int:
    """Check, then train in this process with a progress bar, through the same service as the
    page: the runs folder is --output-dir's parent, where one job trains at a time."""
    from studio.evaluate.advice import advice_after
    from studio.inference import generate_text, load_model_and_tokenizer
    from studio.runs.store import files, new_run_dir, read_config
    from studio.service.actions import Service

    saved = files(getattr(args, "output_dir", FineTuningConfig.output_dir)).config
    config = config_from_args(args, saved if args.resume and saved.is_file() else None)
    if config.output_dir == FineTuningConfig.output_dir and not args.resume:
        # No folder asked for: a new run in the page's runs folder, so the one-job rule holds
        # against the page's job (the old default, ./qwen3-finetuned, was a runs folder of its
        # own: the current folder).
        config = config.replace(output_dir=str(new_run_dir(Path(DEFAULT_RUNS_DIR), config)))
        print(f"note: no --output-dir: this run goes to {config.output_dir}", file=sys.stderr)
    run_dir = Path(config.output_dir).expanduser().resolve()
    service = Service(run_dir.parent)
    if args.dry_run:
        return _dry_run(service, config, args.allow_over_memory)
    with ProgressBar() as bar:
        if args.resume:
            job = service.resume(run_dir, config, in_process=True, listeners=[bar])
        else:
            job = service.start(config, run_dir, allow_over_memory=args.allow_over_memory,
                                overwrite=args.overwrite, in_process=True, listeners=[bar])
        status = _until_done(job)
    if status.state == "failed":
        print(f"error: {status.reason}", file=sys.stderr)
        return 1
    print(f"{status.state}: {status.reason}")
    print(f"adapter: {files(run_dir).adapter}")
    ran = read_config(run_dir)                     # with the preset's settings
    if status.state == "finished" and (advice := advice_after(ran, job.events)):
        print(f"advice: {advice}")
    if args.test_prompt:
        model, tokenizer = load_model_and_tokenizer(run_dir)
        print(generate_text(model, tokenizer, args.test_prompt, max_new_tokens=128))
    return 0


def _dry_run(service, config: FineTuningConfig, allow_over_memory: bool) -> int:
    """--dry-run: the plan the run would train with here (backend, batches, loss, memory), as
    plan.yaml will hold it, and what would refuse it; nothing is written or trained."""
    config, preset = service.with_auto_preset(config)
    if preset:
        print(f"note: {preset}", file=sys.stderr)
    problems = service.check(config, allow_over_memory)
    plan = service.plan(config)
    print(f"backend: {plan.why}")
    print(yaml.safe_dump(plan.layout(), sort_keys=False, allow_unicode=True).rstrip())
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2 if problems else 0


def _until_done(job) -> dict:
    """Wait for the job; a first Ctrl-C asks it to stop at its next step (saving an adapter)."""
    try:
        return job.wait()
    except KeyboardInterrupt:
        print("\nstopping at the next step (Ctrl-C again to quit at once)", file=sys.stderr)
        job.stop()
        return job.wait()


def cmd_run_job(args) -> int:
    """The training process the page starts: output goes to the run's log.txt. A run over
    several processes is handed to torchrun, whose workers run this same command a rank each."""
    from studio.runs import torchrun
    from backends.torch import distributed
    from studio.runs.execute import execute

    run_dir = Path(args.run_dir)
    if not distributed.in_worker() and (config := torchrun.spread(run_dir)):
        return torchrun.supervise(run_dir, config, args.resume)
    status = execute(run_dir, resume=args.resume, listeners=[_print_event])
    return 0 if status.state != "failed" else 1


def cmd_runs(args) -> int:
    """The runs of a runs folder: list, show one, diff several configs, rename, rm."""
    from studio.runs.history import config_diff, summaries, summarize
    from studio.runs.store import RunError, read_plan
    from studio.service.actions import Service

    runs = [_run_folder(r) for r in args.runs]
    if args.action == "list":
        rows = [s.row() for s in summaries(args.runs_dir)]
        if not rows:
            print(f"no runs in {Path(args.runs_dir).resolve()}")
        for r in rows:
            print(f"{r['name']}  {r['state']}  {r['model']}  {r['dataset']}  step {r['steps']}  "
                  f"train {_num(r['train_loss'])}  eval {_num(r['eval_loss'])}  "
                  f"{_num(r['tokens_per_s'], '.0f')} tokens/s  {_num(r['seconds'], '.0f')} s")
    elif args.action == "show":
        for run in runs:
            print(yaml.safe_dump({"summary": summarize(run).row(), "plan": read_plan(run)},
                                 sort_keys=False, allow_unicode=True))
    elif args.action == "diff":
        if len(runs) < 2:
            raise RunError("runs diff wants two runs or more")
        for name, values in config_diff(runs).items():
            print(f"{name}: " + "  |  ".join(map(str, values)))
    elif args.action == "rename":
        if len(runs) != 1 or not args.to:
            raise RunError("runs rename wants one run and --to NEW_NAME")
        print(Service(runs[0].parent).rename(runs[0], args.to))
    elif args.action == "rm":
        for run in runs:
            if not args.yes and input(f"delete {run} for good? [y/N] ").strip().lower() != "y":
                print(f"kept {run.name}")
                continue
            Service(run.parent).delete(run)
            print(f"deleted {run.name}")
    return 0


def cmd_eval(args) -> int:
    """The run's base and fine-tuned models side by side; the report goes to the run folder."""
    from studio.evaluate.evaluation import Judge, export_evalscope
    from studio.runs.store import RunError
    from studio.service.actions import Service

    run_dir = _run_folder(args.run)
    if bool(args.judge_url) != bool(args.judge_model):
        raise RunError("a judge wants both --judge-url and --judge-model")
    judge = Judge(args.judge_url, args.judge_model, os.environ.get("JUDGE_API_KEY")) \
        if args.judge_url else None
    with tqdm_progress() as progress:
        report = Service(run_dir.parent).evaluate(
            run_dir, data=args.data, n_prompts=args.n_prompts, max_new_tokens=args.max_new_tokens,
            tasks=args.tasks, judge=judge, progress=progress)
    print(report.summary())
    if args.export_evalscope:
        path = export_evalscope(run_dir, args.export_evalscope, data=args.data)
        print(f"evaluation set for EvalScope: {path}")
    return 0


def cmd_export(args) -> int:
    """The run as merged weights, a LoRA adapter, a GGUF or an Ollama model, with the commands
    that run it."""
    from studio.export import estimate
    from studio.service.actions import Service

    run_dir = _run_folder(args.run)
    size = estimate(run_dir, args.format, args.quant)
    if size is not None:
        print(f"exporting {run_dir.name} as {args.format}: about {size / 2**20:,.0f} MiB",
              file=sys.stderr)
    with tqdm_progress() as progress:
        result = Service(run_dir.parent).export(run_dir, args.format, args.out, args.quant,
                                                progress)
    print(f"exported to {result.folder} ({result.size / 2**20:,.1f} MiB in {result.seconds} s)")
    for tool, command in result.commands.items():
        print(f"  {tool}: {command}")
    return 0


class tqdm_progress:
    """progress(fraction, message) as a tqdm bar on stderr."""

    def __enter__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=100, unit="%", file=sys.stderr, dynamic_ncols=True)
        return self

    def __call__(self, fraction: float, message: str = "") -> None:
        self.bar.update(round(100 * fraction) - self.bar.n)
        self.bar.set_description(message[:60], refresh=True)

    def __exit__(self, *exc):
        self.bar.close()


def _num(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def cmd_stop(args) -> int:
    """Ask a run to stop (it saves an adapter at its next step) and wait until it has."""
    from studio.runs.store import RunError, read_status
    from studio.service.actions import Service

    run_dir = _run_folder(args.run)
    if not (status := read_status(run_dir)).active:
        raise RunError(f"{run_dir.name} is not training ({status.state})")
    Service(run_dir.parent).stop(run_dir, wait=True)
    status = read_status(run_dir)
    print(f"{status.state}: {status.reason}")
    return 0


def cmd_attach(args) -> int:
    """Follow a run started elsewhere (the page, another shell) until it ends."""
    import time

    from studio.service.actions import Service

    run_dir = _run_folder(args.run)
    job, cursor = Service(run_dir.parent).attach(run_dir), 0
    with ProgressBar() as bar:
        while True:
            status = job.status          # first: once it is final, every event is on disk
            events, cursor = job.events_since(cursor)
            for event in events:
                bar(event)
            if not status.active:
                break
            time.sleep(1)
    print(f"{status.state}: {status.reason}")
    return 0 if status.state != "failed" else 1


def _run_folder(arg: str) -> Path:
    from studio.runs.store import RunError, is_run_dir

    run_dir = Path(arg).expanduser().resolve()
    if not is_run_dir(run_dir):
        raise RunError(f"{arg} holds no run (no config.yaml in it)")
    return run_dir


def cmd_ui(args) -> int:
    from studio.ui.server import serve

    return serve(args)


def cmd_serve(args) -> int:
    from studio.serve.v1 import main as serve

    return serve(args)


def cmd_generate(args) -> int:
    from studio.inference import load_model, stream_reply

    loaded = load_model(args.run)
    for piece in stream_reply(loaded, [{"role": "user", "content": args.prompt}],
                              max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              enable_thinking=args.thinking):
        print(piece, end="", flush=True)
    print()
    return 0


def cmd_chat(args) -> int:
    from studio.inference import load_model, stream_reply

    loaded = load_model(args.run)
    print(f"chatting with {args.run} ({loaded.backend}); an empty line or Ctrl-D ends")
    history: list[dict] = []
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            break
        if not text:
            break
        history.append({"role": "user", "content": text})
        print("model> ", end="", flush=True)
        reply = ""
        for piece in stream_reply(loaded, history, max_new_tokens=args.max_new_tokens,
                                  temperature=args.temperature, enable_thinking=args.thinking):
            reply += piece
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": reply})
    return 0


def cmd_tiny_qwen3(args) -> int:
    from studio.models.local import build_tiny_qwen3

    print(build_tiny_qwen3(args.dir))
    return 0


def cmd_demo_model(args) -> int:
    from studio.models.catalog import DEMO_MODEL_ID
    from studio.models.local import build_demo_model, local_model_path

    print(build_demo_model(args.dir) if args.dir else local_model_path(DEMO_MODEL_ID))
    return 0


# ---------------------------------------------------------------------------- progress
def _print_event(event) -> None:
    data = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in event.data.items() if k != "traceback")
    print(f"[{event.kind}] step {event.step} {data}", flush=True)


class ProgressBar:
    """A tqdm bar over optimiser steps, showing loss and tokens/s; status lines above it. The
    bar appears with the first event, so a run refused before it starts prints only its error."""

    def __enter__(self):
        self.bar = None
        return self

    def __call__(self, event) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=None, unit="step", dynamic_ncols=True, file=sys.stderr)
        d = event.data
        if event.kind == "train":
            if d.get("max_steps") and self.bar.total != d["max_steps"]:
                self.bar.total = d["max_steps"]
            self.bar.update(event.step - self.bar.n)
            loss = d.get("loss")
            self.bar.set_postfix(loss=f"{loss:.4f}" if isinstance(loss, (int, float)) else loss,
                                 tok_s=f"{d.get('tokens_per_s') or 0:.0f}", refresh=False)
        elif event.kind == "eval":
            self.bar.write(f"step {event.step}: eval loss {d.get('eval_loss')}")
        elif event.kind in ("status", "log", "checkpoint"):
            self.bar.write(d.get("message") or f"checkpoint {d.get('path')}")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m studio", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fine-tune a model (LoRA / QLoRA)")
    train.add_argument("--config", help="YAML config file; flags override it")
    train.add_argument("--resume", action="store_true", help="continue the run in --output-dir "
                       "from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in "
                       "--output-dir")
    train.add_argument("--preset", type=_preset_name, metavar="NAME",
                       help="settings for a purpose, applied before the flags (and over a "
                       "--config file's): auto (picked from the dataset's size; what every "
                       "setting not given takes anyway), " + ", ".join(n.lower().replace(" ", "-")
                                                           for n in PRESETS))
    train.add_argument("--dry-run", "--dry_run", action="store_true",
                       help="print the plan the run would train with here (backend, batches, "
                       "loss, memory) and what would refuse it; train nothing")
    train.add_argument("--allow-over-memory", "--allow_over_memory", action="store_true",
                       help="start even if the memory estimate is more than is free (the "
                       "page's 'Start even if the estimate does not fit')")
    train.add_argument("--test-prompt", "--test_prompt", dest="test_prompt",
                       help="after training, answer this prompt with the trained model")
    add_config_flags(train)
    train.set_defaults(func=cmd_train)

    for name, func, what in (("generate", cmd_generate, "answer one prompt"),
                             ("chat", cmd_chat, "chat in the terminal")):
        p = sub.add_parser(name, help=f"{what} with a run (base + adapter) or a base model")
        p.add_argument("--run", "--model", dest="run", required=True,
                       help="run folder, adapter folder, model folder or Hub id")
        if name == "generate":
            p.add_argument("--prompt", required=True)
        p.add_argument("--max-new-tokens", "--max_new_tokens", type=int,
                       default=CHAT.max_new_tokens)
        p.add_argument("--temperature", type=float, default=CHAT.temperature)
        p.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=None,
                       help="Qwen3 thinking mode (default: as in training)")
        p.set_defaults(func=func)

    p = sub.add_parser("ui", help="serve the studio's page (the browser UI)")
    add_server_flags(p)
    p.set_defaults(func=cmd_ui)
    p = sub.add_parser("serve", help="serve runs as an OpenAI-compatible API (/v1)")
    add_serve_flags(p)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("runs", help="list, show, diff, rename or delete runs")
    p.add_argument("action", nargs="?", default="list",
                   choices=["list", "show", "diff", "rename", "rm"])
    p.add_argument("runs", nargs="*", help="run folders (show, diff, rename, rm)")
    p.add_argument("--runs-dir", "--runs_dir", default="runs", help="for list (default: runs)")
    p.add_argument("--to", help="rename: the new folder name")
    p.add_argument("--yes", "-y", action="store_true", help="rm: do not ask")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("eval", help="the base and the fine-tuned model side by side")
    p.add_argument("--run", required=True, help="the run's folder")
    p.add_argument("--data", help="a file to evaluate on (default: the run's validation split)")
    p.add_argument("--n-prompts", "--n_prompts", type=int, default=EVAL.n_prompts,
                   help=f"rows answered by both models and scored (default {EVAL.n_prompts})")
    p.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=EVAL.max_new_tokens)
    p.add_argument("--tasks", nargs="+", default=[], metavar="TASK",
                   help="lm-eval tasks: names, YAML files, or local JSONL files "
                        "(pip install 'qwen3-studio[eval]')")
    p.add_argument("--judge-url", help="an OpenAI-compatible endpoint whose model scores the "
                   "answers 1-10 (its key from JUDGE_API_KEY)")
    p.add_argument("--judge-model", help="the judge's model name at that endpoint")
    p.add_argument("--export-evalscope", metavar="PATH",
                   help="also write the evaluation set as EvalScope general QA JSONL")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("export", help="take a run out: merged weights, LoRA, GGUF, Ollama")
    p.add_argument("--run", required=True, help="the run's folder")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", help="a new folder (default: the run's exports/FORMAT)")
    p.add_argument("--quant", choices=QUANTS,
                   help=f"GGUF quantisation (default {DEFAULT_QUANT}; q4_k_m needs "
                        "llama-cpp-python)")
    p.set_defaults(func=cmd_export)
    for name, func, what in (("stop", cmd_stop, "ask a training run to stop, and wait"),
                             ("attach", cmd_attach, "follow a run started elsewhere")):
        p = sub.add_parser(name, help=what)
        p.add_argument("run", help="the run's folder")
        p.set_defaults(func=func)

    p = sub.add_parser("tiny-qwen3", help="build a few-MB random Qwen3 with the real tokenizer")
    p.add_argument("dir")
    p.set_defaults(func=cmd_tiny_qwen3)
    p = sub.add_parser("demo-model", help="save SmolLM2-135M-Instruct (bundled) as safetensors")
    p.add_argument("dir", nargs="?")
    p.set_defaults(func=cmd_demo_model)
    p = sub.add_parser("run-job", help="(internal) the training process the page starts")
    p.add_argument("run_dir")
    p.add_argument("--resume", action="store_true")
    p.set_defaults(func=cmd_run_job)
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _note(message, category, *args, **kwargs) -> None:
    print(f"note: {message}", file=sys.stderr)


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already tells the user what to fix: one line, no traceback."""
    from backends import BackendError
    from studio.api import TrainingError
    from studio.data import DataError
    from studio.models.local import ModelError
    from studio.runs.store import RunError
    from studio.evaluate.evaluation import EvalError
    from studio.export import ExportError
    from studio.service.actions import Refused

    return (ConfigError, DataError, RunError, BackendError, ModelError, TrainingError, Refused,
            EvalError, ExportError, FileNotFoundError, OSError)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _note
    warnings.simplefilter("ignore")
    warnings.simplefilter("always", Note)   # ours: resolved ids, task_type
    _quiet_libraries()
    try:
        return args.func(args)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
