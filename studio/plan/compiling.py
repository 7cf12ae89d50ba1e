"""When a run compiles its decoder layers and replays them as CUDA graphs. On a GPU, small
updates are bound by the host's kernel launches, and compiled layers replayed as graphs take most
of them off the host; backends/torch/compiled_layers.py does the compiling, the rules of when it
pays are here, read by the plan alone."""
from __future__ import annotations

from studio.models.shapes import SMALL_MODEL_PARAMS
from studio.texts.message import Text

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

# A model under SMALL_MODEL_PARAMS (studio/models/shapes.py) compiles its layers where
# compile_layers is left to auto and graphs pay: its steps at short micro-batches wait on the
# host's launches, which graphs take off the host, and loading and compiling take about as long
# as loading Unsloth, so a run ends sooner. A larger model keeps the GPU busier at the same rows
# and gains less from graphs, for a longer compile: auto leaves larger models to Unsloth
# (measured: bench/HISTORY.md, 'small models compile by default').
#
# Such a model's micro-batches are padded to a multiple of this many tokens for its graphs: its
# GPU idles at these sizes, so the padding costs no measurable time, and fewer shapes are
# recorded while training waits (measured: bench/HISTORY.md, 'small models compile by
# default'). Larger models keep packed_attention.BUCKET, where padding is GPU work.
SMALL_MODEL_BUCKET = 2048

# why the plan picks transformers with compiled layers (Plan.why)
AUTO_REASON = Text("plan.compiled", billions=SMALL_MODEL_PARAMS / 1e9)


def small_model(shape) -> bool:
    """A model whose steps at short micro-batches are bound by the host's launches."""
    return shape is not None and shape.params < SMALL_MODEL_PARAMS


def graph_bucket(shape) -> int:
    """The multiple of tokens this model's micro-batches are padded up to for layer graphs."""
    from backends.torch.packed_attention import BUCKET

    return SMALL_MODEL_BUCKET if small_model(shape) else BUCKET


def layer_graphs_pay(rows, lengths: list[int]) -> bool:
    """Whether a run's micro-batches of whole rows (a memory.RowPlan) suit layer graphs: short,
    nearly none recomputes a layer, and they come in few shapes (multiples of graph_bucket)."""
    from collections import Counter

    sampled = rows.sample_micro_batches(lengths)
    limit = rows.tokens_recomputing_nothing(lengths) if rows.gradient_checkpointing else None
    recomputing = 0 if limit is None else sum(t > limit for t in sampled) / len(sampled)
    bucket = graph_bucket(rows.shape)
    counts = sorted(Counter(-(-t // bucket) for t in sampled).values(), reverse=True)
    shapes = next(n for n in range(1, len(counts) + 1)
                  if sum(counts[:n]) >= 0.99 * len(sampled))
    return (sum(sampled) / len(sampled) < GRAPHS_TOKENS and recomputing <= GRAPHS_RECOMPUTING
            and shapes <= GRAPHS_SHAPES)


def compile_pays(config, hw, lengths: list[int]) -> bool:
    """Whether a run that leaves compile_layers (and the backend) to auto compiles its layers:
    one CUDA GPU of compute capability 8.0 or above, 16-bit weights, a small model
    (small_model), and rows (their token lengths) whose micro-batches suit layer graphs as the
    planner will lay them out (layer_graphs_pay). The config is resolved."""
    from studio.models.shapes import model_shape
    from studio.plan.memory import plan_rows

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
    rows = plan_rows(config, hw.gpus[0].free_bytes, lengths, shape)
    return rows is not None and layer_graphs_pay(rows, lengths)
