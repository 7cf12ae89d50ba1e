"""The CPU-testable parts of the GPU speed-ups: packed batches, the batch planner, the MFU count."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from studio.config import FineTuningConfig
from studio.plan.memory import GiB, estimate_memory, plan_batch
from studio.models.shapes import Shape
from tests.conftest import gpu, plan_for

ROOT = Path(__file__).resolve().parent.parent
ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize("attention", ["sdpa", "studio_varlen"])
def test_packed_rows_never_attend_across_row_boundaries(tiny_qwen3, attention):
    """Logits of rows packed padding-free with restarting position ids equal each row alone:
    through transformers' SDPA with its block mask, and through the studio's row-by-row
    attention (backends.torch.packed_attention; on the CPU its SDPA-a-row path, on a GPU varlen flash
    attention checked the same way at install), gradients included."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from backends.torch import packed_attention

    packed_attention.install()
    tok = AutoTokenizer.from_pretrained(tiny_qwen3)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32,
                                                 attn_implementation=attention).eval()
    assert model.config._attn_implementation == attention
    sdpa = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32).eval()
    rows = [tok(t)["input_ids"] for t in ("Hello there, how are you today?",
                                          "The quick brown fox jumps over the lazy dog.",
                                          "One more row.")]
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(
        [{"input_ids": r} for r in rows])
    assert batch["input_ids"].shape == (1, sum(map(len, rows)))
    packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                   use_cache=False).logits[0]
    packed_grad = torch.autograd.grad(packed.square().mean(), model.lm_head.weight)[0]
    alone = torch.cat([sdpa(input_ids=torch.tensor([r]), use_cache=False).logits[0]
                       for r in rows])
    alone_grad = torch.autograd.grad(alone.square().mean(), sdpa.lm_head.weight)[0]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed_grad, alone_grad, atol=1e-6, rtol=1e-4)
    if attention == "studio_varlen":     # and it answers a prompt as SDPA does (the cache path)
        ids = torch.tensor([rows[0]])
        assert model.generate(ids, max_new_tokens=5, do_sample=False).tolist() == \
            sdpa.generate(ids, max_new_tokens=5, do_sample=False).tolist()


def test_studio_trains_packed_batches_and_counts_only_real_tokens(tiny_qwen3, tmp_path, qa_jsonl):
    """With packing on, a step is one pack; tokens counted are the rows' tokens, no padding."""
    from studio import run_fine_tuning
    from studio.data import prepare
    from transformers import AutoTokenizer

    config = FineTuningConfig(model_name=tiny_qwen3, output_dir=str(tmp_path / "run"),
                              packing=True, tokens_per_batch=256, max_seq_length=128,
                              gradient_accumulation_steps=1, max_steps=2, logging_steps=1,
                              val_size=0, cpu_only=True)
    run_fine_tuning(data_path=str(qa_jsonl), config=config)
    events = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    seen = [e["data"]["tokens"] for e in events if e["kind"] == "train"]
    lengths = [len(r) for r in prepare(str(qa_jsonl), AutoTokenizer.from_pretrained(tiny_qwen3),
                                       config).train["input_ids"]]
    assert 0 < seen[-1] <= 2 * 256
    assert seen[-1] < 2 * max(lengths) * 16     # far fewer than padded batches would count


# ---------------------------------------------------------------------------- planner
QWEN3_8B = Shape(4096, 12288, 36, 32, 8, 128, 151936, False)
QWEN3_06B = Shape(1024, 3072, 28, 16, 8, 128, 151936, True)


def _gpu_config(**kw):
    return FineTuningConfig(**{**dict(lora_r=16, target_modules=ALL7, cpu_only=False, bf16=True,
                                      lora_dropout=0.0), **kw})


def test_planner_picks_the_largest_micro_batch_that_fits():
    """With a large batch asked for, the planned micro-batch fits the usable memory and twice
    as many tokens would not (unless twice would pass the largest micro-batch the planner
    makes, 16,384 tokens), recomputing layers or not as the plan says."""
    from studio.plan.memory import USABLE

    config = _gpu_config(batch_size=64, gradient_accumulation_steps=4)

    def estimate(tokens, plan, shape):
        return estimate_memory(config.replace(batch_size=1, max_seq_length=tokens, packing=True,
                                              gradient_checkpointing=plan.gradient_checkpointing),
                               shape, fused_loss=True).total
    for shape, free in ((QWEN3_8B, 78 * GiB), (QWEN3_06B, 78 * GiB), (QWEN3_8B, 40 * GiB)):
        plan = plan_batch(config, free, 430, shape=shape, fused_loss=True)
        assert plan.estimate.total <= USABLE * free
        assert 2 * plan.tokens_per_batch > 16384 or \
            estimate(2 * plan.tokens_per_batch, plan, shape) > USABLE * free


def test_planner_turns_checkpointing_on_only_when_memory_needs_it():
    """An 8B model on an 80 GB card trains without recomputation; on a 24 GB card with it."""
    assert plan_batch(_gpu_config(), 78 * GiB, 430, shape=QWEN3_8B,
                      fused_loss=True).gradient_checkpointing is False
    small = plan_batch(_gpu_config(), 24 * GiB, 430, shape=QWEN3_8B, fused_loss=True)
    assert small.gradient_checkpointing is True and small.estimate.total <= 0.92 * 24 * GiB


