"""LoRA training throughput on one GPU: the studio against the recipes people copy.

    python bench/gpu_bench.py [--sizes 8B,0.6B,1.7B,4B] [--variants c,b2,a,b,d] [--out DIR]

Variants, each in its own process (Unsloth patches transformers on import, so the plain recipe
must never share a process with it), on one synthetic chat dataset of mixed lengths (100 to
2,000 tokens, lognormal, mean about 430), LoRA r=16 on all seven projections, dropout 0:

    a   plain transformers + peft + trl SFTTrainer: batch 8, padded, gradient checkpointing
    b   plain Unsloth, its Qwen3 notebook: batch 2, accumulation 4, no packing, adamw_8bit
    b2  plain Unsloth at the studio's micro-batch (the same tokens a micro-batch, as rows)
    b4  plain Unsloth notebook, 4-bit QLoRA
    c   the studio with its defaults (studio.runs.execute.execute: unsloth, the row planner's
        padding-free micro-batches, recomputation only where a micro-batch needs it)
    d   the studio with load_in_4bit
    c16, c64  the studio at a user's 16 or 64 rows an update (4 x 4, 16 x 4), r16 on all 7
    guide     the studio at the guide's defaults: r8 on q/v, 4 rows x 4 accumulation
    guide32   the same LoRA at 32 rows an update (8 x 4)
    chat  the chat on a random LoRA adapter of this size: plain transformers + peft generate
        (dynamic cache) against the studio's chat path (studio.inference: merged, static
        cache, compiled decode step), in one process: tokens/s, first-token latency, and
        whether the studio's greedy tokens are the plain model's (teacher-forced check)

Each size runs (c) first, so (b') can take its rows a micro-batch. Extra runs take knobs,
size:variant[:tokens[:on|off]][:NAME=VALUE...]: 8B:c::on is the studio with checkpointing forced
on, for memory at the same batch as (b'). Named knobs: backend=transformers; compile=on (compiled
decoder layers, no CUDA graphs), compile=graphs (the same, replayed as CUDA graphs),
compile=auto (graphs as the studio decides: few shapes, nearly no recomputation) or compile=off
(no compiled layers: where the studio compiles by itself since round sixteen, a model under 1B
parameters at short micro-batches, this is the default before it);
adam=8bit (bitsandbytes' 8-bit AdamW, which Unsloth's SFTConfig chose until round seven; the
studio sets torch's fused AdamW); profile=on (two steps after the timed ones, host and GPU
time) or profile=py (the same steps under cProfile); graph-logs=on (torch's CUDA graph
logs); warmup=N and steps=N for that run alone; trainer=trl (trl's SFTTrainer as it comes, as in round four, without the
studio's lean_steps); bucket=N (layer graphs: micro-batches padded to a multiple of N tokens);
free=GiB (plan for that much free memory and allocate no more: a smaller card on a larger one);
estimate=one-count (plan with round five's estimate, one activation count for both backends);
alloc=expandable or alloc=fixed (the allocator's segments, set before CUDA starts; the studio
asks for expandable ones on import since round eight); adapters=fp32 (LoRA adapters in fp32, cast
at each use, as peft and Unsloth make them: the studio holds them in bf16 since round nine);
loss=nll or loss=chunked (transformers backend: the model's own loss over whole logits, or trl's
chunked one, whatever the planner picks: since round ten it takes whole logits where they fit);
ce-rows=N (Unsloth's fused loss: at least N rows of logits a chunk, where it picks about
hidden/vocab of the micro-batch, 512 at 0.6B; round eleven's ce-chunk=GB raised only a cap that
was never reached: the studio named trl's chunked loss, so Unsloth's never ran);
fused=on|off|filtered (the loss in one kernel, backends.torch.fused_loss: since round fourteen Unsloth's
own where Unsloth trains, on by default for micro-batches of batches.FUSED_LOSS_MIN_TOKENS or more;
on forces it; filtered: with cut-cross-entropy's own gradient filter); workers=N
(the data loader collates in N worker processes, two batches ahead: the studio's default on a
GPU is 1 since round eleven; workers=0 collates in the training thread, as before);
fp8=on (the frozen weights in fp8, backends.torch.fp8_weights: the transformers backend);
bounds=host (compiled layers without graphs: the collator hands no row bounds, so attention reads
them from the position ids on the host, between two compiled parts of each layer, as before
round eighteen);
heldout=N (after training, N held-out synthetic rows scored with whole logits by the studio's
evaluation, studio.evaluate.evaluation.response_loss: the eval-loss parity check for a changed kernel path).

Reported: real (non-padding) tokens/s over the steps after warm-up, peak GPU memory, MFU and
the gradient norm. MFU counts 4N + 12·L·H·d·c FLOPs a token: forward and input-gradient
matmuls over the N weights that multiply (layers and LM head; frozen weights get no weight
gradient, LoRA's are negligible), plus attention over a mean causal context of c tokens
(forward 4·L·H·d·c, backward twice that). Recomputation is not counted: it is overhead.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import studio  # noqa: E402,F401  (as in a studio run: the allocator's setting, before CUDA starts)
from bench.step_profile import Profiler  # noqa: E402
from bench.synthetic import SIZES, chat_rows, write_jsonl  # noqa: E402

ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
H100_PEAK = 989e12     # datasheet bf16 dense


# ---------------------------------------------------------------------------- measuring
def throughput(events: list[dict], warmup: int, last: int) -> dict:
    """tokens/s between the ends of steps `warmup` and `last`, from train events."""
    train = [e for e in events if e["kind"] == "train" and e["step"] <= last]
    start = next(e for e in train if e["step"] >= warmup)
    end = train[-1]
    tokens = end["data"]["tokens"] - start["data"]["tokens"]
    seconds = end["time"] - start["time"]
    norms = [e["data"].get("grad_norm") for e in train if e["data"].get("grad_norm") is not None]
    return {"tokens_per_s": tokens / seconds, "timed_steps": end["step"] - start["step"],
            "timed_tokens": tokens, "grad_norm": norms[-1] if norms else None,
            "loss": end["data"]["loss"]}


def flops_per_token(size: str, mean_context: float) -> float:
    """studio.plan.memory's count, for one of the published sizes."""
    from studio.plan.memory import flops_per_token as count
    from studio.models.shapes import Shape

    hidden, inter, layers, heads, kv, tied = SIZES[size]
    return count(Shape(hidden, inter, layers, heads, kv, 128, 151936, tied), mean_context)


