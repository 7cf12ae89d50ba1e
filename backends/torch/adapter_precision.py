"""LoRA adapters held in the dtype the model computes in, stepped by AdamW on fp32 copies.

peft and Unsloth keep adapters in fp32 under a bf16 model, so every use casts. Unsloth casts
each A and B at every matmul, forward and backward: about 1,600 casts a step at 8B, each a
launch the host must issue (#16). peft casts each projection's input up to fp32 and multiplies
in fp32. Held in bf16, the adapters cast nothing; the optimiser keeps an fp32 copy of each and
steps the copies as AdamW on fp32 adapters would. Gradients are computed in bf16 by the same
matmuls (summed over a step's micro-batches in bf16, not fp32), read into fp32 for the step.

The copies and their gradients live in one flat fp32 buffer each: the step's gradients are read
into it in one foreach copy, and the gradient norm, clipping and AdamW are then one kernel each
instead of a launch per tensor in foreach lists of 504 (8B, r16 on all seven projections), whose
host work kept the GPU waiting (bench/HISTORY.md, round ten). The weights go back to the
bf16 adapters in one foreach copy. The bf16 gradients themselves stay where autograd makes them:
accumulated into a buffer of ours they would cost an add kernel per tensor per micro-batch, where
autograd otherwise hands its tensor over.

Only for bf16 in one process on one device: fp16 scales its gradients through the optimiser's
own tensors, and a sharded model's parameters are not the tensors the optimiser would copy.
"""
from __future__ import annotations

import torch


class AdamWOnFloat32Copies(torch.optim.AdamW):
    """AdamW on one flat fp32 copy per parameter group of the 16-bit tensors it trains.

    The Trainer sees an ordinary AdamW: its param_groups (learning rate, weight decay) and its
    state are the copies', and state_dict carries the copies themselves, so a resumed run goes on
    from the same fp32 weights, not from their rounded 16-bit values in the checkpoint.

    Unlike AdamW, a tensor left without a gradient in a step gets a zero one (the flat buffer
    holds a gradient for every tensor): AdamW then still moves it by its momentum and weight
    decay. Every LoRA tensor gets a gradient at every step."""

    def __init__(self, params, dtype=torch.bfloat16, **kwargs):
        groups = [dict(g) if isinstance(g, dict) else {"params": list(g)} for g in params]
        self.trained = [p for g in groups for p in g["params"]]
        # the copies are taken before the cast: a resumed run's adapter, which peft loads back
        # into fp32, keeps its fp32 values
        master = torch.cat([p.detach().float().reshape(-1) for p in self.trained])
        self.master_grads = torch.zeros_like(master)
        self._master_views = _views(master, self.trained)
        self._master_grad_views = _views(self.master_grads, self.trained)
        start = 0
        for g in groups:            # a group's tensors are contiguous in both buffers
            end = start + sum(p.numel() for p in g["params"])
            copy = master[start:end]
            copy.grad = self.master_grads[start:end]
            g["params"] = [copy] if end > start else []
            start = end
        super().__init__(groups, **kwargs)
        self.copies = [c for g in self.param_groups for c in g["params"]]
        for p in self.trained:
            p.data = p.data.to(dtype)
        self._gathered = False

    def zero_grad(self, set_to_none: bool = True):
        self._gathered = False
        if set_to_none:
            for p in self.trained:
                p.grad = None
        else:       # layer graphs keep gradients in memory of their own (compiled_layers.keep_grads)
            torch._foreach_zero_([p.grad for p in self.trained if p.grad is not None])

    @torch.no_grad()
    def _gather(self):
        """The step's gradients, read into the fp32 buffer once (clipping reads them first)."""
        if self._gathered:
            return
        pairs = [(p.grad, view) for p, view in zip(self.trained, self._master_grad_views)
                 if p.grad is not None]
        if len(pairs) < len(self.trained):
            self.master_grads.zero_()
        if pairs:
            torch._foreach_copy_([view for _, view in pairs], [grad for grad, _ in pairs])
        self._gathered = True

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """The gradients' total L2 norm, in fp32, and the gradients scaled to at most max_norm,
        as torch.nn.utils.clip_grad_norm_ computes them."""
        self._gather()
        norm = torch.linalg.vector_norm(self.master_grads)
        if max_norm != float("inf"):
            self.master_grads.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
        return norm

    @torch.no_grad()
    def step(self, closure=None):
        self._gather()
        loss = super().step(closure)
        torch._foreach_copy_(self.trained, self._master_views)
        self._gathered = False
        return loss

    def state_dict(self):
        return {**super().state_dict(), "fp32_copies": [c.detach().clone() for c in self.copies]}

    @torch.no_grad()
    def load_state_dict(self, state_dict):
        state_dict = _flattened(dict(state_dict))
        copies = state_dict.pop("fp32_copies", None)
        super().load_state_dict(state_dict)
        if copies is not None:
            torch._foreach_copy_(self.copies, [c.to(self.copies[0].device) for c in copies])
            torch._foreach_copy_(self.trained, self._master_views)


def _views(flat: torch.Tensor, like: list) -> list:
    """flat cut into views shaped as the tensors in `like`, in order."""
    return [piece.view(t.shape) for piece, t in zip(flat.split([t.numel() for t in like]), like)]


def _flattened(state_dict: dict) -> dict:
    """An optimiser state saved one tensor at a time (torch's AdamW, or this class before its
    buffers were flat) as one tensor per group, so that a run checkpointed by an earlier version
    resumes."""
    groups, state = state_dict["param_groups"], state_dict["state"]
    if all(len(g["params"]) <= 1 for g in groups):
        return state_dict
    flat_state, flat_groups = {}, []
    copies = state_dict.get("fp32_copies")
    flat_copies, start = [], 0
    for index, group in enumerate(groups):
        ids = group["params"]
        flat_groups.append({**group, "params": [index] if ids else []})
        if copies is not None and ids:
            flat_copies.append(torch.cat([c.reshape(-1) for c in copies[start:start + len(ids)]]))
        start += len(ids)
        if ids and all(i in state for i in ids):
            first = state[ids[0]]
            flat_state[index] = {key: (value.clone() if value.dim() == 0 else
                                       torch.cat([state[i][key].reshape(-1) for i in ids]))
                                 for key, value in first.items()}
    flat = {**state_dict, "state": flat_state, "param_groups": flat_groups}
    if copies is not None:
        flat["fp32_copies"] = flat_copies
    return flat


def hold_in_compute_dtype(trainer) -> bool:
    """Casts the trainer's adapters to bf16 and has the Trainer step them with
    AdamWOnFloat32Copies, where the run trains in bf16 in one process on one device with
    torch's AdamW. (trl already holds a quantised model's adapters in bf16, then steps them in
    bf16: they get fp32 copies too.) Called before the Trainer makes its optimiser; says whether
    it did."""
    args, model = trainer.args, trainer.model
    trained = [p for p in model.parameters() if p.requires_grad]
    if not (args.bf16 and args.world_size == 1 and trained and trainer.optimizer is None
            and trainer.optimizer_cls_and_kwargs is None
            and len({p.device for p in trained}) == 1
            and all(p.dtype in (torch.float32, torch.bfloat16) for p in trained)):
        return False
    optimizer_cls, kwargs = trainer.get_optimizer_cls_and_kwargs(args, model)
    if optimizer_cls is not torch.optim.AdamW:
        return False
    for p in trained:
        p.data = p.data.to(torch.bfloat16)
    trainer.optimizer_cls_and_kwargs = (AdamWOnFloat32Copies, kwargs)
    return True
