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


def test_a_message_read_back_from_a_run_file_is_said_in_chinese():
    """Run files keep the English; the page recognises a catalog line and its values (a nested
    message too) and says them in Chinese. A line no template wrote stays as it is."""
    from studio.texts.stored import read_back

    written = str(Text("run.backend", why=Text("backend.why.fallback",
                                                 unsloth=Text("backend.unsloth.no_cuda"),
                                                 mlx=Text("backend.mlx.apple_only"))))
    said = localise(read_back(written), "zh")
    assert said == Text("run.backend", why=Text(
        "backend.why.fallback", unsloth=Text("backend.unsloth.no_cuda"),
        mlx=Text("backend.mlx.apple_only"))).in_language("zh")
    assert "needs an NVIDIA" not in said and CJK.search(said)
    assert localise(read_back("trained 12 steps"), "zh") == "训练了 12 步"
    assert localise(read_back("CUDA error: device-side assert"), "zh") == \
        "CUDA error: device-side assert"
    # every template with words of its own comes back as itself, said in Chinese
    wrong = []
    for key, (en, _) in CATALOG.items():
        parsed = list(string.Formatter().parse(en))
        if any(spec for *_, spec, _ in parsed) or not re.search("[a-z]", "".join(
                literal for literal, *_ in parsed)):
            continue     # a number's format (read back already formatted), or no words
        values = {name: f"<{name}>" for name in placeholders(en)}
        if localise(read_back(str(Text(key, **values))), "zh") != \
                Text(key, **values).in_language("zh"):
            wrong.append(key)
    assert not wrong, wrong
