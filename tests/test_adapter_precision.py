"""bf16 adapters stepped through fp32 copies (backends.torch.adapter_precision): the optimiser steps as
torch's AdamW on fp32 adapters does, a bf16 run trains as the fp32-adapter recipe does, and a
resumed run goes on from the fp32 weights, not from their rounded copies in the checkpoint."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from studio import run_fine_tuning
from backends.torch import adapter_precision
from tests.conftest import quick_config
from tests.test_engine import train_events


@pytest.fixture
def bf16_cpu(monkeypatch):
    """This CPU computes bf16, only without native instructions, so the studio refuses it as
    slower than fp32: the runs here claim the instructions."""
    from studio.plan import hardware

    real = hardware.detect_hardware()
    monkeypatch.setattr(hardware, "detect_hardware",
                        lambda: dataclasses.replace(real, cpu_bf16=True))


def _adamw_pair(shapes, **kwargs):
    """torch's AdamW on fp32 tensors and AdamWOnFloat32Copies on their bf16 twins, with two
    weight-decay groups, starting from values bf16 holds exactly."""
    start = [torch.randn(s).bfloat16().float() for s in shapes]
    reference = [torch.nn.Parameter(t.clone()) for t in start]
    trained = [torch.nn.Parameter(t.bfloat16()) for t in start]
    kwargs = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, foreach=False, **kwargs)
    plain = torch.optim.AdamW([{"params": reference[:2], "weight_decay": 0.1},
                               {"params": reference[2:], "weight_decay": 0.0}], **kwargs)
    ours = adapter_precision.AdamWOnFloat32Copies(
        [{"params": trained[:2], "weight_decay": 0.1},
         {"params": trained[2:], "weight_decay": 0.0}], **kwargs)
    return reference, plain, trained, ours


def _same_weights(reference, ours, trained):
    """The fp32 copies are AdamW's fp32 tensors, and the bf16 tensors those rounded once."""
    for r, c, t in zip(reference, adapter_precision._views(torch.cat(ours.copies), trained),
                       trained):
        assert c.dtype == torch.float32 and t.dtype == torch.bfloat16
        assert torch.equal(c, r.detach())
        assert torch.equal(t.detach(), r.detach().bfloat16())


def test_adamw_on_fp32_copies_steps_as_adamw_on_fp32_tensors():
    """Same gradients, same updates, to the bit, after every step: gradients handed over as
    autograd makes them or accumulated into kept ones (layer graphs keep theirs), a tensor left
    without one (a zero gradient), a learning rate changed midway. A resumed optimiser, built on
    the checkpoint's rounded tensors, goes on from the copies."""
    torch.manual_seed(0)
    shapes = [(16, 8), (8,), (4, 16)]
    reference, plain, trained, ours = _adamw_pair(shapes)
    for step in range(4):
        grads = [torch.randn(s).bfloat16() for s in shapes]
        if step == 2:
            grads[1] = None
            for group in plain.param_groups + ours.param_groups:
                group["lr"] = 3e-3
        for r, t, g in zip(reference, trained, grads):
            r.grad = torch.zeros_like(r) if g is None else g.float()
            if t.grad is not None and g is not None:
                t.grad.add_(g)          # into the kept, zeroed gradient, as autograd accumulates
            else:
                t.grad = g
        plain.step()
        ours.step()
        _same_weights(reference, ours, trained)
        keep = step % 2 == 0
        ours.zero_grad(set_to_none=not keep)
        assert all(t.grad is None for t in trained) if not keep else \
            all(not t.grad.any() for t in trained if t.grad is not None)

    saved = ours.state_dict()
    rounded = [torch.nn.Parameter(t.detach().clone()) for t in trained]
    resumed = adapter_precision.AdamWOnFloat32Copies(
        [{"params": rounded[:2], "weight_decay": 0.1},
         {"params": rounded[2:], "weight_decay": 0.0}], lr=3e-3, foreach=False)
    resumed.load_state_dict(saved)
    assert any(not torch.equal(t.detach().float(), r.detach())
               for t, r in zip(trained, reference))    # rounding lost something to restore
    _same_weights(reference, resumed, rounded)


def test_clipping_in_the_flat_buffer_is_torchs():
    """The norm and the clipped update as torch.nn.utils.clip_grad_norm_ gives them on fp32
    tensors, within fp32's rounding (one reduction over the buffer, not a norm of norms)."""
    torch.manual_seed(1)
    shapes = [(32, 8), (8,), (4, 32)]
    reference, plain, trained, ours = _adamw_pair(shapes)
    for r, t in zip(reference, trained):
        t.grad = torch.randn(r.shape).bfloat16()
        r.grad = t.grad.float()
    expected = torch.nn.utils.clip_grad_norm_(reference, 0.5)
    norm = ours.clip_grad_norm_(0.5)
    torch.testing.assert_close(norm, expected, rtol=1e-6, atol=0)
    assert norm > 0.5                                           # it did clip
    plain.step()
    ours.step()
    for r, c in zip(reference, adapter_precision._views(torch.cat(ours.copies), trained)):
        torch.testing.assert_close(c, r.detach(), rtol=1e-6, atol=1e-7)


def test_a_checkpoint_of_per_tensor_adamw_resumes_into_the_flat_buffers():
    """A run checkpointed before the buffers were flat (torch's AdamW on fp32 adapters, one
    state a tensor) resumes: its moments land in the flat state and the steps go on as that
    AdamW's would, to the bit."""
    torch.manual_seed(2)
    shapes = [(16, 8), (8,), (4, 16)]
    reference, plain, _, _ = _adamw_pair(shapes)
    for _ in range(2):
        for r in reference:
            r.grad = torch.randn(r.shape).bfloat16().float()
        plain.step()
    exact = [r.detach().bfloat16().float() for r in reference]     # what bf16 can resume from
    for r, e in zip(reference, exact):
        r.data.copy_(e)
    trained = [torch.nn.Parameter(e.clone()) for e in exact]       # fp32, as peft loads them
    ours = adapter_precision.AdamWOnFloat32Copies(
        [{"params": trained[:2], "weight_decay": 0.1},
         {"params": trained[2:], "weight_decay": 0.0}], lr=1e-2, betas=(0.9, 0.99), eps=1e-8,
        foreach=False)
    ours.load_state_dict(plain.state_dict())
    for _ in range(2):
        for r, t in zip(reference, trained):
            t.grad = torch.randn(r.shape).bfloat16()
            r.grad = t.grad.float()
        plain.step()
        ours.step()
        _same_weights(reference, ours, trained)


@pytest.mark.slow
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


@pytest.mark.slow
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
