"""The one base class for mistakes a user can fix (a bad value, a missing or wrong file, a wrong combination).

Its message names the config key or file, what is wrong and the fix. The entry points (train.py, predict.py,
`python -m data.check`) print it as one line, `error: <message>`, and exit with status 2, without a traceback;
any other exception is an internal error and keeps its traceback. It lives at the bottom layer (imports nothing)
so backbones, data and tasks all raise it.
"""


class UserError(Exception):
    """A mistake in the command line, the config or the input files; the message says how to fix it."""


class ConfigError(UserError, ValueError):
    """A config value or combination that cannot work; the message names the key and a value that would."""
