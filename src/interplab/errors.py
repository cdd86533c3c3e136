"""User-facing errors.

Every error raised for bad input is an :class:`InterplabError`: its message names the problem and
how to fix it. The CLI prints the message (no traceback) and exits with status 2.
"""


class InterplabError(ValueError):
    """Bad input or an unusable environment, with a message that says how to fix it."""


class ConfigFieldError(InterplabError):
    """A config field holds a value outside its range.

    ``field`` is the field's name (a dotted path once a parent config re-raises it with
    :meth:`under`), ``problem`` what is wrong (``"must be ... , not X"``). The message names the
    command-line flag when one is known (:meth:`with_flag`, used by the CLI that derived the
    option), else ``Owner.field``."""

    def __init__(self, owner: str, field: str, problem: str, flag: str | None = None):
        self.owner, self.field, self.problem, self.flag = owner, field, problem, flag
        super().__init__(f"{flag or f'{owner}.{field}'} {problem}")

    def under(self, prefix: str) -> "ConfigFieldError":
        """The same error for the field at ``prefix + field`` (a nested config's field)."""
        return ConfigFieldError(self.owner, prefix + self.field, self.problem, self.flag)

    def with_flag(self, flag: str) -> "ConfigFieldError":
        return ConfigFieldError(self.owner, self.field, self.problem, flag)


class ResumableError(InterplabError):
    """A run stopped (e.g. a write failed on a full disk) but kept what it had saved, so running
    the same command again resumes it; the CLI adds that command to the message."""
