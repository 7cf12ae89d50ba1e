"""GGUF export (studio/export/gguf.py): the files transformers and llama.cpp load give the source
model's logits, answers, token ids and chat template; a LoRA adapter keeps every pair and its
scale; the size is known before writing; what cannot be written is refused in words."""
from __future__ import annotations

import functools
import importlib.util
import json
import math
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from studio.export.gguf import (GGUFExportError, gguf_size, pre_tokenizer_name, write_gguf,
                                write_lora_gguf)
from tests.conftest import needs_llama_cpp

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]
# digits, spaces running into a digit, tabs, accents, CJK and an emoji: where pre-tokenizers differ
TEXT = [{"role": "user", "content": "In 2024,  3 cats ate 12345 fish.\n\tCafé 東京 🦙 it's"}]
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@functools.lru_cache(maxsize=8)
def reader(path: Path) -> gguf.GGUFReader:
    # gguf's reader takes seconds over a 150k-token vocabulary: each file is read once
    return gguf.GGUFReader(path)


@functools.lru_cache(maxsize=8)
def metadata(path) -> dict:
    return {k: f.contents() for k, f in reader(path).fields.items()
            if not k.startswith("GGUF.") and k != "tokenizer.ggml.merges"}


def tensors(path) -> dict:
    return {t.name: t for t in reader(path).tensors}


def chat_ids(tokenizer, messages=PROMPT) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False).input_ids


def load_gguf(path: Path, **overrides):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                dtype=torch.float32, **overrides).eval()


def load_source(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(folder))


def greedy(model, ids: list[int], n: int = 12) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                             pad_token_id=0)
    return out[0, len(ids):].tolist()


