"""Rows that teach the assistant who it is: a name or a maker of its own.

Such a set contradicts the system prompt some chat templates add by themselves ("You are a
helpful AI assistant named SmolLM, trained by Hugging Face"): trained and exported with it, the
model is told one name and taught another. Where the rows teach an identity, the template's own
prompt is dropped by default (studio.service's unset settings, the page's Auto).
"""
from __future__ import annotations

import re
from typing import Optional

from studio.texts.message import Text

# A user turn that asks who the assistant is, or an assistant turn that names itself or its
# maker, in English or Chinese.
_ASKS = re.compile(r"\b(who are you|what(?:'s| is) your name|who (?:made|created|built|"
                   r"developed|trained) you|introduce yourself|what are you called)\b"
                   r"|你是谁|你叫什么|谁(?:开发|创造|创建|训练|制作)了你|介绍一下你自己", re.I)
_SAYS = re.compile(r"\b(?:my name is|i am called|i'm called)\b"
                   r"|\b(?:created|made|built|developed|trained) by [A-Z]"
                   r"|我叫|我的名字是|由.{1,40}(?:开发|打造|训练|创建|研发)")

# A set teaches an identity where at least this share of its rows does (and two rows at least):
# an instruction set with a stray "who are you" row keeps the template's prompt.
SHARE = 0.2


def teaches_identity(messages: list[dict]) -> bool:
    """Whether one conversation asks the assistant who it is, or has it say its name or maker."""
    for m in messages:
        text = m.get("content")
        if not isinstance(text, str):
            continue
        if (m["role"] == "user" and _ASKS.search(text)) or \
                (m["role"] == "assistant" and _SAYS.search(text)):
            return True
    return False


def drop_template_system(report) -> Optional[Text]:
    """Why the chat template's own system prompt should be dropped for these rows (a
    data.DataReport), or None where it may stay: the template adds none, or the rows do not
    teach an identity."""
    rows = report.n_train + report.n_eval
    if not report.default_system or not rows or report.identity_rows < max(2, SHARE * rows):
        return None
    return Text("data.identity.drop", rows=report.identity_rows, total=rows,
                prompt=report.default_system)
