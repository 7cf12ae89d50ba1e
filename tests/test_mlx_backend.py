"""The MLX backend end to end on a tiny random Qwen3, through mlx[cpu] on Linux.

One short run is trained once for the module and looked at from several sides (events, adapter,
checkpoints, chat, fuse); a stopped run is resumed; the loss is checked against a hand-computed
cross-entropy to prove that only the assistant's tokens train.
"""
from __future__ import annotations

import json
import math
import sys
import threading
from types import SimpleNamespace

import pytest

pytest.importorskip("mlx_lm")

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from backends import BackendError, ChatSettings  # noqa: E402
from backends import mlx as mlx_backend  # noqa: E402
from studio.config import FineTuningConfig  # noqa: E402
from tests.conftest import plan_for  # noqa: E402

# ---------------------------------------------------------------------------- fakes and helpers
CONVERSATIONS = [
    [{"role": "user", "content": f"{a} plus {a}?"}, {"role": "assistant", "content": f"{2 * a}."}]
    for a in range(1, 7)
] + [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
     {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}],
    [{"role": "user", "content": "Red?"}, {"role": "assistant", "content": "Apple."},
     {"role": "user", "content": "Blue?"}, {"role": "assistant", "content": "Sky."}],
]


def tokenize(tokenizer, messages: list[dict]) -> dict:
    """A row as studio.data makes it: the chat template's tokens, with assistant_masks 1 on each
    assistant turn's content and its end-of-turn token (the generic rule)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, enable_thinking=False)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    mask, pos = [0] * len(enc["input_ids"]), 0
    for m in messages:
        start = text.index(m["content"], pos)
        pos = start + len(m["content"])
        if m["role"] == "assistant":
            end = text.index("<|im_end|>", pos) + len("<|im_end|>")
            for i, (a, b) in enumerate(enc["offset_mapping"]):
                if start <= a and b <= end and b > a:
                    mask[i] = 1
    return {"input_ids": enc["input_ids"], "assistant_masks": mask}


class Recorder:
    """An emit that keeps every event, with a few views for the assertions."""

    def __init__(self):
        self.events = []

    def __call__(self, kind, step=0, **data):
        self.events.append((kind, step, data))

    def of(self, kind):
        return [(step, data) for k, step, data in self.events if k == kind]


def stop_after(recorder: Recorder, train_events: int):
    """A should_stop that turns true once `train_events` train events have arrived."""
    return lambda: len(recorder.of("train")) >= train_events


def train_planned(config, data, *args, **kwargs):
    """The backend's train, given the run's plan as the studio gives it."""
    return mlx_backend.train(plan_for(config, data), data, *args, **kwargs)


def make_config(model: str, **changes) -> FineTuningConfig:
    values = dict(model_name=model, backend="mlx", max_steps=4, batch_size=2,
                  gradient_accumulation_steps=1, learning_rate=5e-3, warmup_ratio=0.0,
                  logging_steps=1, eval_steps=2, save_steps=1, save_total_limit=2,
                  max_seq_length=256, lora_alpha=16, lora_r=8, seed=0)
    return FineTuningConfig(**{**values, **changes}).resolve()


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_qwen3):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_qwen3)


@pytest.fixture(scope="module")
def data(hf_tokenizer):
    """PreparedData's shape: .train / .eval datasets of input_ids and assistant_masks."""
    from datasets import Dataset

    rows = [tokenize(hf_tokenizer, c) for c in CONVERSATIONS]
    return SimpleNamespace(train=Dataset.from_list(rows), eval=Dataset.from_list(rows[:2]))


@pytest.fixture(scope="module")
def trained(tiny_qwen3, data, tmp_path_factory):
    """One 4-step run: (config, run folder, adapter folder, events)."""
    config = make_config(tiny_qwen3)
    run_dir = tmp_path_factory.mktemp("mlx-run")
    events = Recorder()
    adapter = train_planned(config, data, run_dir, events, lambda: False)
    return config, run_dir, adapter, events


@pytest.fixture(scope="module")
def loaded(trained):
    """The trained run's base model + adapter and tokenizer, through load()."""
    config, _, adapter, _ = trained
    return mlx_backend.load(config.model_name, adapter, config)