def test_planner_never_packs_more_tokens_than_an_update_asks_for():
    """Defaults (4 x 4 rows of ~430 tokens) give one 6.9k pack an update, though 16k would fit."""
    plan = plan_batch(_gpu_config(), 78 * GiB, 430, shape=QWEN3_06B, fused_loss=True)
    assert (plan.tokens_per_batch, plan.gradient_accumulation_steps) == (6912, 1)
    short = plan_batch(_gpu_config(), 78 * GiB, 40, shape=QWEN3_06B, fused_loss=True,
                       longest_row=300)
    assert short.tokens_per_batch == 768    # 16 rows of 40 tokens, rounded up to 256
    plan = plan_batch(_gpu_config(), 78 * GiB, 430, shape=QWEN3_8B, fused_loss=True)
    assert (plan.tokens_per_batch, plan.gradient_accumulation_steps) == (4096, 2)


def test_a_micro_batch_size_the_user_set_is_the_one_planned_and_estimated():
    """tokens_per_batch 8192 with checkpointing off: the plan says and estimates 8192 tokens
    without recomputation (it used to describe the 3.6k it would have chosen itself)."""
    config = _gpu_config(batch_size=8, gradient_accumulation_steps=1, tokens_per_batch=8192,
                         gradient_checkpointing=False, packing=True)
    plan = plan_batch(config, 138 * GiB, 422, shape=QWEN3_8B, fused_loss=True)
    assert plan.tokens_per_batch == 8192 and plan.gradient_checkpointing is False
    assert "8192 packed tokens a micro-batch, as set, without" in plan.reason
    assert plan.estimate.total == estimate_memory(config.replace(
        batch_size=1, max_seq_length=8192), QWEN3_8B, fused_loss=True).total


def test_planner_keeps_the_tokens_per_update_the_user_asked_for():
    """Accumulation is chosen so an update sees about batch_size x accumulation rows of tokens."""
    plan = plan_batch(_gpu_config(batch_size=16, gradient_accumulation_steps=8), 78 * GiB, 500,
                      shape=QWEN3_06B, fused_loss=True)
    assert plan.gradient_accumulation_steps == round(16 * 8 * 500 / plan.tokens_per_batch)


def test_memory_estimate_covers_the_peaks_measured_on_an_h200_by_at_most_a_fifth():
    """Packs of 8,192 and 16,384 tokens without recomputation, Qwen3-0.6B and 8B, each backend
    estimated with the activations its own layers keep (memory.saved_per_token): never below
    the peak the run measured (bench/results/h200-round6-c.json), at most 1.2x it. The one count
    for both that the estimate had before gave 2.0-2.5x the Unsloth runs' peaks. Runs that
    Unsloth cannot fuse keep the transformers count."""
    from studio.models.shapes import QWEN3_SHAPES

    runs = json.loads((ROOT / "bench" / "results" / "h200-round6-c.json").read_text())["runs"]
    assert len(runs) == 5
    for run in runs:
        _, tokens, checkpointing, *knobs = run["variant"].split(":")   # c:16384:off[:backend=]
        assert checkpointing == "off"
        kernels = "transformers" if "backend=transformers" in knobs else "unsloth"
        config = _gpu_config(batch_size=1, max_seq_length=int(tokens), packing=True,
                             gradient_checkpointing=False)
        est = estimate_memory(config, Shape(*QWEN3_SHAPES[run["size"]]), fused_loss=True,
                              kernels=kernels).total / GiB
        assert run["peak_gib"] <= est <= 1.2 * run["peak_gib"], (run["variant"], est)
    # Unsloth fuses LoRA only on all seven projections without dropout: else peft's count holds
    for partial in (dict(target_modules=["q_proj", "v_proj"]), dict(lora_dropout=0.05)):
        config = _gpu_config(batch_size=1, max_seq_length=8192, packing=True, **partial)
        assert estimate_memory(config, QWEN3_8B, kernels="unsloth").total == \
            estimate_memory(config, QWEN3_8B, kernels="transformers").total


def test_mfu_formula_counts_forward_and_input_gradient_matmuls_and_attention():
    """4N + 12·L·H·d·c: hand-counted for Qwen3-8B at a mean causal context of 300 tokens."""
    from bench.gpu_bench import flops_per_token

    layer = 4096 * 128 * (2 * 32 + 2 * 8) + 3 * 4096 * 12288
    n = 36 * layer + 151936 * 4096
    assert flops_per_token("8B", 300) == pytest.approx(4 * n + 12 * 36 * 32 * 128 * 300)
    assert 2.9e10 < flops_per_token("8B", 0) < 3.2e10    # about 4 x 7.6B multiplying weights


def test_row_planner_keeps_the_rows_an_update_asks_for_and_fits_the_longest_rows():
    """Default GPU batches: whole rows, padding-free; an update sees exactly batch x
    accumulation rows, and even the longest rows together fit, recomputing what they must."""
    from studio.plan.memory import layers_to_recompute, plan_rows

    short = plan_rows(_gpu_config(), 78 * GiB, [300] * 100, shape=QWEN3_06B, fused_loss=True)
    assert (short.rows, short.gradient_accumulation_steps, short.gradient_checkpointing) == \
        (16, 1, False)                                      # 4 x 4 rows in one go, no recompute
    lengths = [100] * 200 + [2000] * 10
    worst = sorted(lengths, reverse=True)
    for shape, free in ((QWEN3_06B, 78 * GiB), (QWEN3_8B, 78 * GiB), (QWEN3_8B, 24 * GiB)):
        for checkpointing in (None, False):
            config = _gpu_config(gradient_checkpointing=checkpointing)
            plan = plan_rows(config, free, lengths, shape=shape, fused_loss=True)
            if (shape, free, checkpointing) == (QWEN3_8B, 24 * GiB, False):
                assert plan is None          # a 2,000-token row needs recomputation there
                continue
            assert plan.rows * plan.gradient_accumulation_steps == 16
            allowed = shape.layers if checkpointing is None else 0

            def fits(rows):
                need = layers_to_recompute(config, sum(worst[:rows]), 0.92 * free, shape, True)
                return need is not None and need <= allowed
            assert fits(plan.rows)
            assert not any(fits(r) for r in (2, 4, 8, 16) if r > plan.rows)


