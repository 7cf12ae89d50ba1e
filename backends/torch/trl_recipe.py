"""The TRL recipe that the transformers and Unsloth backends share.

Both hand already-tokenized rows to trl's SFTTrainer with the same trainer arguments (as the
run's plan laid out its batches and loss), translate its callbacks into studio events through
one TrainerCallback, recompute layers per micro-batch where the plan says, and stream replies
the same way. Only model loading and LoRA patching differ, and those stay in each backend. No
backend imports another: both import this.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from threading import Event, Thread
from typing import Callable, Iterator, Optional

from backends.torch.compiled_layers import decoder_layers
from studio.texts.message import Text


# ---------------------------------------------------------------------------- precision
def torch_dtype(config):
    """The dtype the base model computes in, from the resolved config."""
    import torch

    if config.bf16:
        return torch.bfloat16
    if config.fp16:
        return torch.float16
    return torch.float32


def quantization(config):
    """bitsandbytes settings for 4-bit NF4 (QLoRA) or 8-bit loading, else None."""
    from transformers import BitsAndBytesConfig

    if config.load_in_4bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch_dtype(config))
    if config.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_base(config, for_training: bool = True):
    """The base model and tokenizer, placed and quantised as the config says."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backends.torch import distributed
    from studio.models.local import local_model_path

    path = local_model_path(config.model_name)
    device_map = "cpu" if config.cpu_only else config.device_map
    if distributed.in_worker() and not config.cpu_only:     # a rank: its own GPU, or sharded
        device_map = None if config.distributed == "fsdp" else {"": distributed.local_rank()}
    elif for_training and device_map == "auto" and not config.cpu_only:
        # one process trains on one GPU (several GPUs are several processes: num_gpus). "auto"
        # would split the layers over every GPU of the machine behind accelerate's hooks,
        # which trl's chunked loss cannot patch (it failed so on a machine with two GPUs)
        import torch

        device_map = {"": torch.cuda.current_device()}
    attention = {}
    if for_training and not config.cpu_only:    # padding-free rows, each attending to itself
        from backends.torch import packed_attention

        attention = {"attn_implementation": packed_attention.install()[0]}
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype(config), device_map=device_map,
        quantization_config=quantization(config), **attention)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if for_training:
        model.config.use_cache = False
        keep_4bit_trainable(model)
    return model, tokenizer


def keep_4bit_trainable(model) -> None:
    """Keep bitsandbytes' 4-bit weights in the layout that passes gradients. On a CPU with
    AVX-512 BF16, a 4-bit layer that runs without gradients (an evaluation, a sample, the
    held-out scoring) repacks its weight for an inference kernel that has no backward, and
    training went on after it with no gradient through the base weights (or, on layers
    narrower than one 64-value block, failed)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def peak_memory_gb() -> float:
    """The peak memory of this process so far: GPU allocations on a GPU, else resident RAM."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # kB -> GiB


# ---------------------------------------------------------------------------- events
def model_flops(config, data) -> tuple[Optional[float], Optional[float]]:
    """(model FLOPs a token, the GPU's bf16 peak) for the live MFU, where both are known."""
    import torch

    from studio.plan.memory import flops_per_token, mean_causal_context, peak_flops
    from studio.models.shapes import model_shape

    shape = model_shape(config.model_name)
    if shape is None or config.cpu_only or not torch.cuda.is_available():
        return None, None
    lengths = data.train_lengths
    return (flops_per_token(shape, mean_causal_context(lengths)),
            peak_flops(torch.cuda.get_device_name()))


# trl's preference logs -> the names our events carry (a DPO run's train and eval events)
PREFERENCE_LOGS = {"rewards/chosen": "reward_chosen", "rewards/rejected": "reward_rejected",
                   "rewards/margins": "reward_margin", "rewards/accuracies": "preference_accuracy"}