def matmul_rate() -> float:
    """bf16 TFLOP/s of an 8B MLP projection at 16k tokens: the practical ceiling here."""
    import torch

    a = torch.randn(16384, 4096, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(4096, 12288, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    return 2 * 16384 * 4096 * 12288 * 20 / (time.perf_counter() - t)


# ---------------------------------------------------------------------------- variants
def run_plain_hf(model_path, data_path, args):
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from backends.torch.trl_recipe import event_callback
    from studio.runs.events import EventLog

    log = EventLog()
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16,
                                                 device_map="cuda")
    ds = load_dataset("json", data_files=str(data_path))["train"]
    cfg = SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=8,
                    gradient_accumulation_steps=1, max_length=2048, bf16=True,
                    gradient_checkpointing=True, logging_steps=1, report_to=[],
                    max_steps=args.warmup + args.steps, learning_rate=2e-4, save_strategy="no",
                    include_num_input_tokens_seen="non_padding", disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok,
                         peft_config=LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0,
                                                target_modules=ALL7, task_type="CAUSAL_LM"),
                         callbacks=[event_callback(log.emit, lambda: False)])
    trainer.train()
    return log.events


def run_plain_unsloth(model_path, data_path, args, batch=2, accumulation=4, four_bit=False):
    import unsloth  # noqa: F401
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel

    from backends.torch.trl_recipe import event_callback
    from studio.runs.events import EventLog

    log = EventLog()
    model, tok = FastLanguageModel.from_pretrained(model_name=str(model_path), max_seq_length=2048,
                                                   dtype=None, load_in_4bit=four_bit)
    model = FastLanguageModel.get_peft_model(model, r=16, target_modules=ALL7, lora_alpha=16,
                                             lora_dropout=0, bias="none",
                                             use_gradient_checkpointing="unsloth",
                                             random_state=3407)
    ds = load_dataset("json", data_files=str(data_path))["train"]
    ds = ds.map(lambda r: {"text": tok.apply_chat_template(r["messages"], tokenize=False)},
                remove_columns=["messages"])
    cfg = SFTConfig(output_dir=tempfile.mkdtemp(), dataset_text_field="text",
                    per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
                    warmup_steps=5, max_steps=args.warmup + args.steps, learning_rate=2e-4,
                    logging_steps=1, optim="adamw_8bit", weight_decay=0.01,
                    lr_scheduler_type="linear", seed=3407, report_to=[], max_length=2048,
                    save_strategy="no", include_num_input_tokens_seen="non_padding",
                    disable_tqdm=True, dataset_num_proc=1)   # 8 processes took 30 s for 800 rows
    trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=ds, args=cfg,
                         callbacks=[event_callback(log.emit, lambda: False)])
    trainer.train()
    return log.events


