"""The training loss in one kernel on CUDA: the last hidden states projected onto the
vocabulary and scored chunk by chunk, no logits held. Where Unsloth trains, Unsloth's own loss
(unsloth_zoo), which takes the gradient in the forward: two matmuls a chunk, the least a
projection and its gradient can cost. Where transformers trains, cut-cross-entropy's Triton
kernel, which recomputes the logits in the backward (Unsloth's cannot load without Unsloth, and
importing Unsloth patches transformers for the whole process).

The losses alone, forward and backward (bench/loss_kernels.py): Unsloth's is the fastest at
0.6B and at 8B, ahead of whole fp32 logits (which hold many GiB) and trl's chunks, and both
kernels' gradients agree with whole logits'. cut-cross-entropy's library default leaves out
entries below bfloat16's precision, an approximation measured by the bench (fused=filtered),
not made by the studio. At long micro-batches a whole step is faster through either kernel than
through trl's chunks, Unsloth's most, and the adapters score the same held-out loss
(bench/HISTORY.md, rounds thirteen and fourteen); short micro-batches keep trl's chunks. Where
it is taken is the plan's to decide (studio/plan/batches.py).

Both backends train through it: the model's forward, given labels, runs the decoder alone and
returns the loss scored here instead of logits; without labels (the samples shown during
training, the chat) it is as it was.
"""
from __future__ import annotations

import math


# Unsloth's kernel scores the labelled rows in chunks of 512 rows or more (a power of two up to
# 2,048 at a vocabulary of 151,936), so unpadded its last chunk changes length with every
# micro-batch, and its kernels stopped to compile again mid-run, which cost more than the
# kernel saved. Padded to a multiple of this, they compile only in the first steps (measured:
# bench/HISTORY.md, issue #16, the pairs measured after 'when a kernel pays').
UNSLOTH_ROWS_MULTIPLE = 512


def unsloth_loss(hidden, weight, labels, num_items=None):
    """The causal LM's loss in Unsloth's kernel (next_token_loss's contract). Its labelled rows
    are padded, as the kernel picks them, with zero rows scored against token 0: each scores
    log(vocabulary) exactly, taken off again here, and adds nothing to the gradients."""
    import torch.nn.functional as F
    from unsloth_zoo.fused_losses.cross_entropy_loss import unsloth_fused_ce_loss

    rows = hidden[..., :-1, :].reshape(-1, hidden.shape[-1])
    targets = labels[..., 1:].reshape(-1)
    count = int((targets != -100).sum())        # one read-back, as the kernel makes its own
    pad = -count % UNSLOTH_ROWS_MULTIPLE
    divisor = num_items if num_items is not None else max(count, 1)
    loss = unsloth_fused_ce_loss(None, F.pad(rows, (0, 0, 0, pad))[None], weight, None,
                                 F.pad(targets, (0, pad))[None], n_items=divisor,
                                 shift_labels=False)
    return loss - pad * math.log(weight.shape[0]) / divisor


# cut-cross-entropy's filter_eps: None keeps every gradient entry; its own default, "high",
# leaves out those below bfloat16's precision (the bench's fused=filtered measures that)
GRADIENT_FILTER = None


# Triton compiles a kernel again for each new pattern of which integer arguments divide by
# 16, and cut-cross-entropy passes the number of rows it scores and counts of locks over 128
# and over 16-64 of them. Rows padded to a multiple of this make each of those divisible, so
# that each kernel compiles once: unpadded, a run stopped every few steps to compile one again,
# which cost more than the kernel saved (measured: bench/HISTORY.md, 'the loss in one kernel').
ROWS_MULTIPLE = 2048


def next_token_loss(hidden, weight, labels, num_items=None):
    """The causal LM's loss in cut-cross-entropy's kernel: each position's hidden state scores
    the next label; -100 is ignored. Summed and divided by num_items (the labelled tokens of the
    whole update, so that micro-batches add up to the update's mean), or the mean of this
    micro-batch's."""
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


def score_labels_here(causal_lm, loss=next_token_loss) -> None:
    """causal_lm's forward, given labels, runs its decoder alone and returns `loss` (this
    module's next_token_loss or unsloth_loss) over the last hidden states; without labels it
    runs as before. The same for Unsloth's models as for transformers': trl's chunked loss
    called Unsloth's decoder this way in every Unsloth run before round thirteen
    (bench/HISTORY.md). (Unsloth's own switch for this, the environment variable
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
            loss=loss(hidden, causal_lm.get_output_embeddings().weight, labels, num_items_in_batch))

    causal_lm.forward = forward
