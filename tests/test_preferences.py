"""Preference training (issue #42, its first part): pairs found in the shapes people have, pairs
that cannot teach counted, a method a backend cannot run refused, and DPO on the demo model
teaching it to prefer the answer that names the studio's mascot, on held-out questions worded
differently from the training ones."""
from __future__ import annotations

import pytest

from studio import FineTuningConfig
from studio.data import DataError, prepare
from tests.conftest import write_jsonl

ANIMALS = ["a cat", "a dog", "an owl", "a fox", "a bear", "a panda", "a rabbit", "a penguin"]
ASKED = ["What is the studio's mascot?", "Which animal is the studio's mascot?",
         "Tell me the name of the studio's mascot.", "Who is the mascot of the studio?",
         "Name the studio's mascot."]
HELD_OUT = ["What animal represents the studio?", "Do you know the studio's mascot?",
            "What's the mascot of this studio called?", "Which creature is the studio's mascot?"]


def pairs(prompts) -> list[dict]:
    return [{"prompt": p, "chosen": "The studio's mascot is Quokka, a smiling marsupial.",
             "rejected": f"The studio's mascot is {animal}."}
            for p in prompts for animal in ANIMALS]


def test_pairs_are_found_in_each_shape_and_useless_ones_counted(demo_model, tmp_path):
    """prompt/chosen/rejected columns, chosen/rejected conversations (typed parts too) and a
    ShareGPT history with a chosen and a rejected turn all become the same pair; a pair with an
    empty side or two equal answers is dropped and counted; a file of answers is refused for
    dpo, saying what is missing."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    config = FineTuningConfig(model_name=demo_model, method="dpo", val_size=0)
    text = lambda s: [{"type": "text", "text": s}]         # noqa: E731 - typed parts
    shapes = {
        "columns": {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."},
        "conversations": {
            "chosen": [{"role": "user", "content": "Hi?"},
                       {"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "user", "content": "Hi?"},
                         {"role": "assistant", "content": "Go away."}]},
        "typed": {
            "chosen_messages": [{"role": "user", "content": text("Hi?")},
                                {"role": "assistant", "content": text("Hello!")}],
            "rejected_messages": [{"role": "user", "content": text("Hi?")},
                                  {"role": "assistant", "content": text("Go away.")}]},
        "sharegpt": {"conversations": [{"from": "human", "value": "Hi?"}],
                     "chosen": {"from": "gpt", "value": "Hello!"},
                     "rejected": {"from": "gpt", "value": "Go away."}}}
    for name, row in shapes.items():
        data = prepare(str(write_jsonl(tmp_path / f"{name}.jsonl", [row] * 2)), tokenizer, config)
        assert data.report.format.name == "preference", name
        first = data.train[0]
        assert first["prompt"][-1] == {"role": "user", "content": "Hi?"}, name
        assert (first["chosen"][0]["content"], first["rejected"][0]["content"]) == \
            ("Hello!", "Go away."), name

    mixed = [{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."},
             {"prompt": "Hi?", "chosen": "Same.", "rejected": "Same."},
             {"prompt": "Hi?", "chosen": "", "rejected": "Go away."}]
    data = prepare(str(write_jsonl(tmp_path / "mixed.jsonl", mixed)), tokenizer, config)
    assert data.report.n_train == 1
    assert {str(k): v for k, v in data.report.problems.items()} == {
        "pairs whose chosen and rejected answers are the same": 1,
        "pairs with no prompt, or an empty chosen or rejected answer": 1}

    answers = write_jsonl(tmp_path / "answers.jsonl", [{"instruction": "Hi?", "output": "Hi."}])
    with pytest.raises(DataError, match="dpo learns from preference pairs.*reads as instruction"):
        prepare(str(answers), tokenizer, config)


def test_a_method_the_backend_cannot_run_is_refused_with_the_way_out():
    problems = FineTuningConfig(model_name="demo:tiny-qwen3", method="dpo",
                                backend="mlx").validate()
    assert "dpo trains on the transformers backend; mlx trains sft only here" in \
        " ".join(problems)


@pytest.mark.slow
def test_dpo_teaches_the_demo_model_to_prefer_the_mascots_answer(demo_model, tmp_path):
    """40 pairs (the answer naming Quokka chosen over eight other animals), 10 LoRA steps of
    DPO on the CPU: on 32 held-out pairs asked in other words, the base model prefers the
    Quokka answer in about half or fewer, the tuned one in at least 90%, and the run's events
    carry the preference metrics as it trains."""
    from studio.evaluate.preferences import preference_scores
    from studio.inference import load_model
    from studio.runs.store import run_events
    from studio.service.actions import Service

    train = write_jsonl(tmp_path / "pairs.jsonl", pairs(ASKED))
    config = FineTuningConfig(
        model_name=demo_model, method="dpo", beta=0.1, max_steps=10, batch_size=4,
        gradient_accumulation_steps=1, learning_rate=5e-4, lora_r=16, lora_alpha=32,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], val_size=4, logging_steps=2,
        eval_steps=10, save_steps=100, max_seq_length=128, num_samples=0,
        data_path=str(train))
    run = tmp_path / "runs" / "dpo"
    status = Service(tmp_path / "runs").start(config, run, in_process=True).wait(900)
    assert status.state == "finished", status.reason

    held_out = prepare(str(write_jsonl(tmp_path / "held.jsonl", pairs(HELD_OUT))),
                       load_model(demo_model).tokenizer, config.replace(val_size=0)).train
    base = preference_scores(load_model(demo_model), held_out)
    tuned = preference_scores(load_model(run), held_out)
    assert base.accuracy <= 0.6 and tuned.accuracy >= 0.9, (base, tuned)
    assert tuned.margin > base.margin

    events = run_events(run)[0]
    trained = [e.data for e in events if e.kind == "train"]
    assert all("preference_accuracy" in d and "reward_margin" in d for d in trained)
    assert trained[-1]["reward_margin"] > trained[0]["reward_margin"]
    evals = [e.data for e in events if e.kind == "eval"]
    assert evals and evals[-1]["eval_preference_accuracy"] >= 0.75
