"""Text put into Markdown that people open (the page's notes, a run's EXPORT.md): names and
commands set in code, where no character of theirs is read as markup."""
from __future__ import annotations

import re


def code(text) -> str:
    """`text` as a Markdown code span that no backtick inside can end early (the fence is
    longer than any run of backticks in it) and no newline can break."""
    text = " ".join(str(text).split("\n")).replace("\r", " ")
    fence = "`" * (_longest_backticks(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or fence != "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def fenced(text: str, language: str = "") -> str:
    """`text` as a Markdown code block whose fence no line of it can close."""
    fence = "`" * max(3, _longest_backticks(text) + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def _longest_backticks(text: str) -> int:
    return max((len(r) for r in re.findall(r"`+", text)), default=0)
