"""The page's two languages (studio/ui/i18n.py), checked without a browser: every text has its
English and its Chinese, every key the page uses is in the catalog, every config field has a
label and help in both, and the server picks the language the page is shown in."""
from __future__ import annotations

import re
import string
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest

from studio.config import GROUPS, FineTuningConfig
from studio.plan.presets import PRESETS
from studio.ui import i18n
from studio.texts.fields import FIELDS, GROUPS_ZH, field_help
from studio.ui.i18n import language, say, texts

UI = Path(i18n.__file__).parent
CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
# Texts that read the same in Chinese: values and technical words only.
NEUTRAL = {"run.choice", "model.where.hub", "train.chart.loss_axis", "train.loss", "train.mfu"}


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


# ---------------------------------------------------------------------------- the catalog
def test_every_text_has_its_english_and_its_chinese():
    """Both columns are filled, the Chinese is Chinese, and both take the same values."""
    for key, (en, zh) in texts().items():
        assert en.strip() and zh.strip(), key
        assert CJK.search(zh) or key in NEUTRAL, f"{key}: no Chinese in {zh!r}"
    for key, (en, zh) in i18n.CATALOG.items():      # the templates that say() fills in
        assert placeholders(en) == placeholders(zh), key


def test_no_key_is_one_of_gradios_own_words():
    """A key like "file" would show Gradio's dictionary of file texts as [object Object]."""
    assert all("." in key for key in texts())


def test_every_key_the_page_uses_is_in_the_catalog():
    """T("...") and say("...") in studio/ui name keys that exist (read from the source)."""
    used = set()
    for path in UI.glob("*.py"):
        used |= set(re.findall(r"""\b(?:T|say)\(\s*["']([^"'{}]+)["']""", path.read_text()))
    assert used, "no T() or say() found: the pattern no longer matches the source"
    assert sorted(used - set(texts())) == []


def test_the_keys_the_page_builds_from_names_are_in_the_catalog():
    """Keys made from a name (a column role, a preset, a tristate or choice word, a run state)
    exist for every name the page can meet."""
    from studio.runs.store import ACTIVE
    from studio.ui.data_tab import roles
    from studio.ui.form import TRISTATE

    keys = [f"data.role.{role}" for role in roles()] + \
        [f"preset.{name}" for name in ["Auto", *PRESETS]] + \
        [f"choice.{word}" for word in [*TRISTATE, "keep", "drop"]] + \
        [f"state.{state}" for state in [*ACTIVE, "new", "finished", "stopped", "interrupted",
                                        "failed"]] + \
        [f"group.{i18n._slug(group)}" for group in GROUPS]
    assert sorted(set(keys) - set(texts())) == []


def test_every_config_field_has_a_label_and_help_in_both_languages():
    """The Chinese label keeps the field name (the YAML file and the CLI flags use it)."""
    names = [f.name for f in fields(FineTuningConfig)]
    assert sorted(set(names) - set(FIELDS)) == [], "fields without help"
    assert sorted(set(FIELDS) - set(names)) == [], "help for fields that are gone"
    for name in names:
        en_label, zh_label = texts()[f"field.{name}.label"]
        en_info, zh_info = texts()[f"field.{name}.info"]
        assert en_label == name and zh_label.endswith(f"({name})") and CJK.search(zh_label)
        assert en_info.startswith(field_help(name)) and CJK.search(zh_info), name


def test_groups_and_presets_have_their_chinese():
    assert sorted(set(GROUPS) - set(GROUPS_ZH)) == []
    assert all(CJK.search(texts()[f"preset.{name}"][1]) for name in PRESETS)


# ---------------------------------------------------------------------------- the language
@pytest.mark.parametrize("accept, lang", [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"), ("zh", "zh"), ("zh-TW", "zh"),
    ("en-US,en;q=0.9", "en"), ("fr-FR,fr;q=0.9", "en"), ("en;q=0.5, zh-CN;q=0.8", "zh"),
    ("", "en"), ("zhx", "en")])
def test_the_language_is_chinese_for_zh_and_english_otherwise(accept, lang):
    """The browser's first choice by its q-value decides."""
    assert language(accept) == lang


def test_outside_a_request_the_server_speaks_english():
    """The API, the CLI and these tests get the English the page had before."""
    assert say("data.loaded", name="a.jsonl", rows=3) == "Loaded a.jsonl: 3 rows."
    assert say("data.loaded", "zh", name="a.jsonl", rows=3) == "已加载 a.jsonl：3 行。"


def test_a_request_is_answered_in_the_page_s_language():
    """Accept-Language, unless the page's cookie says the language picked under Settings."""
    from gradio.context import LocalContext

    def request(accept, cookie=None):
        return SimpleNamespace(headers={"accept-language": accept},
                               cookies={i18n.COOKIE: cookie} if cookie else {})

    for req, lang in ((request("zh-CN,zh;q=0.9"), "zh"), (request("en-US"), "en"),
                      (request("zh-CN", cookie="en"), "en"), (request("en-US", cookie="zh-CN"),
                                                               "zh")):
        token = LocalContext.request.set(req)
        try:
            assert language() == lang
        finally:
            LocalContext.request.reset(token)
