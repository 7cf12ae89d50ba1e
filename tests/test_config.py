"""The run configuration: defaults that run here, explicit settings that cannot run refused."""
from __future__ import annotations

import dataclasses

import pytest

from studio.config import ConfigError, FineTuningConfig
from studio.errors import Note
from studio.plan.hardware import GPU, Hardware

CPU = Hardware(cpu_cores=2, ram_bytes=24 * 2**30, bitsandbytes=True, cpu_bf16=True)
H100 = Hardware(gpus=(GPU(0, "NVIDIA H100 80GB HBM3", 80 * 2**30, 79 * 2**30, (9, 0)),),
                cpu_cores=16, ram_bytes=128 * 2**30, bf16_supported=True, bitsandbytes=True)
T4 = Hardware(gpus=(GPU(0, "Tesla T4", 16 * 2**30, 15 * 2**30, (7, 5)),), bitsandbytes=True)


def test_the_guides_fields_and_defaults_are_all_there():
    """Every field of the original guide exists with the guide's default."""
    c = FineTuningConfig()
    assert (c.lora_r, c.lora_alpha, c.target_modules, c.bias) == (8, 16, ["q_proj", "v_proj"], "none")
    assert c.resolve(CPU).lora_dropout == 0.05
    assert (c.learning_rate, c.batch_size, c.gradient_accumulation_steps, c.num_train_epochs,
            c.max_seq_length, c.warmup_ratio) == (2e-4, 4, 4, 3, 2048, 0.03)
    assert (c.save_steps, c.logging_steps, c.eval_steps, c.save_total_limit, c.seed) == \
        (100, 10, 100, 3, 42)
    assert (c.use_wandb, c.device_map) == (False, "auto")
    for name in ("output_dir", "task_type", "fp16", "bf16", "wandb_project", "wandb_run_name",
                 "cpu_only", "load_in_4bit", "load_in_8bit", "max_steps", "val_size", "backend"):
        assert hasattr(c, name)


def test_defaults_resolve_to_settings_this_cpu_can_run():
    """On a CPU-only machine the auto fields become the CPU, unquantised, bf16 where native."""
    c = FineTuningConfig().resolve(CPU)
    assert (c.cpu_only, c.fp16, c.bf16, c.load_in_4bit, c.packing) == (True, False, True, False, False)
    assert c.validate(CPU) == []
    old_cpu = dataclasses.replace(CPU, cpu_bf16=False)
    assert FineTuningConfig().resolve(old_cpu).bf16 is False
    assert any("no native bfloat16" in p for p in FineTuningConfig(bf16=True).validate(old_cpu))


def test_defaults_resolve_to_bf16_on_an_h100_and_fp16_on_a_t4():
    """A GPU with bfloat16 trains in bf16; one without it in fp16."""
    assert FineTuningConfig().resolve(H100).bf16 is True
    t4 = FineTuningConfig().resolve(T4)
    assert (t4.bf16, t4.fp16, t4.cpu_only) == (False, True, False)


def test_a_model_too_big_for_the_gpu_is_loaded_in_4bit_automatically():
    """Auto quantisation: 32B bf16 weights do not fit a 16 GB card, so it loads in 4-bit."""
    assert FineTuningConfig(model_name="Qwen/Qwen3-32B").resolve(T4).load_in_4bit is True
    assert FineTuningConfig(model_name="Qwen/Qwen3-0.6B").resolve(T4).load_in_4bit is False