# a user's settings: (rows a micro-batch, accumulation, LoRA r, target modules)
USER_SETTINGS = {"c16": (4, 4, 16, ALL7), "c64": (16, 4, 16, ALL7),
                 "guide": (4, 4, 8, ["q_proj", "v_proj"]),
                 "guide32": (8, 4, 8, ["q_proj", "v_proj"])}


def run_studio(model_path, data_path, args, four_bit=False, profile_to=None, tokens=None,
               checkpointing=None, setting=(8, 1, 16, ALL7), backend="auto", compiled=None,
               fused=None, heldout=0, fp8=False):
    """compiled: None (as the studio decides), "off", "on" (no CUDA graphs), "graphs" or "auto"
    (graphs as the plan decides);
    heldout: rows scored after training, by a path that shares nothing with training's loss."""
    import shutil

    from studio.config import FineTuningConfig
    from studio.runs.store import prepare_run_dir
    from studio.runs.execute import execute

    rows, accumulation, r, targets = setting
    config = FineTuningConfig(
        model_name=str(model_path), data_path=str(data_path), output_dir="", lora_r=r,
        lora_alpha=r, target_modules=targets, logging_steps=1,
        max_steps=args.warmup + args.steps + (2 if profile_to else 0),  # profiled after timing
        save_steps=10**6, val_size=0, max_seq_length=2048, batch_size=rows,
        gradient_accumulation_steps=accumulation, load_in_4bit=four_bit or None,
        backend=backend, packing=True if tokens else None, tokens_per_batch=tokens,
        gradient_checkpointing=checkpointing,
        compile_layers={None: None, "off": False}.get(compiled, True),
        layer_graphs={"on": False, "graphs": True}.get(compiled),
        fused_loss={"off": False, None: None}.get(fused, True), fp8_weights=fp8)
    run = Path(args.run_dir or tempfile.mkdtemp())
    shutil.rmtree(run, ignore_errors=True)
    run = prepare_run_dir(run, config)
    listeners = ([Profiler(args.warmup + args.steps, profile_to, python=args.profile_python)]
                 if profile_to else [])
    status = execute(run, listeners=listeners)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    if status.state != "finished":
        raise RuntimeError(status.reason)
    left = _allocated_gib()         # what the finished run still holds on the GPU
    try:
        holders = _holders() if left and left > 0.1 else None
    except Exception as e:          # noqa: BLE001 - a trail is a clue, never the result
        holders = [f"could not list: {type(e).__name__}: {str(e)[:200]}"]
    plan = {}
    for e in events:
        if e["kind"] == "plan":     # the losses and graphs the planner decided
            plan.update({k: e["data"][k] for k in ("backend", "whole_logits", "fused_loss",
                                                    "layer_graphs", "gradient_checkpointing")
                         if k in e["data"]})
        message = e["data"].get("message", "")
        if message.startswith(("batch plan:", "packed attention:")):
            plan.update({k: v for k, v in e["data"].items() if k != "message"})
            plan[message.split(":")[0]] = message.split(":", 1)[1].strip()
    plan["left_gib"] = left
    if heldout:                 # training's peak first: the scoring loads the model again
        import torch

        plan["train_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        plan["heldout_loss"] = heldout_loss(run, heldout)
    import torch

    if torch._dynamo.utils.counters["stats"]:      # compiled: the layers, or a kernel's loss
        plan["compiled_graphs"] = dict(torch._dynamo.utils.counters["stats"])
    if holders is not None:
        import torch

        plan["left_holders"] = holders
        torch._dynamo.reset()
        import gc

        gc.collect()
        torch.cuda.empty_cache()
        plan["left_after_dynamo_reset_gib"] = _allocated_gib()
    return events, plan


def heldout_loss(run: Path, n: int) -> float:
    """The trained run's mean loss on n rows it never saw (another seed of the same synthetic
    chat), response tokens only, through whole logits: as the studio's evaluation scores it."""
    from studio.evaluate.evaluation import eval_set, response_loss
    from studio.inference import load_model

    rows = eval_set(run, data=write_jsonl(chat_rows(n, seed=1), run.parent / "heldout.jsonl"))
    return response_loss(load_model(run), rows.tokens).loss


def _holders() -> list[str]:
    """The largest CUDA tensors still alive, each with what refers to it (a leak's trail)."""
    import gc

    import torch

    from torch._subclasses.fake_tensor import FakeTensor

    tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.is_cuda
               and not isinstance(o, FakeTensor)]     # compile's tensors hold symbolic shapes
    tensors.sort(key=lambda t: -t.numel() * t.element_size())
    out = []
    for t in tensors[:6]:
        refs = [type(r).__name__ + (f":{list(r)[:3]}" if isinstance(r, dict) else "")
                for r in gc.get_referrers(t) if r is not tensors][:4]
        out.append(f"{tuple(t.shape)} {t.dtype} {t.numel() * t.element_size() / 2**20:.0f} MiB "
                   f"<- {refs}")
    return out


