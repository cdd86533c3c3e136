"""Shuffled labels and norm-matched random directions."""

from __future__ import annotations

import numpy as np


def shuffled_labels(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """A seeded permutation of ``y``: same class balance, no relation to the inputs."""
    return np.random.default_rng(seed).permutation(np.asarray(y))


def random_direction_like(direction: np.ndarray, seed: int = 0) -> np.ndarray:
    """A direction drawn uniformly on the sphere, scaled to ``direction``'s norm."""
    direction = np.asarray(direction, dtype=np.float64)
    r = np.random.default_rng(seed).standard_normal(direction.shape)
    return r / np.linalg.norm(r) * np.linalg.norm(direction)
