"""How much memory a run will need, and what to change when it does not fit.

The estimate adds up what training keeps alive at its peak: the base weights (16-bit, 8-bit or
NF4), the LoRA weights with their gradients and AdamW state, the activations saved for the
backward pass (all layers, or one layer's inputs each with gradient checkpointing), the logits
over the vocabulary in float32, and a fixed framework overhead. The constants were fitted to
peaks measured on a CPU and a GPU, Unsloth's activations counted from its kernels and checked
against its peaks (bench/HISTORY.md); the UI shows the estimate next to the measured peak after
each run.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import random
from dataclasses import dataclass
from typing import Optional

from studio.models.shapes import LINEAR_LAYERS, Shape, model_shape
from studio.texts.message import Text

GiB = 2**30

@dataclass(frozen=True)
class MemoryEstimate:
    weights: float       # bytes
    lora: float          # LoRA weights + gradients + AdamW moments
    activations: float   # saved for backward, logits included
    overhead: float      # framework, CUDA context, allocator slack
    device: str          # "GPU" or "CPU"

    @property
    def total(self) -> float:
        return self.weights + self.lora + self.activations + self.overhead

    def lines(self) -> list[str]:
        return [f"weights {self.weights / GiB:.2f} GiB", f"LoRA + optimiser {self.lora / GiB:.2f} GiB",
                f"activations {self.activations / GiB:.2f} GiB",
                f"overhead {self.overhead / GiB:.2f} GiB", f"total {self.total / GiB:.2f} GiB"]


def lora_params(shape: Shape, config) -> int:
    dims = shape.module_dims()
    per_layer = sum(config.lora_r * (i + o) for m, (i, o) in dims.items()
                    if m in config.target_modules)
    return per_layer * shape.layers


def saved_per_token(config, shape: Shape, kernels: str = "transformers") -> float:
    """Bytes one decoder layer keeps per token for the backward pass, LoRA on its projections.

    transformers + peft: (16 hidden + 8 intermediate) activations, fitted to measured peaks on
    a CPU and a GPU (bench/HISTORY.md). Unsloth's fused kernels keep less, and this counts them
    one by one: each RMSNorm its input alone (2 hidden, q, kv), the attention its q, k, v and
    output, the QKV and MLP projections their inputs, the MLP its gate and up (it recomputes
    SiLU and their product in the backward). With it the estimate lies a little above Unsloth's
    measured peaks, where the formula above counts far more than its layers keep
    (bench/HISTORY.md, round six; tests/test_packing.py checks both estimates against those
    runs). Unsloth fuses a layer's LoRA only with adapters on all seven projections, no dropout
    and no bias; any other Unsloth run is counted as transformers'."""
    h, i, act_bytes = shape.hidden, shape.intermediate, activation_bytes(config)
    fused = (kernels == "unsloth" and set(LINEAR_LAYERS) <= set(config.target_modules)
             and not config.lora_dropout and config.bias == "none")
    if fused:
        q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
        return (4 * h + 3 * q + 3 * kv + 2 * i) * act_bytes
    return (16 * h + 8 * i) * act_bytes


def activation_bytes(config) -> int:
    """Bytes of one activation value: 16-bit or float32 training."""
    return 2 if (config.bf16 or config.fp16) else 4


def logits_bytes(config, shape: Shape, tokens: int) -> float:
    """A micro-batch's whole logits over the vocabulary, their float32 upcast and its gradient:
    what a loss that is not chunked holds at once (a chunked one, about a sixteenth)."""
    return tokens * shape.vocab * (activation_bytes(config) + 8)


