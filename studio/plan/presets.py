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
from studio.texts.message import Text

AUTO = "Auto"
SMALL = 2000      # rows: up to here a dataset is a set of facts or a style to learn by heart


@dataclass(frozen=True)
class Preset:
    fields: dict          # config fields this preset sets; every other field is left alone
    why: str              # what it is for and why these values (a Text: studio.texts)
    label: str = ""       # its name as shown, in either language (a Text; preset_label)


def _said(fields: dict) -> dict:
    """The values a preset's purpose repeats, from its fields, so that the two cannot drift:
    rank, learning rate (as 1e-3), epochs, rows an update, steps."""
    mantissa, exponent = f"{fields['learning_rate']:e}".split("e")
    return dict(rank=fields["lora_r"], epochs=fields["num_train_epochs"],
                rate=f"{float(mantissa):g}e{int(exponent)}",
                rows=fields["batch_size"] * fields["gradient_accumulation_steps"],
                steps=fields["max_steps"])


_TEACH_FACTS = dict(num_train_epochs=3, max_steps=None, lora_r=16, lora_alpha=32,
                    target_modules=list(ALL_LINEAR), learning_rate=1e-3, batch_size=4,
                    gradient_accumulation_steps=1, max_seq_length=512,
                    lr_scheduler_type="linear", warmup_ratio=0.0, logging_steps=5, eval_steps=20,
                    save_steps=50)
_QUICK_TEST = dict(max_steps=30, num_train_epochs=1, logging_steps=1, eval_steps=10,
                   save_steps=10, lora_r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                   batch_size=2, gradient_accumulation_steps=1, max_seq_length=512,
                   learning_rate=2e-4, lr_scheduler_type="linear", warmup_ratio=0.0)
_BALANCED = dict(max_steps=None, num_train_epochs=2, logging_steps=5, eval_steps=50,
                 save_steps=100, lora_r=16, lora_alpha=32,
                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], batch_size=4,
                 gradient_accumulation_steps=4, max_seq_length=1024, learning_rate=2e-4,
                 lr_scheduler_type="linear", warmup_ratio=0.03)
_QUALITY = dict(max_steps=None, num_train_epochs=3, logging_steps=5, eval_steps=50,
                save_steps=100, lora_r=32, lora_alpha=64, target_modules=list(ALL_LINEAR),
                batch_size=4, gradient_accumulation_steps=4, max_seq_length=2048,
                learning_rate=1e-4, lr_scheduler_type="cosine", warmup_ratio=0.05)

PRESETS: dict[str, Preset] = {
    "Teach facts": Preset(_TEACH_FACTS, Text("preset.purpose.teach_facts", **_said(_TEACH_FACTS)),
                          Text("preset.name.teach_facts")),
    "Quick test": Preset(_QUICK_TEST, Text("preset.purpose.quick_test", **_said(_QUICK_TEST)),
                         Text("preset.name.quick_test")),
    "Balanced": Preset(_BALANCED, Text("preset.purpose.balanced", **_said(_BALANCED)),
                       Text("preset.name.balanced")),
    "Quality": Preset(_QUALITY, Text("preset.purpose.quality", **_said(_QUALITY)),
                      Text("preset.name.quality")),
}


def choose_preset(n_rows: Optional[int]) -> tuple[str, str]:
    """The preset for a dataset of n_rows (None: not loaded yet), and a sentence saying why."""
    if n_rows is None:
        return "Teach facts", Text("preset.auto.no_data")
    if n_rows <= SMALL:
        return "Teach facts", Text("preset.auto.small", rows=n_rows)
    return "Balanced", Text("preset.auto.large", rows=n_rows)


def preset_label(name: str) -> str:
    """A preset's name as the page shows it (Auto's too): a Text, said in the reader's language
    with studio.texts.message.localise; a name that is no preset, as it is."""
    if name == AUTO:
        return Text("preset.name.auto")
    return PRESETS[name].label if name in PRESETS else name


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
    return config.replace(**unset), Text("preset.auto.note", name=preset_label(name),
                                         fields=", ".join(unset), why=why)
