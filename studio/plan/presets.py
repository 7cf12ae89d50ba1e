"""Presets: named sets of settings for what people fine-tune for, and the one picked by itself
from the dataset's size.

The page's preset picker, `python -m studio train --preset`, the settings a run leaves unset
and the advice after a run (studio.evaluate.advice) all read this module, so each says the same thing
about why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from studio.models.shapes import LINEAR_LAYERS as ALL_LINEAR
AUTO = "Auto"
SMALL = 2000      # rows: up to here a dataset is a set of facts or a style to learn by heart


@dataclass(frozen=True)
class Preset:
    fields: dict          # config fields this preset sets; every other field is left alone
    why: str              # what it is for and why these values


PRESETS: dict[str, Preset] = {
    "Teach facts": Preset(
        dict(num_train_epochs=3, max_steps=None, lora_r=16, lora_alpha=32,
             target_modules=list(ALL_LINEAR), learning_rate=1e-3, batch_size=4,
             gradient_accumulation_steps=1, max_seq_length=512, lr_scheduler_type="linear",
             warmup_ratio=0.0, logging_steps=5, eval_steps=20, save_steps=50),
        "LoRA on all seven linear layers (rank 16) at learning rate 1e-3 for 3 epochs, 4 rows a "
        "step: a few hundred question/answer rows (a name, a maker, product facts) stick. On "
        "the bundled demo model, 100 identity rows are enough: the model then answers with "
        "them."),
    "Quick test": Preset(
        dict(max_steps=30, num_train_epochs=1, logging_steps=1, eval_steps=10, save_steps=10,
             lora_r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], batch_size=2,
             gradient_accumulation_steps=1, max_seq_length=512, learning_rate=2e-4,
             lr_scheduler_type="linear", warmup_ratio=0.0),
        "30 steps of a small adapter (q and v only, learning rate 2e-4): checks that the data, "
        "the model and this machine work together in a minute or two. Too little to teach."),
    "Balanced": Preset(
        dict(max_steps=None, num_train_epochs=2, logging_steps=5, eval_steps=50,
             save_steps=100, lora_r=16, lora_alpha=32,
             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], batch_size=4,
             gradient_accumulation_steps=4, max_seq_length=1024, learning_rate=2e-4,
             lr_scheduler_type="linear", warmup_ratio=0.03),
        "2 epochs of rank-16 LoRA on the attention layers at learning rate 2e-4, 16 rows an "
        "update: the usual recipe for a few thousand rows of instructions or a chat style."),
    "Quality": Preset(
        dict(max_steps=None, num_train_epochs=3, logging_steps=5, eval_steps=50,
             save_steps=100, lora_r=32, lora_alpha=64, target_modules=list(ALL_LINEAR),
             batch_size=4, gradient_accumulation_steps=4, max_seq_length=2048,
             learning_rate=1e-4, lr_scheduler_type="cosine", warmup_ratio=0.05),
        "3 epochs of rank-32 LoRA on all linear layers at learning rate 1e-4 with a cosine "
        "schedule: slower, for large datasets where every point of quality counts."),
}


def choose_preset(n_rows: Optional[int]) -> tuple[str, str]:
    """The preset for a dataset of n_rows (None: not loaded yet), and a sentence saying why."""
    if n_rows is None:
        return "Teach facts", ("no dataset yet: first fine-tunes are mostly a few hundred rows "
                               "of facts, which this teaches")
    if n_rows <= SMALL:
        return "Teach facts", (f"{n_rows} rows is a small set: it is learnt by heart in a few "
                               "epochs at a high learning rate")
    return "Balanced", (f"{n_rows} rows is a large set: two epochs at the usual learning rate "
                        "learn its style without wearing off what the model knew")


def apply_preset(config, name: str):
    return config.replace(**PRESETS[name].fields)


def fill_unset(config, n_rows: Optional[int]):
    """The config with the preset Auto picks for n_rows rows filling every field of it that the
    config's maker left unset (the page's Auto, for the command line and Python), and a note
    saying which preset and why; None where the maker set them all."""
    name, why = choose_preset(n_rows)
    unset = {k: v for k, v in PRESETS[name].fields.items() if k not in config.given}
    if not unset:
        return config, None
    return config.replace(**unset), (f"preset auto -> {name} for the settings not given "
                                     f"({', '.join(unset)}): {why}")
