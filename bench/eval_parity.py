"""Do the studio's speed-ups change what training learns? Eval loss, padded against packed.

    python bench/eval_parity.py [--model demo:SmolLM2-135M-Instruct] [--epochs 2]

On a real small model (the bundled SmolLM2-135M-Instruct), the same rows are trained for the
same epochs (so the same tokens) twice: (a) by the plain trl recipe (SFTTrainer on
prompt/completion messages, 8 rows padded to the longest), and (c) by the studio with the
micro-batches its planner picks for an 80 GB card (whole rows, padding-free). Both are then
scored on the same held-out rows (response tokens only) by one function. The bar: within 2%.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def eval_loss(run_dir: Path, held_out_path: Path, config) -> float:
    """Mean cross-entropy over the held-out rows' response tokens, with base + adapter."""
    import torch

    from studio.data import prepare
    from studio.inference import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(run_dir)
    held_out = prepare(str(held_out_path), tok, config.replace(val_size=0)).train
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, mask in zip(held_out["input_ids"], held_out["assistant_masks"]):
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            target = torch.tensor(ids[1:])
            keep = torch.tensor(mask[1:]).bool()
            loss = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
            total, count = total + loss.item(), count + int(keep.sum())
    return total / count


def plain_recipe(model: str, train_rows: list[dict], config, out: Path) -> int:
    """The recipe people copy: SFTTrainer on prompt/completion messages (trl trains the
    completion only), batches of 8 padded rows; returns the optimiser steps taken."""
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [{"prompt": [{"role": "user", "content": (r["instruction"] + "\n" + r["input"]).strip()}],
             "completion": [{"role": "assistant", "content": r["output"]}]} for r in train_rows]
    tok = AutoTokenizer.from_pretrained(model)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model, dtype="bfloat16" if config.bf16 else "float32"),
        processing_class=tok, train_dataset=datasets.Dataset.from_list(rows),
        peft_config=LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.05,
                               target_modules=list(config.target_modules), task_type="CAUSAL_LM"),
        args=SFTConfig(output_dir=str(out / "checkpoints"), per_device_train_batch_size=8,
                       num_train_epochs=config.num_train_epochs, learning_rate=config.learning_rate,
                       max_length=config.max_seq_length, bf16=bool(config.bf16), use_cpu=True,
                       gradient_checkpointing=False, save_strategy="no", report_to=[],
                       seed=config.seed, warmup_steps=config.warmup_ratio, disable_tqdm=True))
    trainer.train()
    trainer.save_model(str(out))
    return trainer.state.global_step


def main():
    from studio import FineTuningConfig, run_fine_tuning
    from studio.plan.memory import GiB, plan_rows
    from studio.models.shapes import model_shape
    from studio.models.local import local_model_path

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="demo:SmolLM2-135M-Instruct")
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--bf16", action="store_true",
                   help="both in bf16: the plain recipe with peft's fp32 adapters, the studio with "
                        "bf16 adapters stepped through fp32 copies (backends.torch.adapter_precision)")
    args = p.parse_args()
    if args.bf16:   # a CPU without bf16 instructions computes it too, slowly: the studio refuses
        import dataclasses

        from studio.plan import hardware

        real = hardware.detect_hardware()
        hardware.detect_hardware = lambda: dataclasses.replace(real, cpu_bf16=True)
    model = local_model_path(args.model)
    rows = [json.loads(l) for l in (ROOT / "assets" / "example_alpaca.jsonl").read_text().splitlines()]
    rows = rows * 4
    cut = int(len(rows) * 0.85)
    work = Path(tempfile.mkdtemp())
    train, held_out = work / "train.jsonl", work / "held_out.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:cut]))
    held_out.write_text("".join(json.dumps(r) + "\n" for r in rows[cut:]))
    config = FineTuningConfig(model_name=model, data_path=str(train), batch_size=8,
                              gradient_accumulation_steps=1, num_train_epochs=args.epochs,
                              max_seq_length=512, logging_steps=5, save_steps=10**6,
                              val_size=0, learning_rate=2e-4, cpu_only=True,
                              bf16=args.bf16).resolve()

    from transformers import AutoTokenizer

    from studio.data import prepare

    lengths = [len(ids) for ids in prepare(str(train), AutoTokenizer.from_pretrained(model),
                                           config).train["input_ids"]]
    plan = plan_rows(config.replace(cpu_only=False, bf16=True), 78 * GiB, lengths,
                     shape=model_shape(model), fused_loss=True)
    results = {}
    steps = plain_recipe(model, rows[:cut], config, work / "a")
    results["(a) plain trl recipe, 8 padded rows a step"] = (eval_loss(work / "a", held_out, config), steps)
    studio = config.replace(output_dir=str(work / "c"), batch_size=plan.rows,
                            gradient_accumulation_steps=plan.gradient_accumulation_steps)
    run_fine_tuning(config=studio)
    steps = max(json.loads(l)["step"] for l in (work / "c" / "metrics.jsonl").read_text().splitlines())
    results[f"(c) studio, GPU plan: {plan.rows} rows x {plan.gradient_accumulation_steps}, "
            "padding-free"] = (eval_loss(work / "c", held_out, config), steps)
    (a, _), (c, _) = results.values()
    print("\n| variant | optimiser steps | held-out loss |\n|---|---|---|")
    for name, (loss, n) in results.items():
        print(f"| {name} | {n} | {loss:.4f} |")
    print(f"\nrelative difference: {abs(c - a) / a:.2%} (bar: 2%)")
    assert math.isfinite(a) and math.isfinite(c)


if __name__ == "__main__":
    main()
