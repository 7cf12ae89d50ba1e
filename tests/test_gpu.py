"""On an NVIDIA GPU with Unsloth installed (the lent GPU machine; skipped everywhere else).

Run there as `python3 -m pytest tests/test_gpu.py` after bench/gpu_env.sh; the real Qwen3
tokenizer comes from QWEN3_TOKENIZER (default /tmp/qwen3-tok, where gpu_env.sh puts it).
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(importlib.util.find_spec("unsloth") is None,
                       reason="needs Unsloth, which needs an NVIDIA GPU"),
]


@pytest.fixture(scope="module")
def qwen3_06b(tmp_path_factory) -> str:
    """A random Qwen3 of 0.6B's shape, with the real tokenizer."""
    import torch

    from bench.synthetic import build_random_qwen3

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    tokenizer = Path(os.environ.get("QWEN3_TOKENIZER", "/tmp/qwen3-tok"))
    return str(build_random_qwen3("0.6B", tmp_path_factory.mktemp("models") / "qwen3-0.6B",
                                  tokenizer))


def test_runs_in_a_row_in_one_process_each_train_whatever_ran_before(qwen3_06b, tmp_path):
    """Four runs through the Python API in one process, as in a notebook (issue #39, item 3):
    two that the compile rule sends to the transformers backend with layer graphs (the second,
    on a new thread, failed at its first step: torch 2.11 keeps CUDA-graph bookkeeping per
    thread), then Unsloth, then the compile rule's again (it failed at once: Unsloth's import
    rewrote trl's SFTTrainer; now it trains in a fresh process). Each trains: 6 steps, every
    gradient norm above 0."""
    from bench.synthetic import chat_rows, write_jsonl
    from studio import FineTuningConfig, run_fine_tuning

    data = write_jsonl(chat_rows(64), tmp_path / "rows.jsonl")
    runs = {}
    for name, backend in (("compiled", "auto"), ("compiled-again", "auto"),
                          ("unsloth", "unsloth"), ("after-unsloth", "auto")):
        config = FineTuningConfig(model_name=qwen3_06b, output_dir=str(tmp_path / name),
                                  backend=backend, max_steps=6, logging_steps=1, batch_size=4,
                                  gradient_accumulation_steps=1, val_size=0, num_samples=0,
                                  save_steps=100, max_seq_length=1024)
        run_fine_tuning(data_path=str(data), config=config)
        runs[name] = [json.loads(line) for line in
                      (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    backends = {name: next(e["data"]["backend"] for e in events if e["kind"] == "plan"
                           and "backend" in e["data"]) for name, events in runs.items()}
    assert backends == {"compiled": "transformers", "compiled-again": "transformers",
                        "unsloth": "unsloth", "after-unsloth": "transformers"}
    fresh = [name for name, events in runs.items()
             if "fresh process" in events[0]["data"].get("message", "")]
    assert fresh == ["after-unsloth"]
    for name, events in runs.items():
        train = [e["data"] for e in events if e["kind"] == "train"]
        assert len(train) == 6 and all(t["grad_norm"] > 0 for t in train), (name, train)


def test_a_reply_closed_early_stops_the_compiled_decode_loop(qwen3_06b):
    """The chat's compiled decode loop runs on a worker thread: a reply of 4,000 tokens whose
    reader stops after its first piece ran on to its end there, holding the model (issue #39,
    item 6). Closed, the loop stops at its next chunk: the worker takes a new task at once."""
    from backends.torch import decode
    from studio.inference import load_model, stream_reply

    loaded = load_model(qwen3_06b)
    assert decode.compiles(loaded.model)
    worker = decode.decoder(loaded.model).worker

    def left_after_its_first_piece(patience: float) -> None:
        reply = stream_reply(loaded, [{"role": "user", "content": "Hi"}],
                             max_new_tokens=4000, temperature=0.7)
        next(reply)
        reply.close()
        worker.submit(lambda: None).result(timeout=patience)

    left_after_its_first_piece(300)     # the first compiles the step for this cache length
    left_after_its_first_piece(5)       # 4,000 tokens would take the worker far longer
