"""Erasure study: erase a concept (truth of statements) at one layer with every method, check
each erasure on held-out statements, measure what it costs the model on neutral text, and count
how many linear directions must go before the concept is no longer linearly decodable.

dataset → entity split (train / test) → last-token ``resid_post`` at ``layer`` → per method: fit
on train, :func:`~interplab.erasure.verify_erasure` on test, and for label-free methods the
in-model ΔCE / KL next to a random subspace of the same rank → directions curve (real vs
shuffled labels) → :class:`ErasureResult`.
"""

from interplab.studies.erasure.config import DEFAULT_METHODS, ErasureConfig, ErasureResult

__all__ = ["DEFAULT_METHODS", "ErasureConfig", "ErasureResult", "run_erasure"]


def __getattr__(name: str) -> object:
    if name == "run_erasure":  # loads torch and the models: only when a run is asked for
        from interplab.studies.erasure.run import run_erasure

        return run_erasure
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
