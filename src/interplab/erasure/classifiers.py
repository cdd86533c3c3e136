"""The classifiers that check an erasure: a linear one and a small MLP, both on standardised
inputs (so a concept left in a low-variance direction is as easy to find as in a loud one)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def linear_classifier(C: float = 1.0) -> Pipeline:
    """Standardise, then L2 logistic regression (``C`` on unit-variance features)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))


def mlp_classifier(seed: int = 0, hidden: int = 64) -> Pipeline:
    """Standardise, then one hidden ReLU layer of ``hidden`` units (Adam, early stopping on a
    10 % validation split of the training rows)."""
    return make_pipeline(StandardScaler(), MLPClassifier(
        (hidden,), alpha=1e-4, max_iter=300, early_stopping=True, n_iter_no_change=10,
        random_state=seed))


def fit_quietly(clf: Any, X: np.ndarray, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(X, y)


def predictions(clf: Any, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """Fit ``clf`` on the training rows; its predicted class for each test row."""
    fit_quietly(clf, X_train, y_train)
    return clf.predict(X_test)


def correct(clf: Any, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray,
            y_test: np.ndarray) -> np.ndarray:
    """Fit ``clf`` on the training rows; whether it gets each test row right (``[n_test]`` float)."""
    return (predictions(clf, X_train, y_train, X_test) == y_test).astype(np.float64)


def raw_directions(clf: Pipeline) -> np.ndarray:
    """A fitted :func:`linear_classifier`'s weight rows in raw activation units (``[r, d]``;
    ``r = 1`` for two classes)."""
    scaler, logistic = clf[0], clf[-1]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return logistic.coef_ / scale


def majority_rate(y_test: np.ndarray) -> float:
    """Chance: the held-out accuracy of the best constant answer (the test set's most frequent
    class). A classifier that learned nothing cannot be trusted to do better."""
    return float(np.bincount(y_test).max() / max(len(y_test), 1))
