"""Data errors and data advice: what is wrong with a file or its rows, and the fix."""

MESSAGES: dict[str, tuple[str, str]] = {
}