def event_callback(emit, should_stop: Callable[[], bool], flops: tuple = (None, None)):
    """A TrainerCallback that turns the trainer's logs into studio events and honours stop.
    With `flops` (model FLOPs a token, GPU peak) known, train events carry the MFU too."""
    from transformers import TrainerCallback

    class EventCallback(TrainerCallback):
        def __init__(self):
            self._last = None   # (time, tokens seen) at the previous train log

        def on_train_begin(self, args, state, control, **kw):
            self._last = (time.time(), state.num_input_tokens_seen)
            emit("status", state.global_step, message=Text("run.training"),
                 max_steps=state.max_steps)

        def on_step_end(self, args, state, control, **kw):
            if should_stop():
                control.should_training_stop = True
                control.should_save = True      # a checkpoint to resume from

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" in logs:
                now, seen = time.time(), state.num_input_tokens_seen
                dt = max(now - self._last[0], 1e-9)
                tokens_per_s = (seen - self._last[1]) / dt
                self._last = (now, seen)
                per_token, peak = flops
                mfu = {"mfu": tokens_per_s * per_token / peak} if per_token and peak else {}
                emit("train", state.global_step, loss=logs["loss"], **mfu,
                     learning_rate=logs.get("learning_rate"), epoch=logs.get("epoch"),
                     grad_norm=logs.get("grad_norm"), tokens=seen,
                     tokens_per_s=tokens_per_s, peak_memory_gb=peak_memory_gb(),
                     max_steps=state.max_steps,
                     **{ours: logs[theirs] for theirs, ours in PREFERENCE_LOGS.items()
                        if theirs in logs})
            if "eval_loss" in logs:
                emit("eval", state.global_step, eval_loss=logs["eval_loss"],
                     epoch=logs.get("epoch"),
                     **{f"eval_{ours}": logs[f"eval_{theirs}"]
                        for theirs, ours in PREFERENCE_LOGS.items() if f"eval_{theirs}" in logs})

        def on_save(self, args, state, control, **kw):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            emit("checkpoint", state.global_step, path=str(path))

    return EventCallback()


def sample_callback(emit, tokenizer, samples: list[dict], max_new_tokens: int = 64):
    """A TrainerCallback that answers the run's sample prompts greedily every eval_steps and at
    the last step, where transformers evaluates too, so the page shows the answers changing
    beside the curve, even for a run shorter than eval_steps (studio.runs.execute keeps them in
    samples.jsonl). A model that cannot generate mid-training says so once and is left be."""
    import torch
    from transformers import TrainerCallback

    class SampleCallback(TrainerCallback):
        def __init__(self):
            self.failed = False

        def on_step_end(self, args, state, control, model=None, **kw):
            due = (state.global_step % args.eval_steps == 0
                   or state.global_step >= state.max_steps)
            if self.failed or not samples or not due:
                return
            if args.world_size > 1 and (not state.is_world_process_zero or args.fsdp):
                return     # rank 0 answers; sharded weights would need every rank: skipped
            was_training = model.training
            model.eval()
            try:
                # eager: compiled layers would compile (and record) again for each new length
                with torch.no_grad(), torch.compiler.set_stance("force_eager"):
                    for sample in samples:
                        ids = torch.tensor([sample["ids"]], device=model.device)
                        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                             max_new_tokens=max_new_tokens, do_sample=False,
                                             pad_token_id=tokenizer.pad_token_id)
                        answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
                        emit("sample", state.global_step, prompt=sample["prompt"],
                             answer=answer.strip(), reference=sample["reference"])
            except Exception as e:   # noqa: BLE001 - samples are a view, never the run's end
                self.failed = True
                emit("log", state.global_step, message=f"samples stopped: {type(e).__name__}: "
                                                       f"{str(e)[:200]}")
            finally:
                model.train(was_training)

    return SampleCallback()


