"""MLX-LM: LoRA fine-tuning on Apple Silicon (and on Linux through mlx[cpu], as CI runs it).

A linear recipe, driven from Python through mlx_lm's tuner: load the base model (a local
Hugging Face folder loads as it is), turn the chosen linear layers into LoRA layers, hand our
already-tokenized rows to `mlx_lm.tuner.trainer.train` and turn its reports into studio events.

Two things mlx_lm does not do the way the studio needs, and what this module does instead:
- Masking: mlx_lm masks only a prompt prefix (one offset a row), while our rows carry a per-token
  `assistant_masks` that may hold several assistant turns. So the trainer gets our own batch
  iterator, yielding (tokens, mask), and a loss that averages over the masked tokens only.
- Stop: the trainer has no stop hook. The batch iterator stops handing out batches at an
  optimiser-step boundary once should_stop() is true, and the trainer then ends its loop and
  saves the adapter exactly as it does after the last step.

mlx_lm reports after every optimiser step here (steps_per_report = gradient accumulation), so
train events, evaluation and checkpoints land on logging_steps, eval_steps and save_steps after
the update, as in the other backends. Steps are optimiser steps; mlx_lm's "iterations" are
micro-batches (steps x gradient_accumulation_steps).
"""
from __future__ import annotations

import json
import math
import re
import shutil
import weakref
from pathlib import Path
from typing import Callable, Iterator, Optional

from backends import BackendError, ChatSettings
from studio.models.local import local_model_path
from studio.texts.message import Text

INSTALL_HINT = "pip install -e '.[mlx]'"
# what mlx_lm itself fetches of a Hub model (weights, configs, tokenizer, chat template)
HUB_FILES = ["*.json", "*.safetensors", "*.py", "tokenizer.model", "*.tiktoken", "tiktoken.model",
             "*.txt", "*.jsonl", "*.jinja"]

# Hugging Face / peft module names -> mlx_lm's keys inside a transformer block (Qwen3 layout)
LORA_KEYS = {
    "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
}


def unavailable(hw) -> str | None:
    """None when mlx and mlx-lm are installed; auto picks mlx only on Apple Silicon (the registry
    decides that), but an explicit choice works on Linux too, through mlx[cpu]."""
    import importlib.util

    try:
        import mlx.core  # noqa: F401  (loads the native library: what fails on a broken install)
    except ImportError as e:
        return Text("backend.mlx.not_loading", error=str(e), hint=INSTALL_HINT)
    # mlx_lm is only looked up, not imported: importing it pulls in transformers (seconds).
    if importlib.util.find_spec("mlx_lm") is None:
        return Text("backend.mlx.no_lm", hint=INSTALL_HINT)
    return None


# ---------------------------------------------------------------------------- models
def model_path(name: str) -> str:
    """A local folder holding `name`: a folder as given, a demo id built on first use, or a Hub
    id (e.g. mlx-community/Qwen3-0.6B-4bit) from the Hugging Face cache or downloaded."""
    path = local_model_path(name)
    if Path(path).is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(path, allow_patterns=HUB_FILES)
    except Exception as e:   # offline, unknown id, gated repo: all end here
        raise BackendError(
            f"{name} is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(e).__name__}). Connect to the internet once so it lands in the cache, or "
            "give a local folder: a transformers Qwen3 checkpoint loads as it is, and "
            "backends.mlx.convert_to_mlx(hf_path, mlx_path, quantize=True) makes a 4-bit one"
        ) from e


def lora_parameters(config) -> dict:
    """mlx_lm's LoRA settings from ours (mlx_lm wants the scale itself, not alpha)."""
    targets = list(config.target_modules)
    unknown = [m for m in targets if m not in LORA_KEYS and m != "all-linear" and "." not in m]
    if unknown:
        raise BackendError(f"target_modules {', '.join(unknown)} unknown to the mlx backend: "
                           f"choose from {' '.join(LORA_KEYS)} (or all-linear)")
    keys = None if "all-linear" in targets else [LORA_KEYS.get(m, m) for m in targets]
    return {"rank": config.lora_r, "scale": config.lora_alpha / config.lora_r,
            "dropout": config.lora_dropout, "keys": keys}


