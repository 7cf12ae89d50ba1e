"""A run taken out of the studio in the form another tool reads.

- merged: the adapter merged into the base's 16-bit weights (safetensors), with the tokenizer
  and the chat template the run trained with: transformers, vLLM, and the source of the rest;
- lora: the PEFT adapter alone (plus a GGUF LoRA for llama.cpp's --lora), for vLLM's
  --enable-lora or any peft user;
- gguf: one llama.cpp file (f16, q8_0, or q4_k_m where llama-cpp-python is installed);
- ollama: the GGUF and a Modelfile whose template renders the prompt exactly as in training.

Every export is written into a hidden folder beside its destination and renamed into place only
when complete, so a failure never leaves a folder that looks done; `export.json` in it says what
it holds, and EXPORT.md how to run it (the vLLM, llama.cpp and Ollama commands).
"""
from __future__ import annotations

import importlib.util
import json
import math
import re
import shlex
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from backends import CHAT, BackendError
from studio.config import FineTuningConfig
from studio.inference import PromptFormat, resolve_source
from studio.markdown import code, fenced
from studio.runs.store import is_run_dir, read_plan
from studio.texts.message import Text, message_of

FORMATS = ("merged", "lora", "gguf", "ollama")
QUANTS = ("f16", "q8_0", "q4_k_m")
# f16 holds merged 16-bit weights exactly; q8_0 halves the size but, in llama.cpp, moved the
# 135M demo model's answers (a larger model loses less), so it is asked for, not assumed
DEFAULT_QUANT = "f16"

Progress = Callable[[float, str], None]


class ExportError(ValueError):
    """An export that cannot be made; the message says why and what to do."""


@dataclass
class ExportResult:
    """What an export wrote and how to use it."""
    folder: str
    format: str
    quant: Optional[str]
    run: str
    files: dict = field(default_factory=dict)       # name -> bytes
    commands: dict = field(default_factory=dict)    # tool -> shell command
    seconds: float = 0.0

    @property
    def size(self) -> int:
        return sum(self.files.values())


def check(run_dir, fmt: str, quant: Optional[str] = None) -> tuple[FineTuningConfig, Path]:
    """(config, adapter folder) of a run that can be exported as asked; ExportError naming the
    fix otherwise."""
    if fmt not in FORMATS:
        raise ExportError(Text("refuse.export.format", fmt=fmt, choices=", ".join(FORMATS)))
    if quant is not None and quant not in QUANTS:
        raise ExportError(Text("refuse.export.quant", quant=quant, choices=", ".join(QUANTS)))
    if quant == "q4_k_m" and fmt in ("gguf", "ollama") and \
            importlib.util.find_spec("llama_cpp") is None:
        raise ExportError(Text("refuse.export.q4_k_m"))
    try:
        config, adapter = resolve_source(Path(run_dir))
    except FileNotFoundError as e:
        raise ExportError(message_of(e)) from None
    if adapter is None or not is_run_dir(run_dir):
        raise ExportError(Text("refuse.export.no_adapter", run=run_dir))
    config = config.resolve()
    if "scripted" in (config.backend, read_plan(Path(run_dir)).get("backend")):
        raise ExportError(Text("refuse.export.scripted"))
    return config, adapter


def estimate(run_dir, fmt: str, quant: Optional[str] = None) -> Optional[int]:
    """The bytes the export will take, from the base model's tensor shapes (no weights are
    loaded); None where the base is not on this machine."""
    from studio.export.gguf import gguf_size
    from studio.models.local import local_model_path

    config, adapter = check(run_dir, fmt, quant)
    if fmt == "lora":                           # the adapter and its GGUF copy
        return _folder_size(adapter) + sum(p.stat().st_size for p in
                                           Path(adapter).glob("adapter*.safetensors"))
    base = Path(local_model_path(config.model_name))
    if not (base / "config.json").is_file():
        return None
    if fmt == "merged":
        return _merged_size(base)
    return gguf_size(base, quant or DEFAULT_QUANT)


