"""The shapes of the models the studio trains: the linear layers of a Qwen3 block that LoRA can
wrap, each model's architecture (from its config.json, or the published Qwen3 sizes) and its
parameter count. The memory planner and the config read them; they read no plan."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from studio.models.catalog import CATALOG, is_local_model

# Under this many parameters a model's steps at short micro-batches wait on the host's kernel
# launches: the plan compiles its layers (studio/plan/compiling.py, which says why and where it
# was measured), and the fields' help says so.
SMALL_MODEL_PARAMS = 1e9
# The linear layers of a Qwen3 block that LoRA can wrap.
LINEAR_LAYERS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Published Qwen3 shapes: hidden, intermediate, layers, heads, kv heads, head_dim, vocab, tied
QWEN3_SHAPES = {
    "0.6B": (1024, 3072, 28, 16, 8, 128, 151936, True),
    "1.7B": (2048, 6144, 28, 16, 8, 128, 151936, True),
    "4B": (2560, 9728, 36, 32, 8, 128, 151936, True),
    "8B": (4096, 12288, 36, 32, 8, 128, 151936, False),
    "14B": (5120, 17408, 40, 40, 8, 128, 151936, False),
    "32B": (5120, 25600, 64, 64, 8, 128, 151936, False),
}


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def layer_params(self) -> int:
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return attn + 3 * self.hidden * self.intermediate

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.embed_params * (1 if self.tied else 2)

    def module_dims(self) -> dict[str, tuple[int, int]]:
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, \
            self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def model_shape(model_name: str) -> Optional[Shape]:
    """The architecture from a local config.json, or from the published Qwen3 sizes."""
    from studio.models.local import BUILDERS, CACHE

    folder = Path(model_name)
    if model_name in BUILDERS:
        folder = CACHE / BUILDERS[model_name][0]
    config = folder / "config.json"
    if config.is_file():
        c = json.loads(config.read_text())
        c = c.get("text_config", c)
        heads = c.get("num_attention_heads", 1)
        try:
            return Shape(c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], heads,
                         c.get("num_key_value_heads", heads),
                         c.get("head_dim") or c["hidden_size"] // heads, c["vocab_size"],
                         bool(c.get("tie_word_embeddings", False)))
        except KeyError:
            return None
    for size, shape in QWEN3_SHAPES.items():
        if f"Qwen3-{size}" in model_name:
            return Shape(*shape)
    return None


def parameter_count(name: str) -> Optional[float]:
    """Parameters of a catalog model or a local folder, or None when unknown."""
    for m in CATALOG:
        if m.id == name:
            return m.params * 1e9
    shape = model_shape(name) if is_local_model(name) else None
    return float(shape.params) if shape else None
