"""The models the studio offers, and the names people use for them that were never published.

Nothing here touches the network: the catalog is a list of ids, the demo model is built from a
package on disk, and a local folder is recognised by its config.json.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from studio.texts.message import Text

DEMO_MODEL_ID = "demo:SmolLM2-135M-Instruct"
TINY_QWEN3_ID = "demo:tiny-qwen3"


@dataclass(frozen=True)
class CatalogModel:
    id: str
    params: float          # parameters, in billions
    note: str = ""
    backend: str = "any"   # "any", or "mlx" for MLX-converted weights


_QWEN3_SIZES = {"0.6B": 0.6, "1.7B": 1.7, "4B": 4.0, "8B": 8.2, "14B": 14.8, "32B": 32.8,
                "30B-A3B": 30.5}

CATALOG: list[CatalogModel] = (
    [CatalogModel(f"Qwen/Qwen3-{s}", p, Text("model.note.hybrid"))
     for s, p in _QWEN3_SIZES.items()]
    + [CatalogModel("Qwen/Qwen3-4B-Instruct-2507", 4.0, Text("model.note.instruct")),
       CatalogModel("Qwen/Qwen3-4B-Thinking-2507", 4.0, Text("model.note.thinking")),
       CatalogModel("Qwen/Qwen3-30B-A3B-Instruct-2507", 30.5, Text("model.note.moe"))]
    + [CatalogModel(f"unsloth/Qwen3-{s}-unsloth-bnb-4bit", p, Text("model.note.4bit"))
       for s, p in _QWEN3_SIZES.items() if s != "30B-A3B"]
    + [CatalogModel(f"unsloth/Qwen3-{s}-bnb-4bit", p, Text("model.note.4bit"))
       for s, p in _QWEN3_SIZES.items()]
    + [CatalogModel(f"mlx-community/Qwen3-{s}-{q}", p, Text("model.note.mlx", quant=q),
                    backend="mlx")
       for s, p in _QWEN3_SIZES.items() for q in ("4bit", "8bit", "bf16")]
    + [CatalogModel("mlx-community/Qwen3-4B-Instruct-2507-4bit", 4.0,
                    Text("model.note.mlx_instruct"), backend="mlx")]
    + [CatalogModel(DEMO_MODEL_ID, 0.135, Text("model.note.demo")),
       CatalogModel(TINY_QWEN3_ID, 0.004, Text("model.note.tiny"))]
)

# Ids from the original guide that were never published, and the nearest real model.
UNPUBLISHED = {
    "Qwen/Qwen3-4B-Instruct": "Qwen/Qwen3-4B-Instruct-2507",
    "Qwen/Qwen3-0.5B": "Qwen/Qwen3-0.6B",
    "Qwen/Qwen3-7B": "Qwen/Qwen3-8B",
    "Qwen/Qwen3-7B-Instruct": "Qwen/Qwen3-8B",
    "mlx-community/Qwen3-0.5B-Chat-mlx": "mlx-community/Qwen3-0.6B-4bit",
    "mlx-community/Qwen3-4B-Instruct-mlx": "mlx-community/Qwen3-4B-Instruct-2507-4bit",
}


def resolve_model_id(name: str) -> tuple[str, Optional[str]]:
    """The id to load for `name`, and a note when it had to be changed."""
    if name in UNPUBLISHED:
        real = UNPUBLISHED[name]
        return real, f"{name} was never published; using the nearest real model, {real}"
    return name, None


def is_local_model(name: str) -> bool:
    return (Path(name) / "config.json").is_file()


def hub_cache_has(model_id: str) -> bool:
    """Whether a Hub model is already in the local cache (so it loads offline)."""
    cache = Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME", "~/.cache/huggingface")
                 ).expanduser()
    if not os.environ.get("HF_HUB_CACHE"):
        cache = cache / "hub"
    folder = cache / ("models--" + model_id.replace("/", "--")) / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


def default_model() -> str:
    """The smallest catalog model already in the Hub cache, else the bundled demo model, which
    needs no network."""
    cached = [m for m in CATALOG if "/" in m.id and hub_cache_has(m.id)]
    return min(cached, key=lambda m: m.params).id if cached else DEMO_MODEL_ID

