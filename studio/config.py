"""The one run configuration: from the form or the command line, to the backend and to disk.

Every field carries its help, group and bounds in `metadata`, so the CLI flags, the UI widgets
and the YAML file are all generated from this one list. A field left at `None` means "decide
from the hardware found"; `resolve()` makes those decisions and `validate()` refuses what the
hardware cannot honour, each with a message that names the fix.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import typing
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import yaml

from studio.models.catalog import resolve_model_id
from studio.models.shapes import LINEAR_LAYERS
from studio.errors import Note
from studio.texts.message import Text


def _f(default, group: str, *, choices=None, min=None, max=None, factory=None, suggestions=None):
    """A config field with its UI group and bounds (and, for a list, the values to offer); its
    help, in both languages, is in studio/texts/fields.py."""
    meta = {"group": group, "choices": choices, "min": min, "max": max,
            "suggestions": suggestions}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


GROUPS = ("Model and data", "Method", "LoRA", "Optimisation", "Precision and quantisation",
          "Several GPUs", "Logging and checkpoints", "Tracking")
METHODS = ["sft", "dpo"]
DISTRIBUTED = ["auto", "ddp", "fsdp", "deepspeed"]
LORA_DROPOUT = 0.05     # lora_dropout left to auto, where the backend allows dropout at all


@dataclass
class FineTuningConfig:
    # ---- model and data
    model_name: str = _f("Qwen/Qwen3-4B-Instruct-2507", "Model and data")
    output_dir: str = _f("./qwen3-finetuned", "Model and data")
    data_path: Optional[str] = _f(None, "Model and data")
    dataset_format: str = _f("auto", "Model and data",
                             choices=["auto", "instruction", "prompt_completion", "input_output",
                                      "alpaca", "sharegpt", "messages", "text", "segments",
                                      "preference"])
    column_mapping: dict = _f(None, "Model and data", factory=dict)
    role_mapping: dict = _f(None, "Model and data", factory=dict)
    prompt_template: Optional[str] = _f(None, "Model and data")
    system_prompt: Optional[str] = _f(None, "Model and data")
    template_system_prompt: str = _f("keep", "Model and data", choices=["keep", "drop"])
    enable_thinking: bool = _f(False, "Model and data")
    train_on_prompt: bool = _f(False, "Model and data")
    max_seq_length: int = _f(2048, "Model and data", min=16, max=131072)
    val_size: float = _f(0.1, "Model and data", min=0.0)
    backend: str = _f("auto", "Model and data",
                      choices=["auto", "transformers", "unsloth", "mlx", "scripted"])

    # ---- what is taught: answers (sft) or which of two answers is better (dpo)
    method: str = _f("sft", "Method", choices=METHODS)
    beta: float = _f(0.1, "Method", min=0.0, max=10.0)
    loss_type: str = _f("sigmoid", "Method", choices=["sigmoid", "ipo", "hinge", "robust"])

    # ---- LoRA
    lora_r: int = _f(8, "LoRA", min=1, max=1024)
    lora_alpha: int = _f(16, "LoRA", min=1)
    target_modules: list = _f(None, "LoRA", factory=lambda: ["q_proj", "v_proj"],
                              suggestions=LINEAR_LAYERS)
    lora_dropout: Optional[float] = _f(None, "LoRA", min=0.0, max=0.9)
    bias: str = _f("none", "LoRA", choices=["none", "all", "lora_only"])
    task_type: str = _f("CAUSAL_LM", "LoRA", choices=["CAUSAL_LM", "SEQ_2_SEQ_LM"])
    lora_layers: int = _f(-1, "LoRA", min=-1)

    # ---- optimisation
    learning_rate: float = _f(2e-4, "Optimisation", min=0.0, max=1.0)
    batch_size: int = _f(4, "Optimisation", min=1, max=4096)
    gradient_accumulation_steps: int = _f(4, "Optimisation", min=1, max=1024)
    num_train_epochs: float = _f(3, "Optimisation", min=0.0)
    max_steps: Optional[int] = _f(None, "Optimisation", min=1)
    warmup_ratio: float = _f(0.03, "Optimisation", min=0.0, max=1.0)
    lr_scheduler_type: str = _f("linear", "Optimisation",
                                choices=["linear", "cosine", "constant", "constant_with_warmup"])
    weight_decay: float = _f(0.0, "Optimisation", min=0.0, max=1.0)
    max_grad_norm: float = _f(1.0, "Optimisation", min=0.0)
    packing: Optional[bool] = _f(None, "Optimisation")
    tokens_per_batch: Optional[int] = _f(None, "Optimisation", min=16)
    gradient_checkpointing: Optional[bool] = _f(None, "Optimisation")
    compile_layers: Optional[bool] = _f(None, "Optimisation")
    layer_graphs: Optional[bool] = _f(None, "Optimisation")
    whole_logits: Optional[bool] = _f(None, "Optimisation")
    fused_loss: Optional[bool] = _f(None, "Optimisation")
    seed: int = _f(42, "Optimisation")

    # ---- precision and quantisation
    fp16: Optional[bool] = _f(None, "Precision and quantisation")
    bf16: Optional[bool] = _f(None, "Precision and quantisation")
    load_in_4bit: Optional[bool] = _f(None, "Precision and quantisation")
    load_in_8bit: bool = _f(False, "Precision and quantisation")
    fp8_weights: bool = _f(False, "Precision and quantisation")
    cpu_only: Optional[bool] = _f(None, "Precision and quantisation")
    device_map: str = _f("auto", "Precision and quantisation")

    # ---- several GPUs and machines (torch.distributed, launched by torchrun)
    num_gpus: Optional[int] = _f(None, "Several GPUs", min=1, max=64)
    distributed: str = _f("auto", "Several GPUs", choices=DISTRIBUTED)
    nnodes: int = _f(1, "Several GPUs", min=1, max=1024)
    node_rank: int = _f(0, "Several GPUs", min=0)
    master_addr: str = _f("127.0.0.1", "Several GPUs")
    master_port: int = _f(29500, "Several GPUs", min=1024, max=65535)

    # ---- logging and checkpoints
    logging_steps: int = _f(10, "Logging and checkpoints", min=1)
    eval_steps: int = _f(100, "Logging and checkpoints", min=1)
    save_steps: int = _f(100, "Logging and checkpoints", min=1)
    save_total_limit: int = _f(3, "Logging and checkpoints", min=1)
    num_samples: int = _f(3, "Logging and checkpoints", min=0, max=20)
    sample_prompts: list = _f(None, "Logging and checkpoints", factory=list)

    # ---- tracking (metrics.jsonl is always written)
    report_to: list = _f(None, "Tracking", factory=list,
                         suggestions=["wandb", "tensorboard", "trackio"])
    use_wandb: bool = _f(False, "Tracking")
    wandb_project: str = _f("qwen3-finetuning", "Tracking")
    wandb_run_name: Optional[str] = _f(None, "Tracking")

    # ------------------------------------------------------------------ construction
    def __post_init__(self):
        problems = []
        for f in fields(self):
            value, problem = _typed(f.name, getattr(self, f.name))
            if problem:
                problems.append(problem)
            else:
                setattr(self, f.name, value)
        if problems:   # before anything else reads a field: a wrong type fails here, named
            raise ConfigError(problems[0] if len(problems) == 1 else "; ".join(problems))
        if self.task_type == "SEQ_2_SEQ_LM":
            warnings.warn(Text("config.note.seq2seq"), Note, stacklevel=3)
            self.task_type = "CAUSAL_LM"
        resolved, note = resolve_model_id(self.model_name)
        if note:
            warnings.warn(note, Note, stacklevel=3)
            self.model_name = resolved
        if isinstance(self.target_modules, str):
            self.target_modules = self.target_modules.replace(",", " ").split()

    @classmethod
    def from_dict(cls, values: dict) -> "FineTuningConfig":
        """Build from a dict, refusing unknown keys by name (a typo must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(Text("config.unknown_fields", names=", ".join(unknown)))
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> "FineTuningConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(Text("config.file_missing", path=path))
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(Text("config.not_utf8", path=path, byte=e.object[e.start],
                                   offset=e.start)) from None
        return cls.from_yaml(text, str(path))

    @classmethod
    def from_yaml(cls, text: str, where: str = Text("config.where")) -> "FineTuningConfig":
        """A config from YAML text (a file's, or one sent to the page's API); every way it can
        be wrong is a ConfigError naming `where`."""
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(Text("config.yaml_invalid", where=where, error=str(e))) from None
        except RecursionError:
            raise ConfigError(Text("config.yaml_deep", where=where)) from None
        if not isinstance(values, dict):
            raise ConfigError(Text("config.yaml_not_mapping", where=where))
        try:
            return cls.from_dict(values)
        except ConfigError as e:      # its own message kept, a Text said again in Chinese
            problem = e.args[0] if len(e.args) == 1 else str(e)
            raise ConfigError(Text("config.in", where=where, problem=problem)) from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml(), encoding="utf-8")
        return path

    def replace(self, **changes) -> "FineTuningConfig":
        new = dataclasses.replace(self, **changes)
        new.__dict__["given"] = self.given | changes.keys()
        return new

    # ------------------------------------------------------------------ hardware
    def resolve(self, hw=None) -> "FineTuningConfig":
        """Fill every auto (None) field from the hardware found; explicit values are kept."""
        from studio.plan.hardware import detect_hardware

        hw = hw or detect_hardware()
        cpu_only = self.cpu_only if self.cpu_only is not None else not hw.has_cuda
        on_gpu = hw.has_cuda and not cpu_only
        native_bf16 = hw.bf16_supported if on_gpu else hw.cpu_bf16
        bf16 = self.bf16 if self.bf16 is not None else (native_bf16 and not self.fp16)
        fp16 = self.fp16 if self.fp16 is not None else (on_gpu and not bf16)
        load_in_4bit = self.load_in_4bit
        if load_in_4bit is None:
            load_in_4bit = (on_gpu and not self.load_in_8bit and not self.fp8_weights
                            and _weights_would_not_fit(self, hw))
        packing = bool(self.packing)
        compile_layers = self.compile_layers
        if compile_layers is None and self.fp8_weights and on_gpu:
            compile_layers = True   # fp8's scaling of each matmul's rows fuses into the layers
        checkpointing = self.gradient_checkpointing
        if checkpointing is None and not on_gpu:
            checkpointing = False     # on a GPU the memory planner decides at start
        dropout = self.lora_dropout
        if dropout is None:
            unsloth = self.backend == "unsloth" or (self.backend == "auto" and on_gpu
                                                    and hw.packages.get("unsloth"))
            dropout = 0.0 if unsloth else LORA_DROPOUT
        num_gpus = self.num_gpus or (len(hw.gpus) if on_gpu else 1)
        distributed = self.distributed
        if distributed == "auto":     # a copy a GPU when the run fits one, else sharded
            distributed = "fsdp" if on_gpu and num_gpus * self.nnodes > 1 and \
                not _fits_one_gpu(self.replace(bf16=bf16, fp16=fp16, cpu_only=False,
                                               load_in_4bit=False, packing=packing), hw) \
                else "ddp"
        if distributed == "fsdp" and self.load_in_4bit is None:
            load_in_4bit = False      # sharding replaces 4-bit loading (QLoRA + FSDP is refused)
        return self.replace(cpu_only=cpu_only, bf16=bf16, fp16=fp16, load_in_4bit=load_in_4bit,
                            packing=packing, compile_layers=compile_layers,
                            gradient_checkpointing=checkpointing,
                            lora_dropout=dropout, num_gpus=num_gpus, distributed=distributed)

    @property
    def world_size(self) -> int:
        """Training processes in all (num_gpus auto counts as 1 until resolved)."""
        return (self.num_gpus or 1) * self.nnodes

    def transformers_only(self) -> tuple:
        """The settings asked for here that only the transformers backend honours."""
        return tuple(name for name in ("compile_layers", "layer_graphs", "whole_logits",
                                       "fp8_weights") if getattr(self, name)) + \
            (("method",) if self.method != "sft" else ())

    def validate(self, hw=None) -> list[str]:
        """Every problem that would stop this run, each saying how to fix it. Empty: it can run."""
        from studio.plan.hardware import detect_hardware

        hw = hw or detect_hardware()
        problems = [p for f in fields(self) if (p := _check_bounds(f, getattr(self, f.name)))]
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            problems.append(Text("config.lora_alpha"))
        if not self.target_modules:
            problems.append(Text("config.target_modules_empty"))
        if self.load_in_4bit and self.load_in_8bit:
            problems.append(Text("config.4bit_and_8bit"))
        if self.fp16 and self.bf16:
            problems.append(Text("config.fp16_and_bf16"))
        gpu_wanted = self.cpu_only is False or self.device_map.startswith("cuda")
        if gpu_wanted and not hw.has_cuda:
            problems.append(Text("config.no_cuda"))
        on_gpu = hw.has_cuda and not self.cpu_only
        if self.cpu_only and self.device_map.startswith("cuda"):
            problems.append(Text("config.cpu_only_device_map", device_map=self.device_map))
        if self.fp16 and not on_gpu:
            problems.append(Text("config.fp16_cpu"))
        if self.bf16 and on_gpu and not hw.bf16_supported:
            problems.append(Text("config.bf16_gpu"))
        if self.bf16 and not on_gpu and not hw.cpu_bf16:
            problems.append(Text("config.bf16_cpu"))
        if (self.load_in_4bit or self.load_in_8bit) and not hw.bitsandbytes:
            problems.append(Text("config.bitsandbytes"))
        if self.backend == "unsloth" and not on_gpu:
            problems.append(Text("config.unsloth_cpu"))
        for name in self.transformers_only() if self.backend in ("unsloth", "mlx") else ():
            problems.append(Text("config.method_backend", method=self.method,
                                 backend=self.backend) if name == "method" else
                            Text("config.transformers_only", name=name, backend=self.backend))
        unsloth_trains = self.backend == "unsloth" or (
            self.backend == "auto" and hw.packages.get("unsloth") and not self.transformers_only())
        if self.fused_loss and not (on_gpu and (unsloth_trains
                                                or hw.packages.get("cut_cross_entropy"))):
            problems.append(Text("config.fused_loss.gpu") if on_gpu else
                            Text("config.fused_loss.cpu"))
        if self.fused_loss and self.world_size > 1:
            problems.append(Text("config.fused_loss.gpus"))
        if self.fused_loss and self.whole_logits:
            problems.append(Text("config.fused_loss.whole_logits"))
        if self.fused_loss and self.backend == "mlx":
            problems.append(Text("config.fused_loss.mlx"))
        if self.layer_graphs and not self.compile_layers:
            problems.append(Text("config.layer_graphs.compile"))
        if self.layer_graphs and self.gradient_checkpointing:
            problems.append(Text("config.layer_graphs.checkpointing"))
        if self.layer_graphs and (not on_gpu or self.world_size > 1):
            problems.append(Text("config.layer_graphs.one_gpu"))
        problems += self._fp8_problems(hw, on_gpu)
        if self.backend == "mlx" and (self.load_in_8bit or self.load_in_4bit):
            problems.append(Text("config.mlx_quantised"))
        problems += self._distributed_problems(hw, on_gpu)
        if self.prompt_template and "{" not in self.prompt_template:
            problems.append(Text("config.prompt_template"))
        for tracker in self.report_to + (["wandb"] if self.use_wandb else []):
            if tracker not in ("wandb", "tensorboard", "trackio"):
                problems.append(Text("config.tracker.unknown", tracker=tracker))
            elif not hw.packages.get(tracker):
                problems.append(Text("config.tracker.missing", tracker=tracker))
        return problems


    def _fp8_problems(self, hw, on_gpu: bool) -> list[str]:
        if not self.fp8_weights:
            return []
        problems = []
        if self.load_in_4bit or self.load_in_8bit:
            problems.append(Text("config.fp8.quantised"))
        if not on_gpu or any(gpu.capability < (8, 9) for gpu in hw.gpus):
            problems.append(Text("config.fp8.capability", gpu=hw.gpus[0].name) if on_gpu
                            else Text("config.fp8.capability.cpu"))
        if self.world_size > 1:
            problems.append(Text("config.fp8.gpus"))
        return problems

    def _distributed_problems(self, hw, on_gpu: bool) -> list[str]:
        if self.node_rank >= self.nnodes:
            return [Text("config.node_rank", rank=self.node_rank, nnodes=self.nnodes)]
        if on_gpu and self.num_gpus and self.num_gpus > len(hw.gpus):
            return [Text("config.num_gpus", asked=self.num_gpus, have=len(hw.gpus))]
        resolved = self.num_gpus or (len(hw.gpus) if on_gpu else 1)
        if resolved * self.nnodes == 1:
            return []
        if self.backend in ("mlx", "scripted"):
            return [Text("config.one_process", backend=self.backend)]
        problems = []
        if self.distributed == "fsdp" and (self.load_in_4bit or self.load_in_8bit):
            problems.append(Text("config.qlora_fsdp"))
        if self.distributed in ("fsdp", "deepspeed") and not on_gpu:
            problems.append(Text("config.distributed_cpu", distributed=self.distributed))
        if self.distributed == "deepspeed" and not hw.packages.get("deepspeed"):
            problems.append(Text("config.deepspeed"))
        return problems


