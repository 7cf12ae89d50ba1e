"""The engine against a plain transformers + peft + trl script on the CPU, side by side.

    python bench/cpu_bench.py [--model demo:SmolLM2-135M-Instruct] [--steps 12] [--rounds 2]

Both train the same model on the same rows (assets/example_alpaca.jsonl, as chat messages) with
the same settings (LoRA r=8 on q/v, batch 4, max length 512, no gradient checkpointing, and the
precision the engine picks for this CPU: bf16 where it is native, else float32). Each run is its own
process, and the two alternate (plain, engine, plain, engine, ...) so machine noise hits both.
Reported: real tokens/s over the steps after the first two, the ratio engine / plain, and each
process's peak resident memory.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WARMUP = 2


def rows() -> list[dict]:
    data = [json.loads(l) for l in (ROOT / "assets" / "example_alpaca.jsonl").read_text().splitlines()]
    return [{"messages": [{"role": "user", "content": (r["instruction"] + "\n" + r.get("input", "")).strip()},
                          {"role": "assistant", "content": r["output"]}]} for r in data]


def plain(model: str, data: Path, steps: int) -> list[dict]:
    """What people copy: SFTTrainer on a messages dataset, LoRA through peft_config."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    marks = []

    class Clock(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                marks.append({"kind": "train", "step": state.global_step, "time": time.time(),
                              "data": {"tokens": state.num_input_tokens_seen, "loss": logs["loss"],
                                       "grad_norm": logs.get("grad_norm")}})

    tok = AutoTokenizer.from_pretrained(model)
    net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    trainer = SFTTrainer(
        model=net, processing_class=tok, train_dataset=load_dataset("json", data_files=str(data))["train"],
        peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                               task_type="CAUSAL_LM"),
        args=SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=4, max_steps=steps,
                       max_length=512, logging_steps=1, learning_rate=2e-4, save_strategy="no",
                       report_to=[], use_cpu=True, include_num_input_tokens_seen="non_padding",
                       assistant_only_loss=False, disable_tqdm=True,
                       # the engine's precision on this CPU, and no recomputation, like it
                       bf16=engine_precision(), gradient_checkpointing=False),
        callbacks=[Clock()])
    trainer.train()
    return marks


def engine_precision() -> bool:
    """Whether the engine trains in bf16 on this CPU (it decides from the hardware)."""
    from studio.config import FineTuningConfig

    return bool(FineTuningConfig().resolve().bf16)


def engine(model: str, data: Path, steps: int) -> list[dict]:
    from studio.config import FineTuningConfig
    from studio.runs.store import prepare_run_dir
    from studio.runs.execute import execute

    config = FineTuningConfig(model_name=model, data_path=str(data), output_dir="", batch_size=4,
                              gradient_accumulation_steps=1, max_steps=steps, max_seq_length=512,
                              logging_steps=1, save_steps=10**6, val_size=0, backend="transformers")
    run = prepare_run_dir(Path(tempfile.mkdtemp()) / "run", config)
    status = execute(run)
    assert status.state == "finished", status
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


def one(variant: str, model: str, data: Path, steps: int) -> dict:
    from bench.gpu_bench import throughput

    events = (plain if variant == "plain" else engine)(model, data, steps)
    result = throughput(events, WARMUP, steps)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="demo:SmolLM2-135M-Instruct")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--one"), p.add_argument("--data")
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.one, args.model, Path(args.data), args.steps)), flush=True)
        return
    from studio.models.local import local_model_path

    model = local_model_path(args.model)
    data = Path(tempfile.mkdtemp()) / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows() * 4))
    results = {"plain": [], "engine": []}
    for _ in range(args.rounds):
        for variant in ("plain", "engine"):
            r = subprocess.run([sys.executable, __file__, "--one", variant, "--model", model,
                                "--data", str(data), "--steps", str(args.steps)],
                               capture_output=True, text=True)
            line = next(l for l in r.stdout.splitlines() if l.startswith("RESULT ")) if \
                "RESULT " in r.stdout else sys.exit(r.stderr[-3000:])
            results[variant].append(json.loads(line[7:]))
            print(variant, json.dumps(results[variant][-1]), flush=True)
    best = {v: max(r["tokens_per_s"] for r in rs) for v, rs in results.items()}
    peak = {v: max(r["peak_rss_gib"] for r in rs) for v, rs in results.items()}
    print(f"\n| variant | tokens/s (best of {args.rounds}) | peak RSS GiB |\n|---|---|---|")
    for v in ("plain", "engine"):
        print(f"| {v} | {best[v]:,.0f} | {peak[v]:.2f} |")
    print(f"\nengine / plain tokens/s: {best['engine'] / best['plain']:.2f}x")


if __name__ == "__main__":
    main()
