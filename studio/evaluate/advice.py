"""What to change after a run that did not learn, from what it shows: its validation losses,
and the answers it gave, at its evaluations (samples) and in a held-out evaluation.

The Train tab and `python -m studio train` both print this, so they say the same thing.
"""
from __future__ import annotations

from typing import Optional

from studio.evaluate.evaluation import gives_reference
from studio.plan.presets import ALL_LINEAR, PRESETS, SMALL, preset_label
from studio.texts.message import Text


def advice_after(config, events, report=None) -> Optional[Text]:
    """What to change when a finished run's validation loss says it did not learn (or learnt
    the training rows by heart past the point of use); None when it looks fine, when the
    answers it gave say its references anyway, or when it had no validation split. `events`
    are the run's (studio.runs.events.Event); `report` its newest EvalReport, if any. The
    advice is one Text: English as a str, said in Chinese with studio.texts.message.localise."""
    numbers = lambda kind, key: [e.data[key] for e in events if e.kind == kind   # noqa: E731
                                 and isinstance(e.data.get(key), (int, float))]
    eval_losses, train_losses = numbers("eval", "eval_loss"), numbers("train", "loss")
    n_train = next(iter(numbers("status", "n_train")), 0)
    first_loss = train_losses[0] if train_losses else None
    if not eval_losses:
        return None
    last, best = eval_losses[-1], min(eval_losses)
    if len(eval_losses) >= 3 and last > 1.15 * best:
        return Text("advice.overfit", best=best, last=last)
    small = n_train <= SMALL
    high = last > 0.5 if small else first_loss is not None and last > 0.9 * first_loss
    if not high:
        return None
    answers = last_answers(events, report)
    said = sum(gives_reference(answer, reference) for answer, reference in answers)
    if answers and 2 * said >= len(answers):
        return None     # the loss also counts wording that varies; the answers say it
    tips = _tips(config, small)
    what = Text("advice.not_stuck") if small else Text("advice.barely_moved")
    shown = Text("advice.answers_said", said=said, answers=len(answers)) if answers else ""
    preset = Text("advice.teach_preset", preset=preset_label("Teach facts")) \
        if small and _not_teach_facts(config) else ""
    return Text("advice.still_high", last=last, shown=shown, what=what,
                tips=_joined(tips) if tips else Text("advice.tip.more_epochs"), preset=preset)


def last_answers(events, report=None) -> list[tuple[str, str]]:
    """(answer, reference) pairs: the samples of the run's last evaluation that have a
    reference, and the fine-tuned model's answers in its held-out evaluation report."""
    samples = [e for e in events if e.kind == "sample" and e.data.get("reference")]
    last = max((e.step for e in samples), default=None)
    out = [(str(e.data.get("answer", "")), e.data["reference"]) for e in samples
           if e.step == last]
    if report is not None:
        out += [(p.tuned.text, p.reference) for p in report.prompts if p.reference]
    return out


def _tips(config, small: bool) -> list[Text]:
    tips = []
    if config.learning_rate < 5e-4 and small:
        tips.append(Text("advice.tip.learning_rate", now=config.learning_rate))
    if set(config.target_modules) != set(ALL_LINEAR):
        tips.append(Text("advice.tip.all_linear"))
    if config.max_steps:
        tips.append(Text("advice.tip.more_steps", steps=config.max_steps))
    elif config.num_train_epochs < 5:
        tips.append(Text("advice.tip.epochs", now=config.num_train_epochs,
                         then=min(5, config.num_train_epochs + 2)))
    if config.lora_r < 16:
        tips.append(Text("advice.tip.lora_r", now=config.lora_r))
    return tips


def _not_teach_facts(config) -> bool:
    """Whether the run's recipe is not Teach facts' (layers in any order), so that naming the
    preset would change something."""
    teach = PRESETS["Teach facts"].fields
    return (config.learning_rate != teach["learning_rate"] or config.lora_r != teach["lora_r"]
            or set(config.target_modules) != set(teach["target_modules"]))


def _joined(tips: list[Text]) -> Text:
    """The tips as one Text, "a; b; c" (in Chinese with its own semicolons)."""
    out = tips[0]
    for tip in tips[1:]:
        out = Text("advice.tips.and", first=out, next=tip)
    return out
