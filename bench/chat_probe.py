"""Where a chat token's time goes on a GPU: the studio's decode loop (backends.torch.decode) on a merged
model, timed over 256 greedy tokens, then profiled over 32 more; optionally with another
torch.compile mode for the one-token step.

    python bench/chat_probe.py MODEL_DIR [--mode reduce-overhead|max-autotune] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--mode", default="max-autotune")
    p.add_argument("--out", default=".")
    args = p.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, CompileConfig

    from backends.torch.decode import Decoder

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16,
                                                 device_map="cuda").eval()
    decoder = Decoder(model)
    decoder.step = model.get_compiled_call(CompileConfig(mode=args.mode))
    t = time.perf_counter()
    decoder.warm_up()
    warm_s = time.perf_counter() - t
    prompt = list(range(1000, 1040))

    def tokens_per_s(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = sum(decoder.stream(prompt, n), [])
        torch.cuda.synchronize()
        return len(out) / (time.perf_counter() - t)

    tokens_per_s(256)
    rate = max(tokens_per_s(256) for _ in range(3))
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        tokens_per_s(33)
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=60)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"chat-profile-{args.mode}.txt").write_text(table)
    result = {"mode": args.mode, "warm_up_s": warm_s, "tokens_per_s": rate}
    print("RESULT " + json.dumps(result), flush=True)
    print(table[:6000])


if __name__ == "__main__":
    main()
