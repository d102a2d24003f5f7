"""The one error type for bad input data: its message names the file and says what to fix."""


class DataError(ValueError):
    """Raised for missing, empty, malformed or unreadable dataset files."""
