"""What the service answers when it will not do what it was asked."""


class Refused(RuntimeError):
    """A run that must not start, or a path the page may not touch. `problems` names each
    reason with its fix; the message joins them on one line, as the command line prints it
    (one problem is the message itself, so a Text in it is still said in Chinese)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(self.problems[0] if len(self.problems) == 1 else
                         "; ".join(self.problems))


def reason(e: BaseException) -> str:
    """An error's message as it was given: a Text (studio.texts) stays one, so wrapping another
    error's message keeps its Chinese; str(e) where it was not one message."""
    return e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
