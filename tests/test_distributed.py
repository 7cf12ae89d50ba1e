"""A run over several processes (issue #17), on the CPU: torchrun starts two workers that train
the tiny Qwen3 over gloo, through the service's real launcher, as a multi-GPU run would."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import psutil
import pytest

from studio import FineTuningConfig
from studio.inference import load_model, stream_reply
from studio.service.actions import Service
from tests.conftest import QA_ROWS, write_jsonl
from tests.servers import free_port


def two_rank_config(model: str, data: Path, **changes) -> FineTuningConfig:
    base = dict(model_name=model, data_path=str(data), max_steps=4, batch_size=2,
                gradient_accumulation_steps=1, logging_steps=1, save_steps=2, eval_steps=100,
                max_seq_length=128, val_size=0, learning_rate=1e-3, cpu_only=True, bf16=False,
                num_gpus=2, master_port=free_port(), seed=7)
    return FineTuningConfig(**{**base, **changes})


def losses(run_dir: Path) -> dict[int, float]:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in events if e["kind"] == "train"]
    steps = [e["step"] for e in train]
    assert len(steps) == len(set(steps)), f"a step was reported twice: {steps}"
    return {e["step"]: e["data"]["loss"] for e in train}


def training(job, timeout: float = 120) -> None:
    """Wait until the job has reported a step: both ranks are past their start."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (job.run_dir / "metrics.jsonl").exists() and losses(job.run_dir):
            return
        time.sleep(0.5)
    raise AssertionError((job.run_dir / "log.txt").read_text()[-3000:])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("dist") / "qa.jsonl", QA_ROWS)


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_same_global_batch(tiny_qwen3, data, tmp_path):
    """Two ranks of 2 rows each against one process of 4 rows, same seed: the same loss at
    every step (float32; measured 7e-5 apart at most, where bf16's rounding is 4e-3), each step
    reported once (rank 0 writes), one adapter that loads and answers like any other."""
    service = Service(tmp_path / "runs")
    two = service.start(two_rank_config(tiny_qwen3, data), in_process=False)
    assert two.wait(300).state == "finished", (two.run_dir / "log.txt").read_text()[-3000:]
    one = service.start(two_rank_config(tiny_qwen3, data, num_gpus=1, batch_size=4),
                        in_process=True)
    assert one.wait(300).state == "finished"
    spread, single = losses(two.run_dir), losses(one.run_dir)
    assert sorted(spread) == sorted(single) == [1, 2, 3, 4]
    for step in single:
        assert spread[step] == pytest.approx(single[step], rel=1e-3), (step, spread, single)
    assert "torch.distributed" in (two.run_dir / "metrics.jsonl").read_text()
    assert "ddp over 2 processes on the CPU (gloo)" in (two.run_dir / "plan.yaml").read_text()
    reply = "".join(stream_reply(load_model(two.run_dir), [{"role": "user", "content": "Hi"}],
                                 max_new_tokens=4, temperature=0))
    assert isinstance(reply, str)
    # resumed on one process from the two-process checkpoint, for two more steps
    resumed = service.resume(two.run_dir, two_rank_config(tiny_qwen3, data, num_gpus=1,
                                                          batch_size=4, max_steps=6),
                             in_process=True)
    assert resumed.wait(300).state == "finished"
    assert sorted(losses(two.run_dir))[-1] == 6


@pytest.mark.slow
def test_a_rank_killed_mid_run_fails_the_run_within_seconds(tiny_qwen3, data, tmp_path):
    """SIGKILL to rank 1 while training: torchrun ends rank 0, the supervisor writes the run as
    failed naming the rank, within seconds; the service still answers."""
    service = Service(tmp_path / "runs")
    job = service.start(two_rank_config(tiny_qwen3, data, max_steps=10_000, save_steps=10_000),
                        in_process=False)
    training(job)
    ranks = [p for p in psutil.Process(job.process.pid).children(recursive=True)
             if p.environ().get("RANK") == "1"]
    assert ranks, "no rank 1 found under the job"
    ranks[0].send_signal(signal.SIGKILL)
    killed = time.time()
    status = job.wait(60)
    assert status.state == "failed", status
    assert status.reason.startswith("rank 1 failed: it was killed (signal 9)"), status
    assert time.time() - killed < 30
    assert [r.status.state for r in service.runs()] == ["failed"]


@pytest.mark.slow
def test_stop_ends_every_rank_at_the_same_step(tiny_qwen3, data, tmp_path):
    """Stop on a two-rank run: both ranks agree on the step, rank 0 saves the adapter and
    writes 'stopped', and no process of the job is left."""
    service = Service(tmp_path / "runs")
    job = service.start(two_rank_config(tiny_qwen3, data, max_steps=10_000, save_steps=10_000),
                        in_process=False)
    training(job)
    workers = psutil.Process(job.process.pid).children(recursive=True)
    service.stop(job.run_dir, wait=True)
    status = job.wait(30)
    assert status.state == "stopped" and "as asked" in status.reason, status
    assert (job.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not [p for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_an_fsdp_adapter_holds_the_lora_weights_alone_and_loads(tiny_qwen3, tmp_path):
    """Under FSDP the adapter is written from the LoRA parameters alone, gathered from their
    shards (trl_recipe.lora_gathered_alone), never from the whole model. Here in one CPU process,
    where the parameters are whole tensors: the file holds exactly what peft's own save holds,
    with the tokenizer beside it, and loads as an adapter."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from backends.torch.trl_recipe import lora_gathered_alone

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_qwen3),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                      init_lora_weights=False))
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "out"),
                                                          use_cpu=True, report_to=[]),
                      processing_class=AutoTokenizer.from_pretrained(tiny_qwen3))
    trainer.is_fsdp_enabled = True
    lora_gathered_alone(trainer).save_model(str(tmp_path / "gathered"))
    model.save_pretrained(tmp_path / "plain")
    gathered = load_file(tmp_path / "gathered" / "adapter_model.safetensors")
    plain = load_file(tmp_path / "plain" / "adapter_model.safetensors")
    assert sorted(gathered) == sorted(plain) and len(plain) == 8
    for name in plain:
        assert gathered[name].equal(plain[name])
    assert (tmp_path / "gathered" / "tokenizer_config.json").is_file()
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen3),
                                       str(tmp_path / "gathered"))
    assert loaded.peft_config["default"].r == 4
