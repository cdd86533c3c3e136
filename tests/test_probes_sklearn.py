"""Probes are scikit-learn estimators: clone, set_params, Pipeline, GridSearchCV, estimator checks."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks as ec
from sklearn.utils.estimator_checks import check_estimator

from interplab.errors import InterplabError
from interplab.probes import (
    PROBES,
    CCSProbe,
    DiffMeanProbe,
    LDAProbe,
    LogisticProbe,
    MassMeanIIDProbe,
    PairProbe,
)

D = 20
LABELLED = [DiffMeanProbe, LDAProbe, MassMeanIIDProbe, LogisticProbe]


def _data(n=400, seed=0, sep=3.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.standard_normal((n, D))
    X[:, 0] += sep / 2 * (2 * y - 1)
    return X, y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
# raised inside sklearn's own check-data helpers when they cast NaN test inputs
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("cls", LABELLED)
def test_passes_scikit_learns_estimator_checks(cls):
    # Every check applies (binary classifier, dense input); pandas and array-API checks skip
    # themselves when those libraries are not set up.
    check_estimator(cls())


@pytest.mark.parametrize("cls", [*LABELLED, CCSProbe])
def test_clone_and_set_params_follow_the_contract(cls):
    probe = cls(centering="per-dataset")
    assert probe.get_params()["centering"] == "per-dataset"
    copy = clone(probe)
    assert copy is not probe and copy.get_params() == probe.get_params()
    assert probe.set_params(centering="none") is probe and probe.centering == "none"
    assert clone(probe).centering == "none"
    # a bad value is stored as given and refused by fit, with the fix named
    probe.set_params(centering="test")
    X, y = _data()
    with pytest.raises(InterplabError, match="centering must be one of"):
        probe.fit(X, y, X_neg=X) if isinstance(probe, PairProbe) else probe.fit(X, y)


def test_ccs_meets_the_api_checks_that_apply_to_a_pair_probe():
    # CCS trains on (statement, negation) pairs, so the checks that fit it on generic (X, y)
    # data cannot apply; the parameter-handling checks do.
    for check in (ec.check_no_attributes_set_in_init, ec.check_parameters_default_constructible,
                  ec.check_get_params_invariance, ec.check_set_params,
                  ec.check_do_not_raise_errors_in_init_or_set_params, ec.check_estimator_repr,
                  ec.check_estimator_cloneable, ec.check_mixin_order):
        check("CCSProbe", CCSProbe())


def test_ccs_fit_pairs_is_fit_with_negations():
    rng = np.random.default_rng(0)
    X, y = _data(300)
    truth = np.outer(3.0 * (2 * y - 1), np.eye(D)[0])
    topic = rng.standard_normal((300, D))
    Xp, Xn = topic + truth, topic - truth
    a = CCSProbe(seed=1).fit_pairs(Xp, Xn, y)
    b = clone(a).fit(Xp, y, X_neg=Xn)
    assert np.array_equal(a.direction_, b.direction_) and a.threshold_ == b.threshold_
    assert (a.predict_pairs(Xp, Xn) == y).mean() > 0.95
    with pytest.raises(InterplabError, match="fit_pairs"):
        CCSProbe().fit(Xp, y)


def test_pair_probes_are_told_apart_by_type_not_name():
    assert [n for n, c in PROBES.items() if issubclass(c, PairProbe)] == ["ccs"]


def test_grid_search_over_a_probe_parameter():
    X, y = _data(400)
    # LDA with no shrinkage on 30 rows of 20-D data overfits; cross-validation must notice
    X, y = X[:30], y[:30]
    search = GridSearchCV(LDAProbe(), {"shrinkage": [0.0, 0.5, 1.0]}, cv=3).fit(X, y)
    assert search.best_params_["shrinkage"] != 0.0
    assert isinstance(search.best_estimator_, LDAProbe)
    assert search.best_estimator_.shrinkage_ == search.best_params_["shrinkage"]
    Xt, yt = _data(400, seed=1)
    assert search.score(Xt, yt) > 0.75


def test_probe_in_a_pipeline_with_any_two_labels():
    X, y = _data()
    Xt, yt = _data(seed=1)
    names = np.array(["false", "true"])
    pipe = make_pipeline(StandardScaler(), LogisticProbe(C=0.5)).fit(X, names[y])
    assert list(pipe.classes_) == ["false", "true"]
    assert set(pipe.predict(Xt)) <= {"false", "true"}
    assert pipe.score(Xt, names[yt]) > 0.85
    # the "true" class (classes_[1]) is the one that projects higher
    assert pipe[-1].direction_[0] > 0
    assert pipe.set_params(logisticprobe__C=2.0)[-1].C == 2.0
