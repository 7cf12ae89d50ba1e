"""The loss scored from hidden states (backends.torch.fused_loss). Its kernel, cut-cross-entropy, runs
only on a CUDA GPU, where bench/loss_kernels.py checks its loss and gradient against the whole
fp32 logits. Here a plain torch stand-in of its one function, over whole fp32 logits, takes its
place, so that what the studio itself adds (the forward that hands over hidden states in place
of logits, the rows it gives the kernel, the planner's choice, the settings' checks) runs on the
CPU through the real model, peft and the real planner."""
from __future__ import annotations

import dataclasses
import sys
import types

import pytest
import torch

from backends.torch import fused_loss
from studio.config import FineTuningConfig
from studio.plan.hardware import GPU
from tests.conftest import gpu, plan_for

ALL7 = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture
def torch_kernel(monkeypatch) -> list:
    """cut_cross_entropy.linear_cross_entropy in plain torch; returns the row counts it got.
    Rows are padded to multiples of 256 here, not 2,048: the stand-in makes the logits that the
    kernel never does, and a tiny model's micro-batch holds a few hundred labelled tokens."""
    monkeypatch.setattr(fused_loss, "ROWS_MULTIPLE", 256)
    rows = []

    def linear_cross_entropy(e, c, targets, reduction="mean", filter_eps=None):
        rows.append(e.shape[0])
        return torch.nn.functional.cross_entropy((e @ c.T).float(), targets,
                                                 reduction=reduction)

    monkeypatch.setitem(sys.modules, "cut_cross_entropy",
                        types.SimpleNamespace(linear_cross_entropy=linear_cross_entropy))
    return rows


def whole_logits_loss(hidden, weight, labels, num_items=None):
    """The model's own loss over whole fp32 logits, from the same hidden states."""
    logits = (hidden[..., :-1, :] @ weight.T).float()
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, -2), labels[..., 1:].flatten(),
                                             ignore_index=-100, reduction="sum")
    return loss / (num_items if num_items is not None else (labels[..., 1:] != -100).sum())