def estimate_memory(config, shape: Optional[Shape] = None, longest_row: Optional[int] = None,
                    fused_loss: bool = False, recompute_layers: Optional[int] = None,
                    kernels: str = "transformers") -> Optional[MemoryEstimate]:
    """Peak memory of training `config` (resolved: cpu_only, bf16, 4-bit decided). Without
    packing, a batch is as long as its longest row: pass the data's longest, if known.
    `recompute_layers` (default: all with gradient checkpointing, else none) is how many decoder
    layers keep only their input and recompute the rest in the backward pass. `kernels` is
    whose layers train ("transformers" or "unsloth"): they keep different activations."""
    shape = shape or model_shape(config.model_name)
    if shape is None:
        return None
    on_gpu = not config.cpu_only
    act_bytes = activation_bytes(config)
    body = shape.params - shape.embed_params * (1 if shape.tied else 2)
    embeds = shape.params - body
    if config.load_in_4bit:
        weights = body * 0.56 + embeds * act_bytes   # NF4 + double-quantised scales
    elif config.load_in_8bit:
        weights = body * 1.07 + embeds * act_bytes
    else:
        weights = shape.params * act_bytes
    # fp32 weight + grad + 2 AdamW moments; in bf16 in one process, the fp32 weight and grad are
    # the optimiser's copies of a bf16 adapter and its grad (backends.torch.adapter_precision)
    lora = lora_params(shape, config) * (20 if config.bf16 and config.world_size == 1 else 16)
    if config.distributed == "fsdp" and config.world_size > 1:
        # a GPU keeps its shard, plus the layer being computed and the next one, gathered whole
        weights = weights / config.world_size + 2 * shape.layer_params * act_bytes
        lora = lora / config.world_size
    length = config.max_seq_length
    if longest_row and not config.packing:
        length = min(length, longest_row)
    tokens = config.batch_size * length
    per_layer_token = saved_per_token(config, shape, kernels)
    if recompute_layers is None:
        recompute_layers = shape.layers if config.gradient_checkpointing else 0
    kept = shape.layers - recompute_layers
    # a recomputed layer keeps its input; while it is recomputed, one layer's full set lives
    saved = tokens * (recompute_layers * shape.hidden * act_bytes + kept * per_layer_token
                      + (per_layer_token if recompute_layers else 0))
    logits = logits_bytes(config, shape, tokens) / (16 if fused_loss else 1)
    overhead = (1.0 if on_gpu else 0.9) * GiB
    return MemoryEstimate(weights, lora, saved + logits, overhead, "GPU" if on_gpu else "CPU")


def micro_batch_estimate(config, tokens: int, shape: Shape, fused_loss: bool, kernels: str,
                         recompute_layers: int) -> MemoryEstimate:
    """One padding-free micro-batch of `tokens` tokens with `recompute_layers` of its layers
    recomputed: the unit every planner below weighs."""
    trial = dataclasses.replace(config, batch_size=1, max_seq_length=tokens, packing=True)
    return estimate_memory(trial, shape, fused_loss=fused_loss, recompute_layers=recompute_layers,
                           kernels=kernels)


def out_of_memory_advice(config) -> Text:
    """What to change so the run fits, after "out of memory: " (fitting_advice)."""
    return Text("plan.out_of_memory", advice=fitting_advice(config))