def make_adapter(base, out: Path, b_scale: float = 1.0, **lora) -> Path:
    """A PEFT LoRA on every linear layer with random (non-zero) A and B (B times b_scale), saved
    as training does."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tuned = get_peft_model(model, LoraConfig(target_modules=ALL_LINEAR, init_lora_weights=False,
                                             **lora))
    with torch.no_grad():
        for name, weight in tuned.named_parameters():
            if "lora_B" in name:
                weight.mul_(b_scale)
    tuned.save_pretrained(out)
    return out


def smollm2_split(demo_model, out: Path) -> Path:
    """The demo model with SmolLM2's own pre-tokenizer (digits split one by one before GPT-2's
    split), which the bundled demo's tokenizer.json lost; its weights are links, not copies."""
    out.mkdir()
    for path in Path(demo_model).iterdir():
        (out / path.name).symlink_to(path)
    (out / "tokenizer.json").unlink()
    tokenizer = json.loads((Path(demo_model) / "tokenizer.json").read_text())
    tokenizer["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    (out / "tokenizer.json").write_text(json.dumps(tokenizer))
    return out


def interleave(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rotary row order, from the definition: per head, row i of the first half
    then row i of the second half."""
    d = w.shape[0] // heads
    out = np.empty_like(w)
    for h in range(heads):
        for i in range(d // 2):
            out[h * d + 2 * i] = w[h * d + i]
            out[h * d + 2 * i + 1] = w[h * d + d // 2 + i]
    return out


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def qwen3_gguf(tiny_qwen3, tmp_path_factory):
    """The tiny Qwen3 as an f16 GGUF, with the progress reports its writing made."""
    reports = []
    path = write_gguf(tiny_qwen3, tmp_path_factory.mktemp("gguf") / "tiny-qwen3-f16.gguf",
                      progress=lambda done, what: reports.append((done, what)))
    return path, reports


class DemoGGUFs(dict):
    """The demo model's GGUF per quant, each written the first time a test asks for it."""

    def __init__(self, folder, out: Path):
        super().__init__()
        self.folder, self.out = folder, out

    def __missing__(self, quant: str) -> Path:
        self[quant] = write_gguf(self.folder, self.out / f"smollm2-{quant}.gguf", quant)
        return self[quant]


@pytest.fixture(scope="module")
def demo_ggufs(demo_model, tmp_path_factory) -> DemoGGUFs:
    return DemoGGUFs(demo_model, tmp_path_factory.mktemp("gguf-demo"))


@pytest.fixture(scope="module")
def demo_source(demo_model):
    return load_source(demo_model)


# ---------------------------------------------------------------------------- models
@pytest.mark.slow
def test_tiny_qwen3_gguf_loads_in_transformers_with_the_source_logits(tiny_qwen3, qwen3_gguf):
    """transformers maps every tensor of the GGUF back, and the bf16 source and its f16 GGUF
    give the same logits (random weights have near-ties, so logits are compared, not argmaxes);
    progress runs up to 1 and the file is an ordinary one."""
    path, reports = qwen3_gguf
    source, tokenizer = load_source(tiny_qwen3)
    # The source's config: transformers' GGUF reader takes no head size for qwen3 (it assumes
    # 128, every released Qwen3's; the tiny one's is 8, which llama.cpp reads: checked below),
    # and reading the config from the file would parse its 150k tokens a second time.
    model = load_gguf(path, config=source.config)
    ids = torch.tensor([chat_ids(tokenizer)])
    with torch.no_grad():
        expected, got = source(ids).logits, model(ids).logits
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)
    assert [d for d, _ in reports] == sorted(d for d, _ in reports) and reports[-1][0] == 1.0
    (path.parent / "plain").touch()     # an ordinary file: readable as the umask allows
    assert path.stat().st_mode == (path.parent / "plain").stat().st_mode


@pytest.mark.slow
def test_tiny_qwen3_gguf_says_what_llama_cpp_reads(tiny_qwen3, qwen3_gguf):
    """Architecture, Qwen3's own head size, the qwen2 pre-tokenizer, special ids, no added BOS,
    the chat template, control and user-defined tokens, norms in f32 and one tied embedding."""
    path, _ = qwen3_gguf
    meta, held = metadata(path), tensors(path)
    config = json.loads((Path(tiny_qwen3) / "config.json").read_text())
    tokens = meta["tokenizer.ggml.tokens"]
    types = dict(zip(tokens, meta["tokenizer.ggml.token_type"]))
    template = (Path(tiny_qwen3) / "chat_template.jinja").read_text()
    assert meta["general.architecture"] == "qwen3" and meta["general.type"] == "model"
    assert meta["general.name"] == "tiny-qwen3-f16"     # the file's name, shown by llama.cpp
    assert meta["qwen3.attention.key_length"] == config["head_dim"] == 8
    assert meta["qwen3.block_count"] == 2 and meta["qwen3.attention.head_count_kv"] == 2
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "qwen2"
    assert meta["tokenizer.ggml.eos_token_id"] == tokens.index("<|im_end|>") == 151645
    assert meta["tokenizer.ggml.padding_token_id"] == tokens.index("<|endoftext|>")
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert meta["tokenizer.chat_template"] == template
    assert types["<|im_start|>"] == gguf.TokenType.CONTROL
    assert types["<think>"] == gguf.TokenType.USER_DEFINED
    assert len(tokens) == config["vocab_size"]
    assert held["blk.0.attn_q_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert held["blk.1.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert "output.weight" not in held and "token_embd.weight" in held


@pytest.mark.slow
def test_demo_model_gguf_answers_as_the_source_does(demo_ggufs, demo_source):
    """SmolLM2 (Llama: q/k rows re-ordered for llama.cpp, re-ordered back by transformers) loaded
    from its q8_0 GGUF, the studio's default, config and all, gives the source's greedy answer
    token for token. (f16 is held to the source's logits on Qwen3 above, and to llama.cpp's
    answer below; loading SmolLM2 in transformers costs half a minute a file.)"""
    source, tokenizer = demo_source
    ids = chat_ids(tokenizer)
    expected = greedy(source, ids)
    assert "Paris" in tokenizer.decode(expected)
    assert greedy(load_gguf(demo_ggufs["q8_0"]), ids) == expected


def test_demo_model_gguf_metadata_and_quantised_types(demo_model, demo_ggufs):
    """Llama's keys, the ids and template of SmolLM2's chat, the pre-tokenizer its tokenizer.json
    describes; q8_0 quantises the matrices (the embedding too) and keeps norms in f32."""
    meta = metadata(demo_ggufs["q8_0"])
    held = tensors(demo_ggufs["q8_0"])
    split = json.loads((Path(demo_model) / "tokenizer.json").read_text())["pre_tokenizer"]
    assert meta["general.architecture"] == "llama"
    assert meta["tokenizer.ggml.pre"] == ("smollm" if "Digits" in json.dumps(split) else "gpt-2")
    assert meta["llama.rope.dimension_count"] == 64 and meta["llama.rope.freq_base"] == 100000.0
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert meta["tokenizer.chat_template"] == (Path(demo_model) / "chat_template.jinja").read_text()
    assert held["blk.3.attn_k.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert held["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert held["blk.3.ffn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_tokenizer_from_the_gguf_encodes_chat_like_the_original(demo_model, demo_ggufs):
    """The tokenizer transformers builds from the GGUF turns a chat-formatted string into the
    original's ids and carries the same chat template. (Qwen3's tokens are checked against
    llama.cpp's own tokenizer below: transformers' Qwen2 reader takes 40 s over its vocabulary.)"""
    from transformers import AutoTokenizer

    path = demo_ggufs["q8_0"]
    original = AutoTokenizer.from_pretrained(demo_model)
    rebuilt = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    text = original.apply_chat_template(TEXT, add_generation_prompt=True, tokenize=False)
    assert rebuilt(text, add_special_tokens=False).input_ids == \
        original(text, add_special_tokens=False).input_ids
    assert rebuilt.chat_template == original.chat_template


def test_pre_tokenizer_is_named_from_how_the_tokenizer_splits(tiny_qwen3, demo_model, tmp_path):
    """Qwen's split is llama.cpp's "qwen2", SmolLM2's (digits alone, then GPT-2's) "smollm", GPT-2's
    alone "gpt-2"; a split llama.cpp has no name for is refused, naming the ones written."""
    def split_of(folder):
        return json.loads((Path(folder) / "tokenizer.json").read_text())

    assert pre_tokenizer_name(split_of(tiny_qwen3)) == "qwen2"
    assert pre_tokenizer_name(split_of(smollm2_split(demo_model, tmp_path / "smol"))) == "smollm"
    demo = split_of(demo_model)
    assert pre_tokenizer_name(demo) == "gpt-2"
    demo["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"}
    with pytest.raises(GGUFExportError, match="Metaspace.*gpt-2, llama-bpe, qwen2, smollm"):
        pre_tokenizer_name(demo)


# ---------------------------------------------------------------------------- LoRA
@pytest.mark.parametrize("which", ["tiny_qwen3", "demo"])
def test_lora_gguf_holds_every_pair_with_its_alpha(which, tiny_qwen3, demo_model, tmp_path):
    """Every lora_A/lora_B pair is in the GGUF under <llama.cpp name>.lora_a/.lora_b with the
    adapter's values; Llama's q and k lora_b rows are re-ordered as the base weights are."""
    from safetensors.numpy import load_file

    base = tiny_qwen3 if which == "tiny_qwen3" else demo_model
    adapter = make_adapter(base, tmp_path / "adapter", r=4, lora_alpha=8)
    path = write_lora_gguf(adapter, tmp_path / "lora.gguf")
    meta, held = metadata(path), tensors(path)
    config = json.loads((Path(base) / "config.json").read_text())
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3 if which == "tiny_qwen3"
                                     else gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert meta["adapter.lora.alpha"] == 8.0
    assert meta["general.architecture"] == ("qwen3" if which == "tiny_qwen3" else "llama")
    weights = load_file(adapter / "adapter_model.safetensors")
    assert len(held) == len(weights) == 2 * len(ALL_LINEAR) * config["num_hidden_layers"]
    for key, value in weights.items():
        module, ab = key.removeprefix("base_model.model.").rsplit(".lora_", 1)
        name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        expected = value
        if which == "demo" and ab == "B.weight" and name.endswith(("attn_q.weight",
                                                                   "attn_k.weight")):
            expected = interleave(value, config["num_attention_heads"] if "attn_q" in name
                                  else config["num_key_value_heads"])
            assert not np.array_equal(expected, value)
        got = held[f"{name}.lora_{ab[0].lower()}"]
        assert got.tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(got.data, expected)


def test_rslora_and_alpha_pattern_keep_peft_scale(tiny_qwen3, tmp_path):
    """llama.cpp scales by alpha / rank: an rsLoRA adapter gets alpha * sqrt(rank) written, and
    a module with its own alpha has the difference folded into its lora_b."""
    from safetensors.numpy import load_file

    adapter = make_adapter(tiny_qwen3, tmp_path / "adapter", r=4, lora_alpha=8, use_rslora=True,
                           alpha_pattern={"down_proj": 2})
    held = tensors(write_lora_gguf(adapter, tmp_path / "lora.gguf"))
    alpha = metadata(tmp_path / "lora.gguf")["adapter.lora.alpha"]
    weights = load_file(adapter / "adapter_model.safetensors")
    assert alpha == pytest.approx(8 * math.sqrt(4))
    for layer in range(2):
        prefix = f"base_model.model.model.layers.{layer}"
        for module, name, peft_alpha in [("self_attn.q_proj", "attn_q", 8),
                                         ("mlp.down_proj", "ffn_down", 2)]:
            b = weights[f"{prefix}.{module}.lora_B.weight"]
            llama_b = held[f"blk.{layer}.{name}.weight.lora_b"].data
            # what each adds to the weight: PEFT's B A alpha/sqrt(r), llama.cpp's B A alpha/r
            np.testing.assert_allclose(llama_b * alpha / 4, b * peft_alpha / math.sqrt(4),
                                       rtol=1e-6)


@pytest.mark.parametrize("lora", [{"use_dora": True}, {"modules_to_save": ["lm_head"]}],
                         ids=["dora", "modules_to_save"])
def test_an_adapter_llama_cpp_cannot_carry_is_refused(tiny_qwen3, tmp_path, lora):
    """DoRA and fully trained modules are no LoRA pairs: the message points at the merged GGUF,
    and no file is left."""
    adapter = make_adapter(tiny_qwen3, tmp_path / "adapter", r=4, lora_alpha=8, **lora)
    with pytest.raises(GGUFExportError, match="export the merged model as GGUF instead"):
        write_lora_gguf(adapter, tmp_path / "lora.gguf")
    assert not (tmp_path / "lora.gguf").exists()


# ---------------------------------------------------------------------------- sizes, refusals
def test_gguf_size_is_known_before_writing(tiny_qwen3, qwen3_gguf, demo_model, demo_ggufs):
    """The size from shapes alone is the file's, within half a percent."""
    for folder, quant, path in [(tiny_qwen3, "f16", qwen3_gguf[0]),
                                (demo_model, "q8_0", demo_ggufs["q8_0"])]:
        assert gguf_size(folder, quant) == pytest.approx(path.stat().st_size, rel=0.005)


def test_unsupported_architecture_is_refused_by_name(tiny_qwen3, tmp_path):
    """A model the writer has no mapping for is refused naming the two it has; nothing is left."""
    folder = tmp_path / "gpt2"
    shutil.copytree(tiny_qwen3, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures":
                                                    ["GPT2LMHeadModel"]}))
    out = tmp_path / "out" / "model.gguf"
    with pytest.raises(ValueError, match="GPT2LMHeadModel.*Qwen3ForCausalLM and LlamaForCausalLM"):
        write_gguf(folder, out)
    with pytest.raises(GGUFExportError, match="GPT2LMHeadModel"):
        gguf_size(folder, "q8_0")
    assert not out.exists() and not list(out.parent.glob("*"))


def test_a_write_that_fails_midway_leaves_no_file(demo_model, tmp_path):
    """A failure after some tensors were written (here: the progress callback cancels) leaves
    neither the file nor its temporary twin."""
    def cancel(done, what):
        if done > 0.1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_gguf(demo_model, tmp_path / "model.gguf", progress=cancel)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is not None,
                    reason="llama-cpp-python is installed here")
def test_q4_k_m_without_llama_cpp_says_how_to_get_it(tiny_qwen3, tmp_path):
    with pytest.raises(GGUFExportError, match="pip install llama-cpp-python"):
        write_gguf(tiny_qwen3, tmp_path / "model.gguf", "q4_k_m")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- llama.cpp itself
def llama(path: Path, lora: Path | None = None, logits_all: bool = False):
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), n_ctx=256, lora_path=str(lora) if lora else None,
                           logits_all=logits_all, verbose=False, seed=0)