def adapter_config(config, iters: int) -> dict:
    """adapter_config.json as mlx_lm writes it, so mlx_lm.load(..., adapter_path=...) and
    `mlx_lm.fuse` read our adapters. `model` is the base the adapter belongs to, also under
    peft's key, which studio.inference reads."""
    return {"model": config.model_name, "base_model_name_or_path": config.model_name,
            "fine_tune_type": "lora",
            "num_layers": config.lora_layers, "lora_parameters": lora_parameters(config),
            "learning_rate": config.learning_rate, "batch_size": config.batch_size,
            "grad_accumulation_steps": config.gradient_accumulation_steps, "iters": iters,
            "max_seq_length": config.max_seq_length, "seed": config.seed}


def save_adapter(folder: Path, model, settings: dict) -> Path:
    """adapters.safetensors (the trainable weights) and adapter_config.json into folder."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / "adapters.safetensors"),
                        dict(tree_flatten(model.trainable_parameters())))
    (folder / "adapter_config.json").write_text(json.dumps(settings, indent=2))
    return folder


# ---------------------------------------------------------------------------- optimiser
def learning_rate_schedule(config, total_steps: int):
    """The transformers schedules, in optimiser steps: linear warm-up, then hold or decay to 0."""
    import mlx.core as mx
    import mlx.optimizers as optim

    lr, kind = config.learning_rate, config.lr_scheduler_type
    warmup = 0 if kind == "constant" else math.ceil(config.warmup_ratio * total_steps)
    rest = max(total_steps - warmup, 1)
    def hold(step):
        return mx.array(lr, mx.float32)

    after = {"linear": optim.linear_schedule(lr, 0.0, rest), "cosine": optim.cosine_decay(lr, rest),
             "constant": hold, "constant_with_warmup": hold}[kind]
    if warmup == 0:
        return after
    return optim.join_schedules([optim.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_optimizer(config, total_steps: int):
    """AdamW as torch has it (bias correction on), clipping the summed gradient's global norm."""
    import mlx.optimizers as optim

    class ClippedAdamW(optim.AdamW):
        # mlx_lm's trainer has no clipping; apply_gradients sees the accumulated gradient.
        def apply_gradients(self, gradients, parameters):
            if config.max_grad_norm:
                gradients, _ = optim.clip_grad_norm(gradients, config.max_grad_norm)
            return super().apply_gradients(gradients, parameters)

    return ClippedAdamW(learning_rate=learning_rate_schedule(config, total_steps),
                        weight_decay=config.weight_decay, bias_correction=True)


# ---------------------------------------------------------------------------- data
def rows(dataset, max_seq_length: int) -> list[tuple]:
    """(token ids, loss mask) numpy pairs from rows with `input_ids` and `assistant_masks`
    (1 = trained), cut to max_seq_length. Rows left with no token to learn are dropped: they
    would only add padding (and a batch of them would divide by zero)."""
    import numpy as np

    out = []
    for row in dataset if dataset is not None else ():
        ids = list(row["input_ids"])[:max_seq_length]
        mask = list(row.get("assistant_masks") or [1] * len(ids))[:max_seq_length]
        if any(mask[1:]):   # the first token is never a target
            out.append((np.asarray(ids, np.int32), np.asarray(mask, np.int32)))
    return out


def _groups(data: list, batch_size: int, rng=None) -> list[list[int]]:
    """Row indices in batches of similar length (less padding), in random order given an rng."""
    order = sorted(range(len(data)), key=lambda i: len(data[i][0]))
    size = min(batch_size, len(data))
    groups = [order[i:i + size] for i in range(0, len(order), size)]
    if rng is not None:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    return groups


