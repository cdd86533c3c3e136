"""The rerouting study: is representation rerouting (RR) better than a harmfulness probe only
because it trains more parameters? RR against the same LoRA adapters with a linear head
(LoRA + probe) and against a probe on frozen activations (HP), with attacks and retain costs.

``config`` (torch-free) holds :class:`RerouteConfig` and :class:`RerouteResult`; ``run`` runs it
(:func:`run_reroute`); ``stats`` turns the per-seed numbers into estimates, comparisons and words.
See ``docs/reroute.md``.
"""

from interplab.studies.reroute.config import RerouteConfig, RerouteResult

__all__ = ["RerouteConfig", "RerouteResult", "run_reroute"]


def run_reroute(*args, **kwargs):
    """See :func:`interplab.studies.reroute.run.run_reroute`."""
    from interplab.studies.reroute.run import run_reroute as run

    return run(*args, **kwargs)
