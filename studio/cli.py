"""The command line: everything the UI does, on the same engine.

    python -m studio train --data data.jsonl --model Qwen/Qwen3-0.6B --output-dir runs/a
    python -m studio generate --run runs/a --prompt "Hello"
    python -m studio chat --run runs/a
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

from studio.config import GROUPS, ConfigError, FineTuningConfig, field_kind, flag_names
from studio.errors import Note, user_errors


# ---------------------------------------------------------------------------- flags from fields
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
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=meta["help"])
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


def config_from_args(args: argparse.Namespace) -> FineTuningConfig:
    values = {}
    if getattr(args, "config", None):
        values = FineTuningConfig.load(args.config).to_dict()
    for f in dataclasses.fields(FineTuningConfig):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            values[f.name] = _key_values(value) if field_kind(f.name) == "dict" else value
    return FineTuningConfig.from_dict(values)


# ---------------------------------------------------------------------------- commands
def cmd_train(args) -> int:
    from studio.inference import generate_text, load_model_and_tokenizer
    from studio.runs import execute, prepare_run_dir

    config = config_from_args(args)
    if not config.data_path:
        raise ConfigError("no dataset: give --data PATH (or data_path in --config)")
    from studio.hardware import detect_hardware

    problems = config.validate(detect_hardware())
    if problems:
        raise ConfigError("; ".join(problems))
    run_dir = prepare_run_dir(Path(config.output_dir), config, resume=args.resume,
                              overwrite=args.overwrite)
    with ProgressBar() as bar:
        status = execute(run_dir, resume=args.resume, listeners=[bar])
    if status["state"] == "failed":
        print(f"error: {status['reason']}", file=sys.stderr)
        return 1
    print(f"{status['state']}: {status['reason']}")
    print(f"adapter: {run_dir / 'adapter'}")
    if args.test_prompt:
        model, tokenizer = load_model_and_tokenizer(run_dir)
        print(generate_text(model, tokenizer, args.test_prompt, max_new_tokens=128))
    return 0


def cmd_run_job(args) -> int:
    """The training process the UI starts: output goes to the run's log.txt."""
    from studio.runs import execute

    status = execute(Path(args.run_dir), resume=args.resume, listeners=[_print_event])
    return 0 if status["state"] != "failed" else 1


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
    from studio.models import build_tiny_qwen3

    print(build_tiny_qwen3(args.dir))
    return 0


def cmd_demo_model(args) -> int:
    from studio.catalog import DEMO_MODEL_ID
    from studio.models import build_demo_model, local_model_path

    print(build_demo_model(args.dir) if args.dir else local_model_path(DEMO_MODEL_ID))
    return 0


# ---------------------------------------------------------------------------- progress
def _print_event(event) -> None:
    data = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in event.data.items() if k != "traceback")
    print(f"[{event.kind}] step {event.step} {data}", flush=True)


class ProgressBar:
    """A tqdm bar over optimiser steps, showing loss and tokens/s; status lines above it."""

    def __enter__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=None, unit="step", dynamic_ncols=True, file=sys.stderr)
        return self

    def __call__(self, event) -> None:
        d = event.data
        if event.kind == "train":
            if d.get("max_steps") and self.bar.total != d["max_steps"]:
                self.bar.total = d["max_steps"]
            self.bar.update(event.step - self.bar.n)
            self.bar.set_postfix(loss=f"{d['loss']:.4f}", tok_s=f"{d.get('tokens_per_s', 0):.0f}",
                                 refresh=False)
        elif event.kind == "eval":
            self.bar.write(f"step {event.step}: eval loss {d['eval_loss']:.4f}")
        elif event.kind in ("status", "checkpoint"):
            self.bar.write(d.get("message") or f"checkpoint {d.get('path')}")

    def __exit__(self, *exc):
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
        p.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=256)
        p.add_argument("--temperature", type=float, default=0.7)
        p.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=None,
                       help="Qwen3 thinking mode (default: as in training)")
        p.set_defaults(func=func)

    p = sub.add_parser("tiny-qwen3", help="build a few-MB random Qwen3 with the real tokenizer")
    p.add_argument("dir")
    p.set_defaults(func=cmd_tiny_qwen3)
    p = sub.add_parser("demo-model", help="save SmolLM2-135M-Instruct (bundled) as safetensors")
    p.add_argument("dir", nargs="?")
    p.set_defaults(func=cmd_demo_model)
    p = sub.add_parser("run-job", help=argparse.SUPPRESS)
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
