"""Preference pairs for DPO: each row a prompt, the answer to prefer and the one to avoid.

The rows are read and their shape found as for supervised runs (studio.data.shapes'
"preference" shape: prompt/chosen/rejected columns, chosen/rejected conversations, a history
with a chosen and a rejected turn). Each pair goes to trl's DPOTrainer as a conversation, so the
model's chat template renders it as it renders the chat; the system turn is system_choice's,
as in supervised runs and the chat, and thinking is passed to the template. Pairs that cannot teach a
preference (an empty side, both sides the same) are dropped and counted.
"""
from __future__ import annotations

import random
from collections import Counter

import datasets

from studio.data.errors import DataError
from studio.data.prepared import DataReport, PreparedData, dtype_name, eval_count, iter_rows
from studio.data.shapes import DetectedFormat
from studio.data.templates import setting_or, system_choice
from studio.texts.message import Text, message_of

EMPTY_SIDE = Text("data.problem.empty_side")
SAME_SIDES = Text("data.problem.same_sides")
_EXAMPLES_KEPT = 5


def prepare_pairs(ds: datasets.Dataset, name, fmt: DetectedFormat, tokenizer,
                  config) -> PreparedData:
    """The pairs as trl's conversational preference rows (prompt, chosen, rejected), split,
    with their report; DataError where the file holds no pairs or none is left."""
    if fmt.name != "preference":
        raise DataError(Text("data.in_file", name=name, problem=Text("data.not_pairs",
                                                                     shape=fmt.name)))
    system = setting_or(config, "system_prompt", None)
    keep_or_drop = setting_or(config, "template_system_prompt", "keep")
    options = {"enable_thinking": bool(setting_or(config, "enable_thinking", False))}
    limit = setting_or(config, "max_seq_length", 2048)
    notes, examples, kept, lengths = Counter(), {}, [], []
    for i, row in enumerate(iter_rows(ds)):
        try:
            prompt, chosen, rejected = fmt.shape.pair(row, fmt, Counter())
        except (DataError, ValueError, TypeError, KeyError) as e:
            raise DataError(Text("data.in_file", name=name, problem=Text(
                "data.row_problem", row=i, problem=message_of(e)))) from None
        problem = EMPTY_SIDE if not (prompt and chosen.strip() and rejected.strip()) else \
            SAME_SIDES if chosen.strip() == rejected.strip() else None
        if problem:
            notes[problem] += 1
            seen = examples.setdefault(problem, [])
            if len(seen) < _EXAMPLES_KEPT:
                seen.append(i)
            continue
        prompt = system_choice(tokenizer, prompt, system, keep_or_drop)
        kept.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}],
                     "chat_template_kwargs": options})
        lengths.append(len(tokenizer.apply_chat_template(
            prompt + kept[-1]["chosen"], tokenize=True, return_dict=True, **options)["input_ids"]))
    if not kept:
        raise DataError(Text("data.in_file", name=name, problem=Text("data.no_pairs_left")))
    n_eval = eval_count(len(kept), setting_or(config, "val_size", 0.0))
    held = set(random.Random(setting_or(config, "seed", 42)).sample(range(len(kept)), n_eval))
    train = datasets.Dataset.from_list([r for i, r in enumerate(kept) if i not in held])
    evals = datasets.Dataset.from_list([r for i, r in enumerate(kept) if i in held]) \
        if n_eval else None
    report = DataReport(
        n_rows=len(ds), columns=list(ds.column_names),
        dtypes={c: dtype_name(f) for c, f in ds.features.items()}, format=fmt, lengths=lengths,
        n_truncated=sum(n > limit for n in lengths), n_train=len(train), n_eval=n_eval,
        problems=dict(notes), examples_of_problems=examples)
    return PreparedData(train, evals, report, fmt)
