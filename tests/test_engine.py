"""The engine end to end: real tiny models trained through transformers + peft + trl on the CPU."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

from studio import generate_text, load_model_and_tokenizer, run_fine_tuning
from studio.runs.store import last_checkpoint, read_status
from studio.service.actions import Service
from tests.conftest import FACT_Q, QA_ROWS, plan_for, quick_config, write_jsonl


def train_events(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------- formats and shapes
SHAPES = {
    "instruction": [{"instruction": r["instruction"], "response": r["response"]} for r in QA_ROWS],
    "prompt_completion": [{"prompt": r["instruction"], "completion": r["response"]} for r in QA_ROWS],
    "input_output": [{"input": r["instruction"], "output": r["response"]} for r in QA_ROWS],
    "alpaca": [{"instruction": "Add the numbers.", "input": r["instruction"], "output": r["response"]}
               for r in QA_ROWS],
    "sharegpt": [{"conversations": [{"from": "system", "value": "You add numbers."},
                                    {"from": "human", "value": r["instruction"]},
                                    {"from": "gpt", "value": r["response"]}]} for r in QA_ROWS],
    "messages": [{"messages": [{"role": "user", "content": r["instruction"]},
                               {"role": "assistant", "content": r["response"]}]} for r in QA_ROWS],
}


def write_as(fmt: str, rows: list[dict], folder) -> str:
    """Write rows in one of the file formats the studio loads; return the path."""
    if fmt == "jsonl":
        return str(write_jsonl(folder / "data.jsonl", rows))
    if fmt == "json":
        (folder / "data.json").write_text(json.dumps(rows))
        return str(folder / "data.json")
    if fmt == "csv":
        pd.DataFrame(rows).to_csv(folder / "data.csv", index=False)
        return str(folder / "data.csv")
    if fmt == "parquet":
        pd.DataFrame(rows).to_parquet(folder / "data.parquet")
        return str(folder / "data.parquet")
    if fmt == "saved":
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(folder / "saved"))
        return str(folder / "saved")
    raise ValueError(fmt)


# Every file format and every shape at least once (nested shapes need a nested format).
CASES = [("csv", "instruction"), ("parquet", "prompt_completion"), ("json", "input_output"),
         ("saved", "alpaca"), ("jsonl", "sharegpt"), ("jsonl", "messages")]


@pytest.mark.parametrize("file_format,shape", CASES)
def test_tiny_qwen3_trains_from_each_format_and_shape(tiny_qwen3, tmp_path, file_format, shape):
    """Each file format and detected shape trains, logs a finite loss and saves an adapter."""
    data = write_as(file_format, SHAPES[shape], tmp_path)
    adapter = run_fine_tuning(data_path=data, config=quick_config(tiny_qwen3, tmp_path / "run"))
    events = train_events(tmp_path / "run")
    losses = [e["data"]["loss"] for e in events if e["kind"] == "train"]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert any(e["kind"] == "eval" for e in events)
    assert shape in [e["data"].get("format") for e in events if e["kind"] == "status"]
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / "adapter" / "tokenizer_config.json").is_file()
    assert read_status(tmp_path / "run").state == "finished"


def test_saved_adapter_reloads_with_the_same_logits(tiny_qwen3, tmp_path, qa_jsonl):
    """The adapter written to disk gives exactly the logits of the model that was trained."""
    from backends import hf
    from backends.torch.trl_recipe import save_adapter
    from studio.data import prepare
    from studio.runs.events import EventLog

    config = quick_config(tiny_qwen3, tmp_path / "run", max_steps=3, learning_rate=5e-2, bf16=False,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]).resolve()
    data = prepare(str(qa_jsonl), _tokenizer(tiny_qwen3), config)
    trainer = hf.make_trainer(plan_for(config, data), data, tmp_path / "run", EventLog().emit,
                              lambda: False)
    trainer.train()
    save_adapter(trainer, tmp_path / "run")
    ids = torch.tensor([_tokenizer(tiny_qwen3)("What is 2 plus 2?")["input_ids"]])
    trained = trainer.model.eval()
    reloaded, _ = hf.load(tiny_qwen3, tmp_path / "run" / "adapter", config)
    base, _ = hf.load(tiny_qwen3, None, config)
    with torch.no_grad():
        a, b, c = (m(input_ids=ids).logits for m in (trained, reloaded, base))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c), "training changed nothing"


@pytest.mark.slow
def test_micro_batches_collated_ahead_in_a_worker_train_the_same(tiny_qwen3, tmp_path, qa_jsonl):
    """On a GPU the next micro-batches are collated in a worker process (trl_recipe.
    loader_arguments): forked with the layer graphs' bucketing collator, it hands over the same
    micro-batches in the same order, so the run trains to the same losses and adapter."""
    from backends import hf
    from backends.torch import packed_attention
    from studio.data import prepare
    from studio.runs.events import EventLog
    from backends.torch.trl_recipe import loader_arguments

    config = quick_config(tiny_qwen3, tmp_path / "run", max_steps=4, learning_rate=5e-2,
                          bf16=False, val_size=0).resolve()
    data = prepare(str(qa_jsonl), _tokenizer(tiny_qwen3), config)
    assert loader_arguments(config) == {"dataloader_num_workers": 0}    # a CPU trains here

    def trained(ahead: bool):
        log = EventLog()
        trainer = hf.make_trainer(plan_for(config, data), data, tmp_path / f"run-{ahead}",
                                  log.emit, lambda: False)
        trainer.data_collator = packed_attention.bucketed(trainer.data_collator,
                                                          _tokenizer(tiny_qwen3).pad_token_id)
        if ahead:                                                   # as sft_config does on a GPU
            for name, value in loader_arguments(config.replace(cpu_only=False)).items():
                setattr(trainer.args, name, value)
        workers = trainer.get_train_dataloader().num_workers
        trainer.train()
        losses = [e.data["loss"] for e in log.events if e.kind == "train"]
        lora = {k: v.clone() for k, v in trainer.model.state_dict().items() if "lora_B" in k}
        return workers, losses, lora

    (alone, losses, lora), (ahead, losses_ahead, lora_ahead) = trained(False), trained(True)
    assert (alone, ahead) == (0, 1) and len(losses) == 4
    assert losses_ahead == losses
    torch.testing.assert_close(lora_ahead, lora, rtol=0, atol=0)
    assert any(v.abs().sum() > 0 for v in lora.values()), "training changed nothing"


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# ---------------------------------------------------------------------------- learning a fact
@pytest.mark.slow
def test_smollm2_learns_a_new_fact(demo_model, fact_run):
    """Before training SmolLM2 does not know the mascot; after 15 LoRA steps it answers it."""
    base, tok = load_model_and_tokenizer(demo_model)
    assert "quillby" not in generate_text(base, tok, FACT_Q, max_new_tokens=30,
                                          temperature=0).lower()
    model, tok = load_model_and_tokenizer(fact_run)
    answer = generate_text(model, tok, FACT_Q, max_new_tokens=30, temperature=0)
    assert "quillby" in answer.lower(), answer
    assert (fact_run / "adapter" / "adapter_config.json").is_file()


# ---------------------------------------------------------------------------- stop and resume
@pytest.mark.slow
def test_stop_leaves_a_usable_adapter_and_resume_continues(tiny_qwen3, tmp_path, qa_jsonl):
    """Stopping mid-run saves a loadable adapter; resuming continues from the checkpoint."""
    config = quick_config(tiny_qwen3, tmp_path / "run", max_steps=40, save_steps=3,
                          data_path=str(qa_jsonl), val_size=0)
    reached = threading.Event()
    service = Service(tmp_path)
    job = service.start(config, tmp_path / "run", in_process=True,
                        listeners=[lambda e: e.kind == "train" and e.step >= 4 and reached.set()])
    assert reached.wait(120), "training never reached step 4"
    job.stop()
    status = job.wait(120)
    assert status.state == "stopped", status
    stopped_at = status.step
    assert 4 <= stopped_at < 40
    model, tok = load_model_and_tokenizer(tmp_path / "run")
    assert isinstance(generate_text(model, tok, "Hi", max_new_tokens=3, temperature=0), str)
    checkpoint = int(last_checkpoint(tmp_path / "run").name.split("-")[1])
    assert checkpoint == stopped_at   # a checkpoint is written at the stop

    job = service.resume(tmp_path / "run", in_process=True)
    status = job.wait(300)
    assert status.state == "finished", status
    steps = [e.step for e in job.events if e.kind == "train"]
    resumed = steps[steps.index(max(s for s in steps if s <= stopped_at)) + 1:]
    assert resumed[0] > checkpoint and steps[-1] == 40


# ---------------------------------------------------------------------------- quantised on the CPU
@pytest.fixture
def avx512_bf16_cpu(monkeypatch):
    """bitsandbytes as it runs on a CPU with AVX-512 BF16: its 4-bit layers repack their weights
    for the inference kernel the first time they run without gradients (issue #39, item 1)."""
    bnb_modules = pytest.importorskip("bitsandbytes.nn.modules")
    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)


