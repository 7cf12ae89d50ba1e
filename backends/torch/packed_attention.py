"""Padding-free rows attended each to itself, behind transformers' attention interface, for the
transformers backend (which runs over several GPUs and wherever Unsloth does not).

A padding-free micro-batch is one long row of rows whose position ids restart at each row.
transformers' SDPA path attends it through a block-diagonal mask over the whole micro-batch,
so its work grows with the square of the micro-batch's length. Here each row attends only to
itself: through torch's varlen flash attention on a CUDA GPU in 16-bit (checked once against
SDPA row by row, as Unsloth's path is in backends.unsloth), and through SDPA one row at a time
elsewhere, which is slower and gives the same answer (tests/test_packing.py).

It serves training and the trainer's own sample answers (one row, no padding); a model loaded
for the chat keeps SDPA.
"""
from __future__ import annotations

import functools
import inspect

NAME = "studio_varlen"
_rows: dict = {"position_ids": None}   # the micro-batch in flight: its row boundaries, once
_said: dict = {}                       # implementation -> what install() found it to be


def install() -> tuple[str, str]:
    """Register the attention and say which implementation a training model loads with, and
    what attends its rows: varlen flash attention where it is here and passes the check, else
    transformers' SDPA with its block mask."""
    import torch
    from transformers import AttentionInterface

    global _host_bounded
    if not hasattr(_host_bounded, "__wrapped__"):   # once: the host's part stays out of graphs
        _host_bounded = torch.compiler.disable(_host_bounded)
    AttentionInterface.register(NAME, attention)
    found = (NAME, "torch varlen flash attention, row by row (transformers)")
    if not torch.cuda.is_available():
        found = ("sdpa", "sdpa (transformers)")
    else:
        try:
            check(lambda q, k, v, cu, longest, scale=None, **_: _varlen(q, k, v, cu, longest,
                                                                        scale))
        except Exception as e:   # noqa: BLE001 - SDPA with a mask is slower, never wrong
            found = ("sdpa", f"sdpa (transformers; varlen flash attention unusable here: "
                             f"{str(e)[:160]})")
    _said[found[0]] = found[1]
    return found


def describe(model) -> str:
    """What attends a loaded model's rows, for the run's plan."""
    name = model.config._attn_implementation
    return _said.get(name, f"{name} (transformers)")


def attention(module, query, key, value, attention_mask, dropout: float = 0.0,
              scaling=None, position_ids=None, cu_seq_lens_q=None, max_length_q=None,
              **kwargs):
    """transformers' attention call: query (1, heads, tokens, dim) of a padding-free
    micro-batch, position ids restarting at each row. Generation steps (fewer queries than
    keys) and masked calls go to SDPA, which is exact for them.

    Row bounds handed in by the collator (cu_seq_lens_q: `bucketed`, `with_row_bounds`) go
    straight to the varlen kernel, which torch.compile traces, so a compiled decoder layer is
    one graph. Otherwise the bounds are read from the position ids, which needs the host
    (outside any compiled graph)."""
    if cu_seq_lens_q is not None and _flash(query, dropout) and query.shape[2] == key.shape[2]:
        q, k, v = (x[0].transpose(0, 1).contiguous() for x in (query, key, value))
        longest = max_length_q or q.shape[0]   # no row is longer than the micro-batch
        return _varlen(q, k, v, cu_seq_lens_q, longest, scaling).unsqueeze(0), None
    return _host_bounded(module, query, key, value, attention_mask, dropout, scaling,
                         position_ids, cu_seq_lens_q, **kwargs)


def _host_bounded(module, query, key, value, attention_mask, dropout, scaling, position_ids,
                  cu_seq_lens_q, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if position_ids is None or attention_mask is not None or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"{NAME} attends padding-free micro-batches (one row of rows), "
                         f"not a batch of {query.shape[0]}")
    q, k, v = (x[0].transpose(0, 1).contiguous() for x in (query, key, value))
    if cu_seq_lens_q is not None:    # handed in, for no flash kernel (`attention` took those)
        return _row_by_row(q, k, v, cu_seq_lens_q, scaling).unsqueeze(0), None
    cu, longest = row_bounds(position_ids)
    out = (_varlen(q, k, v, cu, longest, scaling) if _flash(query, dropout)
           else _row_by_row(q, k, v, cu, scaling))
    return out.unsqueeze(0), None


def _flash(query, dropout: float) -> bool:
    """Whether the varlen flash kernel takes these queries: 16-bit on a CUDA GPU, no dropout."""
    import torch

    return query.is_cuda and query.dtype in (torch.bfloat16, torch.float16) and not dropout


BUCKET = 512      # tokens: micro-batches are padded up to a multiple of this (`bucketed`)
ROWS_STEP = 16    # and their count of rows, padding included, up to a multiple of this