def test_recomputation_is_decided_per_micro_batch_by_its_length():
    """8B on an 80 GB card, 16 rows a micro-batch: a micro-batch of short rows recomputes
    nothing, one of the longest rows only the layers it needs, never more than all of them."""
    from studio.plan.memory import estimate_memory, layers_to_recompute, plan_rows

    plan = plan_rows(_gpu_config(), 78 * GiB, [100] * 200 + [2000] * 10, shape=QWEN3_8B,
                     fused_loss=True)
    assert plan.rows == 16 and plan.gradient_checkpointing
    assert plan.layers_for(1600) == 0
    longest = plan.layers_for(10 * 2000 + 6 * 100)
    assert 0 < longest < QWEN3_8B.layers
    assert plan.layers_for(10**6) == QWEN3_8B.layers       # beyond the budget: recompute all
    config, budget = _gpu_config(), 70 * GiB
    for tokens in (1000, 4000, 8000, 16000, 32000):         # the fewest layers that fit, by trial
        need = layers_to_recompute(config, tokens, budget, QWEN3_8B, True)
        fitting = [k for k in range(QWEN3_8B.layers + 1) if estimate_memory(
            config.replace(batch_size=1, max_seq_length=tokens, packing=True), QWEN3_8B,
            fused_loss=True, recompute_layers=k).total <= budget]
        assert need == (min(fitting) if fitting else None)
    assert plan_rows(_gpu_config(gradient_checkpointing=True), 78 * GiB, [100] * 50,
                     shape=QWEN3_8B, fused_loss=True).layers_for(100) == QWEN3_8B.layers


def test_the_micro_batches_that_recompute_are_counted_from_the_rows():
    """Layer graphs need micro-batches that (nearly) never recompute: the plan finds the most
    tokens a micro-batch holds with no layer recomputed, and micro-batches of random rows go
    past it as often as the odds of drawing enough long rows into one (hypergeometric)."""
    import math

    from studio.plan.memory import plan_rows

    lengths = [100] * 200 + [2000] * 10
    plan = plan_rows(_gpu_config(), 78 * GiB, lengths, shape=QWEN3_8B, fused_loss=True)
    limit = plan.tokens_recomputing_nothing(lengths)
    assert plan.layers_for(limit) == 0 < plan.layers_for(limit + 1)
    need = next(k for k in range(17) if 100 * (16 - k) + 2000 * k > limit)
    odds = sum(math.comb(10, k) * math.comb(200, 16 - k) for k in range(need, 11)) \
        / math.comb(210, 16)
    assert 0.02 < odds < 0.98                                 # some micro-batches, not all
    sampled = plan.sample_micro_batches(lengths)
    assert sum(t > limit for t in sampled) / len(sampled) == pytest.approx(odds, abs=0.03)


def test_layer_graphs_pay_where_micro_batches_rarely_recompute_and_come_in_few_shapes():
    """Each micro-batch shape is recorded once while training waits, and each recomputed layer
    records graphs of its own: graphs pay at 8 rows of chat-like rows (few shapes, none
    recomputing), not at 64 (0.6B ran 15,776 tokens/s with them, 56,302 without, on an H200)
    nor where a few percent of micro-batches recompute."""
    import random

    from studio.plan.memory import plan_rows
    from studio.models.shapes import QWEN3_SHAPES, Shape
    from studio.plan.compiling import layer_graphs_pay

    rng = random.Random(1)
    chat = [min(2048, int(rng.lognormvariate(5.8, 0.6))) for _ in range(2000)]   # mean ~400
    small = Shape(*QWEN3_SHAPES["0.6B"])
    eight = plan_rows(_gpu_config(batch_size=8, gradient_accumulation_steps=1), 138 * GiB, chat, shape=small, fused_loss=True)
    many = plan_rows(_gpu_config(batch_size=64, gradient_accumulation_steps=1), 138 * GiB, chat, shape=small, fused_loss=True)
    assert not eight.gradient_checkpointing
    limit = many.tokens_recomputing_nothing(chat)   # only its rare longest micro-batches do
    assert sum(t > limit for t in many.sample_micro_batches(chat)) <= 0.01 * 2000
    assert layer_graphs_pay(eight, chat) and not layer_graphs_pay(many, chat)   # the shapes
    lengths = [100] * 200 + [2000] * 10             # 8B on 78 GiB: the long ones recompute
    some = plan_rows(_gpu_config(), 78 * GiB, lengths, shape=QWEN3_8B, fused_loss=True)
    assert not layer_graphs_pay(some, lengths)
    few_long = [100] * 2000 + [2000] * 2            # ... but nearly never drawn together
    rare = plan_rows(_gpu_config(), 78 * GiB, few_long, shape=QWEN3_8B, fused_loss=True)
    assert rare.gradient_checkpointing and layer_graphs_pay(rare, few_long)


