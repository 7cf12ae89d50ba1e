"""What counts as the user's mistake (shown as one line) rather than a bug (a traceback)."""


class Note(UserWarning):
    """Something the studio changed on the user's behalf and says once (e.g. a resolved id)."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already tells the user what to fix."""
    from backends import BackendError
    from studio.api import TrainingError
    from studio.config import ConfigError
    from studio.data import DataError
    from studio.models import ModelError
    from studio.runs import RunError

    return (ConfigError, DataError, RunError, BackendError, ModelError, TrainingError,
            FileNotFoundError, OSError)
