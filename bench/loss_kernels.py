"""The causal-LM loss alone, forward and backward, on the GPU machine: the kernels a studio run
could score its logits with, side by side in one process at the shapes of the bench's
micro-batches. Which is fastest, what each holds, and how far its loss and gradient are from
the whole fp32 logits (the plain recipe).

    python bench/loss_kernels.py [--out results.json]

With --lengths N, the studio's Unsloth loss (backends.torch.fused_loss.unsloth_loss) alone, at N
micro-batch lengths drawn as the bench's 8-row micro-batches are, each call timed by itself: a
call that stops for a compile shows as a stall. --rows-multiple M pads its labelled rows to a
multiple of M (1: not padded); run each M in its own process, as compiled kernels are kept.
"""
from __future__ import annotations

import argparse
import json
import time

VOCAB = 151_936
# (model, hidden size, tokens in the micro-batch): the bench's mean micro-batch at 64 rows
# (0.6B) and at 16 rows (8B), and 8B's longest at 16 rows
SHAPES = [("0.6B", 1024, 25_000), ("8B", 4096, 7_000), ("8B", 4096, 28_000)]
LABELLED = 0.7        # the share of tokens in responses, the rest -100


def whole_logits(h, w, labels, n):
    import torch.nn.functional as F

    logits = (h @ w.T).float()
    return F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="sum") / n


def trl_chunks(h, w, labels, n):
    from trl.trainer.sft_trainer import _chunked_cross_entropy_loss

    return _chunked_cross_entropy_loss(h[None], w, 256, labels=labels[None],
                                       num_items_in_batch=n)[0]


def unsloth_chunks(h, w, labels, n):
    import unsloth  # noqa: F401  (its loss imports only after it)
    from unsloth_zoo.fused_losses.cross_entropy_loss import unsloth_fused_ce_loss

    return unsloth_fused_ce_loss(None, h[None], w, None, labels[None], n_items=n)


def cut_cross_entropy(filter_eps):
    def loss(h, w, labels, n):
        from cut_cross_entropy import linear_cross_entropy

        return linear_cross_entropy(h, w, labels, shift=1, reduction="sum",
                                    filter_eps=filter_eps) / n
    return loss


KERNELS = {"whole fp32 logits": whole_logits, "trl chunks": trl_chunks,
           "unsloth chunks": unsloth_chunks, "cce exact": cut_cross_entropy(None),
           "cce filtered": cut_cross_entropy("high")}


def measure(kernel, h, w, labels, n, repeats=10):
    import torch

    def once():
        x = h.detach().requires_grad_()
        loss = kernel(x, w, labels, n)
        loss.backward()
        return loss.detach(), x.grad

    for _ in range(3):
        once()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    for _ in range(repeats):
        loss, grad = once()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - start) / repeats * 1e3
    return ms, (torch.cuda.max_memory_allocated() - base) / 2**30, loss, grad


def stalls(lengths: int, rows_multiple: int) -> list[dict]:
    """Each call of the studio's Unsloth loss timed by itself at `lengths` micro-batch lengths
    (8 rows of about 430 tokens, 100 to 2,000, as the bench's chat): the median call, and the
    calls after the first that took over three times it (stops to compile a kernel again)."""
    import statistics

    import torch
    import unsloth  # noqa: F401  (its loss imports only after it)

    from backends.torch import fused_loss

    fused_loss.UNSLOTH_ROWS_MULTIPLE = rows_multiple
    g = torch.Generator().manual_seed(0)
    rows = (torch.randn(lengths, 8, generator=g) * 0.6 + 5.88).exp().clamp(100, 2000)
    tokens = rows.sum(1).int().tolist()
    out = []
    for model, hidden in (("0.6B", 1024), ("8B", 4096)):
        w = (torch.randn(VOCAB, hidden, device="cuda") * 0.02).to(torch.bfloat16)
        times = []
        for n in tokens:
            h = torch.randn(1, n, hidden, device="cuda", dtype=torch.bfloat16,
                            requires_grad=True)
            labels = torch.randint(0, VOCAB, (1, n), device="cuda")
            labels[torch.rand(1, n, device="cuda") > LABELLED] = -100
            torch.cuda.synchronize()
            start = time.perf_counter()
            fused_loss.unsloth_loss(h, w, labels, (labels[:, 1:] != -100).sum()).backward()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1e3)
        median = statistics.median(times)
        stops = [round(t) for t in times[1:] if t > 3 * median]
        out.append({"model": model, "rows_multiple": rows_multiple, "calls": len(times),
                    "first_ms": round(times[0]), "median_ms": round(median, 2),
                    "stalls": len(stops), "stall_ms": stops, "total_s": round(sum(times) / 1e3, 2)})
        print(out[-1], flush=True)
    return out


def main():
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--lengths", type=int, help="time the studio's Unsloth loss call by call")
    p.add_argument("--rows-multiple", type=int, default=512)
    args = p.parse_args()
    if args.lengths:
        rows = stalls(args.lengths, args.rows_multiple)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)
        return
    torch.manual_seed(0)
    rows = []
    for model, hidden, tokens in SHAPES:
        # the bench's random-weight models: unit hidden states, lm_head at std 0.02
        h = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
        w = (torch.randn(VOCAB, hidden, device="cuda") * 0.02).to(torch.bfloat16)
        labels = torch.randint(0, VOCAB, (tokens,), device="cuda")
        labels[torch.rand(tokens, device="cuda") > LABELLED] = -100
        n = (labels[1:] != -100).sum()
        reference = None
        for name, kernel in KERNELS.items():
            try:
                ms, gib, loss, grad = measure(kernel, h, w, labels, n)
            except Exception as error:      # a kernel that fails here is a finding, not a stop
                rows.append({"model": model, "tokens": tokens, "kernel": name,
                             "error": f"{type(error).__name__}: {error}"[:300]})
                print(rows[-1], flush=True)
                continue
            if reference is None:
                reference = loss.float(), grad.float()
            cosine = torch.nn.functional.cosine_similarity(
                grad.float().flatten(), reference[1].flatten(), dim=0).item()
            rows.append({"model": model, "tokens": tokens, "kernel": name, "ms": round(ms, 2),
                         "peak_gib": round(gib, 2), "loss": loss.item(),
                         "loss_vs_whole": (loss.float() / reference[0]).item() - 1,
                         "grad_cosine_vs_whole": cosine,
                         "grad_norm_vs_whole": (grad.float().norm()
                                                / reference[1].norm()).item()})
            print(rows[-1], flush=True)
            torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