def test_a_small_model_at_short_micro_batches_compiles_its_layers_when_left_to_auto():
    """On one GPU, Qwen3-0.6B at 8 rows an update of chat-like rows compiles its layers, whose
    micro-batches are padded to 2,048 tokens for their graphs (fewer recordings than at 512):
    through Unsloth's layers its steps waited on the host (bench/HISTORY.md, round sixteen).
    Not at 64 rows, not at 8B, not where compile_layers, the backend or 4-bit loading was set,
    and not on a CPU or a GPU before Ampere."""
    import random

    from studio.plan.compiling import compile_pays, graph_bucket
    from studio.plan.hardware import GPU, Hardware
    from studio.models.shapes import QWEN3_SHAPES

    rng = random.Random(1)
    chat = [min(2048, int(rng.lognormvariate(5.8, 0.6))) for _ in range(2000)]
    h200 = Hardware(gpus=(GPU(0, "NVIDIA H200", 140 * GiB, 138 * GiB, (9, 0)),))
    cpu = Hardware(cpu_cores=2, ram_bytes=24 * GiB)
    t4 = Hardware(gpus=(GPU(0, "Tesla T4", 16 * GiB, 15 * GiB, (7, 5)),))

    def pays(hw=h200, **changes):
        config = FineTuningConfig(**{**dict(model_name="Qwen/Qwen3-0.6B", batch_size=8,
                                            gradient_accumulation_steps=1), **changes})
        return compile_pays(config.resolve(hw), hw, chat)

    assert pays()
    assert graph_bucket(Shape(*QWEN3_SHAPES["0.6B"])) == 2048 and graph_bucket(QWEN3_8B) == 512
    assert not pays(batch_size=16, gradient_accumulation_steps=4)       # 27,000 tokens
    assert not pays(model_name="Qwen/Qwen3-8B")
    assert not pays(compile_layers=False) and not pays(backend="unsloth")
    assert not pays(load_in_4bit=True) and not pays(hw=cpu) and not pays(hw=t4)


def test_a_run_the_compile_rule_picks_trains_compiled_and_says_why(tiny_qwen3, qa_jsonl,
                                                                  tmp_path, monkeypatch):
    """Where compile_pays says yes (a GPU's answer, given here on the CPU), the run trains on the
    transformers backend with compile_layers on, its backend line says why, and the rule was
    asked with the tokenized rows' lengths (by the preflight's estimate too, as the page asks
    it). The saved config keeps auto, so the same config decides again when it is repeated.
    (compile_layers is watched, not run: test_compiled_layers_train_as_the_eager_ones_at_any_
    micro_batch_length compiles layers for real.)"""
    from backends.torch import compiled_layers
    from studio import run_fine_tuning
    from studio.plan import compiling, plan

    asked, compiled = [], []
    monkeypatch.setattr(plan, "compile_pays",
                        lambda config, hw, lengths: asked.append(lengths) or True)
    monkeypatch.setattr(compiled_layers, "compile_layers",
                        lambda model, config: compiled.append(config.compile_layers))
    out = tmp_path / "runs" / "small"
    run_fine_tuning(config=FineTuningConfig(
        model_name=tiny_qwen3, data_path=str(qa_jsonl), output_dir=str(out), max_steps=1,
        batch_size=2, gradient_accumulation_steps=1, logging_steps=1, save_steps=100,
        eval_steps=100, max_seq_length=128, val_size=0, num_samples=0))
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    said = next(e["data"] for e in events if e["data"].get("message", "").startswith("backend"))
    assert said["backend"] == "transformers" and compiling.AUTO_REASON in said["message"]
    assert compiled == [True] and len(asked[-1]) == 16      # the run asked last
    assert FineTuningConfig.load(out / "config.yaml").compile_layers is None


def test_the_planned_estimate_is_the_heaviest_micro_batchs():
    """The plan's estimate (shown on the page, written to status.json) covers every micro-batch
    it may meet, not only the longest: one just short of needing another recomputed layer
    keeps more (8B, 64 rows an update on an H200: 123 GiB estimated at the longest, 125.5
    measured at 28k tokens)."""
    from studio.plan.memory import plan_rows

    config = _gpu_config(batch_size=16, gradient_accumulation_steps=4)
    lengths = [100] * 200 + [2000] * 40
    plan = plan_rows(config, 138 * GiB, lengths, shape=QWEN3_8B, fused_loss=True,
                     kernels="unsloth")
    assert plan.gradient_checkpointing and plan.layers_for(plan.rows * 2000) > 0
    heaviest = max(estimate_memory(config.replace(batch_size=1, max_seq_length=tokens,
                                                  packing=True), QWEN3_8B, fused_loss=True,
                                   recompute_layers=plan.layers_for(tokens),
                                   kernels="unsloth").total
                   for tokens in range(256, plan.rows * 2000 + 1, 128))
    assert heaviest <= plan.estimate.total <= 0.92 * 138 * GiB
    assert f"({plan.estimate.total / GiB:.0f} GiB of 138 GiB free at most)" in plan.reason