def llama_greedy(model, ids: list[int], n: int = 12) -> list[int]:
    """Up to n greedy tokens, the end token included (as transformers' generate has them)."""
    out = []
    for token in model.generate(ids, temp=0.0, top_k=1, reset=True):
        out.append(token)
        if len(out) == n or token == model.token_eos():
            return out


def answer_nll(model, ids: list[int], answer: list[int]) -> float:
    """The mean negative log-likelihood llama.cpp gives `answer` after `ids` (teacher-forced)."""
    model.reset()
    model.eval(ids + answer)
    logits = np.array(model.scores[len(ids) - 1:len(ids) + len(answer) - 1], dtype=np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(answer)), answer].mean())


@needs_llama_cpp
def test_llama_cpp_tokenizes_and_answers_as_transformers(demo_ggufs, demo_source):
    """llama.cpp turns chat text into the source tokenizer's ids and answers with the source's
    greedy tokens."""
    model = llama(demo_ggufs["f16"])
    source, tokenizer = demo_source
    for messages in (PROMPT, TEXT):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert model.tokenize(text.encode(), add_bos=False, special=True) == \
            chat_ids(tokenizer, messages)
    ids = chat_ids(tokenizer)
    assert llama_greedy(model, ids) == greedy(source, ids)


@needs_llama_cpp
def test_llama_cpp_splits_as_smollm2s_own_tokenizer(demo_model, tmp_path):
    """With SmolLM2's own tokenizer.json (digits alone first) the GGUF says "smollm", and
    llama.cpp splits "  3" as that tokenizer does, not as GPT-2's split would."""
    from transformers import AutoTokenizer

    folder = smollm2_split(demo_model, tmp_path / "smol")
    path = write_gguf(folder, tmp_path / "smol.gguf")
    assert metadata(path)["tokenizer.ggml.pre"] == "smollm"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = tokenizer.apply_chat_template(TEXT, add_generation_prompt=True, tokenize=False)
    assert llama(path).tokenize(text.encode(), add_bos=False, special=True) == \
        chat_ids(tokenizer, TEXT) != chat_ids(AutoTokenizer.from_pretrained(demo_model), TEXT)


