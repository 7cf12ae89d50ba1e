"""The transformers backend's decoder layers compiled by torch.compile, and replayed as CUDA
graphs where a run's micro-batches suit them: on a GPU, small updates are bound by the host's
kernel launches (#16), and these take most of them off the host. Which runs suit graphs is
decided here (layer_graphs_pay; trl_recipe.plan_gpu_batches asks), and which runs compile when
compile_layers is left to auto (compile_pays; studio.runs.execute.execute asks)."""
from __future__ import annotations


# Layer graphs where micro-batches average under GRAPHS_TOKENS tokens (the GPU waits on the
# host's launches), at most GRAPHS_RECOMPUTING of them recompute layers (those layers run
# eagerly: recompute_outside_graphs), and 99% of them come in at most GRAPHS_SHAPES shapes
# (each new one is recorded while training waits). Past any of these, graphs lost to the same
# layers without them: longer micro-batches keep the GPU busy anyway, and where layers recompute
# or new shapes keep coming, training waits on recordings and eager layers instead (measured:
# bench/HISTORY.md, issue #16 from 'graphs measured' to 'a recomputed layer outside the graphs').
GRAPHS_TOKENS = 4096
GRAPHS_RECOMPUTING = 0.01
GRAPHS_SHAPES = 12

# A model under AUTO_BELOW_PARAMS compiles its layers where compile_layers is left to auto and
# graphs pay: its steps at short micro-batches wait on the host's launches, which graphs take
# off the host, and loading and compiling take about as long as loading Unsloth, so a run ends
# sooner. A larger model keeps the GPU busier at the same rows and gains less from graphs, for a
# longer compile: auto leaves larger models to Unsloth (measured: bench/HISTORY.md, 'small
# models compile by default').
AUTO_BELOW_PARAMS = 1e9
# Such a model's micro-batches are padded to a multiple of this many tokens for its graphs: its
# GPU idles at these sizes, so the padding costs no measurable time, and fewer shapes are
# recorded while training waits (measured: bench/HISTORY.md, 'small models compile by
# default'). Larger models keep packed_attention.BUCKET, where padding is GPU work.
SMALL_MODEL_BUCKET = 2048


def small_model(shape) -> bool:
    """A model whose steps at short micro-batches are bound by the host's launches."""
    return shape is not None and shape.params < AUTO_BELOW_PARAMS


def graph_bucket(shape) -> int:
    """The multiple of tokens this model's micro-batches are padded up to for layer graphs."""
    from backends.torch.packed_attention import BUCKET

    return SMALL_MODEL_BUCKET if small_model(shape) else BUCKET


def layer_graphs_pay(plan, lengths: list[int]) -> bool:
    """Whether a run's micro-batches of whole rows suit layer graphs: short, nearly none
    recomputes a layer, and they come in few shapes (packed_attention.bucketed's multiples of
    graph_bucket)."""
    from collections import Counter

    sampled = plan.sample_micro_batches(lengths)
    limit = plan.tokens_recomputing_nothing(lengths) if plan.gradient_checkpointing else None
    recomputing = 0 if limit is None else sum(t > limit for t in sampled) / len(sampled)
    bucket = graph_bucket(plan.shape)
    counts = sorted(Counter(-(-t // bucket) for t in sampled).values(), reverse=True)
    shapes = next(n for n in range(1, len(counts) + 1)
                  if sum(counts[:n]) >= 0.99 * len(sampled))
    return (sum(sampled) / len(sampled) < GRAPHS_TOKENS and recomputing <= GRAPHS_RECOMPUTING
            and shapes <= GRAPHS_SHAPES)


AUTO_REASON = ("transformers, its decoder layers compiled and replayed as CUDA graphs: a model "
               f"under {AUTO_BELOW_PARAMS / 1e9:.0f}B parameters with short micro-batches waits "
               "on the host's kernel launches otherwise, and the graphs take those off the "
               "host; compile_layers off keeps the usual backend")


def compile_pays(config, hw, lengths: list[int]) -> bool:
    """Whether a run that leaves compile_layers (and the backend) to auto compiles its layers:
    one CUDA GPU of compute capability 8.0 or above, 16-bit weights, a small model
    (small_model), and rows (their token lengths) whose micro-batches suit layer graphs as the
    planner will lay them out (layer_graphs_pay). The config is resolved."""
    from studio.plan.memory import plan_rows
    from studio.models.shapes import model_shape

    if (config.compile_layers is not None or config.backend not in ("auto", "transformers")
            or config.cpu_only or not hw.gpus or hw.gpus[0].capability < (8, 0)
            or config.world_size > 1 or config.packing or config.load_in_4bit
            or config.load_in_8bit or config.fused_loss or config.gradient_checkpointing
            or config.layer_graphs is False):
        return False
    shape = model_shape(config.model_name)
    if not small_model(shape) or not lengths:
        return False
    lengths = [min(n, config.max_seq_length) for n in lengths]     # as trained: truncated
    plan = plan_rows(config, hw.gpus[0].free_bytes, lengths, shape)
    return plan is not None and layer_graphs_pay(plan, lengths)


def compile_layers(model, config) -> None:
    """Each decoder layer compiled by torch.compile, where the config asks: a step then launches
    a few fused kernels a layer instead of dozens of small ones (norms, rotary, SwiGLU, LoRA's
    scaling and casts), and small updates are bound by those launches on a GPU (#16's profile:
    more host work than GPU work a step). All layers share one compiled graph, with the token
    count dynamic from the start so that micro-batches of any length reuse it. Attention traces
    inside it: the micro-batches bring their rows' bounds along (packed_attention.with_row_bounds,
    or `bucketed` with layer graphs), so the host is not asked for them between two halves of a
    layer, where the GPU would wait on it (bench/HISTORY.md, round eighteen).

    With config.layer_graphs (plan_gpu_batches decides it), the layers also replay as CUDA
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