@pytest.mark.slow
def test_per_micro_batch_recomputation_on_a_real_model(tiny_qwen3):
    """The hook makes a long micro-batch recompute its layers (a layer's forward runs twice) and
    a short one not, and recomputation leaves the LoRA gradients exactly as without it. (With two
    layers, recomputing one saves nothing: the one being recomputed holds a full layer's set.)"""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from backends.torch.trl_recipe import recompute_per_micro_batch
    from studio.plan.memory import estimate_memory, plan_rows
    from studio.models.shapes import model_shape

    shape = model_shape(tiny_qwen3)
    config = _gpu_config(model_name=tiny_qwen3, bf16=False, batch_size=2,
                         gradient_accumulation_steps=1)
    long_row, short_row = 400, 20
    need_all = estimate_memory(config.replace(batch_size=1, max_seq_length=2 * long_row,
                                              packing=True), shape, fused_loss=True,
                               recompute_layers=2).total
    plan = plan_rows(config, need_all / 0.92 + 64, [long_row] * 4, shape=shape, fused_loss=True)
    assert (plan.rows, plan.layers_for(2 * long_row), plan.layers_for(2 * short_row)) == (2, 2, 0)

    def lora_model():
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32)
        model = get_peft_model(base, LoraConfig(r=4, target_modules=ALL7, init_lora_weights=False))
        return model.train()

    def grads(model, tokens):
        model.zero_grad()
        ids = torch.randint(0, 1000, (1, tokens), generator=torch.Generator().manual_seed(1))
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain, hooked = lora_model(), lora_model()
    hooked.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    recompute_per_micro_batch(hooked, plan)
    first, calls = hooked.get_base_model().model.layers[0], []
    forward = first.forward
    first.forward = lambda *a, **kw: calls.append(1) or forward(*a, **kw)   # counts recomputes
    for tokens, runs in ((2 * long_row, 2), (2 * short_row, 1)):
        calls.clear()
        want, got = grads(plain, tokens), grads(hooked, tokens)
        assert len(calls) == runs
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_the_trainer_recomputes_layers_from_its_first_step(tmp_path):
    """Through the studio's trainer, gradient checkpointing keeps a fraction of the activations
    from the first step on: every decoder layer trains in training mode, where a layer
    recomputes. (lean_steps once skipped model.train() on the wrapper's word: the layers stayed
    in from_pretrained's eval mode until the first evaluation, kept everything, and an 8B run
    of 64 rows an update ran out of memory on an H200.)"""
    from backends import hf
    from studio.models.local import build_tiny_qwen3
    from studio.runs.execute import prepare_data
    from backends.torch.compiled_layers import decoder_layers

    model = build_tiny_qwen3(tmp_path / "model", hidden_size=128, layers=12)
    rows = [{"instruction": f"Tell me about number {i}.", "response": "It is a number. " * 60}
            for i in range(4)]
    data_path = tmp_path / "long.jsonl"
    data_path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def first_step(checkpointing: bool):
        config = FineTuningConfig(
            model_name=str(model), data_path=str(data_path), output_dir="", cpu_only=True,
            bf16=False, max_steps=1, batch_size=4, gradient_accumulation_steps=1, val_size=0,
            save_steps=100, logging_steps=1, gradient_checkpointing=checkpointing).resolve()
        quiet = lambda *a, **k: None                      # noqa: E731 - events are not the point
        data = prepare_data(config, quiet)
        trainer = hf.make_trainer(plan_for(config, data), data,
                                  tmp_path / f"run-{checkpointing}", quiet, lambda: False)
        saved, seen = {}, []

        def keep(tensor):                                 # bytes autograd keeps for backward
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        def at_forward_end(module, args, output):
            seen.append((sum(saved.values()),
                         all(layer.training for layer in decoder_layers(module))))

        trainer.model.register_forward_hook(at_forward_end)
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            trainer.train()
        return seen[0]

    kept_all, layers_training = first_step(False)
    kept_recomputing, layers_training_too = first_step(True)
    assert layers_training and layers_training_too
    assert kept_recomputing < 0.5 * kept_all


def test_compiled_layers_train_as_the_eager_ones_at_any_micro_batch_length(tiny_qwen3):
    """compile_layers: the LoRA gradients of packed micro-batches through compiled decoder layers
    (with recomputation on) are those of the eager model, and a micro-batch of another length
    reuses the compiled graphs instead of compiling again."""
    from peft import LoraConfig, get_peft_model
    from torch._dynamo.utils import counters
    from transformers import AutoModelForCausalLM

    from backends.torch.compiled_layers import compile_layers

    def lora_model():
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32)
        model = get_peft_model(base, LoraConfig(r=4, target_modules=ALL7, init_lora_weights=False))
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model.train()

    def grads(model, lengths):
        model.zero_grad()
        ids = torch.randint(0, 1000, (1, sum(lengths)), generator=torch.Generator().manual_seed(1))
        positions = torch.cat([torch.arange(n) for n in lengths])[None]
        model(input_ids=ids, position_ids=positions, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    eager, compiled = lora_model(), lora_model()
    compile_layers(compiled, _gpu_config(compile_layers=True))
    torch._dynamo.reset()
    graphs = []
    for lengths in ((30, 50), (7, 90, 21)):
        want, got = grads(eager, lengths), grads(compiled, lengths)
        graphs.append(counters["stats"]["unique_graphs"])
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4)
    assert graphs[0] > 0 and graphs[1] == graphs[0]


def test_layers_that_recompute_run_outside_the_layer_graphs(tiny_qwen3):
    """With layer graphs, the layers a micro-batch recomputes run eagerly and the others
    through their compiled graphs: a CUDA graph's outputs are overwritten by its next replay,
    and a recomputed layer replays in the backward (8B at 16 rows an update failed at its first
    recomputing micro-batch). The plan's choice is read whichever of the two was set up first
    (here the graphs, before the per-micro-batch recomputation). The gradients stay the eager
    model's."""
    from types import SimpleNamespace

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from backends.torch.compiled_layers import compile_layers, decoder_layers
    from backends.torch.trl_recipe import recompute_per_micro_batch

    # a long micro-batch's plan: its first layer recomputes, whatever the micro-batch's length
    plan = SimpleNamespace(config=SimpleNamespace(gradient_checkpointing=None),
                           gradient_checkpointing=True, layers_for=lambda tokens: 1)

    def lora_model():
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32)
        model = get_peft_model(base, LoraConfig(r=4, target_modules=ALL7, init_lora_weights=False))
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model.train()

    def grads(model):
        ids = torch.randint(0, 1000, (1, 80), generator=torch.Generator().manual_seed(1))
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    eager, compiled = lora_model(), lora_model()
    recompute_per_micro_batch(eager, plan)
    compile_layers(compiled, _gpu_config(compile_layers=True, layer_graphs=True))
    recompute_per_micro_batch(compiled, plan)
    ran = []
    for layer in decoder_layers(compiled):
        layer.register_forward_pre_hook(
            lambda module, args: ran.append(module._compiled_call_impl is not None))
    want, got = grads(eager), grads(compiled)
    assert ran[:2] == [False, True]       # the first layer recomputes: eager; the second: graphs
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4)