def _allocated_gib() -> float | None:
    import torch

    return torch.cuda.memory_allocated() / 2**30 if torch.cuda.is_available() else None


def random_adapter_run(model_path: Path, folder: Path) -> Path:
    """A run folder holding a random LoRA adapter (r16, all 7 projections, B not zero) on the
    model: what a trained run's chat loads, without training one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from studio.config import FineTuningConfig

    if (folder / "adapter" / "adapter_config.json").is_file():
        return folder
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16)
    lora = LoraConfig(r=16, lora_alpha=16, target_modules=ALL7, init_lora_weights=False,
                      task_type="CAUSAL_LM")
    get_peft_model(model, lora).save_pretrained(folder / "adapter")
    FineTuningConfig(model_name=str(model_path), lora_r=16, lora_alpha=16,
                     target_modules=ALL7).save(folder / "config.yaml")
    return folder


def run_chat(model_path, work: Path, new_tokens=256) -> dict:
    """The chat on one adapter, in one process: plain transformers + peft generate (dynamic
    cache, adapter unmerged) against the studio's path (studio.inference.load_model: merged,
    static cache, compiled decode step warmed at load). Greedy, `new_tokens` tokens, the end
    token suppressed so both run the full length. The studio's tokens are checked against the
    plain model by teacher forcing: each must be the plain model's argmax or within bf16
    rounding of it (random weights make near-ties common, so exact equality over 256 tokens
    is also reported)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from studio.inference import load_model, prompt_ids, stream_reply

    run = random_adapter_run(Path(model_path), work / f"chat-{Path(model_path).name}")
    messages = [{"role": "user", "content": "Write a haiku about GPUs."}]
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16,
                                                device_map="cuda")
    plain = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    t = time.perf_counter()
    loaded = load_model(run)
    load_s = time.perf_counter() - t
    ids = prompt_ids(loaded.tokenizer, messages, loaded.prompt_format)
    never_end = [[loaded.tokenizer.eos_token_id]]

    from backends.torch.decode import decoder

    def timed(model) -> tuple[list[int], float]:
        """Greedy, the end token suppressed: writes exactly new_tokens tokens."""
        x = torch.tensor([ids], device="cuda")
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x),
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, bad_words_ids=never_end)
        torch.cuda.synchronize()
        return out[0, len(ids):].tolist(), time.perf_counter() - t

    def studios_loop() -> tuple[list[int], float]:
        """The chat's loop with no stop token: also exactly new_tokens tokens."""
        t = time.perf_counter()
        tokens = sum(decoder(loaded.model).stream(ids, new_tokens, 0.0, 1.0), [])
        return tokens, time.perf_counter() - t

    timed(plain), studios_loop()                                       # warm-ups
    plain_tokens, plain_s = timed(plain)
    studio_tokens, studio_s = studios_loop()
    # the first token as the chat shows it: prompt formatting, prefill, streamer
    t = time.perf_counter()
    pieces = stream_reply(loaded, messages, max_new_tokens=16, temperature=0)
    text = next(pieces, "")
    first_s = time.perf_counter() - t
    text += "".join(pieces)
    # teacher forcing: the plain model's logits along the studio's tokens
    with torch.no_grad():
        seq = torch.tensor([ids + studio_tokens], device="cuda")
        logits = plain(input_ids=seq).logits[0, len(ids) - 1:-1].float()
    chosen = logits.gather(1, torch.tensor(studio_tokens, device="cuda")[:, None])[:, 0]
    gap = logits.max(1).values - chosen
    return {"backend": loaded.backend, "model_class": type(loaded.model).__name__,
            "load_s": load_s, "new_tokens": new_tokens,
            "plain_tokens_per_s": new_tokens / plain_s,
            "generate_tokens_per_s": new_tokens / studio_s, "first_token_s": first_s,
            "same_tokens": sum(a == b for a, b in zip(plain_tokens, studio_tokens)),
            "same_prefix": next((i for i, (a, b) in enumerate(zip(plain_tokens, studio_tokens))
                                 if a != b), len(studio_tokens)),
            "greedy_within_bf16": bool((gap <= 0.0625 * logits.max(1).values.abs().clamp(min=1)
                                        ).all()),
            "max_logit_gap": float(gap.max()), "sample": text[:60]}


