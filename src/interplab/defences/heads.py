"""Heads on frozen activations: the harmfulness probe (HP) and its parameter-matched MLP.

HP is interplab's logistic probe (``interplab.probes.LogisticProbe``: L2, ``C`` on unit-RMS
inputs, centred by the training mean) turned into an exact affine map for the differentiable
score the attacks need. The matched HP is scikit-learn's ``MLPClassifier`` (one ReLU hidden
layer, standardised inputs) whose width makes its parameter count match the adapters plus head
of LoRA + probe (:func:`matched_width`), so that "more parameters" is tested without touching
the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from interplab.defaults import DEFAULT_BATCH_SIZE
from interplab.defences.detectors import MLPDetector, ProbeDetector, affine_of
from interplab.defences.inputs import chunks, pack, pool, residuals

POOLINGS = ("mean", "last")


@torch.no_grad()
def pooled_features(lm, token_lists: Sequence[Sequence[int]], layers: Sequence[int],
                    batch_size: int = DEFAULT_BATCH_SIZE) -> dict[tuple[str, int], np.ndarray]:
    """``{(pooling, layer): [n, d]}`` of ``lm`` as it runs now (float64); wrap the call in
    ``host.disabled()`` for the unmodified model."""
    parts: dict[tuple[str, int], list[np.ndarray]] = {(p, layer): [] for p in POOLINGS
                                                      for layer in layers}
    for sl in chunks(len(token_lists), batch_size):
        inputs = pack(lm, token_lists[sl])
        reps = residuals(lm, inputs, layers)
        for (p, layer), acc in parts.items():
            acc.append(pool(reps[layer], inputs, p).double().cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def fit_probe(X: np.ndarray, y: np.ndarray, *, name: str, layer: int, pooling: str
              ) -> ProbeDetector:
    """HP: logistic probe on ``X`` ``[n, d]`` as an affine detector."""
    from interplab.probes import make_probe

    probe = make_probe("logistic", centering="train").fit(X, np.asarray(y))
    w, b = affine_of(probe.decision_function, X.shape[1])
    return ProbeDetector(name=name, layer=layer, pooling=pooling,
                         w=torch.as_tensor(w, dtype=torch.float32), b=b)


def matched_width(n_parameters: int, d: int) -> int:
    """Hidden width ``h`` of a one-hidden-layer MLP on ``d`` inputs whose parameter count
    ``d·h + h + h + 1`` is closest to ``n_parameters``."""
    return max(1, int(round((n_parameters - 1) / (d + 2))))


def fit_mlp(X: np.ndarray, y: np.ndarray, *, hidden: int, seed: int, name: str, layer: int,
            pooling: str = "mean") -> MLPDetector:
    """The matched HP: ``MLPClassifier`` on standardised ``X`` (L2 ``alpha=1e-2``, Adam, at most
    300 epochs), as a differentiable detector."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    mu = X.mean(0)
    sigma = X.std(0) + 1e-6
    Z = (X - mu) / sigma
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-2, max_iter=300,
                        random_state=seed, learning_rate_init=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(Z, np.asarray(y))
    W1, W2 = clf.coefs_
    b1, b2 = clf.intercepts_
    sign = 1.0 if clf.classes_[1] == 1 else -1.0

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=torch.float32)

    return MLPDetector(name=name, layer=layer, pooling=pooling, mu=t(mu), sigma=t(sigma),
                       W1=t(W1), b1=t(b1), w2=t(sign * W2[:, 0]), b2=float(sign * b2[0]))