def _studio_attention_model(tiny_qwen3):
    """(tokenizer, the tiny Qwen3 with LoRA on all 7 through the studio's attention, trl's
    padding-free collator) for the collators' tests."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from backends.torch import packed_attention

    packed_attention.install()
    tok = AutoTokenizer.from_pretrained(tiny_qwen3)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32,
                                                attn_implementation=packed_attention.NAME)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=ALL7, init_lora_weights=False))
    return tok, model, DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id,
                                                       padding_free=True)


def _loss_and_grads(model, batch):
    """The batch's loss and the LoRA gradients it gives."""
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_bucketed_micro_batches_come_in_few_shapes_and_train_as_unpadded(tiny_qwen3):
    """For CUDA graphs (compiled_layers.compile_layers), packed_attention.bucketed pads each
    padding-free micro-batch to a multiple of BUCKET tokens and ROWS_STEP rows, and hands the
    row bounds to the attention. Micro-batches of different rows then share one shape, and the
    padding changes nothing that trains: the same loss and LoRA gradients through the model
    (the bounds travelling as transformers' attention kwargs), and the trainer's count of real
    tokens leaves it out."""
    from backends.torch.packed_attention import BUCKET, ROWS_STEP, bucketed

    tok, model, plain = _studio_attention_model(tiny_qwen3)
    padded = bucketed(plain, tok.pad_token_id)
    two = [{"input_ids": tok(t)["input_ids"]} for t in ("Hello there, how are you today?",
                                                        "The quick brown fox jumps.")]
    three = two + [{"input_ids": tok("One more row, a little longer than the others.")
                    ["input_ids"]}]

    shapes = set()
    for rows in (two, three):
        want, got = plain(rows), padded(rows)
        shapes.add((got["input_ids"].shape, got["cu_seq_lens_q"].shape))
        bounds = got["cu_seq_lens_q"].tolist()
        starts = (got["position_ids"][0] == 0).nonzero().flatten().tolist()
        assert bounds == starts + [BUCKET] and len(bounds) - 1 == ROWS_STEP
        assert bounds[:len(rows) + 1] == [0, *torch.tensor([len(r["input_ids"]) for r in rows])
                                          .cumsum(0).tolist()]
        want_loss, want_grads = _loss_and_grads(model, want)
        got_loss, got_grads = _loss_and_grads(model, got)
        torch.testing.assert_close(got_loss, want_loss)
        for name in want_grads:
            torch.testing.assert_close(got_grads[name], want_grads[name], atol=1e-6, rtol=1e-5)
        real = int((got["input_ids"] != tok.pad_token_id).sum())   # what the trainer counts
        assert real == sum(len(r["input_ids"]) for r in rows)
    assert shapes == {((1, BUCKET), (ROWS_STEP + 1,))}
    # the attention reads the bounds it is handed: rows merged into one attend across each other
    merged = dict(got, cu_seq_lens_q=torch.tensor([0, *bounds[len(rows):]], dtype=torch.int32))
    assert not torch.allclose(_loss_and_grads(model, merged)[0], got_loss)


def test_row_bounds_travel_with_the_micro_batch_and_train_as_without(tiny_qwen3):
    """Compiled layers without graphs get their micro-batch's row bounds from the collator
    (packed_attention.with_row_bounds), so that attention traces inside a layer's graph: the
    bounds are the rows' own, max_length_q the longest, and the loss and LoRA gradients are
    those of the position ids alone; the attention reads the bounds it is handed."""
    from backends.torch.packed_attention import with_row_bounds

    tok, model, plain = _studio_attention_model(tiny_qwen3)
    bounded = with_row_bounds(plain)
    rows = [{"input_ids": tok(t)["input_ids"]} for t in (
        "Hello there, how are you today?", "One more row, a little longer than the others.",
        "The quick brown fox jumps.")]
    lengths = [len(r["input_ids"]) for r in rows]

    want, got = plain(rows), bounded(rows)
    assert got["cu_seq_lens_q"].tolist() == [0, *torch.tensor(lengths).cumsum(0).tolist()]
    assert got["cu_seq_lens_q"].dtype == torch.int32 and got["max_length_q"] == max(lengths)
    assert torch.equal(got["input_ids"], want["input_ids"])
    want_loss, want_grads = _loss_and_grads(model, want)
    got_loss, got_grads = _loss_and_grads(model, got)
    torch.testing.assert_close(got_loss, want_loss)
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], atol=1e-6, rtol=1e-5)
    merged = dict(got, cu_seq_lens_q=torch.tensor([0, sum(lengths)], dtype=torch.int32))
    assert not torch.allclose(_loss_and_grads(model, merged)[0], got_loss)


