"""Whether a model prefers the chosen answer of held-out preference pairs, and by how much.

A pair counts as preferred where the chosen answer's mean log-probability per token, after its
prompt as the chat template renders it, is above the rejected answer's (the mean, not the sum,
so a longer answer is not marked down for its length). The margin is the mean difference. The
base model and the tuned one are scored alike, so the two numbers say what tuning changed.
"""
from __future__ import annotations

from dataclasses import dataclass

from studio.inference import LoadedModel


@dataclass
class PreferenceScores:
    pairs: int
    accuracy: float       # share of pairs whose chosen answer the model finds likelier
    margin: float         # mean (chosen - rejected) log-probability per token


def answer_logprob(loaded: LoadedModel, prompt: list[dict], answer: list[dict],
                   options: dict) -> float:
    """The mean log-probability per token of `answer` (one assistant turn) after `prompt`."""
    import torch

    tokenizer, model = loaded.tokenizer, loaded.model
    before = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, **options)["input_ids"]
    whole = tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=True,
                                          **options)["input_ids"]
    start = next((i for i, (a, b) in enumerate(zip(before, whole)) if a != b),
                 min(len(before), len(whole)))
    ids = torch.tensor([whole], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, start - 1:-1].float()
    picked = torch.log_softmax(logits, -1).gather(-1, ids[0, start:, None])
    return picked.mean().item()


def preference_scores(loaded: LoadedModel, pairs) -> PreferenceScores:
    """`pairs`: rows with prompt, chosen and rejected turns (studio.data.preferences' rows)."""
    margins = []
    for row in pairs:
        options = row.get("chat_template_kwargs") or {}
        margins.append(answer_logprob(loaded, row["prompt"], row["chosen"], options)
                       - answer_logprob(loaded, row["prompt"], row["rejected"], options))
    n = len(margins)
    return PreferenceScores(n, sum(m > 0 for m in margins) / n if n else 0.0,
                            sum(margins) / n if n else 0.0)
