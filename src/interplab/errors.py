"""User-facing errors.

Every error raised for bad input is an :class:`InterplabError`: its message names the problem and
how to fix it. The CLI prints the message (no traceback) and exits with status 2.
"""


class InterplabError(ValueError):
    """Bad input or an unusable environment, with a message that says how to fix it."""