def test_kept_grads_accumulate_and_zero_as_fresh_ones(tiny_qwen3):
    """keep_grads (for CUDA graphs, whose own memory the next replay overwrites): gradients live
    in tensors of their own from the start, accumulate over micro-batches and are zeroed in
    place by the trainer's zero_grad, giving exactly what freshly allocated gradients give."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from backends.torch.compiled_layers import keep_grads

    def lora_model():
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32)
        return get_peft_model(base, LoraConfig(r=4, target_modules=ALL7,
                                               init_lora_weights=False)).train()

    def micro_batch(model, seed):
        ids = torch.randint(0, 1000, (1, 40), generator=torch.Generator().manual_seed(seed))
        model(input_ids=ids, labels=ids).loss.backward()

    fresh, kept = lora_model(), lora_model()
    keep_grads(kept)
    held = {n: p.grad for n, p in kept.named_parameters() if p.requires_grad}
    assert held and all(g is not None and not g.any() for g in held.values())
    for update in ((1, 2), (3,)):
        fresh.zero_grad()
        kept.zero_grad()
        for seed in update:
            micro_batch(fresh, seed), micro_batch(kept, seed)
        for name, param in kept.named_parameters():
            if param.requires_grad:
                assert param.grad is held[name]            # the same tensor, never replaced
                torch.testing.assert_close(param.grad, fresh.get_parameter(name).grad)


def test_compile_layers_is_refused_where_another_engine_runs_its_own_kernels():
    from studio.config import FineTuningConfig
    from studio.plan.hardware import detect_hardware

    hw = detect_hardware()
    assert any("compile_layers" in p for p in
               FineTuningConfig(backend="mlx", compile_layers=True).validate(hw))
    assert not any("compile_layers" in p for p in
                   FineTuningConfig(backend="transformers", compile_layers=True).validate(hw))
    assert any("whole_logits applies to the transformers backend" in p for p in
               FineTuningConfig(backend="mlx", whole_logits=True).validate(hw))
    assert not FineTuningConfig(backend="mlx", whole_logits=False).transformers_only()


def test_train_events_carry_the_mfu_when_flops_and_peak_are_known():
    """tokens/s x FLOPs a token / peak: what the Train tab shows live on a GPU."""
    import time
    from types import SimpleNamespace

    from backends.torch.trl_recipe import event_callback
    from studio.runs.events import EventLog

    log = EventLog()
    callback = event_callback(log.emit, lambda: False, flops=(3e10, 989e12))
    state = SimpleNamespace(global_step=0, num_input_tokens_seen=0, max_steps=2)
    callback.on_train_begin(None, state, None)
    callback._last = (time.time() - 1.0, 0)         # one second ago, nothing seen yet
    state.global_step, state.num_input_tokens_seen = 1, 10_000
    callback.on_log(None, state, None, logs={"loss": 1.0, "learning_rate": 1e-4})
    event = log.events[-1]
    assert event.data["mfu"] == pytest.approx(event.data["tokens_per_s"] * 3e10 / 989e12)
    assert 0.25 < event.data["mfu"] < 0.31          # the tokens/s logged, at 30 GFLOP a token


def test_the_gpu_batch_plan_reaches_the_runs_plan(tiny_qwen3, qa_jsonl):
    """On a GPU (its free memory stood in for here), the rows an update asks for go into one
    padding-free micro-batch, and the plan says so beside the planner's reason."""
    from transformers import AutoTokenizer

    from studio.data import prepare

    config = FineTuningConfig(model_name=tiny_qwen3, batch_size=2, gradient_accumulation_steps=4,
                              max_seq_length=128, cpu_only=False, bf16=True)
    data = prepare(str(qa_jsonl), AutoTokenizer.from_pretrained(tiny_qwen3), config)
    plan = plan_for(config, data, gpu(80 * GiB))
    layout = plan.layout()
    assert (plan.config.batch_size, plan.config.gradient_accumulation_steps) == (8, 1)
    assert layout["batch_size"] == 8 and layout["micro_batch"] == "8 rows, padding-free"
    assert layout["gradient_checkpointing"] == "off" and plan.rows is not None
    assert "8 rows a micro-batch x 1 = the 8 rows an update asks for" in layout["planner"]


def test_the_loss_takes_whole_logits_where_they_fit_without_recomputing(tiny_qwen3, qa_jsonl):
    """On a GPU (its free memory stood in for), the transformers backend scores the loss over
    whole logits where they fit beside the same rows with no layer recomputed (faster at 0.6B
    on an H200: bench/HISTORY.md, round ten), and in trl's chunks where only the chunks fit or
    several processes train; asked for, whole logits are kept and counted, and a long
    micro-batch recomputes to make room for them."""
    from transformers import AutoTokenizer

    from backends.torch.trl_recipe import loss_type
    from studio.data import prepare
    from studio.models.shapes import model_shape
    from studio.plan.memory import USABLE, micro_batch_estimate

    config = FineTuningConfig(model_name=tiny_qwen3, batch_size=2, gradient_accumulation_steps=4,
                              max_seq_length=128, cpu_only=False, bf16=True)
    data = prepare(str(qa_jsonl), AutoTokenizer.from_pretrained(tiny_qwen3), config)

    def planned(config, free):
        plan = plan_for(config, data, gpu(free))
        return plan.config, plan.rows, plan.layout()

    roomy, _, plan = planned(config, 80 * GiB)
    assert roomy.whole_logits is True and plan["whole_logits"] is True
    assert loss_type(roomy) == "nll" and plan["gradient_checkpointing"] == "off"
    ranks, _, plan = planned(config.replace(num_gpus=2), 80 * GiB)   # each rank plans alone
    assert loss_type(ranks) == "chunked_nll" and plan["whole_logits"] is False

    longest = sum(sorted((len(ids) for ids in data.train["input_ids"]), reverse=True)[:8])
    shape = model_shape(tiny_qwen3)
    chunked, whole = (micro_batch_estimate(config, longest, shape, fused, "transformers", 0).total
                      for fused in (True, False))
    between = (chunked + whole) / 2 / USABLE        # the planner fills this share of free memory
    tight, _, plan = planned(config, between)
    assert tight.whole_logits is False and plan["whole_logits"] is False
    assert loss_type(tight) == "chunked_nll" and plan["gradient_checkpointing"] == "off"
    assert tight.batch_size == roomy.batch_size == 8

    asked, rows, plan = planned(config.replace(whole_logits=True), between)
    assert loss_type(asked) == "nll" and plan["whole_logits"] is True
    assert rows.layers_for(longest) > 0             # the longest micro-batch recomputes for them