@pytest.fixture(scope="module")
def stopped(tiny_qwen3, data, tmp_path_factory):
    """A 4-step run asked to stop after its 2nd step: (config, run folder, adapter, events)."""
    config = make_config(tiny_qwen3, eval_steps=10, save_steps=10)
    run_dir = tmp_path_factory.mktemp("mlx-stopped")
    events = Recorder()
    adapter = train_planned(config, data, run_dir, events, stop_after(events, 2))
    return config, run_dir, adapter, events


# ---------------------------------------------------------------------------- availability
def test_mlx_is_available_once_mlx_lm_is_installed():
    """With mlx and mlx-lm importable, the backend says nothing against itself, even on Linux."""
    assert mlx_backend.unavailable(hw=None) is None


def test_a_missing_mlx_says_how_to_install_it(monkeypatch):
    """Without mlx, the reason names the install command."""
    monkeypatch.setitem(sys.modules, "mlx.core", None)
    assert "pip install -e '.[mlx]'" in mlx_backend.unavailable(hw=None)


def test_a_hub_id_that_is_not_cached_fails_offline_with_a_clear_message(monkeypatch):
    """An mlx-community id needs the Hub; offline, the error says so and offers a way out."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(BackendError, match="local folder"):
        mlx_backend.model_path("mlx-community/Qwen3-0.6B-4bit")


# ---------------------------------------------------------------------------- settings
def test_target_modules_map_to_mlx_lm_keys_and_alpha_becomes_the_scale(tiny_qwen3):
    """q_proj becomes self_attn.q_proj, gate_proj mlp.gate_proj, and scale = alpha / r."""
    config = make_config(tiny_qwen3, target_modules=["q_proj", "gate_proj"], lora_r=4,
                         lora_alpha=8, lora_dropout=0.1)
    assert mlx_backend.lora_parameters(config) == {
        "rank": 4, "scale": 2.0, "dropout": 0.1, "keys": ["self_attn.q_proj", "mlp.gate_proj"]}


def test_an_unknown_target_module_is_refused_by_name(tiny_qwen3):
    """A typo in target_modules fails before training, naming the module and the choices."""
    with pytest.raises(BackendError, match="qproj"):
        mlx_backend.lora_parameters(make_config(tiny_qwen3, target_modules=["qproj"]))


def test_the_linear_schedule_warms_up_then_decays_to_zero(tiny_qwen3):
    """As in transformers: 0 at step 0, the peak after warm-up, 0 at the last step."""
    config = make_config(tiny_qwen3, learning_rate=1e-3, warmup_ratio=0.1)
    schedule = mlx_backend.learning_rate_schedule(config, total_steps=100)
    lr = [schedule(mx.array(s)).item() for s in (0, 5, 10, 55, 100)]
    assert lr == pytest.approx([0.0, 5e-4, 1e-3, 5e-4, 0.0], abs=1e-9)


# ---------------------------------------------------------------------------- data and loss
def test_rows_with_several_assistant_turns_keep_every_turn_trained(hf_tokenizer):
    """A two-turn conversation trains on both replies, not only after a prompt offset."""
    row = tokenize(hf_tokenizer, CONVERSATIONS[-2])
    [(ids, mask)] = mlx_backend.rows([row], max_seq_length=256)   # a plain list of dicts will do
    trained = hf_tokenizer.decode(ids[mask == 1])
    assert "Hello." in trained and "Goodbye." in trained and "Bye" not in trained


def test_rows_with_nothing_left_to_learn_after_truncation_are_left_out(hf_tokenizer):
    """A row cut before its reply would only add padding, so it is dropped."""
    row = tokenize(hf_tokenizer, CONVERSATIONS[0])
    first_trained = row["assistant_masks"].index(1)
    assert mlx_backend.rows([row], max_seq_length=first_trained) == []
    assert len(mlx_backend.rows([row], max_seq_length=first_trained + 1)) == 1


@pytest.mark.slow
def test_the_loss_counts_only_the_masked_tokens(loaded):
    """One trained token: the loss is that token's cross-entropy, whatever the others are."""
    model, _ = loaded
    ids = np.arange(1000, 1020, dtype=np.int32)
    mask = np.zeros(20, np.int32)
    mask[12] = 1
    tokens, weights = next(mlx_backend.eval_batches([(ids, mask)], 1, 256))
    loss, n_tokens = mlx_backend.masked_loss(model, tokens, weights)

    logits = np.array(model(mx.array(ids[None, :12]))[0, 11].astype(mx.float32))
    by_hand = math.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[ids[12]]
    assert n_tokens.item() == 1
    assert loss.item() == pytest.approx(by_hand, rel=1e-2)

    later_tokens_changed = ids.copy()
    later_tokens_changed[13:] = 7   # causal: cannot change the prediction of token 12
    tokens, weights = next(mlx_backend.eval_batches([(later_tokens_changed, mask)], 1, 256))
    assert mlx_backend.masked_loss(model, tokens, weights)[0].item() == loss.item()
    everything = mlx_backend.masked_loss(model, tokens, mx.ones_like(weights))[0].item()
    assert everything != pytest.approx(loss.item(), abs=1e-3)