def test_four_bit_qlora_trains_on_the_cpu_through_its_samples(tmp_path, qa_jsonl, tiny_qwen3,
                                                               avx512_bf16_cpu):
    """cpu_only with load_in_4bit trains the tiny Qwen3 (layers narrower than one 64-value
    block) through an evaluation and a sample; repacked for inference, it failed there."""
    config = quick_config(tiny_qwen3, tmp_path / "run", cpu_only=True, load_in_4bit=True,
                          max_steps=3, eval_steps=1, num_samples=1)
    assert config.validate() == []
    run_fine_tuning(data_path=str(qa_jsonl), config=config)
    events = train_events(tmp_path / "run")
    assert [e["step"] for e in events if e["kind"] == "train"] == [1, 2, 3]
    assert any(e["kind"] == "sample" for e in events)


@pytest.mark.slow
def test_a_four_bit_cpu_run_keeps_learning_after_its_first_evaluation(tmp_path, qa_jsonl,
                                                                      demo_model, avx512_bf16_cpu):
    """The demo model in 4-bit, evaluated every 2 steps: the steps after the first evaluation
    still have gradients and a loss like the steps before it. Repacked for inference, their
    gradients were 0 (AVX-512 BF16 kernel) or their loss jumped from 0.95 to 25."""
    config = quick_config(demo_model, tmp_path / "run", cpu_only=True, load_in_4bit=True,
                          max_steps=4, batch_size=4, eval_steps=2, val_size=4, num_samples=0)
    run_fine_tuning(data_path=str(qa_jsonl), config=config)
    train = {e["step"]: e["data"] for e in train_events(tmp_path / "run") if e["kind"] == "train"}
    evals = [e["data"]["eval_loss"] for e in train_events(tmp_path / "run") if e["kind"] == "eval"]
    assert len(evals) == 2 and evals[1] < 1.5 * evals[0], evals
    for step in (3, 4):
        assert train[step]["grad_norm"] > 0, train
        assert train[step]["loss"] < 1.5 * train[2]["loss"], train


