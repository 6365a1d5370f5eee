"""The one exception type for errors a user can cause (files, styles, YAML, shapes, NaN)."""


class AutomixError(Exception):
    """A problem with the user's input; the message says what was wrong and what to do.

    The command-line entry points turn it into one line on stderr and exit status 2.
    """