def _remembering_given(init):
    """FineTuningConfig's __init__, which also keeps the names of the fields its caller gave
    (`config.given`): a field nobody set takes the Auto preset's value where a run starts
    (studio.plan.presets.fill_unset), one its maker set keeps it, even where it equals the default.
    `replace` adds the fields it changes; a config read from a file gave every field it holds."""
    names = [f.name for f in fields(FineTuningConfig)]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        self.__dict__["given"] = frozenset(names[:len(args)]).union(kwargs)
        init(self, *args, **kwargs)
    return __init__


FineTuningConfig.__init__ = _remembering_given(FineTuningConfig.__init__)


# ---------------------------------------------------------------------------- how a field is spelled
# The guide's spellings that are not just the field name with dashes or underscores.
FLAG_ALIASES = {"model_name": ["--model"], "data_path": ["--data"]}
_KINDS = {int: "int", float: "float", str: "text", list: "list", dict: "dict"}


def field_kind(name: str) -> str:
    """What a field holds, for the CLI flag that parses it and the widget that draws it: bool,
    tristate (Optional[bool]: auto, on or off), choice, int, float, text, list or dict."""
    hint = _hints()[name]
    args = typing.get_args(hint)
    base = next((a for a in args if a is not type(None)), hint)
    if base is bool:
        return "tristate" if type(None) in args else "bool"
    if FineTuningConfig.__dataclass_fields__[name].metadata.get("choices"):
        return "choice"
    return _KINDS[base]


