"""Linear truth probes (scikit-learn conventions) and PCA views."""

from interplab.errors import InterplabError
from interplab.probes.base import CENTERINGS, LinearProbe, PairProbe
from interplab.probes.ccs import CCSProbe
from interplab.probes.diffmean import DiffMeanProbe
from interplab.probes.lda import LDAProbe, MassMeanIIDProbe
from interplab.probes.logistic import LogisticProbe
from interplab.probes.pca import PCABasis, pca_basis

PROBES: dict[str, type[LinearProbe]] = {
    "diffmean": DiffMeanProbe,
    "lda": LDAProbe,
    "massmean-iid": MassMeanIIDProbe,
    "logistic": LogisticProbe,
    "ccs": CCSProbe,
}


def make_probe(name: str, **params: object) -> LinearProbe:
    """Build a probe by registry name (``diffmean``, ``lda``, ``massmean-iid``, ``logistic``,
    ``ccs``). Pair probes (``isinstance(probe, PairProbe)``, e.g. CCS) train with ``fit_pairs``."""
    if name not in PROBES:
        raise InterplabError(f"unknown probe {name!r}; choose from {', '.join(PROBES)}")
    return PROBES[name](**params)  # type: ignore[arg-type]


__all__ = [
    "CENTERINGS",
    "PROBES",
    "CCSProbe",
    "DiffMeanProbe",
    "LDAProbe",
    "LinearProbe",
    "LogisticProbe",
    "MassMeanIIDProbe",
    "PCABasis",
    "PairProbe",
    "make_probe",
    "pca_basis",
]
