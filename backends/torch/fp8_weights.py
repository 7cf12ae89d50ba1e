"""Frozen base weights held in fp8, their matmuls run on fp8 tensor cores (#16). At 8B, most of
a LoRA step is the frozen weights' matmuls, already near the GPU's bf16 rate (bench/HISTORY.md,
round sixteen), so only a faster number format shortens it further.

LoRA never updates these weights, so each is quantized once, at the start, in the two layouts
its matmuls read: per output channel for the forward (x W^T) and per input channel for the
backward's input gradient (dy W). No weight gradient is computed. torchao's Float8Linear, made
for full fine-tuning, recasts every weight at every matmul and computes its gradient; Unsloth's
load_in_fp8 runs the backward in bf16 from dequantized weights. Activations and gradients are
scaled per row (per token) as they come. The adapters, norms, attention and the loss stay in
16-bit. Compiled, these layers train faster than the same layers in bf16 and than Unsloth's
(bench/HISTORY.md, round eighteen; today's figure in BENCHMARKS.md). Eagerly they are slower:
the small projections pay more to quantize their rows than their matmul saves, so runs with
these weights compile their layers (round seventeen)."""
from __future__ import annotations

import functools

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max


def quantized_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (rows, columns) in fp8, each row scaled to fp8's range, and the scales (rows, 1)."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


@functools.cache
def _fused_quantizer():
    """quantized_rows as one kernel on a GPU (eagerly it is six passes over the rows); inside
    compiled layers it is traced into their own kernels."""
    return torch.compile(quantized_rows, dynamic=True)


def _scaled_matmul(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                   fast_accum: bool):
    """x (..., K) @ weight.T, weight (N, K) fp8 with scales (1, N); out in x's dtype."""
    quantize = _fused_quantizer() if x.is_cuda else quantized_rows
    rows, scale = quantize(x.reshape(-1, x.shape[-1]).contiguous())  # cuBLAS: rows row-major
    out = torch._scaled_mm(rows, weight.t(), scale_a=scale, scale_b=weight_scale,
                           out_dtype=x.dtype, use_fast_accum=fast_accum)
    return out.reshape(*x.shape[:-1], weight.shape[0])


class _FrozenFp8Matmul(torch.autograd.Function):
    """x W^T with W frozen: the backward gives x's gradient only, from W's second layout. The
    forward accumulates in the tensor cores' faster, coarser way and the gradient exactly, as
    torchao's float8 training does by default."""

    @staticmethod
    def forward(ctx, x, weight, weight_scale, weight_t, weight_t_scale):
        ctx.save_for_backward(weight_t, weight_t_scale)
        return _scaled_matmul(x, weight, weight_scale, fast_accum=True)

    @staticmethod
    def backward(ctx, grad):
        weight_t, weight_t_scale = ctx.saved_tensors
        return (_scaled_matmul(grad, weight_t, weight_t_scale, fast_accum=False),
                None, None, None, None)


class Fp8Linear(torch.nn.Module):
    """A frozen nn.Linear whose weight is kept only in fp8, in both layouts (the same bytes as
    one bf16 copy)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        for name, layout in (("weight", weight), ("weight_t", weight.t().contiguous())):
            values, scale = quantized_rows(layout)
            self.register_buffer(name, values, persistent=False)
            self.register_buffer(f"{name}_scale", scale.reshape(1, -1), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach(),
                             persistent=False)

    def forward(self, x):
        out = _FrozenFp8Matmul.apply(x, self.weight, self.weight_scale, self.weight_t,
                                     self.weight_t_scale)
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8"


def fits(linear: torch.nn.Linear) -> bool:
    """Frozen, and of sizes fp8 tensor cores take (both a multiple of 16)."""
    return (not linear.weight.requires_grad and linear.in_features % 16 == 0
            and linear.out_features % 16 == 0)


def to_fp8(model: torch.nn.Module) -> int:
    """Swap every frozen linear layer of the model for an Fp8Linear, except the output
    projection (the loss reads its logits in 16-bit); LoRA's own layers train, so they stay.
    Returns how many were swapped."""
    head = model.get_output_embeddings()
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and child is not head and fits(child):
                setattr(parent, name, Fp8Linear(child))
                swapped += 1
    return swapped