def zero_means_automatic(name: str) -> bool:
    """A number that may be left to the studio (None). A number widget shows None as 0 and sends
    it back as 0, so for these fields 0 (or empty) means automatic."""
    return field_kind(name) in ("int", "float") and \
        FineTuningConfig.__dataclass_fields__[name].default is None


def flag_names(name: str) -> list[str]:
    """The field's CLI flags: --lora-r first (the spelling the page's command line shows), then
    the guide's --lora_r and its aliases."""
    return list(dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}",
                               *FLAG_ALIASES.get(name, [])]))


@functools.lru_cache(maxsize=1)
def _hints() -> dict:
    return typing.get_type_hints(FineTuningConfig)


class ConfigError(ValueError):
    """A configuration that cannot run; the message says how to fix it."""


def _typed(name: str, value: Any) -> tuple[Any, Optional[str]]:
    """The field's value in its declared type, or a problem naming the field (`learning_rate:
    fast`, `batch_size: [1, 2]`, `model_name: null` are refused here, not 60 s into a run).
    Lossless spellings are taken: 8.0 for an int, "2e-4" for a float (YAML 1.1 reads 2e-4 as
    text), a Path for text, null for an empty list or mapping."""
    hint = _hints()[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint)
    if value is None:
        if base in (list, dict):
            return base(), None
        return None, None if optional else Text("config.type.null", name=name,
                                                kind=_SPELLED[base])
    given = value

    def got():        # written only when the value is refused (a config is made often)
        return Text("config.type.wrong", name=name, kind=_SPELLED[base], value=_short(given))

    if base is bool:
        return (value, None) if isinstance(value, bool) else (None, got())
    if base is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        return (value, None) if isinstance(value, int) and not isinstance(value, bool) \
            else (None, got())
    if base is float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                return None, got()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, got()
        return (value, None) if math.isfinite(value) else \
            (None, Text("config.type.finite", name=name, value=value))
    if base is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        return (value, None) if isinstance(value, str) else (None, got())
    if base is list:
        if isinstance(value, str) and name == "target_modules":
            return value, None            # "q_proj,v_proj" is split in __post_init__
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value), None
        return None, Text("config.type.list", name=name, value=_short(value))
    if base is dict:
        if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in value.items()):
            return dict(value), None
        return None, Text("config.type.mapping", name=name, value=_short(value))
    return value, None