def test_the_pages_estimate_is_the_runs_plan(tiny_qwen3, qa_jsonl, tmp_path, monkeypatch):
    """The Model tab's memory estimate is the plan the run will make (Service.plan: the same
    make_plan, with the analysed rows), on a GPU (stood in for): whole logits counted where the
    planner takes them, trl's chunks where only they fit; where the loss can be scored in one
    kernel, whole logits still where they fit, else no whole logits."""
    from studio.models.shapes import model_shape
    from studio.plan.memory import USABLE, micro_batch_estimate
    from studio.service.actions import Service

    config = FineTuningConfig(model_name=tiny_qwen3, data_path=str(qa_jsonl), batch_size=2,
                              gradient_accumulation_steps=4, max_seq_length=128, bf16=True,
                              backend="transformers")
    service = Service(tmp_path / "runs")
    config, _ = service.with_auto_preset(config)     # as the page's form holds it
    lengths = service.data.analyse(config).report.lengths

    def planned(free, **packages):
        hw = gpu(free, packages=packages)
        monkeypatch.setattr(service, "hardware", lambda: hw)
        plan = service.plan(config)
        assert plan.where.startswith("GPU") and plan.free_bytes == int(free)
        return plan

    longest = sum(sorted(lengths, reverse=True)[:8])      # the plan's heaviest micro-batch
    chunked, whole = (micro_batch_estimate(config, longest, model_shape(tiny_qwen3), fused,
                                           "transformers", 0).total for fused in (True, False))
    roomy = planned(80 * GiB)
    assert roomy.config.whole_logits and roomy.estimate.total == pytest.approx(whole)
    tight = planned((chunked + whole) / 2 / USABLE)
    assert not tight.config.whole_logits and tight.estimate.total == pytest.approx(chunked)
    kernel = planned(80 * GiB, cut_cross_entropy=True)   # where they fit, whole logits first
    assert kernel.config.whole_logits and not kernel.config.fused_loss
    kernel = planned((chunked + whole) / 2 / USABLE, cut_cross_entropy=True)
    assert not kernel.config.whole_logits       # no logits held: short rows keep trl's chunks
    assert kernel.estimate.total == pytest.approx(chunked)


def test_layer_graphs_are_recorded_where_no_layer_recomputes(tiny_qwen3, qa_jsonl, monkeypatch):
    """Compiled layers replay as CUDA graphs where nearly no micro-batch recomputes a layer,
    in one process; where many recompute, or several processes train, they compile without
    them (graphs collapsed there: bench/HISTORY.md). Asked for, graphs are kept; they need
    compile_layers and one GPU."""
    from transformers import AutoTokenizer

    from studio.data import prepare
    from studio.models.shapes import model_shape
    from studio.plan.hardware import detect_hardware
    from studio.plan.memory import USABLE, micro_batch_estimate

    config = FineTuningConfig(model_name=tiny_qwen3, batch_size=2, gradient_accumulation_steps=4,
                              max_seq_length=128, cpu_only=False, bf16=True, compile_layers=True)
    data = prepare(str(qa_jsonl), AutoTokenizer.from_pretrained(tiny_qwen3), config)

    def planned(config, free=80 * GiB):
        plan = plan_for(config, data, gpu(free))
        assert plan.layout()["layer_graphs"] is plan.config.layer_graphs
        said.append(plan.planner)
        return plan.config

    said = []
    assert planned(config).layer_graphs is True
    assert planned(config.replace(compile_layers=False)).layer_graphs is False
    assert planned(config.replace(num_gpus=2)).layer_graphs is False
    assert planned(config.replace(gradient_checkpointing=True)).layer_graphs is False
    assert planned(config.replace(gradient_checkpointing=False)).layer_graphs is True
    longest = sum(sorted((len(ids) for ids in data.train["input_ids"]), reverse=True)[:8])
    needed = micro_batch_estimate(config, longest, model_shape(tiny_qwen3), True,
                                  "transformers", 0).total
    tight = planned(config, needed * 0.9 / USABLE)   # no micro-batch fits: all layers recompute
    assert tight.gradient_checkpointing and tight.layer_graphs is False
    assert "by the estimate no micro-batch fits" in said[-1]
    assert planned(config.replace(layer_graphs=True), needed * 0.9 / USABLE).layer_graphs is False
    assert planned(config.replace(layer_graphs=False)).layer_graphs is False
    packs = config.replace(packing=True, layer_graphs=True)   # asked for, kept where they replay
    assert planned(packs).layer_graphs is True
    recomputing = planned(packs, 0.8 * GiB)        # packs that recompute every layer: none would
    assert recomputing.gradient_checkpointing and recomputing.layer_graphs is False

    hw = detect_hardware()          # this machine: no CUDA GPU
    assert any("turn compile_layers on" in p
               for p in FineTuningConfig(layer_graphs=True).validate(hw))
    assert any("layer_graphs records CUDA graphs on one GPU" in p
               for p in FineTuningConfig(compile_layers=True, layer_graphs=True).validate(hw))
    assert not any("layer_graphs" in p for p in FineTuningConfig(compile_layers=True).validate(hw))
    assert any("every layer recomputes" in p for p in FineTuningConfig(
        compile_layers=True, layer_graphs=True, gradient_checkpointing=True).validate(hw))
