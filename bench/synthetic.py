"""A synthetic chat dataset with the length profile of real SFT data, and random Qwen3 models of
the published sizes. Shared by the CPU and GPU benchmarks so every variant sees the same rows."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there been one all we their has would when if "
         "what so no out up into do can more time only could new about other two then first any "
         "may these see people some like also than its now after way many most should over such "
         "model data train token layer answer question explain because value result small large "
         "return function number system memory process window value order market river city "
         "light energy water music story history science language computer network").split()


def row_lengths(n: int, seed: int = 0, lo: int = 100, hi: int = 2000, mean: float = 430.0):
    """Token targets from a lognormal clipped to [lo, hi]: most rows short, a long tail."""
    rng = random.Random(seed)
    sigma = 0.75
    mu = math.log(mean) - sigma**2 / 2
    return [int(min(hi, max(lo, rng.lognormvariate(mu, sigma)))) for _ in range(n)]


def _text(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n_words)]
    sentences, i = [], 0
    while i < len(words):
        k = rng.randint(6, 18)
        sentences.append(" ".join(words[i:i + k]).capitalize() + ".")
        i += k
    return " ".join(sentences)


def chat_rows(n: int, seed: int = 0) -> list[dict]:
    """`messages` rows (system, user, assistant); about 1.07 tokens a word in Qwen3's tokenizer."""
    rng = random.Random(seed)
    rows = []
    for target in row_lengths(n, seed):
        words = max(20, int((target - 40) / 1.07))
        q = max(5, int(words * rng.uniform(0.15, 0.4)))
        rows.append({"messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": _text(rng, q)},
            {"role": "assistant", "content": _text(rng, words - q)}]})
    return rows


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# Published Qwen3 shapes (see ../shared/gpu/README.md)
SIZES = {"0.6B": (1024, 3072, 28, 16, 8, True), "1.7B": (2048, 6144, 28, 16, 8, True),
         "4B": (2560, 9728, 36, 32, 8, True), "8B": (4096, 12288, 36, 32, 8, False),
         "14B": (5120, 17408, 40, 40, 8, False), "32B": (5120, 25600, 64, 64, 8, False)}


def build_random_qwen3(size: str, out: Path, tokenizer_dir: Path, device: str = "cuda") -> Path:
    """A randomly initialised Qwen3 of a real size in bf16, saved like a downloaded checkpoint."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    if (out / "config.json").is_file():
        return out
    hidden, inter, layers, heads, kv, tied = SIZES[size]
    config = Qwen3Config(vocab_size=151936, hidden_size=hidden, intermediate_size=inter,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6,
                         max_position_embeddings=40960, tie_word_embeddings=tied,
                         torch_dtype="bfloat16", eos_token_id=151645, pad_token_id=151643)
    with torch.device(device):      # built in bf16 from the start: 32B in fp32 fills an H200
        torch.manual_seed(0)
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = Qwen3ForCausalLM(config)
        finally:
            torch.set_default_dtype(torch.float32)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    del model
    return out
