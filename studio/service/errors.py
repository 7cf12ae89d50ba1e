"""What the service answers when it will not do what it was asked."""


class Refused(RuntimeError):
    """A run that must not start, or a path the page may not touch. `problems` names each
    reason with its fix; the message joins them on one line, as the command line prints it
    (one problem is the message itself, so a Text in it is still said in Chinese)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(self.problems[0] if len(self.problems) == 1 else
                         "; ".join(self.problems))
