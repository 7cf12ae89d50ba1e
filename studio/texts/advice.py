"""Advice after a run, the presets' reasons and the plan's notes."""

MESSAGES: dict[str, tuple[str, str]] = {
}
