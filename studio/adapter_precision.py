"""LoRA adapters held in the dtype the model computes in, stepped by AdamW on fp32 copies.

peft and Unsloth keep adapters in fp32 under a bf16 model, so every use casts. Unsloth casts
each A and B at every matmul, forward and backward: about 1,600 casts a step at 8B, each a
launch the host must issue (#16). peft casts each projection's input up to fp32 and multiplies
in fp32. Held in bf16, the adapters cast nothing; the optimiser keeps an fp32 copy of each,
steps the copies as AdamW on fp32 adapters would, and writes them back once a step, all tensors
in one foreach copy. Gradients are what they were: computed in bf16 by the same matmuls (summed
over a step's micro-batches in bf16 now, not fp32), read into fp32 for the step.

Only for bf16 in one process: fp16 scales its gradients through the optimiser's own tensors, and
a sharded model's parameters are not the tensors the optimiser would copy.
"""
from __future__ import annotations

import torch


class AdamWOnFloat32Copies(torch.optim.AdamW):
    """AdamW whose parameters are fp32 copies of the 16-bit tensors it trains.

    The Trainer sees an ordinary AdamW: its param_groups (learning rate, weight decay) and its
    state are the copies', and state_dict carries the copies themselves, so a resumed run goes on
    from the same fp32 weights, not from their rounded 16-bit values in the checkpoint."""

    def __init__(self, params, dtype=torch.bfloat16, **kwargs):
        groups = [dict(g) if isinstance(g, dict) else {"params": g} for g in params]
        self.trained = [p for g in groups for p in g["params"]]
        for g in groups:
            g["params"] = [p.detach().float() for p in g["params"]]
        super().__init__(groups, **kwargs)
        self.copies = [c for g in self.param_groups for c in g["params"]]
        for p in self.trained:     # a resumed run's adapter, which peft loads back into fp32
            p.data = p.data.to(dtype)

    def zero_grad(self, set_to_none: bool = True):
        if set_to_none:
            for p in self.trained:
                p.grad = None
        else:       # layer graphs keep gradients in memory of their own (trl_recipe.keep_grads)
            torch._foreach_zero_([p.grad for p in self.trained if p.grad is not None])

    @torch.no_grad()
    def step(self, closure=None):
        pairs = []
        for p, c in zip(self.trained, self.copies):
            if p.grad is None:
                c.grad = None               # AdamW leaves a tensor without a gradient alone
            else:
                c.grad = torch.empty_like(c) if c.grad is None else c.grad
                pairs.append((p, c))
        if pairs:
            torch._foreach_copy_([c.grad for _, c in pairs], [p.grad for p, _ in pairs])
        loss = super().step(closure)
        if pairs:
            torch._foreach_copy_([p for p, _ in pairs], [c for _, c in pairs])
        return loss

    def state_dict(self):
        return {**super().state_dict(), "fp32_copies": [c.detach().clone() for c in self.copies]}

    @torch.no_grad()
    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        copies = state_dict.pop("fp32_copies", None)
        super().load_state_dict(state_dict)
        if copies is not None:
            torch._foreach_copy_(self.copies, [c.to(self.copies[0].device) for c in copies])
            torch._foreach_copy_(self.trained, self.copies)


def hold_in_compute_dtype(trainer) -> bool:
    """Casts the trainer's adapters to bf16 and has the Trainer step them with
    AdamWOnFloat32Copies, where the run trains in bf16 in one process with torch's AdamW.
    (trl already holds a quantised model's adapters in bf16, then steps them in bf16: they get
    fp32 copies too.) Called before the Trainer makes its optimiser; says whether it did."""
    args, model = trainer.args, trainer.model
    trained = [p for p in model.parameters() if p.requires_grad]
    if not (args.bf16 and args.world_size == 1 and trained and trainer.optimizer is None
            and trainer.optimizer_cls_and_kwargs is None
            and all(p.dtype in (torch.float32, torch.bfloat16) for p in trained)):
        return False
    optimizer_cls, kwargs = trainer.get_optimizer_cls_and_kwargs(args, model)
    if optimizer_cls is not torch.optim.AdamW:
        return False
    for p in trained:
        p.data = p.data.to(torch.bfloat16)
    trainer.optimizer_cls_and_kwargs = (AdamWOnFloat32Copies, kwargs)
    return True