def _pad(data: list, group: list[int], max_seq_length: int):
    """The (tokens, mask) arrays of one batch, zero-padded."""
    import mlx.core as mx
    import numpy as np

    longest = max(len(data[i][0]) for i in group)
    # one plus a multiple of 32, as mlx_lm pads, so few distinct shapes get compiled
    width = min(1 + 32 * math.ceil(longest / 32), max_seq_length)
    tokens = np.zeros((len(group), width), np.int32)
    mask = np.zeros((len(group), width), np.int32)
    for j, i in enumerate(group):
        ids, m = data[i]
        tokens[j, :len(ids)], mask[j, :len(m)] = ids, m
    return mx.array(tokens), mx.array(mask)


def eval_batches(dataset, batch_size, max_seq_length, **_) -> Iterator[tuple]:
    """mlx_lm's iterate_batches for evaluation: every row once, in length order."""
    for group in _groups(dataset, batch_size):
        yield _pad(dataset, group, max_seq_length)


class TrainBatches:
    """mlx_lm's iterate_batches for training: (tokens, mask) batches, reshuffled every epoch.

    It also does the two things the trainer has no hook for: it skips the batches a resumed run
    has already seen (the same seeded order, so data is not repeated), and it stops at an
    optimiser-step boundary once should_stop() is true.
    """

    def __init__(self, seed: int, grad_accumulation: int, skip: int,
                 should_stop: Callable[[], bool]):
        self.seed, self.grad_accumulation, self.skip = seed, grad_accumulation, skip
        self.should_stop = should_stop
        self.tokens_seen = 0        # non-padding input tokens served, for tokens/s

    def __call__(self, dataset, batch_size, max_seq_length, loop=False, **_):
        import numpy as np

        rng = np.random.default_rng(self.seed)
        served = 0
        while True:
            for group in _groups(dataset, batch_size, rng):
                served += 1
                if served <= self.skip:
                    continue
                if (served - 1) % self.grad_accumulation == 0 and self.should_stop():
                    return
                self.tokens_seen += sum(len(dataset[i][0]) for i in group)
                yield _pad(dataset, group, max_seq_length)
            if not loop:
                return


def masked_loss(model, tokens, mask):
    """Mean cross-entropy over the trained tokens only (mask 1), and how many there were.

    Same shape as mlx_lm's default_loss, with the per-token mask in place of (offset, length).
    """
    import mlx.core as mx
    import mlx.nn as nn

    logits = model(tokens[:, :-1])
    targets, weights = tokens[:, 1:], mask[:, 1:]
    ce = nn.losses.cross_entropy(logits, targets) * weights
    n_tokens = weights.sum()
    return ce.astype(mx.float32).sum() / n_tokens, n_tokens


