"""The run configuration as widgets, generated from FineTuningConfig's field metadata.

Each field gets one component picked by its type (WIDGETS), labelled with its name and with its
help as the info line (in Chinese, a few words before the name: studio/ui/i18n.py), so the form,
the YAML file and the CLI flags always name a setting alike.
`ConfigForm` keeps the components in field order: `to_config(*values)` turns the widget values
into a FineTuningConfig and `values(config)` turns a config back into widget values (presets,
YAML, a past run). No field is listed here by hand; a tab may draw a field its own way (the model
picker, the column-mapping dropdowns) and hand the component over with `adopt`.
"""
from __future__ import annotations

import math
import shlex
import warnings
from dataclasses import fields
from typing import Any, Callable, Iterable

import gradio as gr

from studio.config import FineTuningConfig, field_kind, flag_names, zero_means_automatic
from studio.ui.i18n import T, field_info, field_label

FIELDS = {f.name: f for f in fields(FineTuningConfig)}
TRISTATE = {"auto": None, "on": True, "off": False}


def _step(value) -> float:
    return 10 ** math.floor(math.log10(abs(value))) if value else 0.01


# name-to-factory: the component for each kind of field
WIDGETS: dict[str, Callable[[str, Any], Any]] = {
    "bool": lambda n, v: gr.Checkbox(value=bool(v), label=field_label(n), info=field_info(n)),
    "tristate": lambda n, v: gr.Radio([(T(f"choice.{c}"), c) for c in TRISTATE],
                                      value=_tristate(v), label=field_label(n), info=field_info(n)),
    "choice": lambda n, v: gr.Dropdown(_choices(n), value=v, label=field_label(n),
                                       info=field_info(n)),
    "int": lambda n, v: gr.Number(value=v, label=field_label(n), info=field_info(n), precision=0),
    "float": lambda n, v: gr.Number(value=v, label=field_label(n), info=field_info(n),
                                    step=_step(v)),
    "text": lambda n, v: gr.Textbox(value=v or "", label=field_label(n), info=field_info(n),
                                    max_lines=8),
    "list": lambda n, v: gr.Dropdown(FIELDS[n].metadata["suggestions"], value=list(v or []),
                                     label=field_label(n), info=field_info(n), multiselect=True,
                                     allow_custom_value=True)
    if FIELDS[n].metadata.get("suggestions") else   # a free list (prompts): one a line
    gr.Textbox(value="\n".join(v or []), label=field_label(n), info=field_info(n), lines=3,
               max_lines=12),
    "dict": lambda n, v: gr.State(dict(v or {})),
}


def _choices(name: str) -> list:
    """A choice field's values; the few words among them (auto, keep, drop) are translated."""
    return [(T(f"choice.{c}"), c) if c in ("auto", "keep", "drop") else c
            for c in FIELDS[name].metadata["choices"]]


def _tristate(value) -> str:
    return next(k for k, v in TRISTATE.items() if v is value)


def _from_widget(name: str, value):
    """A widget's value as the config field wants it."""
    kind = field_kind(name)
    optional = FIELDS[name].default is None      # may be left to the studio
    if kind == "tristate":
        return TRISTATE.get(value or "auto")
    if kind == "bool":
        return bool(value)
    if kind in ("int", "float"):
        if value is None or value == "" or (value == 0 and zero_means_automatic(name)):
            return None if optional else FIELDS[name].default
        return int(round(float(value))) if kind == "int" else float(value)
    if kind == "text":
        value = (value or "").strip()
        return value or (None if optional else FIELDS[name].default)
    if kind == "list":
        lines = value.splitlines() if isinstance(value, str) else (value or [])
        return [str(v).strip() for v in lines if str(v).strip()]
    if kind == "dict":
        return {k: v for k, v in (value or {}).items() if v}
    return value


def _to_widget(name: str, value):
    kind = field_kind(name)
    if kind == "tristate":
        return _tristate(value)
    if kind == "text":
        return value or ""
    if kind == "list":
        return list(value or []) if FIELDS[name].metadata.get("suggestions") else \
            "\n".join(value or [])
    if kind == "dict":
        return dict(value or {})
    if value is None and zero_means_automatic(name):
        return 0
    return value


class ConfigForm:
    """One component per FineTuningConfig field, drawn across the tabs, read back in order."""

    def __init__(self, defaults: FineTuningConfig):
        self.defaults = defaults
        self.widgets: dict[str, Any] = {}

    # ---- drawing
    def render(self, names: Iterable[str], **style) -> list:
        """Draw the default widget of each named field here (inside the current layout)."""
        out = []
        for name in names:
            widget = WIDGETS[field_kind(name)](name, getattr(self.defaults, name))
            if not isinstance(widget, gr.State):
                for key, value in {"elem_id": f"field-{name}", **style}.items():
                    setattr(widget, key, value)
            self.widgets[name] = widget
            out.append(widget)
        return out

    def render_group(self, group: str, **style) -> list:
        """Draw every field of `group` that no tab has drawn yet, in declaration order."""
        names = [n for n, f in FIELDS.items() if f.metadata["group"] == group
                 and n not in self.widgets]
        return self.render(names, **style)

    def adopt(self, name: str, component) -> None:
        """A tab drew this field its own way; read it like the others."""
        assert name in FIELDS, name
        self.widgets[name] = component

    # ---- reading and writing
    @property
    def inputs(self) -> list:
        missing = [n for n in FIELDS if n not in self.widgets]
        assert not missing, f"config fields without a widget: {missing}"
        return [self.widgets[n] for n in FIELDS]

    @property
    def triggers(self) -> list:
        """The change events of every visible widget (for live summaries)."""
        return [w.change for w in self.inputs if not isinstance(w, gr.State)]

    def to_config(self, *values) -> tuple[FineTuningConfig, list[str]]:
        """The config the widgets describe, and the notes it made (e.g. a resolved model id)."""
        kwargs = {name: _from_widget(name, v) for name, v in zip(FIELDS, values)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config = FineTuningConfig.from_dict(kwargs)
        return config, [w.message.args[0] if w.message.args else str(w.message) for w in caught]

    def values(self, config: FineTuningConfig) -> list:
        return [_to_widget(n, getattr(config, n)) for n in FIELDS]


# ---------------------------------------------------------------------------- command line
def command_line(config: FineTuningConfig, output_dir: str | None = None) -> str:
    """The `python -m studio train` command that runs this config (flags for non-defaults)."""
    base = FineTuningConfig(model_name=config.model_name)
    parts = ["python -m studio train"]
    config = config.replace(output_dir=output_dir or config.output_dir)
    for name in FIELDS:
        value = getattr(config, name)
        if value == getattr(base, name) and name != "model_name":
            continue
        flag = flag_names(name)[0]
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        elif value is None:
            continue      # back to automatic: the CLI default already is
        elif isinstance(value, list):
            parts.append(f"{flag} " + " ".join(shlex.quote(str(v)) for v in value))
        elif isinstance(value, dict):
            if value:
                parts.append(f"{flag} " + " ".join(shlex.quote(f"{k}={v}")
                                                   for k, v in value.items()))
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " \\\n  ".join(parts)
