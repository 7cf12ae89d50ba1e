"""GGUF files from a fine-tuned model, for llama.cpp and everything built on it (Ollama, LM Studio).

    write_gguf(model_dir, out_file, quant)    a safetensors model folder -> one GGUF model file
    write_lora_gguf(adapter_dir, out_file)    a PEFT LoRA adapter -> a GGUF LoRA (llama.cpp --lora)
    gguf_size(model_dir, quant)               the bytes write_gguf will write, from shapes alone

llama.cpp's own converter is a script, not a library, so the mapping for the two architectures the
studio trains (Qwen3ForCausalLM and LlamaForCausalLM, which SmolLM2 is) is written here on top of
the `gguf` package: the hyper-parameters under llama.cpp's keys, every tensor under its llama.cpp
name (the package's TensorNameMap), and the byte-level BPE tokenizer as llama.cpp reads it. What
llama.cpp expects and a Hugging Face folder does not say is spelled out where it is done: Llama's
query and key rows re-ordered for llama.cpp's rotary layout, norms kept in f32, tied embeddings
written once, and the name of the pre-tokenizer (how text is split before the merges).

Files are written under a temporary name beside the destination and renamed at the end, so a
failure never leaves a file that looks complete. q4_k_m goes through llama.cpp's own quantiser
(llama-cpp-python), which only then is needed.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import gguf
import numpy as np

from studio.texts.message import Text

Progress = Callable[[float, str], None]

QUANTS = ("f16", "bf16", "q8_0", "q4_k_m")

Q = gguf.GGMLQuantizationType
# quant -> (the file type written in the metadata, the type of each large tensor)
_TYPES = {
    "f16": (gguf.LlamaFileType.MOSTLY_F16, Q.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, Q.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
}
LLAMA_CPP_HINT = ("pip install llama-cpp-python (it compiles llama.cpp from source, which "
                  "takes minutes)")


class GGUFExportError(ValueError):
    """A model or adapter that cannot be written as GGUF as asked; the message says why and what
    to do instead."""


@dataclass(frozen=True)
class Architecture:
    """How one Hugging Face architecture is written for llama.cpp."""
    gguf_arch: gguf.MODEL_ARCH
    # llama.cpp rotates adjacent pairs of a head's dimensions for LLAMA, while transformers'
    # Llama rotates the first half against the second: rows of q_proj and k_proj are re-ordered
    # (transformers' GGUF loader re-orders them back). Qwen3 runs NEOX rope, the HF layout as is.
    interleave_rope: bool


ARCHITECTURES = {
    "Qwen3ForCausalLM": Architecture(gguf.MODEL_ARCH.QWEN3, interleave_rope=False),
    "LlamaForCausalLM": Architecture(gguf.MODEL_ARCH.LLAMA, interleave_rope=True),
}


def architecture(config: dict) -> Architecture:
    """The Architecture of a config.json, or a GGUFExportError naming the supported ones."""
    names = config.get("architectures") or [config.get("model_type", "unknown")]
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise GGUFExportError(
        f"cannot write {', '.join(names)} as GGUF: the studio's GGUF writer knows "
        f"{' and '.join(ARCHITECTURES)} (export the merged safetensors model for other ones)")


# ---------------------------------------------------------------------------- model folders
def _model_folder(model_dir) -> Path:
    """A local folder for a folder path or a bundled model id (demo:...)."""
    from studio.models.local import local_model_path

    path = Path(local_model_path(str(model_dir))).expanduser()
    if not (path / "config.json").is_file():
        raise GGUFExportError(f"{model_dir} is not a model folder (no config.json in it)")
    return path


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted({folder / f for f in _read_json(index)["weight_map"].values()})
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise GGUFExportError(f"{folder} holds no .safetensors weights: save the model with "
                              "save_pretrained(safe_serialization=True) first")
    return files


def _tensor_shapes(folder: Path) -> dict[str, tuple[tuple[int, ...], Path]]:
    """name -> (shape, file), read from the safetensors headers (no weights are loaded)."""
    out = {}
    for file in _safetensors_files(folder):
        with open(file, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        out.update({name: (tuple(info["shape"]), file) for name, info in header.items()
                    if name != "__metadata__"})
    return out


# ---------------------------------------------------------------------------- tensor plan
@dataclass
class _Tensor:
    source: Optional[str]            # the safetensors name; None for one made here (rope_freqs)
    name: str                        # llama.cpp's name
    shape: tuple[int, ...]           # as torch/numpy order it (rows, columns)
    qtype: Q
    file: Optional[Path] = None
    permute_heads: int = 0           # re-order rows for llama.cpp's rotary layout, by head

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return math.prod(self.shape[:-1]) * (self.shape[-1] // block) * size


# Tensors a checkpoint may carry that llama.cpp computes itself.
_SKIPPED = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")


def _tensor_type(name: str, shape: tuple[int, ...], wanted: Q) -> Q:
    """llama.cpp keeps norms and 1-D tensors in f32 (its kernels expect it); a row that does not
    divide into the quant's blocks stays f16, as llama.cpp's converter does."""
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return Q.F32
    block, _ = gguf.GGML_QUANT_SIZES[wanted]
    return wanted if shape[-1] % block == 0 else Q.F16


def _plan(folder: Path, config: dict, arch: Architecture, wanted: Q) -> list[_Tensor]:
    """Every tensor the GGUF will hold, in file order, with its name, shape and type."""
    n_layers = config["num_hidden_layers"]
    names = gguf.get_tensor_name_map(arch.gguf_arch, n_layers)
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads")
    tied = config.get("tie_word_embeddings", False)
    plan = []
    for source, (shape, file) in _tensor_shapes(folder).items():
        if source.endswith(_SKIPPED) or (tied and source == "lm_head.weight"):
            continue        # a tied head is the embedding: llama.cpp uses token_embd for both
        name = names.get_name(source, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GGUFExportError(f"{source} in {file.name} has no llama.cpp name for "
                                  f"{arch.gguf_arch.name.lower()}: is this a plain "
                                  "(merged, unquantised) checkpoint?")
        permute = 0
        if arch.interleave_rope and re.search(r"\.attn_[qk]\.(weight|bias)$", name):
            permute = heads if ".attn_q." in name else (kv_heads or heads)
        plan.append(_Tensor(source, name, shape, _tensor_type(name, shape, wanted), file,
                            permute))
    if (freqs := _rope_factors(folder, config, arch)) is not None:
        plan.append(_Tensor(None, gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                            tuple(freqs.shape), Q.F32))

    def order(t: _Tensor):      # token_embd, the blocks in order, then the output norm and head
        match = re.match(r"blk\.(\d+)\.", t.name)
        return (0 if t.name.startswith("token_embd") else 1 if match else 2,
                int(match.group(1)) if match else 0, t.name)
    return sorted(plan, key=order)


def _interleave_rotary_halves(w, heads: int):
    """Rows of each head from [x0..x(d/2-1), y0..y(d/2-1)] (transformers' rotate_half layout)
    to [x0, y0, x1, y1, ...] (the pairs llama.cpp's LLAMA rope rotates)."""
    head_dim = w.shape[0] // heads
    return w.reshape(heads, 2, head_dim // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


# ---------------------------------------------------------------------------- rope
def _rope(config: dict) -> tuple[dict, float]:
    """(the rope scaling parameters, rope theta), from transformers 5's rope_parameters or the
    older rope_scaling + rope_theta."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
    params.setdefault("rope_type", params.get("type", "default"))
    return params, theta


def _rope_factors(folder: Path, config: dict, arch: Architecture):
    """Llama 3.1/3.2's frequency-dependent rope scaling, which llama.cpp reads as a tensor of
    per-frequency divisors (rope_freqs); transformers' own rope init gives the scaled
    frequencies, so nothing of the formula is re-derived here. None for other rope types."""
    params, _ = _rope(config)
    if params["rope_type"] != "llama3" or arch.gguf_arch != gguf.MODEL_ARCH.LLAMA:
        return None
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_config = AutoConfig.from_pretrained(folder)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_config, "cpu")
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    _, theta = _rope(config)
    base = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    return (base / scaled.double().numpy()).astype(np.float32)


def _add_rope(writer: gguf.GGUFWriter, config: dict, arch: Architecture) -> None:
    params, theta = _rope(config)
    writer.add_rope_freq_base(theta)
    kind = params["rope_type"]
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(params["factor"])
    elif kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(params["factor"])
        writer.add_rope_scaling_orig_ctx_len(params.get("original_max_position_embeddings",
                                                        config["max_position_embeddings"]))
    elif kind not in ("default", "llama3") or (kind == "llama3" and not arch.interleave_rope):
        raise GGUFExportError(f"rope scaling {kind!r} is not written by the studio's GGUF writer "
                              "(default, linear, yarn and Llama 3's llama3 are)")


# ---------------------------------------------------------------------------- tokenizer
# How a byte-level BPE tokenizer splits text before merging, as tokenizer.json spells it, and the
# name llama.cpp knows that split by (tokenizer.ggml.pre; llama.cpp's llama-vocab.cpp holds the
# same regexes under these names). A split not listed here is refused, not guessed: a wrong
# pre-tokenizer gives a model that loads and answers subtly worse.
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_SPLIT = _QWEN2_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
PRE_TOKENIZERS = {
    (("Split", _QWEN2_SPLIT), ("ByteLevel", False)): "qwen2",          # Qwen2, Qwen2.5, Qwen3
    (("Split", _LLAMA3_SPLIT), ("ByteLevel", False)): "llama-bpe",     # Llama 3.x
    (("Digits", True), ("ByteLevel", True)): "smollm",     # SmolLM2: digits alone, then GPT-2
    (("ByteLevel", True),): "gpt-2",                        # GPT-2's split alone
}
# The bundled demo's tokenizer.json was re-made from SmolLM2's GGUF by transformers, which drops
# the Digits step: its GGUF says "gpt-2", the split the studio trained it with (the two differ
# only where spaces run into a digit: "  3").


def _split_steps(pre: Optional[dict]) -> tuple:
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre]
    out = []
    for step in steps:
        if not step:
            continue
        kind = step.get("type")
        if kind == "Split":
            out.append((kind, (step.get("pattern") or {}).get("Regex")))
        elif kind == "ByteLevel":
            out.append((kind, step.get("use_regex", True)))
        elif kind == "Digits":
            out.append((kind, step.get("individual_digits", False)))
        else:
            out.append((kind, json.dumps(step, sort_keys=True)))
    return tuple(out)


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name for the way the tokenizer splits text before merging, read from its
    structure (not from the model's name: a folder's tokenizer is what its model trained with),
    or a GGUFExportError."""
    steps = _split_steps(tokenizer_json.get("pre_tokenizer"))
    name = PRE_TOKENIZERS.get(steps)
    if name is None:
        raise GGUFExportError(
            f"this tokenizer's pre-tokenizer ({' + '.join(s[0] for s in steps) or 'none'}) is not "
            f"one llama.cpp is known to split text the same way as: the studio writes "
            f"{', '.join(sorted(set(PRE_TOKENIZERS.values())))}")
    return name


@dataclass
class _Vocab:
    tokens: list[str]
    types: list[int]
    pre: str
    add_space_prefix: bool


def _looks_special(token: str) -> bool:
    # Chat markers some tokenizers leave unmarked (<|fim_prefix|> in Qwen's) are control tokens
    # for llama.cpp, never text the model writes out.
    return token.startswith("<|") and token.endswith("|>")


def _vocab(folder: Path, n_vocab: int) -> _Vocab:
    """The token list llama.cpp reads (byte-level strings, added tokens as their text), padded
    to the embedding's rows, with each token's type."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise GGUFExportError(f"{folder} has no tokenizer.json: save the tokenizer beside the "
                              "model (tokenizer.save_pretrained)")
    tj = _read_json(path)
    model = tj.get("model", {})
    steps = _split_steps(tj.get("pre_tokenizer"))
    if model.get("type") != "BPE" or not any(s[0] == "ByteLevel" for s in steps):
        raise GGUFExportError("the studio's GGUF writer knows byte-level BPE tokenizers (Qwen, "
                              "Llama 3, SmolLM); this one is "
                              f"{model.get('type', 'unknown')} without a ByteLevel step")
    added = tj.get("added_tokens", [])
    top = max([*model["vocab"].values(), *(a["id"] for a in added)])
    if top >= n_vocab:
        raise GGUFExportError(f"the tokenizer has token ids up to {top} but the model's embedding "
                              f"has {n_vocab} rows: resize the embeddings before exporting")
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [gguf.TokenType.UNUSED] * n_vocab
    for token, i in model["vocab"].items():
        tokens[i], types[i] = token, gguf.TokenType.NORMAL
    for a in added:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = (gguf.TokenType.CONTROL if a.get("special") or _looks_special(a["content"])
                          else gguf.TokenType.USER_DEFINED)
    pre = tj["pre_tokenizer"]
    byte_level = next(p for p in [pre, *pre.get("pretokenizers", [])] if p["type"] == "ByteLevel")
    return _Vocab(tokens, types, pre_tokenizer_name(tj), bool(byte_level.get("add_prefix_space")))


def _add_tokenizer(writer: gguf.GGUFWriter, folder: Path, n_vocab: int) -> None:
    vocab = _vocab(folder, n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    # transformers' GGUF loader strips a leading space from decoded text unless told otherwise
    writer.add_add_space_prefix(vocab.add_space_prefix)
    # merges, bos/eos/pad/unk ids, add_bos/add_eos and the chat template (tokenizer_config.json
    # or chat_template.jinja), as the tokenizer files say them
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=n_vocab)
    # neither the config nor the post-processor adding a bos means the tokenizer adds none;
    # said outright, since llama.cpp's default differs by pre-tokenizer
    special.add_special_token.setdefault("bos", False)
    special.add_special_token.setdefault("eos", False)
    special.add_to_gguf(writer, quiet=True)


# ---------------------------------------------------------------------------- model files
def _add_hyperparameters(writer: gguf.GGUFWriter, name: str, config: dict, n_vocab: int,
                         arch: Architecture, file_type: gguf.LlamaFileType) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)       # what llama.cpp and Ollama show as the model's name
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    # Qwen3's head_dim is not hidden_size / heads (0.6B: 128, not 64): llama.cpp reads it here
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    _add_rope(writer, config, arch)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _source(model_dir, quant: str):
    """(folder, config, architecture, file type, plan) of a model folder: no weights read."""
    if quant not in QUANTS:
        raise GGUFExportError(f"unknown quantisation {quant!r}: choose one of {', '.join(QUANTS)}")
    folder = _model_folder(model_dir)
    config = _read_json(folder / "config.json")
    config = {**config, **config.get("text_config", {})}
    arch = architecture(config)
    file_type, wanted = _TYPES.get(quant, _TYPES["f16"])   # q4_k_m: f16 first, llama.cpp after
    return folder, config, arch, file_type, _plan(folder, config, arch, wanted)


def _writer(folder: Path, config: dict, arch: Architecture, file_type: gguf.LlamaFileType,
            plan: list[_Tensor], name: str) -> gguf.GGUFWriter:
    """A writer holding every key, and every tensor declared (names, shapes, types) so that the
    weights can then be streamed one at a time, never all in memory."""
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[arch.gguf_arch])
    n_vocab = next(t.shape[0] for t in plan if t.name == "token_embd.weight")
    _add_hyperparameters(writer, name, config, n_vocab, arch, file_type)
    _add_tokenizer(writer, folder, n_vocab)
    for t in plan:
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
    return writer


def _tensor_data(t: _Tensor, folder: Path, config: dict, arch: Architecture) -> np.ndarray:
    import torch
    from safetensors import safe_open

    if t.source is None:
        return _rope_factors(folder, config, arch)
    with safe_open(t.file, framework="pt") as f:
        w = f.get_tensor(t.source).to(torch.float32)
    if t.permute_heads:
        w = _interleave_rotary_halves(w, t.permute_heads)
    return gguf.quants.quantize(w.numpy(), t.qtype)


def _replace_atomically(out: Path, write: Callable[[Path], None]) -> Path:
    """Run write(tmp) on a temporary name beside out, then rename it into place; the temporary
    file goes away on any failure (Ctrl-C included)."""
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        write(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def write_gguf(model_dir, out_file, quant: str = "f16",
               progress: Optional[Progress] = None) -> Path:
    """Write a merged Qwen3 or Llama safetensors folder as one GGUF file llama.cpp, Ollama and
    transformers (gguf_file=) load: weights, hyper-parameters, tokenizer and chat template.
    quant: f16, bf16, q8_0 (all written here), or q4_k_m (through llama-cpp-python)."""
    progress = progress or (lambda done, what: None)
    if quant == "q4_k_m" and importlib.util.find_spec("llama_cpp") is None:
        raise GGUFExportError(f"q4_k_m is made by llama.cpp's quantiser, which is not installed: "
                              f"{LLAMA_CPP_HINT}; or export f16 or q8_0")
    folder, config, arch, file_type, plan = _source(model_dir, quant)
    out_file = Path(out_file).expanduser()
    writer = _writer(folder, config, arch, file_type, plan, name=out_file.stem)
    total = sum(t.nbytes for t in plan) or 1
    share = 0.6 if quant == "q4_k_m" else 1.0      # the quantiser does the rest

    def write_to(path: Path) -> None:
        try:
            writer.write_header_to_file(path)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            done = 0
            for i, t in enumerate(plan, 1):
                writer.write_tensor_data(_tensor_data(t, folder, config, arch))
                done += t.nbytes
                progress(share * done / total,
                         Text("progress.export.tensor", name=t.name, i=i, n=len(plan)))
        finally:
            writer.close()

    if quant != "q4_k_m":
        _replace_atomically(out_file, write_to)
    else:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_file.parent, prefix=".gguf-f16-") as tmp:
            f16 = Path(tmp) / "model-f16.gguf"
            write_to(f16)
            progress(share, Text("progress.export.quantising"))
            _replace_atomically(out_file, lambda path: _llama_cpp_quantize(f16, path, quant))
    progress(1.0, Text("progress.export.wrote", name=out_file.name))
    return out_file


def _llama_cpp_quantize(src: Path, dst: Path, quant: str) -> None:
    import ctypes
    import logging

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[quant]
    # llama.cpp logs a line per tensor (and a warning per fallback type) through this logger
    log = logging.getLogger("llama-cpp-python")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        failed = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                                ctypes.byref(params))
    finally:
        log.setLevel(level)
    if failed:
        raise GGUFExportError(f"llama.cpp could not quantise {src.name} to {quant}")


# ---------------------------------------------------------------------------- size
def _q4_k_m_type(t: _Tensor, n_layers: int, tied: bool) -> Q:
    """The type llama.cpp's Q4_K_M recipe gives a tensor (llama-quant.cpp), close enough for a
    size: Q4_K, Q6_K for the output head (the embedding when tied) and for the value and down
    projections of the first and last eighth of the layers and every third one between; a row
    that does not divide into 256 falls back to a 32-block type."""
    if t.qtype == Q.F32:
        return Q.F32
    block = re.match(r"blk\.(\d+)\.", t.name)
    layer = int(block.group(1)) if block else 0
    more_bits = (layer < n_layers // 8 or layer >= 7 * n_layers // 8
                 or (layer - n_layers // 8) % 3 == 2)
    if t.name == "output.weight" or (tied and t.name == "token_embd.weight"):
        return Q.Q6_K if t.shape[-1] % 256 == 0 else Q.Q8_0
    wanted = Q.Q6_K if more_bits and re.search(r"\.(attn_v|ffn_down)\.", t.name) else Q.Q4_K
    if t.shape[-1] % 256 == 0:
        return wanted
    fallback = {Q.Q4_K: Q.Q5_0, Q.Q6_K: Q.Q8_0}[wanted]
    return fallback if t.shape[-1] % 32 == 0 else Q.F16


def gguf_size(model_dir, quant: str = "f16") -> int:
    """The bytes write_gguf(model_dir, ..., quant) will write, from the tensor shapes in the
    safetensors headers and the tokenizer files (no weights are read): exact for f16, bf16 and
    q8_0 but for the length of the file's name (written inside as the model's name), within a
    few percent for q4_k_m (llama.cpp picks its types per tensor)."""
    folder, config, arch, file_type, plan = _source(model_dir, quant)
    stamp = tuple(p.stat().st_mtime_ns for p in sorted(folder.iterdir()) if p.is_file())
    head = _head_bytes(folder, stamp)
    if quant == "q4_k_m":
        tied = not any(t.name == "output.weight" for t in plan)
        for t in plan:
            t.qtype = _q4_k_m_type(t, config["num_hidden_layers"], tied)
    pad = gguf.GGUFWriter.ggml_pad
    return pad(head, gguf.GGUF_DEFAULT_ALIGNMENT) + sum(
        pad(t.nbytes, gguf.GGUF_DEFAULT_ALIGNMENT) for t in plan)


@functools.lru_cache(maxsize=16)
def _head_bytes(folder: Path, stamp: tuple) -> int:
    """The bytes before the first tensor (header, keys, tensor infos), found by writing them:
    the same for every quant (a type is a number), remembered while the folder's files stay as
    they are (stamp), since packing a 150k-token vocabulary takes seconds."""
    _, config, arch, file_type, plan = _source(folder, "f16")
    writer = _writer(folder, config, arch, file_type, plan, name=folder.name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "head.gguf"
        writer.write_header_to_file(path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.close()
        return path.stat().st_size


# ---------------------------------------------------------------------------- LoRA adapters
def _lora_pairs(adapter: Path) -> dict[str, dict[str, object]]:
    """module path (model.layers.0.self_attn.q_proj) -> {"A": tensor, "B": tensor}."""
    import torch

    path = adapter / "adapter_model.safetensors"
    if path.is_file():
        from safetensors.torch import load_file

        weights = load_file(path)
    elif (adapter / "adapter_model.bin").is_file():
        weights = torch.load(adapter / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise GGUFExportError(f"{adapter} holds no adapter_model.safetensors: is it a PEFT "
                              "adapter folder? (MLX adapters cannot be written for llama.cpp)")
    pairs: dict[str, dict[str, object]] = {}
    others = []
    for name, tensor in weights.items():
        match = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])\.weight", name)
        if match is None:
            others.append(name)
            continue
        pairs.setdefault(match.group(1), {})[match.group(2)] = tensor.to(torch.float32)
    if others:
        raise GGUFExportError(
            f"the adapter holds more than LoRA pairs ({', '.join(sorted(others)[:3])}"
            f"{'...' if len(others) > 3 else ''}: embedding LoRA, DoRA or modules_to_save), "
            "which a llama.cpp LoRA cannot carry: export the merged model as GGUF instead")
    return pairs


def _base_folder(adapter: Path, lora_config: dict, base_model) -> Path:
    name = str(base_model or lora_config.get("base_model_name_or_path") or "")
    if not name:
        raise GGUFExportError(f"{adapter}/adapter_config.json names no base model "
                              "(base_model_name_or_path): pass base_model=")
    from studio.models.local import local_model_path

    path = Path(local_model_path(name)).expanduser()
    if (path / "config.json").is_file():
        return path
    try:                # a Hub id: its config.json from the local cache (or the Hub, if online)
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(name, "config.json")).parent
    except Exception:
        raise GGUFExportError(f"the base model {name} is neither a local folder nor in the "
                              "Hugging Face cache: pass base_model= a folder holding its "
                              "config.json") from None


def write_lora_gguf(adapter_dir, out_file, base_model=None) -> Path:
    """Write a PEFT LoRA adapter as a GGUF LoRA that llama.cpp loads beside the base model's
    GGUF (llama-server -m base.gguf --lora this.gguf): each pair as <llama.cpp name>.lora_a and
    .lora_b in f32, with alpha. base_model overrides the adapter's base_model_name_or_path."""
    from peft.utils.other import get_pattern_key

    adapter = Path(adapter_dir).expanduser()
    config_path = adapter / "adapter_config.json"
    if not config_path.is_file():
        raise GGUFExportError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    lora = _read_json(config_path)
    if lora.get("peft_type", "LORA") != "LORA" or lora.get("use_dora"):
        raise GGUFExportError(f"llama.cpp loads plain LoRA adapters; this one is "
                              f"{'DoRA' if lora.get('use_dora') else lora.get('peft_type')}: "
                              "export the merged model as GGUF instead")
    base = _read_json(_base_folder(adapter, lora, base_model) / "config.json")
    base = {**base, **base.get("text_config", {})}
    arch = architecture(base)
    names = gguf.get_tensor_name_map(arch.gguf_arch, base["num_hidden_layers"])
    heads = base["num_attention_heads"]
    kv_heads = base.get("num_key_value_heads") or heads

    # llama.cpp scales every pair by alpha / rank (the rank read off the tensor); PEFT by
    # alpha / rank, alpha / sqrt(rank) with rsLoRA, and per module with alpha_pattern. The alpha
    # written is PEFT's own for plain LoRA; any module PEFT scales otherwise has the difference
    # folded into its lora_b, so llama.cpp adds exactly what PEFT adds.
    r, alpha = lora["r"], float(lora["lora_alpha"])
    rslora = bool(lora.get("use_rslora"))
    written_alpha = alpha * math.sqrt(r) if rslora else alpha
    patterns = lora.get("alpha_pattern") or {}

    tensors = []
    for module, pair in sorted(_lora_pairs(adapter).items()):
        if set(pair) != {"A", "B"}:
            raise GGUFExportError(f"{module} has lora_{''.join(pair)} but not its partner")
        name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if name is None or (name == "output.weight" and base.get("tie_word_embeddings")):
            raise GGUFExportError(f"LoRA on {module} has no llama.cpp tensor to apply to "
                                  f"({'the head is tied to the embedding' if name else 'unknown'}"
                                  "): export the merged model as GGUF instead")
        a, b = pair["A"], pair["B"]
        rank = a.shape[0]
        module_alpha = float(patterns.get(get_pattern_key(patterns.keys(), module), alpha))
        peft_scale = module_alpha / (math.sqrt(rank) if rslora else rank)
        llama_scale = written_alpha / rank
        if not math.isclose(peft_scale, llama_scale, rel_tol=1e-6):
            b = b * (peft_scale / llama_scale)
        if arch.interleave_rope and name.endswith(("attn_q.weight", "attn_k.weight")):
            # lora_b's rows are the projection's output rows: re-ordered as the weight's are
            b = _interleave_rotary_halves(b, heads if "attn_q" in name else kv_heads)
        tensors += [(name + ".lora_a", a), (name + ".lora_b", b)]

    def write_to(path: Path) -> None:
        writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch.gguf_arch])
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, written_alpha)
        writer.add_name(Path(out_file).stem)
        for name, t in tensors:
            writer.add_tensor(name, t.contiguous().numpy())
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()

    return _replace_atomically(out_file, write_to)
