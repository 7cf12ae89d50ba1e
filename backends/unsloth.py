"""Unsloth on NVIDIA GPUs: the same recipe as the transformers backend, with Unsloth's model
loading, LoRA patching and gradient checkpointing, and its fast inference for the chat."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from backends import hf
from studio.models import local_model_path


def unavailable(hw) -> str | None:
    if not hw.has_cuda:
        return "needs an NVIDIA GPU with CUDA, and none was found"
    if importlib.util.find_spec("unsloth") is None:
        return "not installed: pip install -e '.[cuda]'"
    return None


def _load(config):
    import unsloth  # noqa: F401  (patches transformers; must come first)
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=local_model_path(config.model_name), max_seq_length=config.max_seq_length,
        dtype=hf._dtype(config), load_in_4bit=bool(config.load_in_4bit),
        load_in_8bit=bool(config.load_in_8bit),
        full_finetuning=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return FastLanguageModel, model, tokenizer


def train(config, data, run_dir: Path, emit, should_stop, resume_from=None) -> Path:
    from trl import SFTTrainer

    config = hf.plan_gpu_batches(config, data, emit, fused_loss=True)
    emit("status", 0, message=f"loading {config.model_name} with unsloth")
    fast, model, tokenizer = _load(config)
    model = fast.get_peft_model(
        model, r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        bias=config.bias, target_modules=list(config.target_modules),
        use_gradient_checkpointing="unsloth" if config.gradient_checkpointing else False,
        random_state=config.seed)
    args = hf.sft_config(config, run_dir, data.eval is not None)
    args.gradient_checkpointing = False    # unsloth's own checkpointing is already in the model
    trainer = SFTTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                         processing_class=tokenizer,
                         callbacks=[hf.event_callback(emit, should_stop,
                                                      hf.model_flops(config, data))])
    hf.quiet(trainer)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return hf.save_adapter(trainer, run_dir)


def load(model_name: str, adapter_dir, config):
    fast, model, tokenizer = _load(config)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
        tokenizer = hf._adapter_tokenizer(adapter_dir, tokenizer)
    fast.for_inference(model)
    return model, tokenizer


stream = hf.stream