# ---------------------------------------------------------------------------- batches
def recompute_per_micro_batch(model, rows):
    """Gradient checkpointing decided for each micro-batch, where the run's plan left it to auto
    (its row plan, studio.plan.memory.RowPlan; None: every layer as the config says): before a
    training forward, the first rows.layers_for(tokens) decoder layers recompute and the others
    keep their activations. Short micro-batches, the common case, recompute nothing. The trainer
    must have checkpointing on (it installs the recompute function in each layer). The hook
    runs before the model's other forward pre-hooks, whenever they were registered, so that
    those reading the choice (compiled_layers.recompute_outside_graphs) read this one's."""
    adaptive = rows is not None and rows.config.gradient_checkpointing is None
    if not (adaptive and rows.gradient_checkpointing):
        return None
    layers = decoder_layers(model)

    def before_forward(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if module.training and ids is not None:
            recompute = rows.layers_for(ids.numel())   # padding-free: (1, tokens)
            for index, layer in enumerate(layers):
                layer.gradient_checkpointing = index < recompute

    return model.register_forward_pre_hook(before_forward, with_kwargs=True, prepend=True)


# ---------------------------------------------------------------------------- trainer arguments
def loss_type(config) -> str:
    """trl's loss for this run, as its plan decided it: the model's own ("nll", whole logits
    held; also where the model's forward scores the loss in one kernel, backends.torch.fused_loss,
    and trl stays out), else trl's chunked loss, which scores the response tokens 256 at a time
    and never holds a micro-batch's whole logits."""
    return "nll" if config.fused_loss or config.whole_logits else "chunked_nll"


def trainer_arguments(config, run_dir: Path, has_eval: bool) -> dict:
    """The Trainer's arguments every method shares (steps, rates, precision, logging, saving,
    processes); every training knob is decided here and nowhere else."""
    from backends.torch import distributed

    batch = 1 if config.packing else config.batch_size
    return dict(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,   # a ratio below 1 is read as a fraction of the steps
        weight_decay=config.weight_decay,
        # decided here for both backends: Unsloth's SFTConfig would default to bitsandbytes'
        # 8-bit AdamW, a launch for each of the 504 LoRA tensors at 8B, to save memory that
        # LoRA's few moments do not need (the estimate counts fp32 moments)
        optim="adamw_torch_fused",
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        logging_first_step=True,            # a point on the chart right away
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        bf16=bool(config.bf16),
        fp16=bool(config.fp16),
        use_cpu=bool(config.cpu_only),
        seed=config.seed,
        report_to=[],                       # trackers listen to our events (studio.runs.tracking)
        gradient_checkpointing=bool(config.gradient_checkpointing),
        include_num_input_tokens_seen="non_padding",
        **loader_arguments(config),
        disable_tqdm=True,
        save_only_model=False,
        **distributed.trainer_arguments(config),
    )


def one_gpu_each(args):
    """One process trains on one GPU. On a machine with several, the Trainer would wrap the
    model in DataParallel over all of them: slower than one GPU alone, with the loss reported
    doubled (measured: bench/HISTORY.md, issue #17). Several GPUs are several processes."""
    if args.n_gpu > 1 and args.world_size == 1:
        args._n_gpu = 1
    return args


def sft_config(config, run_dir: Path, has_eval: bool):
    """trl's SFTConfig from ours.

    With packing, one micro-batch is one pack of up to tokens_per_batch tokens (rows were
    already cut to max_seq_length), flattened padding-free with position ids restarting at each
    row, so attention never crosses from one row into the next.
    """
    from trl import SFTConfig

    packed = bool(config.packing)
    return one_gpu_each(SFTConfig(
        **trainer_arguments(config, run_dir, has_eval),
        # rows arrive cut to max_seq_length (studio.data); a pack holds tokens_per_batch
        max_length=(config.tokens_per_batch or config.max_seq_length) if packed else None,
        packing=packed,
        padding_free=True,   # rows are concatenated, never padded: no work on pad tokens
        loss_type=loss_type(config)))


def dpo_config(config, run_dir: Path, has_eval: bool):
    """trl's DPOConfig from ours: the shared arguments, DPO's beta and loss, pairs cut to
    max_seq_length. The reference model is the base with the adapter switched off (trl does
    this for a PEFT model), so no second copy is loaded."""
    from trl import DPOConfig

    return one_gpu_each(DPOConfig(**trainer_arguments(config, run_dir, has_eval),
                                  beta=config.beta, loss_type=[config.loss_type],
                                  max_length=config.max_seq_length))


COLLATE_AHEAD = 1   # data loader worker processes on a GPU (the bench's workers=N changes it)


def loader_arguments(config) -> dict:
    """On a GPU, the next micro-batch is collated in a worker process, two ahead, while the GPU
    works on this one: collated in the training thread, it was the longest gap in every profile,
    and ahead it made steps faster, most at 0.6B, whose steps are shortest (bench/HISTORY.md,
    round eleven). On a CPU the training itself wants every core, and collation stays in the
    training thread."""
    if config.cpu_only or not COLLATE_AHEAD:
        return {"dataloader_num_workers": 0}
    return {"dataloader_num_workers": COLLATE_AHEAD, "dataloader_prefetch_factor": 2,
            "dataloader_persistent_workers": True}


def quiet(trainer):
    """Our events replace the trainer's own printing (it prints every log when tqdm is off)."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def _not_the_padding_free_warning(record: logging.LogRecord) -> bool:
    """trl warns on every padding-free run without Flash Attention. transformers' SDPA path
    keeps packed rows apart by their restarting position ids (tests/test_packing.py checks the
    logits against each row alone), so the warning only alarms; everything else passes."""
    return "Padding-free training is enabled" not in record.getMessage()


logging.getLogger("trl.trainer.sft_trainer").addFilter(_not_the_padding_free_warning)


def _not_the_kernel_download_warning(record: logging.LogRecord) -> bool:
    """bitsandbytes, imported on a CPU with AVX-512 BF16, tries to fetch a 4-bit CPU kernel
    from the Hub and warns in every run's log when it cannot, 4-bit or not (issue #41). Its
    own kernel serves instead, and the studio's runs are offline: nothing to act on."""
    return "gemm_4bit_forward from kernels-community" not in record.getMessage()


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_not_the_kernel_download_warning)


