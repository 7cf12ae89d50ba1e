"""A message kept as its catalog key and values until a reader's language is known."""
from __future__ import annotations

from studio.texts.catalog import CATALOG, LANGUAGES


class Text(str):
    """An engine message: its English as the string itself, its key and values kept so that
    `in_language` can say it in Chinese. A value that is itself a Text (a file's problem inside
    "name: problem") is said in the same language. An unknown key fails where it is written."""

    key: str
    values: dict

    def __new__(cls, key: str, **values) -> "Text":
        text = super().__new__(cls, _fill(CATALOG[key][0], values, "en"))
        text.key, text.values = key, values
        return text

    def in_language(self, lang: str) -> str:
        if lang == "en":
            return str(self)
        return _fill(CATALOG[self.key][LANGUAGES.index(lang)], self.values, lang)

    def __reduce__(self):      # pickled across processes as key and values, not as English
        return _rebuild, (self.key, self.values)


def _rebuild(key: str, values: dict) -> Text:
    return Text(key, **values)


def _fill(template: str, values: dict, lang: str) -> str:
    return template.format(**{k: localise(v, lang) for k, v in values.items()})


def message_of(error: BaseException):
    """An exception's message as it was raised: the Text it carries (so wrapping it in another
    message keeps its Chinese), else its words as str() gives them."""
    said = error.args[0] if len(error.args) == 1 else None
    return said if isinstance(said, Text) and str(error) == said else str(error)


def localise(message, lang: str):
    """`message` in `lang` where it is a Text; any other value as it is."""
    return message.in_language(lang) if isinstance(message, Text) else message
