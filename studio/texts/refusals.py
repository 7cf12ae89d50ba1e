"""Refusals: a run, an action or a path the studio will not take, each with what to do instead."""

MESSAGES: dict[str, tuple[str, str]] = {
}