def export_run(run_dir, fmt: str, out, quant: Optional[str] = None,
               progress: Progress = lambda done, what: None) -> ExportResult:
    """Export the run into the folder `out` (which must not exist yet)."""
    started = time.time()
    run_dir, out = Path(run_dir), Path(out)
    quant = (quant or DEFAULT_QUANT) if fmt in ("gguf", "ollama") else None
    config, adapter = check(run_dir, fmt, quant)
    if out.exists():
        raise ExportError(Text("refuse.export.exists", out=out))
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)      # left by an export that was killed
    partial.mkdir(parents=True)
    try:
        result = ExportResult(str(out), fmt, quant, str(run_dir))
        try:
            _WRITERS[fmt](config, adapter, partial, quant, progress, result)
        except (ValueError, BackendError) as e:   # the GGUF writer's and the template's refusals
            raise ExportError(message_of(e)) from e
        result.commands = _commands(config, adapter, out, fmt, result)
        result.files = {p.relative_to(partial).as_posix(): p.stat().st_size
                        for p in sorted(partial.rglob("*")) if p.is_file()}
        result.seconds = round(time.time() - started, 1)
        (partial / "EXPORT.md").write_text(_readme(result, config), encoding="utf-8")
        (partial / "export.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    progress(1.0, Text("progress.export.done", folder=str(out)))
    return result


# ---------------------------------------------------------------------------- the formats
def _merged(config, adapter, folder: Path, quant, progress: Progress, result) -> None:
    from transformers import AutoTokenizer

    from backends import get_backend
    from studio.export import chat_template

    progress(0.05, Text("progress.export.merging", model=config.model_name))
    # an MLX adapter merges on MLX; a PEFT one (transformers or Unsloth) with plain peft
    mlx = (Path(adapter) / "adapters.safetensors").is_file()
    get_backend("mlx" if mlx else "transformers").merge(adapter, folder, config)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    fmt = PromptFormat.of(config)
    tokenizer.chat_template = chat_template.trained_chat_template(tokenizer, fmt)
    tokenizer.save_pretrained(folder)
    progress(0.5, Text("progress.export.merged"))


def _lora(config, adapter, folder: Path, quant, progress: Progress, result) -> None:
    from transformers import AutoTokenizer

    from studio.export import chat_template
    from studio.export.gguf import write_lora_gguf

    progress(0.1, Text("progress.export.copying"))
    for path in Path(adapter).iterdir():
        if path.is_file():
            shutil.copy2(path, folder / path.name)
    tokenizer = AutoTokenizer.from_pretrained(folder if (folder / "tokenizer_config.json")
                                              .is_file() else _base_path(config))
    (folder / "chat_template.jinja").write_text(
        chat_template.trained_chat_template(tokenizer, PromptFormat.of(config)), encoding="utf-8")
    if not (folder / "adapters.safetensors").is_file():   # an MLX adapter is not PEFT's
        progress(0.5, Text("progress.export.gguf_lora"))
        write_lora_gguf(folder, folder / f"{_slug(result.run)}-lora.gguf")


def _gguf(config, adapter, folder: Path, quant, progress: Progress, result) -> None:
    from studio.export.gguf import write_gguf

    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".merge-") as merged:
        _merged(config, adapter, Path(merged), None, lambda d, w: progress(d * 0.5, w), result)
        write_gguf(merged, folder / f"{_slug(result.run)}-{quant}.gguf", quant,
                   progress=lambda d, w: progress(0.5 + 0.45 * d, w))


def _ollama(config, adapter, folder: Path, quant, progress: Progress, result) -> None:
    from transformers import AutoTokenizer

    _gguf(config, adapter, folder, quant, progress, result)
    fmt = PromptFormat.of(config)
    tokenizer = AutoTokenizer.from_pretrained(_base_path(config) if not (
        Path(adapter) / "tokenizer_config.json").is_file() else adapter)
    gguf = f"{_slug(result.run)}-{quant}.gguf"
    (folder / "Modelfile").write_text(modelfile(tokenizer, fmt, gguf, result.run),
                                      encoding="utf-8")


