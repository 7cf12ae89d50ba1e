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

from studio.export.gguf import GGUFExportError, gguf_size, write_gguf, write_lora_gguf

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]
# digits, spaces before digits, a run of spaces, accents, CJK and an emoji: where pre-tokenizers
# differ
TEXT = [{"role": "user", "content": "In 2024,  3 cats ate 12345 fish.\n\tCafé 東京 🦙 it's done"}]
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


def make_adapter(base, out: Path, **lora) -> Path:
    """A PEFT LoRA on every linear layer with random (non-zero) A and B, saved as training does."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(target_modules=ALL_LINEAR, init_lora_weights=False, **lora)
    get_peft_model(model, config).save_pretrained(out)
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


@pytest.fixture(scope="module")
def demo_ggufs(demo_model, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf-demo")
    return {q: write_gguf(demo_model, out / f"smollm2-{q}.gguf", q) for q in ("f16", "q8_0")}


@pytest.fixture(scope="module")
def demo_source(demo_model):
    return load_source(demo_model)


# ---------------------------------------------------------------------------- models
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


def test_demo_model_gguf_answers_as_the_source_does(demo_ggufs, demo_source):
    """SmolLM2 (Llama: q/k rows re-ordered for llama.cpp, re-ordered back by transformers) loaded
    from its f16 and its q8_0 GGUF gives the source's greedy answer, token for token."""
    source, tokenizer = demo_source
    ids = chat_ids(tokenizer)
    expected = greedy(source, ids)
    assert "Paris" in tokenizer.decode(expected)
    f16 = load_gguf(demo_ggufs["f16"])      # its config read from the file, as a user would
    assert greedy(f16, ids) == expected
    q8_0 = load_gguf(demo_ggufs["q8_0"], config=source.config)   # the f16 one showed it is read
    assert greedy(q8_0, ids) == expected


def test_demo_model_gguf_metadata_and_quantised_types(demo_model, demo_ggufs):
    """SmolLM2 splits digits one by one before merging: llama.cpp's "smollm" pre-tokenizer, even
    though the demo's tokenizer.json (re-made from a GGUF) lost that step; q8_0 quantises the
    matrices and keeps norms in f32."""
    meta = metadata(demo_ggufs["q8_0"])
    held = tensors(demo_ggufs["q8_0"])
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.pre"] == "smollm"
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

    path = demo_ggufs["f16"]
    original = AutoTokenizer.from_pretrained(demo_model)
    rebuilt = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    text = original.apply_chat_template(TEXT, add_generation_prompt=True, tokenize=False)
    assert rebuilt(text, add_special_tokens=False).input_ids == \
        original(text, add_special_tokens=False).input_ids
    assert rebuilt.chat_template == original.chat_template


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


# ---------------------------------------------------------------------------- sizes, refusals
def test_gguf_size_is_known_before_writing(demo_model, demo_ggufs):
    """The size from shapes alone is the file's, within half a percent."""
    for quant, path in demo_ggufs.items():
        assert gguf_size(demo_model, quant) == pytest.approx(path.stat().st_size, rel=0.005)


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
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, lora_path=str(lora) if lora else None,
                           logits_all=logits_all, verbose=False, seed=0)


def llama_greedy(model, ids: list[int], n: int = 12) -> list[int]:
    out = []
    for token in model.generate(ids, temp=0.0, top_k=1, reset=True):
        if len(out) == n or token == model.token_eos():
            break
        out.append(token)
    return out


def test_llama_cpp_tokenizes_and_answers_as_transformers(demo_ggufs, demo_source):
    """llama.cpp (with the "smollm" pre-tokenizer) turns chat text into the source tokenizer's
    ids and answers with the source's greedy tokens."""
    model = llama(demo_ggufs["f16"])
    source, tokenizer = demo_source
    for messages in (PROMPT, TEXT):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert model.tokenize(text.encode(), add_bos=False, special=True) == \
            chat_ids(tokenizer, messages)
    ids = chat_ids(tokenizer)
    assert llama_greedy(model, ids) == greedy(source, ids)


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


def test_llama_cpp_applies_the_lora_gguf_as_peft_does(demo_model, demo_ggufs, tmp_path):
    """Base GGUF + LoRA GGUF in llama.cpp answer as the PEFT model does in transformers."""
    from peft import PeftModel

    pytest.importorskip("llama_cpp")
    source, tokenizer = load_source(demo_model)
    adapter = make_adapter(demo_model, tmp_path / "adapter", r=8, lora_alpha=64)
    lora = write_lora_gguf(adapter, tmp_path / "lora.gguf")
    ids = chat_ids(tokenizer)
    before = greedy(source, ids, 8)
    expected = greedy(PeftModel.from_pretrained(source, adapter).eval(), ids, 8)
    assert expected != before       # the adapter changes the answer
    assert llama_greedy(llama(demo_ggufs["f16"], lora), ids, 8) == expected


def test_q4_k_m_is_quantised_by_llama_cpp_and_sized_beforehand(demo_model, demo_source, tmp_path):
    """q4_k_m goes through llama.cpp's quantiser: it loads, still answers the question, and
    its size was estimated within a few percent."""
    pytest.importorskip("llama_cpp")
    path = write_gguf(demo_model, tmp_path / "model-q4_k_m.gguf", "q4_k_m")
    assert metadata(path)["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_K_M
    assert gguf_size(demo_model, "q4_k_m") == pytest.approx(path.stat().st_size, rel=0.05)
    _, tokenizer = demo_source
    answer = llama_greedy(llama(path), chat_ids(tokenizer))
    assert "Paris" in tokenizer.decode(answer)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