def run_one(args) -> dict:
    if args.alloc:          # read once, when CUDA starts: before anything touches the GPU
        os.environ.pop("PYTORCH_CUDA_ALLOC_CONF", None)    # `import studio` set the other name
        os.environ["PYTORCH_ALLOC_CONF"] = {"expandable": "expandable_segments:True",
                                            "fixed": "expandable_segments:False"}[args.alloc]
    import torch

    cuda = torch.cuda.is_available()     # the CPU runs the same plumbing on tiny models
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if args.adam == "8bit":                          # Unsloth's default optimiser (#16, round 7)
        from transformers.training_args import OptimizerNames

        from backends.torch import trl_recipe

        plain = trl_recipe.sft_config

        def eight_bit(*args, **kwargs):
            trainer_args = plain(*args, **kwargs)
            trainer_args.optim = OptimizerNames.ADAMW_8BIT
            return trainer_args

        trl_recipe.sft_config = eight_bit
    if args.adapters == "fp32":                      # as peft makes them (#16, round nine)
        from backends.torch import adapter_precision

        adapter_precision.hold_in_compute_dtype = lambda trainer: False
    if args.loss:                                    # whole logits or not (#16, round ten)
        from backends.torch import trl_recipe

        trl_recipe.loss_type = lambda config: {"nll": "nll", "chunked": "chunked_nll"}[args.loss]
    if args.workers is not None:                     # collated ahead (#16, round eleven)
        from backends.torch import trl_recipe

        trl_recipe.COLLATE_AHEAD = args.workers
    if args.ce_rows:                                 # read when Unsloth's loss is imported
        os.environ["UNSLOTH_FUSED_LINEAR_MIN_ROWS"] = str(args.ce_rows)
        # room for that many rows of fp32 logits (151,936 a row): its cap, 2 GB by default
        os.environ["UNSLOTH_LOGPROB_CHUNK_GB"] = str(args.ce_rows * 151936 * 4 / 2**30 + 1)
    if args.fused == "filtered":                     # the library's gradient filter (round 13)
        from backends.torch import fused_loss

        fused_loss.GRADIENT_FILTER = "high"
    if args.trainer == "trl":                        # round four's trainer (#16, round five)
        from backends.torch import lean_trainer

        lean_trainer.lean_steps = lambda trainer_class, own_loss=True: trainer_class
    if args.bucket:                                  # layer graphs' shapes (#16, round six)
        from backends.torch import packed_attention
        from studio.plan import compiling

        packed_attention.BUCKET = compiling.SMALL_MODEL_BUCKET = args.bucket
    if args.free:                                    # a smaller card: plan for it, held to it
        total = torch.cuda.mem_get_info()[1]
        cap = args.free * 2**30
        torch.cuda.set_per_process_memory_fraction(cap / total)
        torch.cuda.mem_get_info = lambda device=None: (cap, total)
    if args.bounds == "host":     # round seventeen's compiled layers: attention read its rows'
        from backends.torch import packed_attention   # bounds on the host, outside the layers' graphs

        packed_attention.with_row_bounds = lambda collate: collate
    if args.estimate == "one-count":                 # round five's estimate: one count for both
        from studio.plan import batches

        laid = batches.lay_out
        batches.lay_out = lambda config, hw, lengths, kernels: laid(config, hw, lengths,
                                                                    "transformers")
    if args.graph_logs == "on":
        torch._logging.set_logs(cudagraphs=True, perf_hints=True)
    if args.one == "chat":
        return run_chat(args.model_path, Path(args.run_dir).parent)
    model_path, data_path = Path(args.model_path), Path(args.data)
    plan = {}
    if args.one == "a":
        events = run_plain_hf(model_path, data_path, args)
    elif args.one in ("b", "b4"):
        events = run_plain_unsloth(model_path, data_path, args, four_bit=args.one == "b4")
    elif args.one == "b2":
        events = run_plain_unsloth(model_path, data_path, args, batch=args.batch_rows,
                                   accumulation=1)
    else:
        events, plan = run_studio(model_path, data_path, args, four_bit=args.one == "d",
                                  profile_to=args.profile, tokens=args.tokens,
                                  checkpointing={"on": True, "off": False}.get(args.ckpt),
                                  backend=args.backend,
                                  compiled=args.compile,
                                  fused=args.fused, heldout=args.heldout,
                                  fp8=args.fp8 == "on",
                                  **({"setting": USER_SETTINGS[args.one]}
                                     if args.one in USER_SETTINGS else {}))
    if events and not isinstance(events[0], dict):
        events = [dict(kind=e.kind, step=e.step, time=e.time, data=e.data) for e in events]
    result = throughput(events, args.warmup, args.warmup + args.steps)
    if cuda:
        peak = plan.get("train_peak_gib", torch.cuda.max_memory_allocated() / 2**30)
        result.update(peak_gib=peak,
                      reserved_gib=torch.cuda.max_memory_reserved() / 2**30)
    result["plan"] = plan
    return result


