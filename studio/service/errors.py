"""What the service answers when it will not do what it was asked."""


class Refused(RuntimeError):
    """A run that must not start, or a path the page may not touch. `problems` names each
    reason with its fix; the message joins them on one line, as the command line prints it."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))