@pytest.mark.parametrize("changes,message", [
    (dict(load_in_4bit=True, load_in_8bit=True), "load_in_4bit and load_in_8bit are both on"),
    (dict(fp16=True), "fp16 training needs a CUDA GPU"),
    (dict(cpu_only=False), "a CUDA GPU was asked for"),
    (dict(device_map="cuda:0"), "a CUDA GPU was asked for"),
    (dict(lora_r=0), "lora_r must be at least 1"),
    (dict(lora_dropout=1.5), "lora_dropout must be at most 0.9"),
    (dict(batch_size=0), "batch_size must be at least 1"),
    (dict(bias="some"), "bias must be one of none, all, lora_only"),
    (dict(backend="unsloth"), "the unsloth backend needs an NVIDIA GPU"),
    (dict(target_modules=[]), "target_modules is empty"),
    (dict(prompt_template="no placeholders"), "prompt_template has no {placeholders}"),
])
def test_impossible_settings_are_refused_with_a_clear_message(changes, message):
    """Each setting the CPU cannot honour, or that makes no sense, is named in words."""
    problems = FineTuningConfig(**changes).validate(CPU)
    assert any(message in p for p in problems), problems


TWO_H200 = Hardware(gpus=tuple(GPU(i, "NVIDIA H200", 140 * 2**30, 139 * 2**30, (9, 0))
                                for i in range(2)), bitsandbytes=True)
TWO_L40S = Hardware(gpus=tuple(GPU(i, "NVIDIA L40S", 48 * 2**30, 47 * 2**30, (8, 9))
                                for i in range(2)), bitsandbytes=True)


def test_several_gpus_resolve_to_ddp_when_the_model_fits_one_and_fsdp_when_not():
    """num_gpus auto takes every GPU; auto picks ddp where the run fits one GPU (8B on an
    H200, recomputing if it must) and fsdp where not (32B on 48 GB cards), without 4-bit."""
    small = FineTuningConfig(model_name="Qwen/Qwen3-8B").resolve(TWO_H200)
    assert (small.num_gpus, small.world_size, small.distributed) == (2, 2, "ddp")
    big = FineTuningConfig(model_name="Qwen/Qwen3-32B").resolve(TWO_L40S)
    assert (big.distributed, big.load_in_4bit) == ("fsdp", False)
    one = FineTuningConfig(model_name="Qwen/Qwen3-8B", num_gpus=1).resolve(TWO_H200)
    assert (one.world_size, one.distributed) == (1, "ddp")
    assert FineTuningConfig().resolve(CPU).world_size == 1


def test_the_plan_says_when_too_few_rows_a_gpu_will_spread_poorly():
    """Too few rows a GPU an update scale poorly over two GPUs (the measurements are in
    bench/HISTORY.md): the plan says so."""
    from backends.torch.distributed import describe

    few = FineTuningConfig(model_name="Qwen/Qwen3-8B", batch_size=4,
                           gradient_accumulation_steps=2).resolve(TWO_H200)
    assert "8 rows a GPU an update make short, host-bound steps" in describe(few, "auto")
    enough = few.replace(batch_size=8)
    assert describe(enough, "auto") == ("ddp over 2 processes: each GPU holds the whole model "
                                        "and a share of a batch (the model and its activations "
                                        "fit one GPU)")


def test_fsdp_plans_a_gpu_for_its_shard_of_the_weights():
    """32B over two GPUs with fsdp: each GPU is planned for half the weights and LoRA state
    (plus the two layers gathered whole), not the whole model as under ddp."""
    from studio.plan.memory import estimate_memory

    ddp = FineTuningConfig(model_name="Qwen/Qwen3-32B", num_gpus=2, distributed="ddp",
                           load_in_4bit=False).resolve(TWO_L40S)
    fsdp = ddp.replace(distributed="fsdp")
    whole, shard = estimate_memory(ddp), estimate_memory(fsdp)
    assert 0.5 * whole.weights < shard.weights < 0.55 * whole.weights
    assert shard.lora == whole.lora / 2
    assert shard.activations == whole.activations