# ---------------------------------------------------------------------------- driver
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="8B,0.6B,1.7B,4B")
    p.add_argument("--variants", default="c,b2,a,b,d")
    p.add_argument("--extra", default="8B:b4,8B:c::on,0.6B:chat",
                   help="size:variant[:tokens[:on|off]][:NAME=VALUE...] runs besides the grid "
                        "(knobs: see the module's docstring)")
    p.add_argument("--rows", type=int, default=800)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    p.add_argument("--tokenizer", default="/tmp/qwen3-tok")
    p.add_argument("--timeout", type=int, default=420)
    p.add_argument("--profile-size", default="8B")
    # a single variant, in its own process
    p.add_argument("--one"), p.add_argument("--model-path"), p.add_argument("--data")
    p.add_argument("--batch-rows", type=int, default=8), p.add_argument("--profile")
    p.add_argument("--profile-python", action="store_true", help="cProfile, not torch's profiler")
    p.add_argument("--trainer", choices=["trl"],
                   help="studio variants: trl's SFTTrainer as it comes (round four), not "
                        "lean_steps")
    p.add_argument("--bucket", type=int,
                   help="studio variants with layer graphs: tokens a micro-batch is padded to a "
                        "multiple of, at any model size (studio.plan.compiling.graph_bucket)")
    p.add_argument("--run-dir", help="studio variants: the run folder to train into")
    p.add_argument("--tokens", type=int, help="studio variants: tokens a micro-batch (default: planned)")
    p.add_argument("--ckpt", choices=["on", "off"], help="studio variants: force checkpointing")
    p.add_argument("--backend", default="auto", help="studio variants: the training backend")
    p.add_argument("--adam", choices=["8bit"],
                   help="studio variants: bitsandbytes' 8-bit AdamW (Unsloth's default), not "
                        "torch's fused AdamW")
    p.add_argument("--free", type=float,
                   help="studio variants: GiB of the GPU to plan with and allocate at most (an "
                        "80 GB card is free=78)")
    p.add_argument("--estimate", choices=["one-count"],
                   help="studio variants: plan with round five's estimate, one count of saved "
                        "activations for both backends")
    p.add_argument("--graph-logs", choices=["on"], help="torch's CUDA graph logs")
    p.add_argument("--alloc", choices=["expandable", "fixed"],
                   help="the caching allocator's segments, set before CUDA starts (the studio "
                        "asks for expandable ones on import)")
    p.add_argument("--adapters", choices=["fp32"],
                   help="studio variants: LoRA adapters in fp32, cast at each use (peft's and "
                        "Unsloth's default), not held in bf16 with fp32 copies in the optimiser")
    p.add_argument("--loss", choices=["nll", "chunked"],
                   help="studio variants, transformers backend: the model's own loss over whole "
                        "logits or trl's chunked one, whatever the planner would pick")
    p.add_argument("--ce-rows", type=int,
                   help="studio variants, Unsloth: at least this many rows of logits a chunk of "
                        "its fused loss (UNSLOTH_FUSED_LINEAR_MIN_ROWS)")
    p.add_argument("--compile", choices=["on", "off", "graphs", "auto"],
                   help="studio variants: compile_layers (on: without CUDA graphs; auto: graphs "
                        "as the studio decides)")
    p.add_argument("--fused", choices=["on", "off", "filtered"],
                   help="studio variants: the loss in one kernel (backends.torch.fused_loss; filtered: "
                        "with cut-cross-entropy's gradient filter)")
    p.add_argument("--heldout", type=int, default=0,
                   help="studio variants: after training, the loss on this many held-out rows "
                        "(whole logits, studio.evaluate.evaluation)")
    p.add_argument("--bounds", choices=["host"],
                   help="compiled layers read the rows' bounds on the host, as before round 18")
    p.add_argument("--fp8", choices=["on"],
                   help="studio variants: the frozen weights in fp8 (fp8_weights)")
    p.add_argument("--workers", type=int,
                   help="studio variants: data loader worker processes, two batches ahead "
                        "(0: in the training thread)")
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.gettempdir()) / "gpu-bench"
    work.mkdir(exist_ok=True)
    data = write_jsonl(chat_rows(args.rows, seed=0), work / "chat.jsonl")
    mean_context, mean_len = _context_stats(data, args.tokenizer)
    rate = matmul_rate()
    header = {"matmul_tflops": rate / 1e12, "mean_row_tokens": mean_len,
              "mean_causal_context": mean_context, "rows": args.rows}
    print(json.dumps(header), flush=True)
    results = {"header": header, "runs": []}
    jobs = [(s, v) for s in args.sizes.split(",") if s for v in args.variants.split(",") if v]
    # extra entries: size:variant[:tokens[:on|off]][:NAME=VALUE...] (studio runs)
    jobs += [tuple(x.split(":")) for x in args.extra.split(",") if x]
    order = args.sizes.split(",")     # each size's extra runs right after its grid
    jobs.sort(key=lambda job: order.index(job[0]) if job[0] in order else len(order))
    built = {}
    for size, variant, *knobs in jobs:
        if size not in built:
            built[size] = _build(size, work, args.tokenizer)
        studio_rows = next((r["plan"].get("batch_size") for r in results["runs"]
                            if r["size"] == size and r["variant"] == "c" and r.get("plan")), None)
        name = "-".join([size, variant] + [(k or "auto").replace("=", "_") for k in knobs])
        cmd = [sys.executable, __file__, "--one", variant, "--model-path", str(built[size]),
               "--data", str(data), "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--batch-rows", str(studio_rows or 8), "--run-dir", str(work / "runs" / name)]
        if knobs:
            if "profile=on" in knobs or "profile=py" in knobs:
                cmd += ["--profile", str(out / f"profile-{name}.txt")]
                cmd += ["--profile-python"] if "profile=py" in knobs else []
            named = [k.split("=", 1) for k in knobs if "=" in k and not k.startswith("profile=")]
            cmd += [arg for key, value in named for arg in (f"--{key}", value)]
            tokens_ckpt = [k for k in knobs if "=" not in k]
            cmd += (["--tokens", tokens_ckpt[0]] if tokens_ckpt and tokens_ckpt[0] else []) + \
                (["--ckpt", tokens_ckpt[1]] if len(tokens_ckpt) > 1 else [])
            variant = f"{variant}:{':'.join(knobs)}"
        if variant == "c" and size == args.profile_size:
            cmd += ["--profile", str(out / f"profile-{name}.txt")]
        t0 = time.time()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            (out / f"log-{name}.txt").write_text(r.stdout[-20000:] + r.stderr[-30000:])
            line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
            res = json.loads(line[7:]) if line else {"error": _last_error(r.stderr),
                                                     "returncode": r.returncode}
        except subprocess.TimeoutExpired as e:
            (out / f"log-{name}.txt").write_text(str(e.stderr or "")[-30000:])
            res = {"error": f"timed out after {args.timeout} s"}
        res.update(size=size, variant=variant, wall_s=round(time.time() - t0, 1))
        if "tokens_per_s" in res:
            f = flops_per_token(size, mean_context) * res["tokens_per_s"]
            res.update(mfu_datasheet=f / H100_PEAK, mfu_measured=f / rate)
        results["runs"].append(res)
        print(json.dumps(res), flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))


