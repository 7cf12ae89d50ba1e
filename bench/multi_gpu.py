"""One run on 1 GPU and on N GPUs of this machine, in one job: tokens/s (the scaling) and the
loss at each step (the same global batch on both, so the curves should agree).

    python bench/multi_gpu.py --size 0.6B --gpus 2 [--rows 16] [--steps 12] [--out DIR]
    python bench/multi_gpu.py --size 32B --gpus 2 --distributed fsdp --spread-only

Each run is the studio's own job (studio.service.actions, the transformers backend under torchrun for
N > 1), on the synthetic chat rows of bench/gpu_bench.py and a random-weight Qwen3 of the
published shape; LoRA r16 on all seven projections.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.synthetic import build_random_qwen3, chat_rows, write_jsonl  # noqa: E402

ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one(model: Path, data: Path, runs: Path, gpus: int, rows: int, steps: int,
        distributed: str = "auto") -> dict:
    from studio.config import FineTuningConfig
    from studio.service.actions import Service

    config = FineTuningConfig(
        model_name=str(model), data_path=str(data), num_gpus=gpus, batch_size=rows // gpus,
        gradient_accumulation_steps=1, max_steps=steps, logging_steps=1, save_steps=10**6,
        val_size=0, lora_r=16, lora_alpha=16, target_modules=ALL7, max_seq_length=2048,
        backend="transformers", master_port=free_port(), seed=3,
        distributed=distributed if gpus > 1 else "auto")
    t = time.time()
    job = Service(runs).start(config, in_process=False, allow_over_memory=True)
    status = job.wait()
    events = [e for e in job.events if e.kind == "train"]
    result = {"gpus": gpus, "state": status.state, "reason": status.reason,
              "wall_s": round(time.time() - t, 1),
              "loss": {e.step: e.data["loss"] for e in events}}
    result["attention"] = next((e.data["attention"] for e in job.events
                                if e.kind == "plan" and "attention" in e.data), None)
    if events:
        result["peak_memory_gb"] = max(e.data.get("peak_memory_gb") or 0 for e in events)
        done = [e for e in job.events if e.kind == "done"]
        if done:     # the adapter's save, gathered from every rank
            result["save_s"] = round(done[-1].time - events[-1].time, 1)
    timed = [e for e in events if e.step >= 3]
    if len(timed) >= 2:
        tokens = timed[-1].data["tokens"] - timed[0].data["tokens"]
        result["tokens_per_s"] = tokens / (timed[-1].time - timed[0].time)
    if status.state != "finished":
        result["log"] = (job.run_dir / "log.txt").read_text()[-3000:]
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="0.6B")
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--rows", type=int, default=16, help="rows an update (the global batch)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--distributed", default="auto", choices=["auto", "ddp", "fsdp", "deepspeed"])
    p.add_argument("--spread-only", action="store_true",
                   help="only the N-GPU run (a model that does not fit one GPU)")
    p.add_argument("--tokenizer", default="/tmp/qwen3-tok")
    p.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="multi-gpu-"))
    model = build_random_qwen3(args.size, work / f"qwen3-{args.size}", Path(args.tokenizer))
    from studio.plan.hardware import release_memory

    release_memory()             # the build's GPU memory goes back before the runs start
    data = write_jsonl(chat_rows(800, seed=0), work / "chat.jsonl")
    counts = (args.gpus,) if args.spread_only else (1, args.gpus)
    results = [one(model, data, work / "runs", n, args.rows, args.steps, args.distributed)
               for n in counts]
    single, spread = results[0], results[-1]
    summary = {"size": args.size, "rows_an_update": args.rows, "runs": results}
    if len(results) == 2 and "tokens_per_s" in single and "tokens_per_s" in spread:
        summary["scaling"] = spread["tokens_per_s"] / single["tokens_per_s"]
        common = sorted(set(single["loss"]) & set(spread["loss"]))
        summary["largest_loss_gap"] = max(abs(single["loss"][s] - spread["loss"][s])
                                          / abs(single["loss"][s]) for s in common)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"multi-gpu-{args.size}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "loss"})[:1500])


if __name__ == "__main__":
    main()