def fitting_advice(config) -> Text:
    """What to change so the run fits ("try ..."): halve the batch (doubling accumulation keeps
    the effective batch), cut the length, or load the base in 4-bit."""
    tips = []
    if config.packing and config.tokens_per_batch and config.tokens_per_batch > 512:
        tips.append(Text("plan.oom.tokens_per_batch", now=config.tokens_per_batch,
                         then=config.tokens_per_batch // 2))
    if config.batch_size > 1 and not config.packing:
        tips.append(Text("plan.oom.batch_size", now=config.batch_size,
                         then=config.batch_size // 2, steps=config.gradient_accumulation_steps,
                         more=config.gradient_accumulation_steps * 2))
    if config.max_seq_length > 512:
        tips.append(Text("plan.oom.max_seq_length", now=config.max_seq_length,
                         then=config.max_seq_length // 2))
    if not config.gradient_checkpointing:
        tips.append(Text("plan.oom.checkpointing"))
    if not config.load_in_4bit and not config.cpu_only:
        tips.append(Text("plan.oom.4bit"))
    joined = tips[0] if tips else Text("plan.oom.smaller_model")
    for tip in tips[1:]:
        joined = Text("plan.oom.or", first=joined, next=tip)
    return Text("plan.oom.try", tips=joined)


# ---------------------------------------------------------------------------- GPU batch planner
@dataclass(frozen=True)
class BatchPlan:
    tokens_per_batch: int          # packed tokens in one micro-batch
    gradient_checkpointing: bool
    gradient_accumulation_steps: int
    estimate: MemoryEstimate
    reason: str                    # a Text (studio.texts)


# Up to 16k tokens: where no varlen kernel runs, Unsloth runs packed attention one row segment
# at a time, and its backward cost grows with segments x tokens (measured: bench/HISTORY.md, the
# first GPU section).
USABLE = 0.92    # the share of free GPU memory a plan may fill: the rest absorbs fragmentation

_CANDIDATES = (16384, 12288, 8192, 6144, 4096, 3072, 2048, 1024, 512)


def plan_batch(config, free_bytes: float, mean_row_tokens: float, shape: Optional[Shape] = None,
               fused_loss: bool = False, longest_row: Optional[int] = None,
               kernels: str = "transformers") -> Optional[BatchPlan]:
    """The packed micro-batch for a GPU: as large as an update asks for, as fits `free_bytes`.

    Gradient checkpointing costs a third more arithmetic, so it is used only when without it
    fewer than 4k tokens would fit and with it at least twice as many would. The optimiser sees
    about the tokens per update the user asked for (batch_size x gradient_accumulation_steps
    rows), or one micro-batch if that is more.
    """
    shape = shape or model_shape(config.model_name)
    if shape is None:
        return None
    floor = min(config.max_seq_length, longest_row or config.max_seq_length)   # a pack holds any row

    def estimate(tokens: int, ckpt: bool) -> MemoryEstimate:
        return micro_batch_estimate(config, tokens, shape, fused_loss, kernels,
                                    shape.layers if ckpt else 0)

    def fits(tokens: int, ckpt: bool):
        est = estimate(tokens, ckpt)
        return est if est.total <= USABLE * free_bytes else None

    def largest(ckpt: bool):
        for tokens in _CANDIDATES:
            if tokens >= floor and (est := fits(tokens, ckpt)):
                return tokens, est
        return None

    plain, ckpt = largest(False), largest(True)
    if plain is None and ckpt is None:
        return None
    use_ckpt = plain is None or (plain[0] < 4096 and ckpt is not None and ckpt[0] >= 2 * plain[0])
    tokens, est = ckpt if use_ckpt else plain
    # Never more tokens a micro-batch than an update asked for: bigger updates would change the
    # optimisation (fewer steps for the same data), which a speed-up must not do.
    wanted = config.batch_size * config.gradient_accumulation_steps * mean_row_tokens
    enough = max(floor, 256 * math.ceil(wanted / 256))
    if config.tokens_per_batch:          # the user's size is kept, and estimated as such
        tokens = config.tokens_per_batch
        if config.gradient_checkpointing is not None:
            use_ckpt = config.gradient_checkpointing
        est = estimate(tokens, use_ckpt)
    elif enough < tokens:
        tokens, est = enough, fits(enough, use_ckpt)
    accumulation = max(1, round(wanted / tokens))
    said = dict(tokens=tokens, as_set=Text("plan.packs.as_set") if config.tokens_per_batch else "",
                used=est.total / GiB, free=free_bytes / GiB, steps=accumulation, wanted=wanted)
    why = (Text("plan.packs.checkpointing", **said) if use_ckpt else
           Text("plan.packs.no_checkpointing", **said))
    return BatchPlan(tokens, use_ckpt, accumulation, est, why)


def layers_to_recompute(config, tokens: int, budget: float, shape: Shape,
                        fused_loss: bool = False, kernels: str = "transformers") -> Optional[int]:
    """The fewest decoder layers that must recompute their activations (gradient checkpointing)
    for a micro-batch of `tokens` to fit in `budget` bytes: 0 when everything fits, None when
    even recomputing every layer does not."""
    for layers in range(shape.layers + 1):
        if micro_batch_estimate(config, tokens, shape, fused_loss, kernels,
                                layers).total <= budget:
            return layers
    return None


def _recompute_as_set(config, tokens: int, budget: float, shape: Shape,
                      fused_loss: bool, kernels: str) -> Optional[int]:
    """Layers a micro-batch of `tokens` recomputes under the config's gradient_checkpointing:
    every one (on), none (off) or as few as fit (auto); None when that does not fit."""
    if config.gradient_checkpointing is None:
        return layers_to_recompute(config, tokens, budget, shape, fused_loss, kernels)
    layers = shape.layers if config.gradient_checkpointing else 0
    fits = micro_batch_estimate(config, tokens, shape, fused_loss, kernels,
                                layers).total <= budget
    return layers if fits else None


@dataclass(frozen=True)
class RowPlan:
    rows: int                      # whole rows in one padding-free micro-batch
    gradient_accumulation_steps: int
    gradient_checkpointing: bool   # whether any micro-batch may need to recompute layers
    estimate: MemoryEstimate       # the heaviest micro-batch, with the recomputation it needs
    reason: str                    # a Text (studio.texts)
    config: object                 # what the plan was made for, to size each micro-batch
    shape: Shape
    budget: float                  # bytes a micro-batch may use
    fused_loss: bool
    kernels: str

    def layers_for(self, tokens: int) -> int:
        """Decoder layers to recompute for a micro-batch of `tokens`: every one or none when
        the user said so, else as few as fit (checkpointing decided per micro-batch)."""
        layers = _recompute_as_set(self.config, tokens, self.budget, self.shape, self.fused_loss,
                                   self.kernels)
        if layers is None:    # too long to fit: recompute all that is allowed
            return 0 if self.config.gradient_checkpointing is False else self.shape.layers
        return layers

    def tokens_recomputing_nothing(self, lengths: list[int]) -> int:
        """The most tokens a micro-batch of these rows holds with no layer recomputed."""
        return _most_tokens(lambda tokens: self.layers_for(tokens) == 0,
                            sum(sorted(lengths, reverse=True)[:self.rows]))

    def sample_micro_batches(self, lengths: list[int], draws: int = 2000) -> list[int]:
        """The tokens of `draws` micro-batches of `rows` rows drawn at random from rows of these
        lengths (seeded): what a shuffled epoch makes, to weigh its rare micro-batches."""
        rng = random.Random(0)
        rows = min(self.rows, len(lengths))
        return [sum(rng.sample(lengths, rows)) for _ in range(draws)]


def _most_tokens(fits, high: int) -> int:
    """The most tokens, up to `high`, for which fits(tokens) holds (0 if none): fits holds up to
    some count and not beyond, so a binary search finds it."""
    low = 0
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def plan_rows(config, free_bytes: float, lengths: list[int], shape: Optional[Shape] = None,
              fused_loss: bool = False, kernels: str = "transformers") -> Optional[RowPlan]:
    """Padding-free micro-batches of whole rows: as many of the rows an update asks for
    (batch_size x gradient_accumulation_steps, a divisor of it) as fit even when the longest
    rows come together.

    An update sees exactly the rows it asked for, so the optimisation is the plain recipe's;
    only the padding and the small micro-batches are gone. With gradient checkpointing left to
    auto it is decided per micro-batch (RowPlan.layers_for): most micro-batches are short and
    recompute nothing, and a long one recomputes only as many layers as it needs to fit.
    """
    shape = shape or model_shape(config.model_name)
    if shape is None or not lengths:
        return None
    budget = USABLE * free_bytes
    wanted = config.batch_size * config.gradient_accumulation_steps
    worst = list(itertools.accumulate(sorted(lengths, reverse=True)[:wanted]))

    def need(tokens: int) -> Optional[int]:
        return _recompute_as_set(config, tokens, budget, shape, fused_loss, kernels)

    for rows in (d for d in range(wanted, 0, -1) if wanted % d == 0):
        longest = worst[min(rows, len(worst)) - 1]
        if (layers := need(longest)) is not None:
            break
    else:
        return None
    def estimate(tokens: int, recompute: int) -> MemoryEstimate:
        return micro_batch_estimate(config, tokens, shape, fused_loss, kernels, recompute)

    heaviest = estimate(longest, layers)
    if config.gradient_checkpointing is not None:
        how = (Text("plan.rows.checkpointing_on") if config.gradient_checkpointing else
               Text("plan.rows.checkpointing_off"))
    elif layers == 0:
        how = Text("plan.rows.no_recompute")
    else:
        # the longest micro-batch is not the heaviest: one just short of needing another
        # layer recomputed keeps nearly the whole budget (measured: bench/HISTORY.md,
        # 'recomputation that never ran')
        def heaviest_with(k: int) -> Optional[MemoryEstimate]:
            # the most tokens that fit with k layers recomputed
            low = _most_tokens(lambda tokens: estimate(tokens, k).total <= budget, longest)
            return estimate(low, k) if low and need(low) == k else None

        heaviest = max(filter(None, map(heaviest_with, range(layers + 1))),
                       key=lambda e: e.total)
        free_up_to = _most_tokens(lambda tokens: need(tokens) == 0, longest) // 256 * 256
        how = Text("plan.rows.adaptive", tokens=free_up_to, layers=layers, total=shape.layers)
    why = Text("plan.rows", rows=rows, times=wanted // rows, wanted=wanted, longest=longest,
               how=how, used=heaviest.total / GiB, free=free_bytes / GiB)
    return RowPlan(rows, wanted // rows, layers > 0, heaviest, why, config, shape, budget,
                   fused_loss, kernels)


# ---------------------------------------------------------------------------- model FLOPs
# bf16 dense datasheet peaks, by a name fragment of torch.cuda.get_device_name()
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "GH200": 989e12, "B200": 2250e12, "A100": 312e12,
             "L40S": 362e12, "L4": 121e12, "A10G": 70e12, "RTX 4090": 165e12, "T4": 65e12}


def flops_per_token(shape: Shape, mean_context: float) -> float:
    """Model FLOPs of one trained token in LoRA: 4N + 12·L·H·d·c.

    Forward (2N) and input-gradient (2N) matmuls over the N weights that multiply (layers and LM
    head; frozen weights get no weight gradient and LoRA's own are negligible), plus attention
    over a mean causal context of c tokens (forward 4·L·H·d·c, backward twice that).
    Recomputation is not counted: it is overhead, not model work.
    """
    n = shape.layers * shape.layer_params + shape.vocab * shape.hidden
    return 4 * n + 12 * shape.layers * shape.heads * shape.head_dim * mean_context


def mean_causal_context(lengths: list[int]) -> float:
    """The average number of tokens a token attends to, over rows of these lengths."""
    return sum(n * (n + 1) / 2 for n in lengths) / max(1, sum(lengths))


def peak_flops(gpu_name: str) -> Optional[float]:
    return next((v for k, v in PEAK_BF16.items() if k in gpu_name), None)