def _context_stats(data: Path, tokenizer_dir: str) -> tuple[float, float]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    lengths = [len(tok.apply_chat_template(json.loads(l)["messages"], tokenize=True,
                                           return_dict=True)["input_ids"])
               for l in data.read_text().splitlines()[:500]]
    from studio.plan.memory import mean_causal_context

    return mean_causal_context(lengths), sum(lengths) / len(lengths)


def _build(size: str, work: Path, tokenizer_dir: str) -> Path:
    path = work / f"qwen3-{size}"
    subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, %r); "
                    "from bench.synthetic import build_random_qwen3; from pathlib import Path; "
                    "build_random_qwen3(%r, Path(%r), Path(%r))" % (str(ROOT), size, str(path),
                                                                   tokenizer_dir)], check=True)
    return path


def _last_error(stderr: str) -> str:
    lines = [l for l in stderr.replace("\r", "\n").splitlines()
             if l.strip() and not l.rstrip().endswith(("it/s]", "examples/s]", "s/it]"))]
    for l in reversed(lines):
        if "Error" in l or "error" in l:
            return l[-300:]
    return (lines[-1] if lines else "no output")[-300:]


NAMES = {"a": "(a) transformers+peft+trl", "b": "(b) Unsloth notebook", "b2": "(b') Unsloth, studio batch",
         "b4": "Unsloth notebook, 4-bit", "c": "(c) studio defaults", "d": "(d) studio 4-bit QLoRA",
         "c16": "studio, 16 rows an update (4 x 4)", "c64": "studio, 64 rows an update (16 x 4)",
         "guide": "studio, guide's defaults (r8 q/v, 4 x 4)",
         "guide32": "studio, r8 q/v, 32 rows an update (8 x 4)"}