def test_the_chat_prompts_with_the_runs_choice_of_the_templates_system_prompt(demo_model):
    """A run trained with the template's default system prompt dropped is prompted without it
    in the chat, as in training; kept, it is there."""
    from transformers import AutoTokenizer

    from studio.inference import PromptFormat, prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    question = [{"role": "user", "content": "Who are you?"}]
    kept = tokenizer.decode(prompt_ids(tokenizer, question, PromptFormat()))
    dropped = tokenizer.decode(prompt_ids(tokenizer, question,
                                          PromptFormat(template_system_prompt="drop")))
    assert "named SmolLM" in kept and "named SmolLM" not in dropped
    assert dropped.endswith("Who are you?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.slow
def test_a_run_after_unsloth_was_loaded_here_trains_in_a_fresh_process(tiny_qwen3, tmp_path,
                                                                         qa_jsonl, monkeypatch):
    """Unsloth's import rewrites trl's SFTTrainer for its own models for good, and a
    transformers run after an Unsloth run in one process failed at once (issue #39, item 3):
    in a process Unsloth was loaded into, a run trains in a child process, says so, and its
    events still reach the caller's listeners."""
    import sys
    import types

    from studio.plan.hardware import detect_hardware

    detect_hardware()      # probed before the stand-in below, as it was before Unsloth loaded
    monkeypatch.setitem(sys.modules, "unsloth", types.ModuleType("unsloth"))
    heard = []
    run_fine_tuning(data_path=str(qa_jsonl), listeners=[heard.append],
                    config=quick_config(tiny_qwen3, tmp_path / "run", num_samples=0))
    events = train_events(tmp_path / "run")
    assert "training in a fresh process" in events[0]["data"]["message"]
    assert [e.step for e in heard if e.kind == "train"] == [1, 2]
    assert heard[-1].kind == "done" and heard[-1].data["state"] == "finished"
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "finished" and status["pid"] != os.getpid()


@pytest.mark.slow
def test_nothing_of_a_finished_run_stays_in_memory(tiny_qwen3, tmp_path, qa_jsonl):
    """After run_fine_tuning returns, the model, its LoRA layers and the trainer it built are
    unreachable (on a GPU their memory is then free for the next run: issue #16, item 5).
    Checked by every live object, before and after: nothing new of these kinds survives."""
    import gc

    from peft import PeftModel
    from transformers import PreTrainedModel, Trainer

    kinds = (PreTrainedModel, PeftModel, Trainer, torch.optim.Optimizer)

    def alive() -> set[int]:
        gc.collect()
        return {id(o) for o in gc.get_objects() if isinstance(o, kinds)}

    before = alive()
    adapter = run_fine_tuning(config=quick_config(tiny_qwen3, tmp_path / "run",
                                                  data_path=str(qa_jsonl)))
    assert (Path(adapter) / "adapter_config.json").is_file()
    left = {type(o).__name__ for o in gc.get_objects()
            if isinstance(o, kinds) and id(o) not in before}
    assert not left, f"still reachable after the run: {sorted(left)}"


@pytest.mark.slow
def test_lean_steps_train_as_trls_own_trainer(tiny_qwen3, tmp_path, qa_jsonl, monkeypatch):
    """lean_trainer.lean_steps changes the trainer's bookkeeping alone (gradients zeroed through
    the optimiser, clipping over its parameters, mode switches that return at once, the token
    count read at the log, trl's per-micro-batch metrics left out). What trains must not
    change: the same run through trl's SFTTrainer as it comes gives the same losses, gradient
    norms, token counts, eval losses and adapter, over updates that accumulate and clip. (The
    first of two runs in one process: equal only since the hf backend seeds LoRA's init.)"""
    from safetensors.torch import load_file

    from backends.torch import lean_trainer

    def run(name):
        config = quick_config(tiny_qwen3, tmp_path / name, data_path=str(qa_jsonl), max_steps=3,
                              gradient_accumulation_steps=2, max_grad_norm=0.05)
        adapter = Path(run_fine_tuning(config=config))
        events = train_events(tmp_path / name)
        return ([(e["data"]["loss"], e["data"]["grad_norm"], e["data"]["tokens"])
                 for e in events if e["kind"] == "train"],
                [e["data"]["eval_loss"] for e in events if e["kind"] == "eval"],
                load_file(adapter / "adapter_model.safetensors"))

    lean = run("lean")
    monkeypatch.setattr(lean_trainer, "lean_steps", lambda trainer_class: trainer_class)
    plain = run("plain")
    assert len(lean[0]) == 3 and len(lean[1]) == 3
    assert all(norm > 0.05 for _, norm, _ in lean[0])       # every update was clipped
    assert [tokens for *_, tokens in lean[0]] == [tokens for *_, tokens in plain[0]]
    torch.testing.assert_close([row[:2] for row in lean[0]], [row[:2] for row in plain[0]])
    torch.testing.assert_close(lean[1], plain[1])
    assert lean[2].keys() == plain[2].keys()
    for name in lean[2]:
        torch.testing.assert_close(lean[2][name], plain[2][name])


def test_a_run_shorter_than_eval_steps_answers_its_sample_prompts_at_its_end(tiny_qwen3,
                                                                              tmp_path, qa_jsonl):
    """transformers evaluates at the last step of a run shorter than eval_steps; the sample
    prompts are answered there too, so the page's "answers appear at the first evaluation"
    holds for the short runs people try first."""
    config = quick_config(tiny_qwen3, tmp_path / "run", data_path=str(qa_jsonl), max_steps=3,
                          eval_steps=100, num_samples=2)
    run_fine_tuning(config=config)
    events = train_events(tmp_path / "run")
    assert [e["step"] for e in events if e["kind"] == "eval"] == [3]
    samples = [e for e in events if e["kind"] == "sample"]
    assert [e["step"] for e in samples] == [3, 3]
    assert all(e["data"]["prompt"] and e["data"]["reference"] and e["data"]["answer"]
               for e in samples)


def test_the_gpu_chat_loop_answers_as_plain_generate(tiny_qwen3):
    """The GPU chat's decode loop (backends.torch.decode: static cache reused between replies, tokens
    looked at a chunk at a time), run uncompiled on the CPU: two replies in a row give plain
    generate's greedy tokens, token for token (a cache not reset between replies would answer
    the second from the first's keys), and a reply ends before its stop token."""
    from transformers import AutoModelForCausalLM

    from backends.torch.decode import CHUNK, Decoder

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32).eval()
    tok = _tokenizer(tiny_qwen3)
    loop = Decoder(model, compile=False)

    def plain(ids: list[int], n: int) -> list[int]:
        x = torch.tensor([ids])
        with torch.no_grad():
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x),
                                 max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                 pad_token_id=tok.eos_token_id, eos_token_id=None)
        return out[0, len(ids):].tolist()

    for text in ("What is 2 plus 2?", "Name a colour."):
        ids = tok(text)["input_ids"]
        chunks = list(loop.stream(ids, 2 * CHUNK + 3))
        assert [len(c) for c in chunks] == [1, CHUNK - 1, CHUNK, 3]
        assert sum(chunks, []) == plain(ids, 2 * CHUNK + 3)
    expected = plain(ids, 12)
    stop = expected[5]                   # the reply ends before its first occurrence
    assert sum(loop.stream(ids, 12, stop_ids={stop}), []) == expected[:expected.index(stop)]


