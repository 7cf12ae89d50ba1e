"""Notes the studio says once about what it changed on the user's behalf."""


class Note(UserWarning):
    """Something the studio changed on the user's behalf and says once (e.g. a resolved id)."""