_SPELLED = {bool: Text("config.kind.bool"), int: Text("config.kind.int"),
            float: Text("config.kind.float"), str: Text("config.kind.str"),
            list: Text("config.kind.list"), dict: Text("config.kind.dict")}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_bounds(f: dataclasses.Field, value: Any) -> Optional[str]:
    meta = f.metadata
    if value is None:
        return None
    if meta.get("choices") and value not in meta["choices"]:
        return Text("config.bounds.choice", name=f.name, choices=", ".join(meta["choices"]),
                    value=value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if meta.get("min") is not None and value < meta["min"]:
            if f.name == "lora_r":
                return Text("config.bounds.lora_r", value=value)
            return Text("config.bounds.min", name=f.name, min=meta["min"], value=value)
        if meta.get("max") is not None and value > meta["max"]:
            return Text("config.bounds.max", name=f.name, max=meta["max"], value=value)
    return None


def _fits_one_gpu(config: FineTuningConfig, hw) -> bool:
    """Whether the run fits one GPU at its batch, recomputing every layer if it must (the
    smallest the planner can make it): then each GPU holds a copy (DDP), else shards (FSDP)."""
    from studio.models.shapes import model_shape
    from studio.plan.memory import USABLE, estimate_memory

    shape = model_shape(config.model_name)
    if shape is None:
        return not _weights_would_not_fit(config, hw)
    est = estimate_memory(config, shape, recompute_layers=shape.layers)
    return est.total <= USABLE * hw.gpus[0].free_bytes


def _weights_would_not_fit(config: FineTuningConfig, hw) -> bool:
    """True when the 16-bit weights alone would take most of the free GPU memory."""
    from studio.models.shapes import parameter_count

    params = parameter_count(config.model_name)
    if not params or not hw.gpus:
        return False
    return params * 2 > 0.6 * hw.gpus[0].free_bytes