def save_adapter(trainer, run_dir: Path) -> Path:
    """The trained LoRA weights and the tokenizer (with the chat template used) in run_dir/adapter."""
    adapter = run_dir / "adapter"
    if trainer.args.world_size > 1:     # gathered from every rank, written by rank 0 alone
        trainer.save_model(str(adapter))
        return adapter
    trainer.model.save_pretrained(adapter)
    trainer.processing_class.save_pretrained(adapter)
    return adapter


def lora_gathered_alone(trainer):
    """Under FSDP the Trainer saves an adapter by gathering the whole model, frozen base and
    all (64 GB at 32B), on rank 0, at every checkpoint and at the end. An adapter is only the
    LoRA weights: every rank gathers those alone and rank 0 writes them, as one ordinary
    adapter (loadable anywhere, and what a resume on another number of GPUs reads)."""
    if not trainer.is_fsdp_enabled:
        return trainer

    def save_model(output_dir=None, _internal_call=False):
        from torch.distributed.tensor import DTensor

        out = output_dir or trainer.args.output_dir
        lora = {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().cpu()
                for name, p in trainer.model.named_parameters() if p.requires_grad}
        if trainer.args.should_save:
            trainer.model.save_pretrained(out, state_dict=lora)
            trainer.processing_class.save_pretrained(out)

    trainer.save_model = save_model
    return trainer


def release_weights(model) -> None:
    """Empty the trained model's tensors in place once its adapter is saved. A library may keep
    a module of it past the run (after Unsloth, the 8B's 1.2 GiB embedding stayed on the GPU,
    held from outside the studio); emptied, whatever holds it holds nothing. A rank of a
    multi-process run needs none of this: its process ends with the run."""
    import torch

    from backends.torch import distributed

    if distributed.in_worker():
        return
    for tensor in [*model.parameters(), *model.buffers()]:
        tensor.data = torch.empty(0, dtype=tensor.dtype, device=tensor.device)