@needs_llama_cpp
def test_llama_cpp_runs_tiny_qwen3_with_its_tokens_and_logits(tiny_qwen3, qwen3_gguf):
    """Qwen3 in llama.cpp: the "qwen2" pre-tokenizer gives the source tokenizer's ids, and NEOX
    rope, q/k norms and head size 8 give the source's logits."""
    model = llama(qwen3_gguf[0], logits_all=True)
    source, tokenizer = load_source(tiny_qwen3)
    text = tokenizer.apply_chat_template(TEXT, add_generation_prompt=True, tokenize=False)
    assert model.tokenize(text.encode(), add_bos=False, special=True) == \
        chat_ids(tokenizer, TEXT)
    ids = chat_ids(tokenizer)
    model.reset()
    model.eval(ids)
    with torch.no_grad():
        expected = source(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(np.asarray(model.scores[:len(ids)]), expected, atol=2e-3)


@needs_llama_cpp
def test_llama_cpp_applies_the_lora_gguf_as_peft_does(demo_model, demo_ggufs, tmp_path):
    """Base GGUF + LoRA GGUF in llama.cpp move the logits as the PEFT adapter moves them in
    transformers (to f16's noise; without the q/k re-ordering the error is as large as the
    change), and pick the same tokens."""
    from peft import PeftModel

    source, tokenizer = load_source(demo_model)
    adapter = make_adapter(demo_model, tmp_path / "adapter", b_scale=0.05, r=8, lora_alpha=16)
    lora = write_lora_gguf(adapter, tmp_path / "lora.gguf")
    ids = chat_ids(tokenizer)
    with torch.no_grad():
        before = source(torch.tensor([ids])).logits[0].numpy()
        after = PeftModel.from_pretrained(source, adapter)(torch.tensor([ids])).logits[0].numpy()
    scores = []
    for model in (llama(demo_ggufs["f16"], logits_all=True),
                  llama(demo_ggufs["f16"], lora, logits_all=True)):
        model.eval(ids)
        scores.append(np.array(model.scores[:len(ids)]))
    change, llama_change = after - before, scores[1] - scores[0]
    assert np.abs(change).max() > 1.0       # the adapter matters
    assert np.abs(llama_change - change).max() < 0.25 * np.abs(change).max()
    assert (scores[1].argmax(-1) == after.argmax(-1)).all()


@needs_llama_cpp
def test_q4_k_m_is_quantised_by_llama_cpp_and_sized_beforehand(demo_model, demo_ggufs,
                                                               demo_source, tmp_path):
    """q4_k_m goes through llama.cpp's quantiser: its size was estimated within a few percent,
    and it still finds the source's answer likely (SmolLM2-135M's first words are a near-tie
    that 4 bits can flip, so likelihood is compared, not the greedy text)."""
    path = write_gguf(demo_model, tmp_path / "model-q4_k_m.gguf", "q4_k_m")
    assert metadata(path)["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_K_M
    assert gguf_size(demo_model, "q4_k_m") == pytest.approx(path.stat().st_size, rel=0.05)
    assert path.stat().st_size < 0.45 * demo_ggufs["f16"].stat().st_size
    source, tokenizer = demo_source
    ids = chat_ids(tokenizer)
    answer = greedy(source, ids)
    f16 = answer_nll(llama(demo_ggufs["f16"], logits_all=True), ids, answer)
    assert answer_nll(llama(path, logits_all=True), ids, answer) < 1.5 * f16
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
