"""The one error of the data package, in a module of its own so every other module can raise it."""


class DataError(ValueError):
    """Data that cannot be trained on; the one-line message names the place and the fix."""