def lora_model(path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return get_peft_model(base, LoraConfig(r=4, target_modules=list(ALL7),
                                           init_lora_weights=False)).train()


def test_labels_are_scored_from_hidden_states_with_the_models_loss_and_gradients(tiny_qwen3,
                                                                                torch_kernel):
    """Given labels, the forward runs the decoder alone and scores its hidden states, never
    projecting onto the vocabulary itself: the same loss and LoRA gradients as the model's own
    loss, over two rows padding-free with some labels ignored, and divided by the update's
    labelled tokens where the Trainer passes them. Without labels (the samples during training,
    the chat) it returns the same logits as before."""
    plain, scored = lora_model(tiny_qwen3), lora_model(tiny_qwen3)
    causal_lm = scored.get_base_model()
    fused_loss.score_labels_here(causal_lm)
    projections = []
    causal_lm.lm_head.register_forward_hook(lambda *a: projections.append(1))

    ids = torch.randint(0, 1000, (1, 90), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :30] = -100                         # a prompt, as assistant-only training masks
    labels[:, 50:58] = -100                       # the second row's prompt
    positions = torch.cat([torch.arange(50), torch.arange(40)])[None]    # two rows, padding-free
    # as the Trainer calls it: without a cache, the position ids keep the rows apart
    inputs = dict(input_ids=ids, position_ids=positions, labels=labels, num_items_in_batch=120,
                  use_cache=False)

    def loss_and_grads(model):
        loss = model(**inputs).loss
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    (want, want_grads), (got, got_grads) = loss_and_grads(plain), loss_and_grads(scored)
    assert projections == []                      # no logits were made: the loss took hidden states
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert want_grads and all(g.abs().sum() > 0 for g in got_grads.values())
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], atol=1e-5, rtol=1e-4)

    # the mean of this micro-batch where no count of the update came with it
    mean = scored(input_ids=ids, position_ids=positions, labels=labels, use_cache=False).loss
    torch.testing.assert_close(mean, want * 120 / (labels[:, 1:] != -100).sum(), rtol=1e-5,
                               atol=1e-5)
    with torch.no_grad():                         # and without labels, the logits as before
        logits = scored(input_ids=ids).logits
        torch.testing.assert_close(logits, plain(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    assert projections == [1]
    assert torch_kernel and all(rows % fused_loss.ROWS_MULTIPLE == 0 for rows in torch_kernel)


def test_the_kernel_gets_the_labelled_rows_padded_to_one_shape_and_the_loss_is_theirs(
        torch_kernel):
    """The kernel scores the labelled positions alone, padded with zero rows to a multiple of
    ROWS_MULTIPLE (Triton compiles a kernel again for each new pattern of row counts dividing
    by 16); the padding adds nothing to the loss or the gradient, a micro-batch without labels
    scores 0, and without the update's count the loss is this micro-batch's mean."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 300, 16, requires_grad=True)
    weight = torch.randn(50, 16)
    labels = torch.randint(0, 50, (2, 300))
    labels[:, :100] = -100

    def loss_and_grad(loss, *args):
        value = loss(hidden, weight, labels, *args)
        (grad,) = torch.autograd.grad(value, hidden)
        return value, grad

    for count in (1000, None):
        got, got_grad = loss_and_grad(fused_loss.next_token_loss, count)
        want, want_grad = loss_and_grad(whole_logits_loss, count)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got_grad, want_grad)
    assert torch_kernel == [2 * fused_loss.ROWS_MULTIPLE] * 2    # 400 labelled rows, padded
    nothing = fused_loss.next_token_loss(hidden, weight, torch.full_like(labels, -100), 10)
    assert nothing.item() == 0 and nothing.requires_grad


@pytest.fixture
def torch_unsloth_kernel(monkeypatch) -> list:
    """unsloth_zoo's unsloth_fused_ce_loss in plain torch, over whole fp32 logits (the sum over
    rows whose target is a token, divided by n_items); returns the labelled row counts it got.
    Rows are padded to multiples of 64 here: a tiny micro-batch holds a few hundred."""
    monkeypatch.setattr(fused_loss, "UNSLOTH_ROWS_MULTIPLE", 64)
    rows = []

    def unsloth_fused_ce_loss(trainer, hidden, weight, bias, labels, n_items=None,
                              shift_labels=True):
        assert not shift_labels          # the studio hands over rows and targets, shifted
        rows.append(int((labels != -100).sum()))
        losses = torch.nn.functional.cross_entropy((hidden @ weight.T).float().flatten(0, 1),
                                                   labels.flatten(), ignore_index=-100,
                                                   reduction="sum")
        return losses / n_items

    module = types.SimpleNamespace(unsloth_fused_ce_loss=unsloth_fused_ce_loss)
    monkeypatch.setitem(sys.modules, "unsloth_zoo.fused_losses.cross_entropy_loss", module)
    return rows


def test_unsloths_kernel_gets_its_labelled_rows_padded_and_the_padding_is_taken_off(
        torch_unsloth_kernel):
    """Unsloth's kernel picks the labelled rows itself, and unpadded it stopped mid-run to
    compile for new lengths, so the studio pads them with zero rows scored against token 0 to a
    multiple of UNSLOTH_ROWS_MULTIPLE: each adds log(vocabulary) to the sum, which is taken
    off, and nothing to the gradient. With or without the update's count, and for a micro-batch
    without labels, the loss and gradient are the whole logits'."""
    torch.manual_seed(0)
    hidden = torch.randn(1, 300, 16, requires_grad=True)
    weight = torch.randn(50, 16)
    labels = torch.randint(0, 50, (1, 300))
    labels[:, :100] = -100
    labels[:, 200:210] = -100

    for count in (1000, None):
        got = fused_loss.unsloth_loss(hidden, weight, labels, count)
        want = whole_logits_loss(hidden, weight, labels, count)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(torch.autograd.grad(got, hidden)[0],
                                   torch.autograd.grad(want, hidden)[0])
    assert torch_unsloth_kernel == [192, 192]          # 190 labelled rows, padded to 3 x 64
    nothing = fused_loss.unsloth_loss(hidden, weight, torch.full_like(labels, -100), 10)
    assert nothing.item() == 0 and nothing.requires_grad


def test_a_cpu_run_scores_as_before_and_the_settings_say_where_the_kernel_runs(tiny_qwen3,
                                                                             qa_jsonl):
    """fused_loss auto stays off on a CPU, and the plan says so; asked for where it cannot run
    (a CPU, several GPUs, beside whole_logits, the mlx backend), validate says why before
    anything loads."""
    from transformers import AutoTokenizer

    from backends.torch.trl_recipe import loss_type
    from studio.data import prepare
    from studio.plan.batches import fused_loss_in_effect
    from studio.plan.hardware import detect_hardware

    hw = detect_hardware()
    config = FineTuningConfig(model_name=tiny_qwen3, data_path=str(qa_jsonl), cpu_only=True,
                              max_steps=1, val_size=0)
    assert not fused_loss_in_effect(config, hw, "transformers")
    data = prepare(str(qa_jsonl), AutoTokenizer.from_pretrained(tiny_qwen3), config)
    plan = plan_for(config, data)
    assert plan.config.fused_loss is False and plan.layout()["fused_loss"] is False
    assert loss_type(plan.config) in ("nll", "chunked_nll")

    problems = FineTuningConfig(fused_loss=True, cpu_only=True).validate(hw)
    assert any("fused_loss runs on a CUDA GPU" in p and "auto or off on a CPU" in p
               for p in problems)
    # a GPU: Unsloth brings its own loss; transformers needs cut-cross-entropy installed
    gpu = dataclasses.replace(hw, gpus=(GPU(0, "H200", 141 * 2**30, 140 * 2**30, (9, 0)),),
                              bf16_supported=True, packages={"unsloth": True})
    assert not any("fused_loss" in p for p in FineTuningConfig(fused_loss=True).validate(gpu))
    assert any("pip install cut-cross-entropy" in p for p in FineTuningConfig(
        fused_loss=True, backend="transformers").validate(gpu))
    assert any("pip install cut-cross-entropy" in p for p in FineTuningConfig(
        fused_loss=True, compile_layers=True).validate(gpu))       # only transformers honours it
    assert any("two ways to score the loss" in p
               for p in FineTuningConfig(fused_loss=True, whole_logits=True).validate(hw))
    assert any("measured on one GPU" in p
               for p in FineTuningConfig(fused_loss=True, num_gpus=2).validate(hw))
    assert any("mlx backend scores its own loss" in p
               for p in FineTuningConfig(fused_loss=True, backend="mlx").validate(hw))
    assert not any("fused_loss" in p for p in FineTuningConfig(fused_loss=False).validate(hw))


@pytest.mark.parametrize("asked, whole, want", [(None, None, True), (None, True, False),
                                                (False, None, False), (None, False, True)])
def test_auto_takes_the_kernel_in_one_process_unless_whole_logits_were_asked_for(
        asked, whole, want):
    """Where the kernel runs, auto takes it in one process for long micro-batches; whole_logits
    asked for wins, and the plan then counts no fused loss."""
    from studio.plan.batches import fused_loss_in_effect

    hw = gpu(80 * 2**30, packages={"cut_cross_entropy": True})
    config = FineTuningConfig(fused_loss=asked, whole_logits=whole, cpu_only=False)
    assert fused_loss_in_effect(config, hw, "unsloth", 27_000) is want
    several = config.replace(num_gpus=2)
    assert fused_loss_in_effect(several, hw, "unsloth") is (want and asked is not None)


def test_auto_leaves_short_micro_batches_to_trls_chunks(tiny_qwen3):
    """At 8B and 8 rows an update both kernels made a step slower than trl's chunks; at 64 rows
    of 0.6B Unsloth's made it faster (bench/HISTORY.md, 'when a kernel pays'). The planner
    decides from the rows it plans: the same rows, longer, take the kernel; asked for, it is
    taken for short ones too."""
    from studio.plan.batches import FUSED_LOSS_MIN_TOKENS, rows_and_loss
    from studio.plan.memory import GiB

    hw = gpu(80 * GiB, packages={"cut_cross_entropy": True})
    config = FineTuningConfig(model_name=tiny_qwen3, cpu_only=False, bf16=True, batch_size=8,
                              gradient_accumulation_steps=1)
    short, long = [400] * 64, [800] * 64
    assert 8 * 400 < FUSED_LOSS_MIN_TOKENS <= 8 * 800
    for lengths, want in ((short, False), (long, True)):
        plan, planned = rows_and_loss(config, hw, 80 * GiB, lengths, "unsloth")
        assert plan.rows == 8 and planned.fused_loss is want
    _, asked = rows_and_loss(config.replace(fused_loss=True), hw, 80 * GiB, short, "unsloth")
    assert asked.fused_loss is True


def test_a_run_scored_from_hidden_states_trains_and_evaluates_as_the_models_own_loss(
        tiny_qwen3, qa_jsonl, tmp_path, torch_kernel):
    """Through the real trainer (backends.hf, as on a GPU with the kernel): two micro-batches an
    update, each divided by the update's labelled tokens, and an evaluation, which gets a loss
    and no logits. The losses, the evaluation's and the adapter are those of the model's own
    loss."""
    from transformers import AutoTokenizer

    from backends import hf
    from studio.data import prepare
    from studio.runs.events import EventLog

    config = FineTuningConfig(model_name=tiny_qwen3, output_dir=str(tmp_path), max_steps=3,
                              batch_size=2, gradient_accumulation_steps=2, logging_steps=1,
                              save_steps=100, eval_steps=3, max_seq_length=128, val_size=0.2,
                              learning_rate=5e-2, bf16=False).resolve()
    data = prepare(str(qa_jsonl), AutoTokenizer.from_pretrained(tiny_qwen3), config)

    def trained(scored: bool):
        log = EventLog()
        trainer = hf.make_trainer(plan_for(config, data), data, tmp_path / f"run-{scored}",
                                  log.emit, lambda: False)
        if scored:                         # what make_trainer does where fused_loss is on
            fused_loss.score_labels_here(trainer.model.get_base_model())
        trainer.train()
        losses = [e.data["loss"] for e in log.events if e.kind == "train"]
        evaluated = [e.data["eval_loss"] for e in log.events if e.kind == "eval"]
        lora = {k: v.clone() for k, v in trainer.model.state_dict().items() if "lora_B" in k}
        return losses, evaluated, lora

    (losses, evaluated, lora), (scored, scored_eval, scored_lora) = trained(False), trained(True)
    assert torch_kernel and len(losses) == 3 and len(evaluated) == 1
    assert scored == pytest.approx(losses, rel=1e-4)
    assert scored_eval == pytest.approx(evaluated, rel=1e-4)
    for name in lora:
        torch.testing.assert_close(scored_lora[name], lora[name], atol=1e-4, rtol=1e-3)