def _plan_cell(plan: dict) -> str:
    size = (f"{plan['tokens_per_batch']} tokens" if plan.get("tokens_per_batch")
            else f"{plan['batch_size']} rows" if plan.get("batch_size") else "")
    attention = "varlen" if "varlen" in plan.get("packed attention", "") else \
        ("per-row SDPA" if plan.get("packed attention") else "")
    left = f"{plan['left_gib']:.2f} GiB left after" if plan.get("left_gib") is not None else ""
    heldout = f"held-out loss {plan['heldout_loss']:.4f}" if plan.get("heldout_loss") else ""
    return ", ".join(x for x in (size, attention, left, heldout) if x)


def markdown(results: dict) -> str:
    h = results["header"]
    lines = [f"bf16 matmul measured: {h['matmul_tflops']:.0f} TFLOP/s; rows: mean "
             f"{h['mean_row_tokens']:.0f} tokens", "",
             "| model | variant | tokens/s | vs (a) | vs (b) | vs (b') | peak GiB | MFU (datasheet) | "
             "MFU (measured matmul) | grad norm | plan |", "|" + "---|" * 11]
    by = {(r["size"], r["variant"]): r for r in results["runs"]}
    for r in results["runs"]:
        if r["variant"] == "chat" and "generate_tokens_per_s" in r:
            lines.append(
                f"| {r['size']} | chat, studio / plain generate | "
                f"{r['generate_tokens_per_s']:,.0f} / {r['plain_tokens_per_s']:,.0f} generated, "
                f"{r['generate_tokens_per_s'] / r['plain_tokens_per_s']:.1f}x, first token "
                f"{r['first_token_s'] * 1000:.0f} ms | | | | | | | | greedy within bf16: "
                f"{r['greedy_within_bf16']}, same first {r['same_prefix']} tokens | |")
            continue
        if "tokens_per_s" not in r:
            lines.append(f"| {r['size']} | {NAMES.get(r['variant'], r['variant'])} | "
                         f"{r.get('error', '?')} |" + " |" * 9)
            continue

        def ratio(v):
            base = by.get((r["size"], v), {}).get("tokens_per_s")
            return f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
        plan = r.get("plan") or {}
        lines.append(
            f"| {r['size']} | {NAMES.get(r['variant'], r['variant'])} | {r['tokens_per_s']:,.0f} | "
            f"{ratio('a')} | {ratio('b')} | {ratio('b2')} | {r['peak_gib']:.1f} | "
            f"{r['mfu_datasheet']:.1%} | {r['mfu_measured']:.1%} | {r['grad_norm'] or 0:.3g} | "
            f"{_plan_cell(plan)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
