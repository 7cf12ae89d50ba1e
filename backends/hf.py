"""transformers + peft + trl: the backend that runs everywhere (CPU and any CUDA GPU).

A linear recipe: load the base model (optionally 4-/8-bit through bitsandbytes), attach LoRA,
hand the already-tokenized rows to trl's SFTTrainer, and translate the trainer's callbacks into
studio events. The rows carry `assistant_masks`, so SFTTrainer trains on responses only
without re-tokenizing anything. The recipe itself (trainer arguments, events, GPU batches) is
studio.trl_recipe, which the Unsloth backend shares.
"""
from __future__ import annotations

from pathlib import Path

from studio import trl_recipe as recipe
from studio.models import local_model_path


def unavailable(hw) -> str | None:
    return None   # transformers is a core dependency: it always runs


# ---------------------------------------------------------------------------- loading
def _quantization(config):
    from transformers import BitsAndBytesConfig

    if config.load_in_4bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=recipe.torch_dtype(config))
    if config.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_base(config, for_training: bool = True):
    """The base model and tokenizer, placed and quantised as the config says."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = local_model_path(config.model_name)
    device_map = "cpu" if config.cpu_only else config.device_map
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=recipe.torch_dtype(config), device_map=device_map,
        quantization_config=_quantization(config))
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if for_training:
        model.config.use_cache = False
    return model, tokenizer


def lora_config(config):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, bias=config.bias,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM")


# ---------------------------------------------------------------------------- training
def make_trainer(config, data, run_dir: Path, emit, should_stop):
    """The SFTTrainer for this run, model loaded and LoRA attached, not yet trained."""
    from trl import SFTTrainer

    config, plan = recipe.plan_gpu_batches(config, data, emit)
    emit("status", 0, message=f"loading {config.model_name}")
    model, tokenizer = load_base(config)
    emit("plan", 0, attention=f"{model.config._attn_implementation} (transformers)")
    emit("status", 0, message="attaching LoRA adapters")
    trainer = SFTTrainer(
        model=model, args=recipe.sft_config(config, run_dir, data.eval is not None),
        train_dataset=data.train, eval_dataset=data.eval, processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=[recipe.event_callback(emit, should_stop, recipe.model_flops(config, data)),
                   recipe.sample_callback(emit, tokenizer, data.samples)])
    recipe.recompute_per_micro_batch(trainer.model, plan)
    return recipe.quiet(trainer)


def train(config, data, run_dir: Path, emit, should_stop, resume_from=None) -> Path:
    trainer = make_trainer(config, data, run_dir, emit, should_stop)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    adapter = recipe.save_adapter(trainer, run_dir)
    recipe.release_weights(trainer.model)
    return adapter


# ---------------------------------------------------------------------------- inference
def load(model_name: str, adapter_dir, config):
    """Base model plus adapter (or the base alone), in eval mode; on a GPU merged and with its
    decode step compiled before the first reply (studio.decode)."""
    from studio import decode

    model, tokenizer = load_base(config, for_training=False)
    if adapter_dir:
        from peft import PeftModel

        model = decode.merged_for_chat(PeftModel.from_pretrained(model, str(adapter_dir)))
        tokenizer = recipe.adapter_tokenizer(adapter_dir, tokenizer)
    model.eval()
    if decode.compiles(model):
        decode.decoder(model).warm_up()
    return model, tokenizer


stream = recipe.stream
merge = recipe.merge
