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


def test_a_transformers_run_after_an_unsloth_run_in_one_process_trains(qwen3_06b, tmp_path):
    """A default run (Unsloth) then a transformers run through the Python API in one process,
    as in a notebook: the second failed at once with "'Qwen3ForCausalLM' object has no
    attribute 'get_base_model'" (issue #39, item 3); now it trains, in a fresh process."""
    from bench.synthetic import chat_rows, write_jsonl
    from studio import FineTuningConfig, run_fine_tuning

    data = write_jsonl(chat_rows(64), tmp_path / "rows.jsonl")
    runs = {}
    for name, backend in (("first", "auto"), ("second", "transformers")):
        config = FineTuningConfig(model_name=qwen3_06b, output_dir=str(tmp_path / name),
                                  backend=backend, max_steps=6, logging_steps=1, batch_size=4,
                                  gradient_accumulation_steps=1, val_size=0, num_samples=0,
                                  save_steps=100, max_seq_length=1024)
        run_fine_tuning(data_path=str(data), config=config)
        runs[name] = [json.loads(line) for line in
                      (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    plans = {name: {k: v for e in events if e["kind"] == "plan" for k, v in e["data"].items()}
             for name, events in runs.items()}
    assert (plans["first"]["backend"], plans["second"]["backend"]) == ("unsloth", "transformers")
    assert "fresh process" in runs["second"][0]["data"]["message"]
    for events in runs.values():
        train = [e["data"] for e in events if e["kind"] == "train"]
        assert len(train) == 6 and all(t["grad_norm"] > 0 for t in train), train