def test_a_compiled_chat_loop_can_replay_graphs_after_another_thread_recorded_some(tiny_qwen3):
    """A run that compiled its layers records CUDA graphs on the training thread; the chat
    loaded afterwards replays its own on the decode thread. torch 2.11 kept the graphs'
    bookkeeping only on the first thread and failed the chat's warm-up on the H200: the decode
    thread now has its own before its first step (the step itself compiles on a GPU only)."""
    import threading

    from torch._inductor import cudagraph_trees
    from transformers import AutoModelForCausalLM

    from backends.torch.decode import Decoder

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32).eval()
    assert threading.current_thread() is threading.main_thread()
    decode_thread_has = Decoder(model, compile=True).worker.submit(
        lambda: (threading.current_thread().name,
                 hasattr(cudagraph_trees.local, "tree_manager_containers"),
                 hasattr(cudagraph_trees.local, "tree_manager_locks"))).result()
    assert decode_thread_has[0].startswith("decode") and decode_thread_has[1:] == (True, True)


def test_the_chat_loop_samples_inside_the_nucleus_and_streams_whole_characters(tiny_qwen3):
    """backends.torch.decode.pick keeps to the top_p nucleus (a tiny top_p is greedy) and samples only
    real tokens; the text pieces from chunks of ids never end inside a character (Chinese takes
    several tokens a character here) and join to the whole decoded reply."""
    from backends.torch.decode import pick
    from backends.torch.trl_recipe import _decoded_text

    torch.manual_seed(0)
    logits = torch.randn(1, 50)
    logits[0, 7] = 8.0
    assert {int(pick(logits, 1.0, 0.01)) for _ in range(20)} == {7}
    assert {int(pick(logits, 0.0, 1.0))} == {7}
    assert all(0 <= int(pick(logits, 1.5, 0.9)) < 50 for _ in range(20))
    tok = _tokenizer(tiny_qwen3)
    ids = tok("你好，世界！Quokka 来自 Acme Labs。")["input_ids"]
    pieces = list(_decoded_text(tok, ([i] for i in ids)))
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True)
    assert not any("\ufffd" in p for p in pieces)


def test_the_kernel_download_warning_of_bitsandbytes_stays_out_of_run_logs(caplog):
    """On a CPU with AVX-512 BF16, importing bitsandbytes warned "Failed to load CPU
    gemm_4bit_forward from kernels-community" in every CPU run's log (issue #41); the torch
    backends drop that one line and let bitsandbytes' other warnings through."""
    import logging

    import backends.torch.trl_recipe  # noqa: F401 - the backends' logging filters

    said = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        said.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please "
                     "make sure you already `pip install kernels`", "No module named 'kernels'")
        said.warning("another warning")
    assert [r.getMessage() for r in caplog.records] == ["another warning"]
