"""The training loss in one kernel on CUDA: cut-cross-entropy projects the last hidden states
onto the vocabulary and takes the cross-entropy blockwise, in Triton, without writing a logit
to memory.

Forward and backward for 25,000 tokens of 0.6B on an H200: 60 ms, against 79 ms over the whole
fp32 logits (which hold 42 GiB) and 133 ms through trl's chunks; at 8B it is as fast as trl's
chunks and holds less. A user's 64 rows an update train the 0.6B through Unsloth's layers at
1.44x the tokens/s they did with trl's chunks (BENCHMARKS.md, round thirteen). The gradient is
exact: the library's default leaves out entries below bfloat16's precision, an approximation
measured by the bench (fused=filtered), not made by the studio.

Both backends train through it: the model's forward, given labels, runs the decoder alone and
returns the loss scored here instead of logits; without labels (the samples shown during
training, the chat) it is as it was.
"""
from __future__ import annotations

import importlib.util


def available(config) -> bool:
    """Where the kernel runs: a CUDA GPU, with cut-cross-entropy installed (the cuda extra)."""
    import torch

    return (not config.cpu_only and torch.cuda.is_available()
            and importlib.util.find_spec("cut_cross_entropy") is not None)


def in_effect(config) -> bool:
    """Whether this run scores its loss here: fused_loss, left to auto, wherever it runs in
    one process (it was measured on one GPU; several keep the loss they were measured with),
    unless whole_logits were asked for."""
    if config.fused_loss is not None:
        return config.fused_loss
    return available(config) and config.world_size == 1 and not config.whole_logits


# cut-cross-entropy's filter_eps: None keeps every gradient entry; its own default, "high",
# leaves out those below bfloat16's precision (the bench's fused=filtered measures that)
GRADIENT_FILTER = None


# Triton compiles a kernel again for each new pattern of which integer arguments divide by
# 16, and cut-cross-entropy passes the number of rows it scores and counts of locks over 128
# and over 16-64 of them. Rows padded to a multiple of this make each of those divisible, so
# that each kernel compiles once: unpadded, 0.6B at 64 rows an update stopped for 1-2 s every
# few steps to compile one again, which cost more than the kernel saved (round thirteen).
ROWS_MULTIPLE = 2048


def next_token_loss(hidden, weight, labels, num_items=None):
    """The causal LM's loss: each position's hidden state scores the next label; -100 is
    ignored. Summed and divided by num_items (the labelled tokens of the whole update, so that
    micro-batches add up to the update's mean), or the mean of this micro-batch's."""
    import torch.nn.functional as F
    from cut_cross_entropy import linear_cross_entropy

    targets = labels[..., 1:]
    labelled = targets != -100
    rows, wanted = hidden[..., :-1, :][labelled], targets[labelled]   # as the kernel takes them
    count = rows.shape[0]
    pad = -count % ROWS_MULTIPLE or (0 if count else ROWS_MULTIPLE)   # zero rows, target 0
    losses = linear_cross_entropy(F.pad(rows, (0, 0, 0, pad)), weight, F.pad(wanted, (0, pad)),
                                  reduction="none", filter_eps=GRADIENT_FILTER)
    return losses[:count].sum() / (num_items if num_items is not None else max(count, 1))


def score_labels_here(causal_lm) -> None:
    """causal_lm's forward, given labels, runs its decoder alone and returns next_token_loss
    over the last hidden states; without labels it runs as before. The same for Unsloth's
    models as for transformers': trl's chunked loss called Unsloth's decoder this way in every
    Unsloth run before round thirteen. (Unsloth's own switch for this, the environment variable
    UNSLOTH_RETURN_HIDDEN_STATES, belongs to the whole process, where a chat on another thread
    would read it too.)"""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    original = causal_lm.forward

    def forward(*args, labels=None, num_items_in_batch=None, **kwargs):
        if labels is None:
            return original(*args, **kwargs)
        kwargs.pop("use_cache", None)
        hidden = causal_lm.model(*args, use_cache=False, **kwargs).last_hidden_state
        return CausalLMOutputWithPast(
            loss=next_token_loss(hidden, causal_lm.get_output_embeddings().weight, labels,
                                 num_items_in_batch))

    causal_lm.forward = forward