# ---------------------------------------------------------------------------- training
def test_a_short_run_reports_train_losses_and_eval_losses_as_events(trained):
    """Every step's loss arrives as a train event, and eval_steps brings eval losses."""
    _, _, _, events = trained
    train = events.of("train")
    assert [step for step, _ in train] == [1, 2, 3, 4]
    for _, data in train:
        assert math.isfinite(data["loss"]) and data["loss"] > 0
        assert data["tokens_per_s"] > 0 and data["peak_memory_gb"] >= 0
    rates = [data["learning_rate"] for _, data in train]    # linear decay, no warm-up
    assert rates[0] == pytest.approx(5e-3) and rates == sorted(rates, reverse=True)
    assert train[-1][1]["epoch"] == pytest.approx(1.0)    # 8 rows, batches of 2, 4 steps
    assert [step for step, _ in events.of("eval")] == [2, 4]
    assert all(math.isfinite(d["eval_loss"]) for _, d in events.of("eval"))
    assert events.of("status")[0][1]["message"].startswith("loading")


@pytest.mark.slow
def test_a_run_shorter_than_eval_steps_answers_its_sample_prompts_at_its_end(tiny_qwen3, data,
                                                                              hf_tokenizer,
                                                                              tmp_path):
    """As transformers does, the last step evaluates and answers the sample prompts, however far
    off eval_steps is: a short run shows its answers on the page too."""
    text = hf_tokenizer.apply_chat_template([{"role": "user", "content": "2 plus 2?"}],
                                            add_generation_prompt=True, tokenize=False)
    sample = {"prompt": "2 plus 2?", "reference": "4.", "ids": hf_tokenizer(text)["input_ids"]}
    with_samples = SimpleNamespace(train=data.train, eval=data.eval, samples=[sample])
    events = Recorder()
    train_planned(make_config(tiny_qwen3, max_steps=2, eval_steps=10, save_steps=10),
                      with_samples, tmp_path, events, lambda: False)
    assert [step for step, _ in events.of("eval")] == [2]
    answers = events.of("sample")
    assert [step for step, _ in answers] == [2] and answers[0][1]["reference"] == "4."
    assert isinstance(answers[0][1]["answer"], str)


def test_the_adapter_lands_in_mlx_lm_format_with_the_tokenizer(trained):
    """run_dir/adapter holds adapters.safetensors, mlx_lm's adapter_config.json, the tokenizer."""
    config, run_dir, adapter, _ = trained
    assert adapter == run_dir / "adapter"
    settings = json.loads((adapter / "adapter_config.json").read_text())
    assert settings["fine_tune_type"] == "lora" and settings["num_layers"] == -1
    assert settings["lora_parameters"]["scale"] == config.lora_alpha / config.lora_r
    assert settings["model"] == config.model_name
    assert (adapter / "tokenizer_config.json").is_file()
    weights = mx.load(str(adapter / "adapters.safetensors"))
    assert any(name.endswith("self_attn.q_proj.lora_b") for name in weights)
    assert any(mx.abs(w).sum().item() > 0 for n, w in weights.items() if n.endswith("lora_b"))


def test_checkpoints_are_written_every_save_steps_and_only_the_last_few_kept(trained):
    """save_steps=1 writes four checkpoints; save_total_limit=2 keeps the newest two."""
    _, run_dir, _, events = trained
    assert [step for step, _ in events.of("checkpoint")] == [1, 2, 3, 4]
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == ["checkpoint-3", "checkpoint-4"]
    assert (run_dir / "checkpoints" / "checkpoint-4" / "adapters.safetensors").is_file()


