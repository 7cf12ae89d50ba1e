"""Messages read back from a run's files, said again in the reader's language.

A run's files (status.json, metrics.jsonl, plan.yaml) keep the engine's English, so the command
line, a script and another tool read plain text. The page reads them back and, where a line is
one the catalog wrote, recognises its key and values from the English template and says it in
Chinese; a line no template matches (a library's own error) stays as it was written.
"""
from __future__ import annotations

import functools
import re
from string import Formatter

from studio.texts.catalog import CATALOG, LANGUAGES
from studio.texts.message import Text, localise


@functools.cache
def _patterns() -> list[tuple[re.Pattern, str]]:
    """(pattern of an English template, its key) for every template with words of its own
    ("{reason}" or "{a}; {b}" would match lines that are no such message)."""
    out = []
    for key, (english, _) in CATALOG.items():
        parts, seen = [], set()
        for literal, name, _, _ in Formatter().parse(english):
            parts.append(re.escape(literal))
            if name is not None:
                parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>.+?)")
                seen.add(name)
        if re.search(r"[^\W\d_]", "".join(lit for lit, *_ in Formatter().parse(english))):
            out.append((re.compile("".join(parts), re.DOTALL), key))
    return out


def _bare(template: str) -> str:
    """The template with its fields' format specs taken off: the values read back are already
    formatted strings."""
    out = []
    for literal, name, _, _ in Formatter().parse(template):
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is not None:
            out.append("{" + name + "}")
    return "".join(out)


class Recognised(Text):
    """A Text rebuilt from its English; its values are the strings the English held."""

    def __new__(cls, english: str, key: str, values: dict) -> "Recognised":
        text = str.__new__(cls, english)
        text.key, text.values = key, values
        return text

    def in_language(self, lang: str) -> str:
        if lang == "en":
            return str(self)
        template = _bare(CATALOG[self.key][LANGUAGES.index(lang)])
        return template.format(**{k: localise(v, lang) for k, v in self.values.items()})


def read_back(english):
    """`english` as the catalog message it was written as (a Text), its values read back the
    same way; any other value as it is. Where several templates fit, the one whose own words
    cover most of the line wins."""
    if not isinstance(english, str) or isinstance(english, Text) or not english:
        return english
    fits = [(sum(map(len, m.groupdict().values())), key, m)
            for pattern, key in _patterns() if (m := pattern.fullmatch(english))]
    if not fits:
        return english
    _, key, m = min(fits, key=lambda fit: fit[0])
    return Recognised(english, key, {k: read_back(v) for k, v in m.groupdict().items()})