def bucketed(collate, pad_id: int, bucket: int = BUCKET):
    """trl's padding-free collator, made to give micro-batches of few shapes, for CUDA graphs
    (one recording a shape): tokens padded up to a multiple of `bucket` (a small model takes a
    larger one: compiled_layers.graph_bucket) and rows up to a multiple of ROWS_STEP, and the
    row bounds handed to `attention` as cu_seq_lens_q, so that no layer asks the host for them.

    The padding is rows of their own with ignored labels (one long row, then one-token rows to
    make up the count), so the loss, the gradients and the trainer's count of real tokens (those
    that are not pad_id) stay as they were (tests/test_packing.py)."""
    import torch

    fill = {"input_ids": pad_id, "labels": -100}

    def collate_bucketed(examples):
        batch = collate(examples)
        positions = batch["position_ids"][0]
        tokens = positions.numel()
        starts = (positions == 0).nonzero().flatten().tolist()
        lengths = [end - start for start, end in zip(starts, starts[1:] + [tokens])]
        fillers = -(-(len(lengths) + 1) // ROWS_STEP) * ROWS_STEP - len(lengths)   # >= 1 row
        pad = -(-(tokens + fillers) // bucket) * bucket - tokens                   # >= fillers
        pad_rows = [pad - fillers + 1] + [1] * (fillers - 1)
        for key, value in batch.items():
            if key != "position_ids" and torch.is_tensor(value) and value.shape == (1, tokens):
                batch[key] = torch.cat([value, value.new_full((1, pad), fill.get(key, 0))], 1)
        batch["position_ids"] = torch.cat([positions] + [torch.arange(n) for n in pad_rows])[None]
        batch["cu_seq_lens_q"] = torch.tensor([0] + lengths + pad_rows).cumsum(0).to(torch.int32)
        return batch

    return collate_bucketed


def with_row_bounds(collate):
    """trl's padding-free collator, made to hand each micro-batch's row bounds to `attention`
    (cu_seq_lens_q, and its longest row as max_length_q), so that compiled decoder layers trace
    attention instead of breaking their graph around it to ask the host: with layers compiled
    and no CUDA graphs, each graph break is a compiled region more to enter, twice a layer, and
    an 8B step left its GPU idle between them (bench/HISTORY.md, round seventeen).
    The longest row is counted here, on the host, before the batch goes to the GPU."""
    def collate_with_row_bounds(examples):
        batch = collate(examples)
        batch["cu_seq_lens_q"], batch["max_length_q"] = _bounds(batch["position_ids"][0])
        return batch

    return collate_with_row_bounds


def row_bounds(position_ids):
    """(cumulative row starts as int32, the longest row) of the micro-batch in flight. Every
    layer gets the same position_ids tensor, so the host waits for the longest row once a
    forward, not once a layer."""
    if _rows["position_ids"] is not position_ids:
        cu, longest = _bounds(position_ids[0])
        _rows.update(position_ids=position_ids, cu=cu, longest=longest)
    return _rows["cu"], _rows["longest"]


def _bounds(positions):
    """(cumulative row starts as int32, the longest row) of one row of rows whose positions
    restart at each row."""
    import torch

    starts = torch.nonzero(positions == 0).flatten()
    cu = torch.cat([starts, starts.new_tensor([positions.numel()])]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


def _varlen(q, k, v, cu, longest: int, scale):
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn(q, k, v, cu, cu, longest, longest, scale=scale, window_size=(-1, 0),
                       **_grouped_kv())


@functools.cache
def _grouped_kv() -> dict:
    """torch 2.12 and later ask for grouped KV heads by name; the kernel of 2.11 takes them as
    they are. Read once, not at every layer of every step."""
    from torch.nn.attention.varlen import varlen_attn

    return {"enable_gqa": True} if "enable_gqa" in inspect.signature(varlen_attn).parameters \
        else {}


def _row_by_row(q, k, v, cu, scale):
    import torch
    import torch.nn.functional as F

    bounds = cu.tolist()
    rows = [F.scaled_dot_product_attention(*(x[a:b].transpose(0, 1) for x in (q, k, v)),
                                           is_causal=True, scale=scale, enable_gqa=True)
            for a, b in zip(bounds, bounds[1:])]
    return torch.cat([r.transpose(0, 1) for r in rows])


def check(call) -> None:
    """Two packed rows through a varlen call against causal SDPA on each row: outputs and input
    gradients must agree (grouped KV heads, bf16). `call(q, k, v, cu, longest, scale=None,
    window_size=(-1, 0), enable_gqa=True)`; raises when they differ."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    lengths, heads, kv_heads, dim = (37, 91), 4, 2, 128
    q, k, v = (torch.randn(sum(lengths), h, dim, device="cuda", dtype=torch.bfloat16,
                           requires_grad=True) for h in (heads, kv_heads, kv_heads))
    cu = torch.tensor([0, lengths[0], sum(lengths)], device="cuda", dtype=torch.int32)
    packed = call(q, k, v, cu, max(lengths), scale=None, window_size=(-1, 0), enable_gqa=True)
    grads = torch.autograd.grad(packed.float().square().sum(), (q, k, v))
    rows = []
    for start, n in ((0, lengths[0]), (lengths[0], lengths[1])):
        qs, ks, vs = (x[start:start + n].transpose(0, 1)[None] for x in (q, k, v))
        ks, vs = (x.repeat_interleave(heads // kv_heads, dim=1) for x in (ks, vs))
        rows.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)[0].transpose(0, 1))
    plain = torch.cat(rows)
    expected = torch.autograd.grad(plain.float().square().sum(), (q, k, v))
    torch.testing.assert_close(packed, plain, atol=2e-2, rtol=2e-2)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, atol=5e-2, rtol=5e-2)