# ---------------------------------------------------------------------------- events
class Reporter:
    """mlx_lm's TrainingCallback (duck-typed): its reports become studio events, and it evaluates
    and writes checkpoints on the studio's schedule."""

    def __init__(self, config, emit, model, optimizer, batches: TrainBatches, eval_rows: list,
                 run_dir: Path, start_step: int, total_steps: int, batches_per_epoch: int,
                 settings: dict):
        self.config, self.emit, self.model, self.optimizer = config, emit, model, optimizer
        self.batches, self.eval_rows, self.run_dir = batches, eval_rows, run_dir
        self.start_step, self.total_steps, self.settings = start_step, total_steps, settings
        self.ga = config.gradient_accumulation_steps
        self.samples, self.tokenizer = [], None     # set by train() when there are samples
        self.batches_per_epoch = batches_per_epoch
        self.step = self.saved_step = start_step
        self.window: list[tuple[float, float]] = []    # (loss, seconds) since the last event
        self.tokens_at_last_event = 0

    def epoch(self, step: int) -> float:
        return round(step * self.ga / self.batches_per_epoch, 4)

    def on_train_loss_report(self, info: dict):
        self.step = step = self.start_step + info["iteration"] // self.ga
        self.window.append((info["train_loss"], self.ga / info["iterations_per_second"]))
        if step % self.config.logging_steps == 0 or step in (self.start_step + 1,
                                                             self.total_steps):
            self.report(step, info["learning_rate"])
        due = step % self.config.eval_steps == 0 or step == self.total_steps
        if self.eval_rows and due:
            self.evaluate(step)
        if self.samples and due:
            self.answer_samples(step)
        if step % self.config.save_steps == 0:
            self.save_checkpoint(step)

    def on_val_loss_report(self, info: dict):
        pass   # the trainer gets no validation set: evaluate() runs after the update instead

    def report(self, step: int, learning_rate: float):
        import mlx.core as mx

        seconds = sum(s for _, s in self.window)
        tokens = self.batches.tokens_seen - self.tokens_at_last_event
        self.emit("train", step, loss=sum(l for l, _ in self.window) / len(self.window),
                  learning_rate=learning_rate, epoch=self.epoch(step),
                  tokens=self.batches.tokens_seen, tokens_per_s=tokens / max(seconds, 1e-9),
                  peak_memory_gb=mx.get_peak_memory() / 2**30, max_steps=self.total_steps)
        self.window, self.tokens_at_last_event = [], self.batches.tokens_seen

    def evaluate(self, step: int):
        from mlx_lm.tuner.trainer import evaluate

        loss = evaluate(model=self.model, dataset=self.eval_rows,
                        batch_size=self.config.batch_size, num_batches=-1,
                        max_seq_length=self.config.max_seq_length, loss=masked_loss,
                        iterate_batches=eval_batches)
        self.model.train()   # evaluate() switched dropout off
        self.emit("eval", step, eval_loss=loss, epoch=self.epoch(step))

    def answer_samples(self, step: int):
        """The run's sample prompts answered greedily, as the other backends do."""
        for sample in self.samples:
            answer = "".join(stream(self.model, self.tokenizer, sample["ids"],
                                    ChatSettings(max_new_tokens=64, temperature=0.0)))
            self.emit("sample", step, prompt=sample["prompt"], answer=answer.strip(),
                      reference=sample["reference"])
        self.model.train()

    def save_checkpoint(self, step: int):
        """checkpoint-N/: the adapter, the optimiser state and the step, to resume from."""
        import mlx.core as mx
        from mlx.utils import tree_flatten

        folder = self.run_dir / "checkpoints" / f"checkpoint-{step}"
        save_adapter(folder, self.model, self.settings)
        mx.save_safetensors(str(folder / "optimizer.safetensors"),
                            dict(tree_flatten(self.optimizer.state)))
        (folder / "trainer_state.json").write_text(
            json.dumps({"global_step": step, "max_steps": self.total_steps}))
        self.saved_step = step
        checkpoints = sorted((checkpoint_step(p), p)
                             for p in folder.parent.glob("checkpoint-*") if p.is_dir())
        for _, old in checkpoints[:-self.config.save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
        self.emit("checkpoint", step, path=str(folder))


# ---------------------------------------------------------------------------- resume
def checkpoint_step(path: Path) -> int:
    """The optimiser step a checkpoint folder or adapter file was written at (0 if unknown)."""
    path = Path(path)
    state = (path if path.is_dir() else path.parent) / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text())["global_step"])
    # checkpoint-40 (ours) or 0000040_adapters.safetensors (mlx_lm's: iterations, which are
    # steps when gradients are not accumulated)
    found = re.search(r"checkpoint-(\d+)$|^(\d+)_adapters", path.name)
    return int(found.group(1) or found.group(2)) if found else 0


def resume(model, optimizer, resume_from) -> int:
    """Load a checkpoint's adapter weights (mlx_lm's resume_adapter_file) and, where saved, the
    optimiser state; return the step it was written at."""
    import mlx.core as mx
    from mlx.utils import tree_map_with_path

    resume_from = Path(resume_from)
    folder = resume_from if resume_from.is_dir() else resume_from.parent
    weights = resume_from / "adapters.safetensors" if resume_from.is_dir() else resume_from
    if not weights.is_file():
        raise BackendError(f"nothing to resume from: {weights} does not exist")
    model.load_weights(str(weights), strict=False)
    step = checkpoint_step(resume_from)
    saved = folder / "optimizer.safetensors"
    optimizer.init(model.trainable_parameters())
    if resume_from.is_dir() and saved.is_file():
        state = mx.load(str(saved))
        optimizer.state = tree_map_with_path(lambda path, x: state.get(path, x), optimizer.state)
    else:   # a bare adapter file: fresh moments, but the schedule goes on from its step
        optimizer.state["step"] = mx.array(step, mx.uint64)
    return step


