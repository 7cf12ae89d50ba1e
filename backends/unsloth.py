"""Unsloth on NVIDIA GPUs: the TRL recipe the transformers backend uses too (backends.torch.trl_recipe),
with Unsloth's model loading, LoRA patching and gradient checkpointing, and its fast inference
for the chat."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from backends.torch import fused_loss, lean_trainer, packed_attention
from backends.torch import trl_recipe as recipe
from studio.models.local import local_model_path
from studio.texts.message import Text


def unavailable(hw) -> str | None:
    if not hw.has_cuda:
        return Text("backend.unsloth.no_cuda")
    if importlib.util.find_spec("unsloth") is None:
        return Text("backend.unsloth.not_installed")
    return None


def varlen_attention() -> str:
    """Give Unsloth torch's varlen flash kernel for padding-free batches where it leaves it out.

    Unsloth 2026.10 calls torch's varlen attention only when `varlen_attn` takes `enable_gqa`
    (torch >= 2.12); on torch 2.11 it runs SDPA once per row instead, whose backward cost grows
    with rows x tokens (bench/HISTORY.md). The flash kernel behind it takes grouped KV heads on 2.11
    as well, so Unsloth's own lean path is switched on, after one check against per-row SDPA.
    Returns what packed attention will use, for the run log.
    """
    import torch
    from unsloth.utils import attention_dispatch as dispatch

    if dispatch._TORCH_VARLEN_ATTN is not None:
        return "torch varlen flash attention"   # Unsloth's own choice, or set by an earlier run
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return "SDPA once per row (this torch has no varlen attention)"
    if not torch.backends.cuda.is_flash_attention_available():
        return "SDPA once per row (this torch build has no flash attention)"
    saved = {k: getattr(dispatch, k, None)
             for k in ("_TORCH_VARLEN_ATTN", "_LEAN_VARLEN", "_varlen_can_use_cudnn")}
    dispatch._TORCH_VARLEN_ATTN = lambda *a, enable_gqa=False, **kw: varlen_attn(*a, **kw)
    dispatch._LEAN_VARLEN = True
    dispatch._varlen_can_use_cudnn = lambda *a, **kw: False
    try:
        packed_attention.check(dispatch._varlen_attn_call)
    except Exception as e:   # keep Unsloth's own per-row path rather than a wrong kernel
        for k, v in saved.items():
            setattr(dispatch, k, v)
        return f"SDPA once per row (varlen check failed: {str(e)[:200]})"
    return "torch varlen flash attention (enabled by the studio for this torch)"


def _load(config):
    import unsloth  # noqa: F401  (patches transformers; must come first)
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=local_model_path(config.model_name), max_seq_length=config.max_seq_length,
        dtype=recipe.torch_dtype(config), load_in_4bit=bool(config.load_in_4bit),
        load_in_8bit=bool(config.load_in_8bit),
        full_finetuning=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return FastLanguageModel, model, tokenizer


def train(plan, data, run_dir: Path, emit, should_stop, resume_from=None) -> Path:
    from trl import SFTTrainer

    config = plan.config
    emit("status", 0, message=Text("run.loading_unsloth", model=config.model_name))
    fast, model, tokenizer = _load(config)
    attention = varlen_attention()
    emit("status", 0, message=Text("run.packed_attention", how=attention))
    emit("plan", 0, attention=attention)
    model = fast.get_peft_model(
        model, r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        bias=config.bias, target_modules=list(config.target_modules),
        use_gradient_checkpointing="unsloth" if config.gradient_checkpointing else False,
        random_state=config.seed)
    args = recipe.sft_config(config, run_dir, data.eval is not None)
    args.gradient_checkpointing = False    # unsloth's own checkpointing is already in the model
    # lean_steps' bookkeeping, Unsloth's compute_loss kept (measured: bench/HISTORY.md,
    # 'Unsloth made lean'), except where the loss is scored in one kernel: trl's, under
    # Unsloth's, reads the logits for its entropy, and that forward returns none
    trainer = lean_trainer.lean_steps(SFTTrainer, own_loss=config.fused_loss)(
        model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
        processing_class=tokenizer,
        callbacks=[recipe.event_callback(emit, should_stop, recipe.model_flops(config, data)),
                   recipe.sample_callback(emit, tokenizer, data.samples)])
    recipe.quiet(trainer)
    if config.fused_loss:
        fused_loss.score_labels_here(trainer.model.get_base_model(), fused_loss.unsloth_loss)
    recipe.recompute_per_micro_batch(trainer.model, plan.rows)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    adapter = recipe.save_adapter(trainer, run_dir)
    recipe.release_weights(trainer.model)
    _release_offload_buffers()
    return adapter


def _release_offload_buffers() -> None:
    """Unsloth's checkpointing stages each recomputed layer's input through two GPU buffers,
    grown to the longest micro-batch and kept in unsloth_zoo's module globals after the run,
    where a later run's memory would miss them (bench/HISTORY.md, round seven). Emptied slots
    are made again, small, when a later run first needs them."""
    from unsloth_zoo import gradient_checkpointing

    for slots in (getattr(gradient_checkpointing, "GPU_BUFFERS", None),
                  getattr(gradient_checkpointing, "GPU_BUFFERS_B", None)):
        for device in range(len(slots) if isinstance(slots, list) else 0):
            list.__setitem__(slots, device, None)      # past the slot list's lazy __getitem__


def load(model_name: str, adapter_dir, config):
    """A 16-bit run chats through transformers' compiled decode step (backends.torch.decode; faster
    than Unsloth's own inference: bench/HISTORY.md); a quantised one through Unsloth."""
    if not (config.load_in_4bit or config.load_in_8bit):
        return recipe.load_for_chat(config, adapter_dir)
    fast, model, tokenizer = _load(config)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
        tokenizer = recipe.adapter_tokenizer(adapter_dir, tokenizer)
    fast.for_inference(model)
    return model, tokenizer


stream = recipe.stream
merge = recipe.merge
