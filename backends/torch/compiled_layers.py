"""The transformers backend's decoder layers compiled by torch.compile, and replayed as CUDA
graphs where the run's plan says: on a GPU, small updates are bound by the host's kernel
launches (#16), and these take most of them off the host. When a run compiles and takes graphs
is the plan's to decide (studio/plan/compiling.py)."""
from __future__ import annotations


def compile_layers(model, config) -> None:
    """Each decoder layer compiled by torch.compile, where the config asks: a step then launches
    a few fused kernels a layer instead of dozens of small ones (norms, rotary, SwiGLU, LoRA's
    scaling and casts), and small updates are bound by those launches on a GPU (#16's profile:
    more host work than GPU work a step). All layers share one compiled graph, with the token
    count dynamic from the start so that micro-batches of any length reuse it. Attention traces
    inside it: the micro-batches bring their rows' bounds along (packed_attention.with_row_bounds,
    or `bucketed` with layer graphs), so the host is not asked for them between two halves of a
    layer, where the GPU would wait on it (bench/HISTORY.md, round eighteen).

    With config.layer_graphs (the plan decides it), the layers also replay as CUDA
    graphs, one recording for each micro-batch shape (packed_attention.bucketed pads them to
    few), so that a step's launches cost the host almost nothing (bench/HISTORY.md, round
    five)."""
    if not config.compile_layers:
        return
    import torch

    # a layer's Python floats (RMSNorm's eps, LoRA's scaling) are the same in every layer: as
    # constants, not as CPU scalars handed in at each call (CPU work that CUDA graphs cannot hold)
    torch._dynamo.config.specialize_float = True
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True, mode="reduce-overhead" if config.layer_graphs else None)
    if config.layer_graphs:
        graph_trees_on_this_thread()
        keep_grads(model)
        recompute_outside_graphs(model, layers)


def graph_trees_on_this_thread() -> None:
    """Give this thread torch's bookkeeping of CUDA graphs. torch 2.11 sets it up only on the
    thread that first imports torch._inductor.cudagraph_trees and asserts on any other: after a
    run had compiled its layers on its training thread, the chat loaded in the same process
    failed in its warm-up on its own thread (bench/HISTORY.md, round seventeen), and a second run
    with layer graphs, on a new training thread, at its first step (issue #39, item 3). Later
    torch sets it up on demand, as this does."""
    import threading
    from collections import defaultdict

    import torch
    from torch._inductor import cudagraph_trees

    local = cudagraph_trees.local
    if not hasattr(local, "tree_manager_containers"):
        local.tree_manager_containers = {}
        local.tree_manager_locks = defaultdict(threading.Lock)
        # and where autograd's backward threads look, which take this thread's C++ state
        torch._C._stash_obj_in_tls("tree_manager_containers", local.tree_manager_containers)
        torch._C._stash_obj_in_tls("tree_manager_locks", local.tree_manager_locks)


def recompute_outside_graphs(model, layers) -> None:
    """A layer that recomputes in this micro-batch (trl_recipe.recompute_per_micro_batch, whose
    hook runs before this one wherever it was registered) runs eagerly, outside the graphs: a
    graph's outputs live in memory that its next replay overwrites, and a recomputed layer
    replays in the backward, after the forward's outputs it needs were overwritten: a run with
    some micro-batches recomputing failed at the first of them (bench/HISTORY.md, round
    twelve). Such micro-batches are rare where graphs are taken
    (layer_graphs_pay)."""
    compiled = [layer._compiled_call_impl for layer in layers]

    def before_forward(module, args, kwargs):
        if module.training:
            for layer, graphs in zip(layers, compiled):
                layer._compiled_call_impl = None if layer.gradient_checkpointing else graphs

    model.register_forward_pre_hook(before_forward, with_kwargs=True)


def keep_grads(model) -> None:
    """LoRA gradients held in memory of their own, zeroed in place between updates. A gradient
    that autograd first creates inside a CUDA graph's replay lives in the graphs' memory pool,
    which the next micro-batch overwrites; accumulated into a tensor allocated here, it is safe
    (torch's cudagraph trees ask for exactly this)."""
    import functools

    import torch

    for param in model.parameters():
        if param.requires_grad:
            param.grad = torch.zeros_like(param)
    model.zero_grad = functools.partial(model.zero_grad, set_to_none=False)


def release_layer_graphs() -> None:
    """Give back the memory that this thread's CUDA graphs recorded (compile_layers). The trees
    belong to the thread that trained: a chat decoding on its own thread keeps its graphs."""
    from torch._inductor.cudagraph_trees import reset_cudagraph_trees

    reset_cudagraph_trees()


def decoder_layers(model) -> list:
    """The model's decoder layers, first to last (those transformers can checkpoint)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
