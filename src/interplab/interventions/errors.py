"""Errors raised when an intervention did not happen: a silent no-op is an error, never a zero."""

from interplab.errors import InterplabError


class InterventionNotAppliedError(InterplabError):
    """An intervention left the model untouched (base class of the two cases below)."""


class HookNeverFiredError(InterventionNotAppliedError):
    """A hook was attached but the forward pass never ran through it."""


class InterventionNoOpError(InterventionNotAppliedError):
    """A hook ran but changed no activation (e.g. identical clean and corrupted activations)."""
