"""Frozen base weights in fp8 (backends.torch.fp8_weights): the layer against the 16-bit one it replaces,
a LoRA run of the tiny Qwen3 trained with them, and where the setting is refused. fp8 matmuls
run on the CPU too (torch._scaled_mm), slowly, which is enough to check the arithmetic and the
wiring; the speed is the GPU's (BENCHMARKS.md)."""
from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

from studio.config import FineTuningConfig
from backends.torch.fp8_weights import FP8, Fp8Linear
from tests.test_config import CPU, H100, T4
from tests.conftest import plan_for, quick_config
from tests.test_engine import _tokenizer


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_an_fp8_layer_gives_the_16_bit_output_and_input_gradient_to_fp8_rounding():
    """Forward and input gradient within fp8's rounding of the layer it replaces (3 mantissa
    bits: a few percent), and really rounded; the weight's two fp8 layouts take the bytes of
    one bf16 copy, and nothing in the layer trains."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 512).to(torch.bfloat16).requires_grad_(False)
    fp8 = Fp8Linear(linear)
    x = torch.randn(3, 7, 256, dtype=torch.bfloat16, requires_grad=True)
    expected = linear(x)
    expected.pow(2).sum().backward()
    expected_grad, x.grad = x.grad, None
    out = fp8(x)
    out.pow(2).sum().backward()

    assert out.dtype == torch.bfloat16 and out.shape == expected.shape
    assert 1e-3 < relative_error(out, expected) < 0.06
    assert 1e-3 < relative_error(x.grad, expected_grad) < 0.06
    assert (fp8.weight.dtype, fp8.weight_t.dtype) == (FP8, FP8)
    assert fp8.weight.is_contiguous() and fp8.weight_t.is_contiguous()   # cuBLAS reads them so
    assert fp8.weight.nbytes + fp8.weight_t.nbytes == linear.weight.nbytes
    assert list(fp8.parameters()) == []


def test_a_run_with_fp8_weights_trains_its_adapters_as_a_16_bit_run_does(tiny_qwen3, tmp_path,
                                                                           qa_jsonl):
    """The transformers backend swaps every frozen linear layer of the tiny Qwen3 for fp8 (the
    ones under LoRA and the ones without), leaves LoRA's own layers and the output projection
    alone, and says so; the run's losses follow the 16-bit run's within fp8's rounding, and
    its adapters train."""
    from backends import hf
    from studio.data import prepare
    from studio.runs.events import EventLog

    config = quick_config(tiny_qwen3, tmp_path / "run", max_steps=6, learning_rate=5e-2,
                          bf16=False, val_size=0, target_modules=["q_proj", "v_proj"]).resolve()
    data = prepare(str(qa_jsonl), _tokenizer(tiny_qwen3), config)

    def trained(fp8: bool):
        log = EventLog()
        trainer = hf.make_trainer(plan_for(config.replace(fp8_weights=fp8), data), data,
                                  tmp_path / f"run-{fp8}", log.emit, lambda: False)
        kinds = Counter(f"{name.split('.')[-1]}:{type(m).__name__}"
                        for name, m in trainer.model.named_modules())
        trainer.train()
        messages = [e.data.get("message", "") for e in log.events if e.kind == "status"]
        lora_b = torch.cat([p.detach().flatten() for n, p in trainer.model.named_parameters()
                            if "lora_B" in n])
        return kinds, [e.data["loss"] for e in log.events if e.kind == "train"], messages, lora_b

    (kinds, losses, messages, lora_b), (kinds16, losses16, _, lora_b16) = \
        trained(True), trained(False)
    layers = 2                                                  # the tiny Qwen3's
    assert kinds["base_layer:Fp8Linear"] == 2 * layers          # q_proj, v_proj under LoRA
    for plain in ("k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert kinds[f"{plain}:Fp8Linear"] == layers
    assert kinds["lora_A:ModuleDict"] == 2 * layers and kinds["default:Linear"] == 4 * layers
    assert kinds["lm_head:Linear"] == 1 and "base_layer:Fp8Linear" not in kinds16
    assert "fp8 weights: 14 frozen linear layers quantized" in messages
    assert len(losses) == len(losses16) == 6
    assert losses != losses16                                   # fp8 really ran
    assert all(abs(a - b) < 0.05 * b for a, b in zip(losses, losses16)), (losses, losses16)
    assert losses[-1] < losses[0]
    assert lora_b.norm() > 0 and relative_error(lora_b, lora_b16) < 0.2   # B starts at zero


H200 = dataclasses.replace(H100, gpus=(dataclasses.replace(H100.gpus[0], name="NVIDIA H200"),))
A100 = dataclasses.replace(H100, gpus=(dataclasses.replace(H100.gpus[0], name="NVIDIA A100",
                                                           capability=(8, 0)),))


@pytest.mark.parametrize("hw,changes,message", [
    (CPU, {}, "fp8_weights needs fp8 tensor cores, which NVIDIA GPUs of compute capability 8.9"),
    (T4, {}, "none here (Tesla T4): turn fp8_weights off"),
    (A100, {}, "none here (NVIDIA A100): turn fp8_weights off"),
    (H200, dict(load_in_4bit=True), "fp8_weights and 4-/8-bit loading are two ways"),
    (H200, dict(backend="unsloth"), "fp8_weights applies to the transformers backend"),
    (H200, dict(num_gpus=2), "fp8_weights is measured on one GPU"),
])
def test_fp8_weights_where_they_cannot_run_are_refused_with_the_reason(hw, changes, message):
    problems = FineTuningConfig(fp8_weights=True, **changes).validate(hw)
    assert any(message in p for p in problems), problems


def test_fp8_weights_on_a_hopper_gpu_train_on_the_transformers_backend_in_16_bit_storage():
    """Left to auto, the backend becomes transformers (Unsloth runs its own matmuls), its layers
    compile (the rows' scaling fuses into their kernels: bench/HISTORY.md, round seventeen), and an
    8B model that would not fit in 16 bits is not loaded in 4-bit behind the setting's back."""
    from backends import choose_backend

    config = FineTuningConfig(model_name="Qwen/Qwen3-8B", fp8_weights=True)
    assert config.validate(H200) == []
    hopper = dataclasses.replace(H200, packages={"unsloth": True})
    assert choose_backend("auto", hopper, needs=config.transformers_only())[0] == "transformers"
    assert config.resolve(H200).compile_layers is True
    assert config.replace(compile_layers=False).resolve(H200).compile_layers is False
    assert FineTuningConfig(model_name="Qwen/Qwen3-8B").resolve(H200).compile_layers is None
    small = dataclasses.replace(T4, bf16_supported=True)
    assert FineTuningConfig(model_name="Qwen/Qwen3-8B").resolve(small).load_in_4bit is True
    assert config.resolve(small).load_in_4bit is False