def test_the_trained_adapter_reloads_and_streams_a_reply(loaded):
    """load() puts the adapter on the base; stream() yields text, from a worker thread too."""
    model, tokenizer = loaded
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "2 plus 2?"}],
                                           add_generation_prompt=True, enable_thinking=False,
                                           return_dict=True)["input_ids"]
    greedy = list(mlx_backend.stream(model, tokenizer, prompt,
                                     ChatSettings(max_new_tokens=6, temperature=0.0)))
    assert greedy and all(isinstance(piece, str) for piece in greedy)

    pieces = []   # the chat UI generates from a worker thread, with sampling on
    settings = ChatSettings(max_new_tokens=6, temperature=0.8, top_p=0.9)
    worker = threading.Thread(target=lambda: pieces.extend(
        mlx_backend.stream(model, tokenizer, prompt, settings)))
    worker.start()
    worker.join()
    assert pieces


def test_fuse_writes_a_standalone_model_that_gives_the_adapters_outputs(trained, loaded,
                                                                       tmp_path):
    """The fused folder loads with mlx_lm.load and predicts as base + adapter did."""
    import mlx_lm

    _, _, adapter, _ = trained
    fused = mlx_backend.fuse(adapter, tmp_path / "fused")
    model, _ = mlx_lm.load(str(fused))
    with_adapter, _ = loaded
    ids = mx.array([[151644, 872, 198, 17, 5519, 17, 30, 151645]])
    a, b = model(ids).astype(mx.float32), with_adapter(ids).astype(mx.float32)
    assert mx.allclose(a, b, atol=0.05).item()


@pytest.mark.slow
def test_a_4bit_model_from_convert_to_mlx_trains_as_qlora(tiny_qwen3, data, tmp_path):
    """convert_to_mlx quantises (as mlx-community's models are); LoRA trains on top of it."""
    quantized = mlx_backend.convert_to_mlx(tiny_qwen3, tmp_path / "q4", quantize=True,
                                           q_group_size=32)   # the tiny model is 32 wide
    assert json.loads((quantized / "config.json").read_text())["quantization"]["bits"] == 4
    config = make_config(str(quantized), max_steps=1, eval_steps=10, save_steps=10)
    events = Recorder()
    adapter = train_planned(config, data, tmp_path / "run", events, lambda: False)
    assert [step for step, _ in events.of("train")] == [1]
    model, tokenizer = mlx_backend.load(config.model_name, adapter)
    assert list(mlx_backend.stream(model, tokenizer, [151644, 872, 198],
                                   ChatSettings(max_new_tokens=2, temperature=0.0)))


# ---------------------------------------------------------------------------- stop and resume
def test_a_checkpoint_step_is_read_from_its_state_or_its_name(tmp_path):
    """checkpoint-N folders (ours) and NNNNNNN_adapters.safetensors files (mlx_lm's) both work."""
    folder = tmp_path / "checkpoint-30"
    folder.mkdir()
    assert mlx_backend.checkpoint_step(folder) == 30
    (folder / "trainer_state.json").write_text('{"global_step": 12}')
    assert mlx_backend.checkpoint_step(folder) == 12
    assert mlx_backend.checkpoint_step(tmp_path / "0000040_adapters.safetensors") == 40


def test_should_stop_ends_training_at_a_step_with_a_loadable_adapter(stopped):
    """Asked to stop after step 2 of 4, training ends there and still saves a usable adapter."""
    config, run_dir, adapter, events = stopped
    assert [step for step, _ in events.of("train")] == [1, 2]
    assert (run_dir / "checkpoints" / "checkpoint-2" / "adapters.safetensors").is_file()
    model, tokenizer = mlx_backend.load(config.model_name, adapter, config)
    assert list(mlx_backend.stream(model, tokenizer, [151644, 872, 198],
                                   ChatSettings(max_new_tokens=3, temperature=0.0)))


def test_a_stopped_run_resumes_from_its_checkpoint_step(stopped, data):
    """Resume loads checkpoint-2's weights and optimiser and trains steps 3 and 4 only."""
    config, run_dir, _, _ = stopped
    events = Recorder()
    checkpoint = run_dir / "checkpoints" / "checkpoint-2"
    train_planned(config, data, run_dir, events, lambda: False, resume_from=checkpoint)
    train = events.of("train")
    assert [step for step, _ in train] == [3, 4]
    # the linear decay goes on where it was: step 3 of 4 uses lr * (1 - 2/4)
    assert train[0][1]["learning_rate"] == pytest.approx(config.learning_rate / 2)
    assert events.of("status")[-1] == (2, {"message": "training", "max_steps": 4})
    assert (run_dir / "checkpoints" / "checkpoint-4").is_dir()
