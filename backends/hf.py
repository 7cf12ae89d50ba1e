"""transformers + peft + trl: the backend that runs everywhere (CPU and any CUDA GPU).

A linear recipe: load the base model (optionally 4-/8-bit through bitsandbytes), attach LoRA,
hand the already-tokenized rows to trl's SFTTrainer, and translate the trainer's callbacks into
studio events. The rows carry `assistant_masks`, so SFTTrainer trains on responses only
without re-tokenizing anything. The recipe itself (trainer arguments, events, GPU batches) is
backends.torch.trl_recipe, which the Unsloth backend shares.
"""
from __future__ import annotations

from pathlib import Path

from backends.torch import compiled_layers, fp8_weights, fused_loss, lean_trainer, packed_attention
from backends.torch import trl_recipe as recipe
from studio.texts.message import Text


def unavailable(hw) -> str | None:
    return None   # transformers is a core dependency: it always runs


def lora_config(config):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, bias=config.bias,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM")


# ---------------------------------------------------------------------------- training
def make_trainer(plan, data, run_dir: Path, emit, should_stop):
    """The SFTTrainer for this run's plan (studio.plan.plan.Plan: the config to train with, the
    rows where layers recompute per micro-batch), model loaded and LoRA attached, not trained."""
    from transformers import set_seed
    from trl import SFTTrainer

    config = plan.config
    emit("status", 0, message=Text("run.loading", model=config.model_name))
    model, tokenizer = recipe.load_base(config)
    emit("plan", 0, attention=packed_attention.describe(model))
    emit("status", 0, message=Text("run.attaching"))
    # trl draws LoRA's A matrices before the Trainer seeds anything: without this, the same
    # config trained a different adapter in a fresh process than in a second run of one
    set_seed(config.seed)
    callbacks = [recipe.event_callback(emit, should_stop, recipe.model_flops(config, data)),
                 recipe.sample_callback(emit, tokenizer, data.samples)]
    if config.method == "dpo":
        return recipe.quiet(preference_trainer(model, tokenizer, plan, data, run_dir, callbacks))
    trainer = lean_trainer.lean_steps(SFTTrainer)(
        model=model, args=recipe.sft_config(config, run_dir, data.eval is not None),
        train_dataset=data.train, eval_dataset=data.eval, processing_class=tokenizer,
        peft_config=lora_config(config), callbacks=callbacks)
    if config.fp8_weights:
        swapped = fp8_weights.to_fp8(trainer.model)
        emit("status", 0, message=Text("run.fp8", n=swapped))
    if config.fused_loss:
        fused_loss.score_labels_here(trainer.model.get_base_model())
    recipe.recompute_per_micro_batch(trainer.model, plan.rows)
    compiled_layers.compile_layers(trainer.model, config)
    if config.layer_graphs:       # a recording for each micro-batch shape: make them few
        trainer.data_collator = packed_attention.bucketed(trainer.data_collator,
                                                          tokenizer.pad_token_id,
                                                          plan.graph_bucket)
    elif config.compile_layers:       # attention traced in the compiled layers
        trainer.data_collator = packed_attention.with_row_bounds(trainer.data_collator)
    return recipe.quiet(recipe.lora_gathered_alone(trainer))


def preference_trainer(model, tokenizer, plan, data, run_dir: Path, callbacks):
    """trl's DPOTrainer over the pairs: the LoRA model learns to prefer the chosen answer, the
    base with its adapter off is the reference. The speed work of supervised runs (compiled
    layers, padding-free packs, the lean step) is not applied to pairs yet."""
    from trl import DPOTrainer

    config = plan.config
    return DPOTrainer(model=model, args=recipe.dpo_config(config, run_dir, data.eval is not None),
                      train_dataset=data.train, eval_dataset=data.eval,
                      processing_class=tokenizer, peft_config=lora_config(config),
                      callbacks=callbacks)


def train(plan, data, run_dir: Path, emit, should_stop, resume_from=None) -> Path:
    trainer = make_trainer(plan, data, run_dir, emit, should_stop)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    adapter = recipe.save_adapter(trainer, run_dir)
    recipe.release_weights(trainer.model)
    if plan.config.compile_layers:     # the graphs it may have recorded (none: nothing to give back)
        compiled_layers.release_layer_graphs()
    return adapter


# ---------------------------------------------------------------------------- inference
def load(model_name: str, adapter_dir, config):
    return recipe.load_for_chat(config, adapter_dir)


stream = recipe.stream
merge = recipe.merge
