"""bf16 adapters stepped through fp32 copies (studio.adapter_precision): the optimiser steps as
torch's AdamW on fp32 adapters does, a bf16 run trains as the fp32-adapter recipe does, and a
resumed run goes on from the fp32 weights, not from their rounded copies in the checkpoint."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from studio import adapter_precision, run_fine_tuning
from tests.test_engine import quick_config, train_events


@pytest.fixture
def bf16_cpu(monkeypatch):
    """This CPU computes bf16, only without native instructions, so the studio refuses it as
    slower than fp32: the runs here claim the instructions."""
    from studio import hardware

    real = hardware.detect_hardware()
    monkeypatch.setattr(hardware, "detect_hardware",
                        lambda: dataclasses.replace(real, cpu_bf16=True))


def test_adamw_on_fp32_copies_steps_as_adamw_on_fp32_tensors():
    """Same gradients, same updates: the fp32 copies equal AdamW's fp32 tensors after every
    step (learning rate changed midway, two weight-decay groups, a tensor left without a
    gradient), and the trained bf16 tensors are those copies rounded once."""
    torch.manual_seed(0)
    shapes = [(16, 8), (8,), (4, 16)]
    start = [torch.randn(s).bfloat16().float() for s in shapes]   # what bf16 holds exactly
    reference = [torch.nn.Parameter(t.clone()) for t in start]
    trained = [torch.nn.Parameter(t.bfloat16()) for t in start]
    kwargs = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, foreach=False)
    plain = torch.optim.AdamW([{"params": reference[:2], "weight_decay": 0.1},
                               {"params": reference[2:], "weight_decay": 0.0}], **kwargs)
    ours = adapter_precision.AdamWOnFloat32Copies(
        [{"params": trained[:2], "weight_decay": 0.1},
         {"params": trained[2:], "weight_decay": 0.0}], **kwargs)
    for step in range(4):
        grads = [torch.randn(s).bfloat16() for s in shapes]
        if step == 2:
            grads[1] = None
            for group in plain.param_groups + ours.param_groups:
                group["lr"] = 3e-3
        for r, t, g in zip(reference, trained, grads):
            r.grad = None if g is None else g.float()
            t.grad = g
        plain.step()
        ours.step()
        for r, c, t in zip(reference, ours.copies, trained):
            assert c.dtype == torch.float32 and t.dtype == torch.bfloat16
            assert torch.equal(c, r.detach())
            assert torch.equal(t.detach(), r.detach().bfloat16())
        ours.zero_grad()
        assert all(t.grad is None for t in trained)

    # a resumed optimiser, built on the checkpoint's rounded tensors, goes on from the copies
    saved = ours.state_dict()
    rounded = [torch.nn.Parameter(t.detach().clone()) for t in trained]
    resumed = adapter_precision.AdamWOnFloat32Copies(
        [{"params": rounded[:2], "weight_decay": 0.1},
         {"params": rounded[2:], "weight_decay": 0.0}], **kwargs)
    resumed.load_state_dict(saved)
    assert any(not torch.equal(t.detach().float(), r.detach())
               for t, r in zip(trained, reference))    # rounding lost something to restore
    for c, r in zip(resumed.copies, reference):
        assert torch.equal(c, r.detach())


def test_a_bf16_run_trains_bf16_adapters_as_the_fp32_adapter_recipe(tiny_qwen3, tmp_path,
                                                                     qa_jsonl, monkeypatch,
                                                                     bf16_cpu):
    """A bf16 run holds its adapters in bf16 (what it saves shows it) and trains as the same run
    with fp32 adapters (peft's default) does: losses and gradient norms within bf16's rounding
    over updates that accumulate two micro-batches and clip, eval losses too."""
    def run(name):
        config = quick_config(tiny_qwen3, tmp_path / name, data_path=str(qa_jsonl), max_steps=3,
                              gradient_accumulation_steps=2, max_grad_norm=0.05, bf16=True,
                              num_samples=0)
        adapter = Path(run_fine_tuning(config=config))
        events = train_events(tmp_path / name)
        return ([(e["data"]["loss"], e["data"]["grad_norm"]) for e in events
                 if e["kind"] == "train"],
                [e["data"]["eval_loss"] for e in events if e["kind"] == "eval"],
                load_file(adapter / "adapter_model.safetensors"))

    held = run("held")
    monkeypatch.setattr(adapter_precision, "hold_in_compute_dtype", lambda trainer: False)
    plain = run("plain")
    assert {t.dtype for t in held[2].values()} == {torch.bfloat16}
    assert {t.dtype for t in plain[2].values()} == {torch.float32}
    assert len(held[0]) == 3 and all(norm > 0.05 for _, norm in held[0])     # clipped
    torch.testing.assert_close(held[0], plain[0], rtol=2e-2, atol=0)
    torch.testing.assert_close(held[1], plain[1], rtol=1e-2, atol=0)
    for name, weight in plain[2].items():
        torch.testing.assert_close(held[2][name].float(), weight, rtol=0.05, atol=2e-3)


def test_a_resumed_bf16_run_goes_on_from_its_fp32_weights(tiny_qwen3, tmp_path, qa_jsonl,
                                                          bf16_cpu):
    """Two steps, a checkpoint, two more on resume: the same adapter as four steps at once. The
    checkpoint's adapter holds bf16 values; only the optimiser's fp32 copies carry what the
    rounding dropped."""
    def config(name, steps):
        return quick_config(tiny_qwen3, tmp_path / name, data_path=str(qa_jsonl),
                            max_steps=steps, save_steps=2, bf16=True, val_size=0,
                            num_samples=0, lr_scheduler_type="constant", warmup_ratio=0.0)

    whole = load_file(Path(run_fine_tuning(config=config("whole", 4)))
                      / "adapter_model.safetensors")
    run_fine_tuning(config=config("split", 2))
    resumed = load_file(Path(run_fine_tuning(config=config("split", 4), resume=True))
                        / "adapter_model.safetensors")
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
