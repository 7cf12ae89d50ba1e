"""Qwen3-8B's frozen projections, forward and input gradient, in bf16 (nn.Linear) against fp8
(backends.torch.fp8_weights.Fp8Linear), side by side in one process on one GPU: what fp8_weights can
take off the two thirds of an 8B LoRA step that these matmuls are (bench/HISTORY.md, round
sixteen), before anything else in a step changes.

    python bench/fp8_matmul.py [--tokens 6500] [--repeats 20]

Prints one JSON line: each projection's milliseconds both ways, the ratio, and the relative
error of fp8's output and input gradient against bf16's.
"""
from __future__ import annotations

import argparse
import json

import torch

from backends.torch.fp8_weights import Fp8Linear

# Qwen3-8B's projections, (in, out): q, k and v, o, gate and up, down
PROJECTIONS = {"q_proj": (4096, 4096), "k_proj": (4096, 1024), "v_proj": (4096, 1024),
               "o_proj": (4096, 4096), "gate_proj": (4096, 12288), "up_proj": (4096, 12288),
               "down_proj": (12288, 4096)}


def forward_and_input_grad(layer, x, grad) -> tuple[torch.Tensor, torch.Tensor]:
    x.grad = None
    out = layer(x)
    out.backward(grad)
    return out, x.grad


def milliseconds(layer, x, grad, repeats: int) -> float:
    for _ in range(3):                                  # compiles, warms the caches
        forward_and_input_grad(layer, x, grad)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        forward_and_input_grad(layer, x, grad)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def relative_error(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=6500)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    torch.manual_seed(0)
    rows = {}
    for name, (fan_in, fan_out) in PROJECTIONS.items():
        linear = torch.nn.Linear(fan_in, fan_out, bias=False, device="cuda", dtype=torch.bfloat16)
        torch.nn.init.normal_(linear.weight, std=0.02)
        linear.requires_grad_(False)
        fp8 = Fp8Linear(linear)
        x = torch.randn(args.tokens, fan_in, device="cuda", dtype=torch.bfloat16,
                        requires_grad=True)
        grad = torch.randn(args.tokens, fan_out, device="cuda", dtype=torch.bfloat16)
        bf16_ms, fp8_ms = (milliseconds(layer, x, grad, args.repeats) for layer in (linear, fp8))
        (out, dx), (out8, dx8) = (forward_and_input_grad(layer, x, grad)
                                  for layer in (linear, fp8))
        rows[name] = dict(bf16_ms=round(bf16_ms, 3), fp8_ms=round(fp8_ms, 3),
                          speedup=round(bf16_ms / fp8_ms, 3),
                          output_error=round(relative_error(out8, out), 4),
                          input_grad_error=round(relative_error(dx8, dx), 4))
    total = {k: round(sum(r[k] for r in rows.values()), 3) for k in ("bf16_ms", "fp8_ms")}
    total["speedup"] = round(total["bf16_ms"] / total["fp8_ms"], 3)
    print("FP8 " + json.dumps({"tokens": args.tokens, "device": torch.cuda.get_device_name(),
                               "layer": total, "projections": rows}), flush=True)


if __name__ == "__main__":
    main()