# ---------------------------------------------------------------------------- train
def train(plan, data, run_dir, emit, should_stop, resume_from=None) -> Path:
    import mlx.core as mx
    from mlx_lm.tuner.trainer import TrainingArgs
    from mlx_lm.tuner.trainer import train as mlx_train
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model
    from transformers import AutoTokenizer

    config = plan.config
    run_dir = Path(run_dir)
    adapter = run_dir / "adapter"
    ga = config.gradient_accumulation_steps

    # ---- model
    emit("status", 0, message=Text("run.loading", model=config.model_name))
    path = model_path(config.model_name)
    model, _ = load_model(Path(path))
    if config.lora_layers > len(model.layers):
        raise BackendError(f"lora_layers is {config.lora_layers} but the model has "
                           f"{len(model.layers)} layers: use -1 for all")
    if config.bias != "none":
        emit("log", 0, message=f"bias={config.bias} is not supported by mlx_lm's LoRA; "
                               "biases stay frozen")
    emit("status", 0, message=Text("run.attaching"))
    mx.random.seed(config.seed)     # the LoRA initialisation
    model.freeze()
    linear_to_lora_layers(model, config.lora_layers, lora_parameters(config))

    # ---- data
    train_rows = rows(data.train, config.max_seq_length)
    eval_rows = rows(getattr(data, "eval", None), config.max_seq_length)
    if not train_rows:
        raise BackendError("no training row has a response token within max_seq_length: "
                           "raise max_seq_length or check the dataset's columns")
    dropped = len(data.train) - len(train_rows)
    if dropped:
        emit("log", 0, message=f"{dropped} training rows have no response token within "
                               f"max_seq_length={config.max_seq_length} and were left out")
    batches_per_epoch = math.ceil(len(train_rows) / min(config.batch_size, len(train_rows)))
    total_steps = config.max_steps or max(1, math.ceil(
        batches_per_epoch * config.num_train_epochs / ga))

    # ---- optimiser, and where a resumed run starts
    optimizer = make_optimizer(config, total_steps)
    start_step = resume(model, optimizer, resume_from) if resume_from else 0
    iters = max(total_steps - start_step, 0) * ga     # mlx_lm counts micro-batches
    batches = TrainBatches(config.seed, ga, skip=start_step * ga, should_stop=should_stop)
    settings = adapter_config(config, iters=total_steps * ga)
    reporter = Reporter(config, emit, model, optimizer, batches, eval_rows, run_dir,
                        start_step, total_steps, batches_per_epoch, settings)
    if getattr(data, "samples", None):
        from mlx_lm.utils import load_tokenizer

        reporter.samples, reporter.tokenizer = data.samples, load_tokenizer(Path(path))
    # ---- train
    adapter.mkdir(parents=True, exist_ok=True)
    args = TrainingArgs(
        batch_size=config.batch_size, iters=iters, val_batches=-1,
        steps_per_report=ga,                 # every optimiser step: see the module docstring
        steps_per_eval=iters + 1, steps_per_save=iters + 1,   # both done by the Reporter
        max_seq_length=config.max_seq_length,
        adapter_file=str(adapter / "adapters.safetensors"),   # the trainer's final save
        grad_checkpoint=bool(config.gradient_checkpointing), grad_accumulation_steps=ga)
    emit("status", start_step, message=Text("run.training"), max_steps=total_steps)
    mlx_train(model=model, optimizer=optimizer, train_dataset=train_rows, val_dataset=None,
              args=args, loss=masked_loss, iterate_batches=batches, training_callback=reporter)

    # ---- save: a checkpoint where training ended (Resume starts there), then the adapter
    if reporter.step > reporter.saved_step:
        reporter.save_checkpoint(reporter.step)
    save_adapter(adapter, model, settings)
    AutoTokenizer.from_pretrained(path).save_pretrained(str(adapter))   # as studio.data used it
    return adapter


