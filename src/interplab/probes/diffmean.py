"""Difference-of-means ("mass-mean") probe."""

from __future__ import annotations

import numpy as np

from interplab.probes.base import LinearProbe


class DiffMeanProbe(LinearProbe):
    """Direction = mean(true) − mean(false); threshold at the midpoint of the projected means."""

    name = "diffmean"

    def _fit_direction(self, Xc: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, None]:
        return Xc[y == 1].mean(axis=0) - Xc[y == 0].mean(axis=0), None
