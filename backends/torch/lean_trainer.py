"""The Trainer with little host work between a step's GPU kernels, for both backends: a small
update on a GPU is bound by the host (#16), and trl's trainer spends much of it on bookkeeping
the studio never shows."""
from __future__ import annotations

from backends.torch.compiled_layers import decoder_layers


def lean_steps(trainer_class, own_loss: bool = True):
    """trainer_class with little host work between a step's GPU kernels. At 8 rows an update
    a 0.6B step on a GPU is bound by the host (#16), and the Trainer spent much of it walking
    the model's ~4,800 modules (LoRA's included; bench/HISTORY.md, round five): for
    model.train() at every micro-batch, for zero_grad and the gradient clipping over every
    parameter, frozen or not, and for a FLOP count nobody reads. Here each touches only the
    trained parameters or returns at once. In bf16 the adapters are held in bf16, so that no
    matmul casts them, and the optimiser's fp32 copies sit in one flat buffer that the norm,
    clipping and AdamW each read in one kernel (backends.torch.adapter_precision). And nothing is read
    back from the GPU between two logs: trl reads the entropy, token accuracy and token count of
    every micro-batch with .item(), the Trainer its count of tokens seen, and each read makes
    the host wait for the GPU instead of queuing the next work. The studio shows none of these;
    the token count waits on the GPU for the log.
    With own_loss False the trainer's compute_loss stays as it is (Unsloth patches it)."""
    bases = (_LossWithoutReads, _LeanSteps) if own_loss else (_LeanSteps,)
    return type("LeanSteps", (*bases, trainer_class), {})


class _LeanSteps:
    """lean_steps' bookkeeping: fewer walks over the model, no reads of the token count."""
    _unread_tokens = None       # on the GPU: the tokens counted since the last log
    _flops_per_token = None

    def __init__(self, *args, **kwargs):
        from backends.torch import adapter_precision

        super().__init__(*args, **kwargs)
        adapter_precision.hold_in_compute_dtype(self)   # no cast at each use of an adapter
        model, walk = self.model, self.model.train
        self._trained = [p for p in model.parameters() if p.requires_grad]
        layers = decoder_layers(model)

        def train(mode=True):
            # skipped only where the walk would change nothing. from_pretrained leaves the
            # decoder layers in eval mode under a wrapper that is not, and a layer recomputes
            # only in training mode: judged by the wrapper alone, no layer recomputed until
            # the first evaluation (#16: bench/HISTORY.md, 'recomputation that never ran')
            if model.training == mode and all(layer.training == mode for layer in layers):
                return model
            return walk(mode)

        model.train = train
        model.zero_grad = self._zero_grad

    def _zero_grad(self, set_to_none: bool = True):
        if self.optimizer is None:
            return type(self.model).zero_grad(self.model, set_to_none)
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def _clip_grad_norm(self, model):           # the Trainer's hook
        if self.args.world_size > 1:            # sharded: the parameters as the ranks see them
            return super()._clip_grad_norm(model)
        return self._norm(self.args.max_grad_norm)

    def _get_grad_norm(self, model, grad_norm=None):    # the Trainer's, where nothing clips
        if grad_norm is not None or self.args.world_size > 1:
            return super()._get_grad_norm(model, grad_norm)
        return self._norm(float("inf"))

    def _norm(self, max_norm: float):
        """The trained tensors' gradient norm, clipped to max_norm: the model's own, or the fp32
        copies' where the optimiser steps copies (adapter_precision), in one flat buffer."""
        from backends.torch.adapter_precision import AdamWOnFloat32Copies

        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)   # accelerate's wrapper
        if isinstance(optimizer, AdamWOnFloat32Copies):
            return optimizer.clip_grad_norm_(max_norm)
        return self.accelerator.clip_grad_norm_(self._trained, max_norm)

    def floating_point_ops(self, inputs):       # the library's count, made once a token
        tokens = inputs["input_ids"].numel()
        if self._flops_per_token is None:
            self._flops_per_token = super().floating_point_ops(inputs) / max(tokens, 1)
        return int(self._flops_per_token * tokens)

    def _track_num_input_tokens(self, inputs):    # the Trainer's hook for this count
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = inputs["input_ids"] != self.processing_class.pad_token_id
        before = 0 if self._unread_tokens is None else self._unread_tokens
        self._unread_tokens = before + mask.sum()

    def log(self, logs, start_time=None):
        if self._unread_tokens is not None:
            seen = self.accelerator.gather(self._unread_tokens).sum()
            self.state.num_input_tokens_seen += int(seen)
            self._unread_tokens = None
        super().log(logs, start_time)


class _LossWithoutReads:
    """The Trainer's compute_loss, not trl's: the loss alone, without trl's per-micro-batch
    entropy, accuracy and token count, each read with .item()."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from transformers import Trainer

        inputs.pop("_prediction_loss_only", None)   # trl's note to its own compute_loss
        inputs["use_cache"] = False
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