# ---------------------------------------------------------------------------- inference
def load(model_name: str, adapter_dir, config=None):
    """Base model plus adapter (adapter_dir None: the base alone), and its tokenizer.

    The tokenizer is the Hugging Face one, as the other backends return it (the studio calls it
    and its apply_chat_template); the one saved with the adapter comes first, since it carries
    the chat template used in training. mlx_lm's wrapper of it (the model's end-of-turn ids and
    a streaming detokenizer) is kept beside it, for stream().
    """
    from mlx_lm.utils import load_adapters, load_model, load_tokenizer

    path = Path(model_path(model_name))
    model, model_config = load_model(path)
    if adapter_dir:
        load_adapters(model, str(adapter_dir))
    model.eval()
    own = adapter_dir and (Path(adapter_dir) / "tokenizer_config.json").is_file()
    wrapper = load_tokenizer(Path(adapter_dir) if own else path,
                             eos_token_ids=model_config.get("eos_token_id"))
    tokenizer = wrapper._tokenizer     # mlx_lm has no public accessor for it
    _WRAPPERS[tokenizer] = wrapper
    return model, tokenizer


# The tokenizer load() returns -> mlx_lm's wrapper of it, for stream() (kept here, not set as an
# attribute on the transformers object).
_WRAPPERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def stream(model, tokenizer, prompt_ids: list[int], settings) -> Iterator[str]:
    """Yield the reply's text as it is generated (settings: a backends.ChatSettings)."""
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_sampler

    sampler = make_sampler(temp=settings.temperature, top_p=settings.top_p)
    tokenizer = _WRAPPERS.get(tokenizer, tokenizer)   # see load()
    for response in stream_generate(model, tokenizer, list(prompt_ids), sampler=sampler,
                                    max_tokens=settings.max_new_tokens):
        if response.text:
            yield response.text


# ---------------------------------------------------------------------------- export
def fuse(adapter_dir, out_dir, model_name: Optional[str] = None,
         dequantize: bool = False) -> Path:
    """Merge the adapter into its base model (named in adapter_config.json unless model_name is
    given): a standalone MLX model folder that mlx_lm.load reads. What `mlx_lm.fuse` does."""
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, load_config, save

    adapter_dir = Path(adapter_dir)
    base = model_name or json.loads((adapter_dir / "adapter_config.json").read_text())["model"]
    path = model_path(base)
    model, tokenizer = load(base, adapter_dir)
    fused = [(name, m.fuse(dequantize=dequantize)) for name, m in model.named_modules()
             if hasattr(m, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    config = load_config(Path(path))
    if dequantize:
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    save(out_dir, path, model, tokenizer, config, donate_model=False)
    return Path(out_dir)


def merge(adapter_dir, out_dir, config) -> Path:
    """fuse(), dequantised: 16-bit weights under the Hugging Face names, which the GGUF writer
    and transformers read as they read any checkpoint."""
    return fuse(adapter_dir, out_dir, config.model_name, dequantize=True)


def convert_to_mlx(hf_path, mlx_path, quantize: bool = False, **options) -> Path:
    """A transformers checkpoint (folder or Hub id) as an MLX model folder, 4-bit if quantize;
    options go to mlx_lm.convert (e.g. q_group_size=32). Training does not need it (mlx_lm reads
    Qwen3 safetensors as they are); it makes the smaller quantised copies that mlx-community
    publishes, which train as QLoRA."""
    from mlx_lm.convert import convert

    convert(hf_path=model_path(str(hf_path)), mlx_path=str(mlx_path), quantize=quantize,
            **options)
    return Path(mlx_path)