_WRITERS = {"merged": _merged, "lora": _lora, "gguf": _gguf, "ollama": _ollama}


def modelfile(tokenizer, fmt: PromptFormat, gguf_name: str, run: str) -> str:
    """An Ollama Modelfile for the GGUF beside it: the run's prompt format, its stop words, and
    the studio chat's sampling defaults."""
    from studio.export import chat_template

    stops = "".join(f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}\n"
                    for s in chat_template.stop_words(tokenizer, fmt))
    return (f"# {Path(run).name}, exported by Qwen3 Studio: ollama create NAME -f Modelfile\n"
            f"FROM ./{gguf_name}\n"
            f'TEMPLATE """{chat_template.ollama_template(tokenizer, fmt)}"""\n'
            f"{stops}PARAMETER temperature {CHAT.temperature}\nPARAMETER top_p {CHAT.top_p}\n")


# ---------------------------------------------------------------------------- how to run it
def _commands(config, adapter, out: Path, fmt: str, result: ExportResult) -> dict:
    """tool -> the command that runs the export, each path quoted for the shell."""
    name, q = _slug(result.run), shlex.quote
    if fmt == "merged":
        return {"vllm": f"vllm serve {q(str(out))} --served-model-name {name}",
                "transformers": f"AutoModelForCausalLM.from_pretrained({str(out)!r})"}
    if fmt == "lora":
        commands = {"vllm": (f"vllm serve {q(_base_path(config))} --enable-lora --lora-modules "
                             f"{q(f'{name}={out}')} --max-lora-rank {max(16, config.lora_r)} "
                             f"--chat-template {q(str(out / 'chat_template.jinja'))}")}
        if not (Path(adapter) / "adapters.safetensors").is_file():
            # BASE.gguf: the base model as a GGUF (this run's gguf export is merged already)
            commands["llama.cpp"] = (f"llama-server -m BASE.gguf --lora "
                                     f"{q(str(out / (name + '-lora.gguf')))} --jinja")
        return commands
    gguf = out / f"{name}-{result.quant}.gguf"
    commands = {"llama.cpp": f"llama-server -m {q(str(gguf))} --jinja"}
    if fmt == "ollama":
        commands["ollama"] = (f"ollama create {name} -f {q(str(out / 'Modelfile'))} && "
                              f"ollama run {name}")
    return commands


def _readme(result: ExportResult, config) -> str:
    """EXPORT.md: the run's and the model's names in code spans, so no character of a folder's
    name is read as Markdown or HTML where the file is shown."""
    lines = [f"# {code(Path(result.run).name)}: {result.format}"
             + (f" ({result.quant})" if result.quant else ""), "",
             f"Base model: {code(config.model_name)}. Exported by Qwen3 Studio from "
             f"{code(result.run)} in {result.seconds} s.", "", "## Run it", ""]
    for tool, command in result.commands.items():
        lines += [f"{tool}:", "", fenced(command, "python" if tool == "transformers" else "bash"),
                  ""]
    lines += ["## Files", ""] + [f"- {code(name)}: {size:,} bytes" for name, size in
                                 result.files.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- helpers
def _slug(run: str) -> str:
    """A name Ollama and file systems accept, from the run folder's name."""
    return re.sub(r"[^a-z0-9._-]+", "-", Path(run).name.lower()).strip("-._") or "model"


def _base_path(config) -> str:
    from studio.models.local import local_model_path

    return local_model_path(config.model_name)


def _merged_size(base: Path) -> int:
    """16-bit weights (tensor shapes read from the safetensors headers) plus the tokenizer."""
    from safetensors import safe_open

    numel = 0
    for path in base.glob("*.safetensors"):
        with safe_open(path, "np") as f:
            for name in f.keys():
                numel += math.prod(f.get_slice(name).get_shape())
    tokenizer = sum(p.stat().st_size for p in base.glob("*") if p.is_file() and
                    (p.name.startswith(("tokenizer", "vocab", "merges", "special_tokens"))
                     or p.suffix == ".jinja"))
    return 2 * numel + tokenizer


def _folder_size(folder) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