# ---------------------------------------------------------------------------- inference
def load_for_chat(config, adapter_dir):
    """Base model plus adapter (or the base alone) through transformers, in eval mode; on a GPU
    merged and with its decode step compiled before the first reply (backends.torch.decode)."""
    from backends.torch import decode

    model, tokenizer = load_base(config, for_training=False)
    if adapter_dir:
        from peft import PeftModel

        model = decode.merged_for_chat(PeftModel.from_pretrained(model, str(adapter_dir)))
        tokenizer = adapter_tokenizer(adapter_dir, tokenizer)
    model.eval()
    if decode.compiles(model):
        decode.decoder(model).warm_up()
    return model, tokenizer


def adapter_tokenizer(adapter_dir, fallback):
    """The tokenizer saved with the adapter carries the chat template used in training."""
    from transformers import AutoTokenizer

    if (Path(adapter_dir) / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(adapter_dir)
    return fallback


def merge(adapter_dir, out_dir, config) -> Path:
    """The adapter merged into the base on the CPU: weights loaded unquantised in float32 (a
    QLoRA run merges into the full-precision base, not the 4-bit copy it trained on), merged,
    then saved in the base's own 16-bit dtype (bfloat16 when it has none)."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    from studio.models.local import local_model_path

    path = local_model_path(config.model_name)
    stored = getattr(AutoConfig.from_pretrained(path), "dtype", None)
    dtype = stored if stored in (torch.float16, torch.bfloat16) else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, device_map="cpu")
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    model.to(dtype).save_pretrained(out_dir, safe_serialization=True)
    (adapter_tokenizer(adapter_dir, None) or _base_tokenizer(path)).save_pretrained(out_dir)
    return Path(out_dir)


def _base_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def stream(model, tokenizer, prompt_ids: list[int], settings) -> Iterator[str]:
    """Yield the reply's text as it is generated: on a GPU through backends.torch.decode's compiled
    loop, elsewhere through generate in a thread."""
    import torch
    from transformers import StoppingCriteria, TextIteratorStreamer

    from backends.torch import decode

    temperature, new_tokens = settings.temperature, settings.max_new_tokens
    if decode.compiles(model):
        yield from _decoded_text(tokenizer, decode.decoder(model).stream(
            prompt_ids, new_tokens, temperature, settings.top_p,
            stop_ids(model, tokenizer)))
        return
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    ids = torch.tensor([prompt_ids], device=model.device)
    closed = Event()        # the caller stopped reading: the model stops at its next token

    class WhenClosed(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), closed.is_set(), dtype=torch.bool,
                              device=input_ids.device)

    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                  max_new_tokens=new_tokens, do_sample=temperature > 0,
                  pad_token_id=tokenizer.pad_token_id, stopping_criteria=[WhenClosed()])
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=settings.top_p)
    errors = []

    def run():
        try:
            with torch.no_grad():
                model.generate(**kwargs)
        except Exception as e:   # surfaced to the caller below, not lost in the thread
            errors.append(e)
            streamer.end()

    thread = Thread(target=run, daemon=True)
    thread.start()
    try:
        yield from streamer
    finally:                # read to the end, or closed early: the model is free once it returns
        closed.set()
        thread.join()
    if errors:
        raise errors[0]


def stop_ids(model, tokenizer) -> set[int]:
    """The tokens that end a reply: the generation config's end tokens and the tokenizer's."""
    ends = getattr(model.generation_config, "eos_token_id", None)
    ends = set(ends if isinstance(ends, (list, tuple)) else [ends])
    return {t for t in ends | {tokenizer.eos_token_id} if t is not None}


def _decoded_text(tokenizer, chunks: Iterator[list[int]]) -> Iterator[str]:
    """Text pieces from chunks of token ids; a piece that ends inside a character waits for
    the rest of it."""
    ids, shown = [], ""
    for chunk in chunks:
        ids += chunk
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            continue
        if len(text) > len(shown):
            yield text[len(shown):]
        shown = text
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if len(text) > len(shown):
        yield text[len(shown):]
