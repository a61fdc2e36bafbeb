"""Exceptions for mistakes a user can fix (bad paths, bad labels, wrong flags).

Binaries catch :class:`UserError` at the top and print its message without a stack trace,
so every message must name the file or flag at fault and say what to do.
"""


class UserError(ValueError):
    """A problem with the user's input, files or flags, with a message that says how to fix it."""


class DataError(UserError):
    """A dataset file (image, label, record, dataset.json) is missing, unreadable or
    inconsistent."""


class ConfigError(UserError):
    """Flags or arguments that contradict each other or the data (e.g. a wrong num_classes)."""