@pytest.mark.parametrize("hw,changes,message", [
    (TWO_H200, dict(num_gpus=3), "num_gpus is 3 but this machine has 2 GPU(s)"),
    (TWO_H200, dict(distributed="fsdp", load_in_4bit=True), "QLoRA (4-/8-bit weights) does not "
                                                             "shard with FSDP"),
    (TWO_H200, dict(distributed="deepspeed"), "needs DeepSpeed: pip install deepspeed"),
    (TWO_H200, dict(backend="scripted"), "the scripted backend trains in one process"),
    (CPU, dict(num_gpus=2, distributed="fsdp"), "fsdp needs GPUs"),
    (CPU, dict(nnodes=2, node_rank=2), "node_rank 2 is not below nnodes 2"),
])
def test_impossible_multi_process_settings_are_refused(hw, changes, message):
    problems = FineTuningConfig(**changes).validate(hw)
    assert any(message in p for p in problems), problems


def test_compiled_layers_train_on_the_backend_that_compiles_them():
    """compile_layers is the transformers backend's: with the backend left to pick, a machine
    where another backend would win trains on transformers instead of ignoring the setting
    (the GPU bench's compiled runs of round eight had got Unsloth)."""
    from backends import choose_backend

    apple = dataclasses.replace(CPU, apple_silicon=True)     # mlx[cpu] is installed for tests
    assert choose_backend("auto", apple)[0] == "mlx"
    needs = FineTuningConfig(compile_layers=True, whole_logits=True).transformers_only()
    name, why = choose_backend("auto", apple, needs=needs)
    assert name == "transformers" and "compile_layers and whole_logits" in why
    assert choose_backend("mlx", apple, needs=needs)[0] == "mlx"     # asked for: validate says
    assert FineTuningConfig(whole_logits=False).transformers_only() == ()


def test_quantisation_on_the_cpu_is_allowed():
    """bitsandbytes 0.50 trains 4-bit and 8-bit models on the CPU, so they are not refused."""
    assert FineTuningConfig(cpu_only=True, load_in_4bit=True).validate(CPU) == []
    assert FineTuningConfig(cpu_only=True, load_in_8bit=True).validate(CPU) == []


def test_bf16_on_a_gpu_without_it_is_refused():
    """A T4 has no bfloat16: asking for it says to use fp16."""
    assert any("use fp16" in p for p in FineTuningConfig(bf16=True).validate(T4))


def test_unpublished_model_ids_resolve_to_real_ones_with_a_note():
    """The guide's Qwen/Qwen3-4B-Instruct never existed: the 2507 release is used, and said."""
    with pytest.warns(Note, match="never published"):
        c = FineTuningConfig(model_name="Qwen/Qwen3-4B-Instruct")
    assert c.model_name == "Qwen/Qwen3-4B-Instruct-2507"
    with pytest.warns(Note):
        assert FineTuningConfig(model_name="mlx-community/Qwen3-0.5B-Chat-mlx").model_name == \
            "mlx-community/Qwen3-0.6B-4bit"


def test_seq2seq_task_type_is_accepted_and_corrected_once():
    """task_type SEQ_2_SEQ_LM is wrong for Qwen3: it becomes CAUSAL_LM with one note."""
    with pytest.warns(Note, match="decoder-only") as notes:
        c = FineTuningConfig(task_type="SEQ_2_SEQ_LM")
    assert c.task_type == "CAUSAL_LM" and len(notes) == 1


def test_yaml_round_trip_keeps_every_field(tmp_path):
    """A config saved as YAML loads back equal, field by field."""
    c = FineTuningConfig(lora_r=16, target_modules=["q_proj", "k_proj"], max_steps=7,
                         column_mapping={"instruction": "question"}, fp16=None, bf16=False)
    loaded = FineTuningConfig.load(c.save(tmp_path / "c.yaml"))
    assert dataclasses.asdict(loaded) == dataclasses.asdict(c)


def test_a_misspelt_field_in_a_yaml_file_is_named(tmp_path):
    """An unknown key is refused by name, not silently ignored."""
    (tmp_path / "c.yaml").write_text("lora_rank: 8\n")
    with pytest.raises(ConfigError, match="unknown config field.*lora_rank"):
        FineTuningConfig.load(tmp_path / "c.yaml")
