"""The engine's message catalog (studio/texts): every message in both languages with the same
values, every key the code writes present, and a message said again in Chinese where it is shown."""
from __future__ import annotations

import ast
import pickle
import re
import string
from pathlib import Path

from studio.texts.catalog import CATALOG
from studio.texts.message import Text, localise

ROOT = Path(__file__).resolve().parents[1]
CJK = re.compile(r"[\u4e00-\u9fff]")


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_message_has_both_languages_with_the_same_values():
    wrong = [key for key, (en, zh) in CATALOG.items()
             if not en or not CJK.search(zh) or placeholders(en) != placeholders(zh)]
    assert not wrong, wrong


def test_every_key_the_code_writes_is_in_the_catalog():
    """A key is checked where it is written, so a message on a path no test takes still exists."""
    written = set()
    for path in [*ROOT.glob("studio/**/*.py"), *ROOT.glob("backends/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Text"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                written.add((node.args[0].value, path.relative_to(ROOT).as_posix()))
    missing = sorted(f"{key} ({where})" for key, where in written if key not in CATALOG)
    assert not missing, missing
    unused = set(CATALOG) - {key for key, _ in written}
    assert not unused, f"catalog keys no code writes: {sorted(unused)}"


def test_a_message_is_english_text_and_says_itself_again_in_chinese():
    key = next(k for k, (en, _) in CATALOG.items() if placeholders(en))
    values = {name: "x" for name in placeholders(CATALOG[key][0])}
    message = Text(key, **values)
    assert message == CATALOG[key][0].format(**values) and isinstance(message, str)
    assert CJK.search(localise(message, "zh")) and localise(message, "en") == message
    again = pickle.loads(pickle.dumps(message))      # across processes: still a Text
    assert again.in_language("zh") == message.in_language("zh")
    assert localise("plain words", "zh") == "plain words"
