"""The one metric set and the shared statistics, checked against scikit-learn and SciPy where they overlap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as sk

from engine.measure.metrics import (
    Predictions,
    classification_metrics,
    per_class_recall,
    regression_metrics,
    roc_auc,
    wilson_ci95,
)
from engine.measure.stats import bootstrap_ci, two_proportion_p
from engine.select.goal import Goal
from engine.select.stopping import EarlyStopping, replay
from engine.select.trial import Trial, best, mark_pareto


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(5), size=300)
    y = rng.integers(0, 4, 300)  # class 4 never occurs in the labels, but may be predicted
    ours = classification_metrics(probs, y, extended=True)
    pred = probs.argmax(axis=1)
    present = np.union1d(y, pred)
    assert ours["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert ours["macro_f1"] == pytest.approx(sk.f1_score(y, pred, average="macro", labels=present))
    assert ours["log_loss"] == pytest.approx(sk.log_loss(y, probs, labels=range(5)))
    recall = per_class_recall(probs, y)
    expected = sk.recall_score(y, pred, average=None, labels=range(4), zero_division=0)
    assert [recall[str(c)] for c in range(4)] == pytest.approx(list(expected))


def test_roc_auc_with_ties_matches_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    score = np.round(rng.random(500), 1)  # many ties
    positive = rng.random(500) < 0.3
    assert roc_auc(score, positive) == pytest.approx(sk.roc_auc_score(positive, score))
    assert roc_auc(score, np.zeros(500, dtype=bool)) is None
    probs = np.stack([1 - score, score], axis=1)
    assert classification_metrics(probs, positive.astype(int), extended=True)["roc_auc"] == pytest.approx(
        sk.roc_auc_score(positive, score)
    )


def test_regression_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(size=(200, 2))
    pred = y + rng.normal(scale=0.3, size=(200, 2))
    ours = regression_metrics(pred, y, extended=True)
    assert ours["mse"] == pytest.approx(sk.mean_squared_error(y, pred))
    assert ours["mae"] == pytest.approx(sk.mean_absolute_error(y, pred))
    assert ours["rmse"] == pytest.approx(math.sqrt(sk.mean_squared_error(y, pred)))
    assert ours["r2"] == pytest.approx(sk.r2_score(y, pred, multioutput="variance_weighted"))
    assert regression_metrics(pred, np.ones_like(y))["r2"] is None  # constant labels: undefined


def test_intervals_and_tests_match_scipy() -> None:
    ci = stats.binomtest(87, 100).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_ci95(87, 100) == pytest.approx([ci.low, ci.high], abs=1e-6)
    # pooled two-proportion z-test: the chi-square test of the 2x2 table without continuity correction
    table = [[90, 10], [75, 25]]
    chi2 = stats.chi2_contingency(table, correction=False)
    assert two_proportion_p(0.90, 100, 0.75, 100) == pytest.approx(chi2.pvalue)
    # a bootstrap interval of the mean covers the t-interval's centre and is about as wide
    rng = np.random.default_rng(5)
    x = rng.normal(1.0, 2.0, 400)
    lo, hi = bootstrap_ci(lambda idx: float(x[idx].mean()), len(x), 2000, seed=0) or [0, 0]
    t_lo, t_hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert lo < x.mean() < hi and (hi - lo) == pytest.approx(t_hi - t_lo, rel=0.15)


def test_predictions_read_logits_and_probabilities() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    p = Predictions("classification", logits, np.array([0, 1]), None)
    assert p.interpretation == "logits" and p.primary() == 1.0
    assert p.metric_fn("accuracy")(np.array([0, 0])) == 1.0


def test_one_goal_for_every_search() -> None:
    goal = Goal(max_accuracy_drop=0.01, drop_mode="relative")
    assert goal.judge(original=0.9, metric=0.895, cosine=0.9, labeled=True).ok  # 0.56% relative
    assert not goal.judge(original=0.9, metric=0.88, cosine=1.0, labeled=True).ok
    assert not goal.judge(original=0.9, metric=0.9, cosine=1.0, non_finite=3, labeled=True).ok  # inf/NaN never
    assert Goal(0.01, "absolute").judge(original=0.9, metric=0.891, cosine=None, labeled=True).drop == pytest.approx(
        0.009
    )
    assert goal.judge(original=None, metric=None, cosine=0.995, labeled=False).ok
    assert not Goal(0.01, cosine_too=True).judge(original=0.9, metric=0.9, cosine=0.9, labeled=True).ok
    assert goal.shortfall(drop=0.03, cosine=None, labeled=True) == pytest.approx(2.0)


def test_one_front_and_one_choice() -> None:
    def t(index: int, metric: float, speedup: float, size: int) -> Trial:
        return Trial(index=index, name=str(index), status="measured", metric=metric, speedup=speedup, size_bytes=size)

    a, b, c, d = t(0, 0.90, 1.0, 1000), t(1, 0.90, 1.05, 1000), t(2, 0.89, 3.0, 300), t(3, 0.88, 2.9, 400)
    mark_pareto([a, b, c, d])
    assert c.pareto and not d.pareto  # d: worse on every axis than c
    assert a.pareto and b.pareto  # 5% faster is within the latency tie band: neither dominates
    assert best([a, b, c, d], "latency") is c
    assert best([a, b], "latency") is a  # a full tie goes to the lower index (the original)
    assert best([a, b, c, d], "size") is c


def test_one_early_stopping_rule_live_and_replayed() -> None:
    curve = [1.0, 0.8, 0.7, 0.72, 0.71, 0.73, 0.69, 0.75]
    rule = EarlyStopping(minimize=True, patience=3)
    stopped_at = None
    for epoch, value in enumerate(curve, start=1):
        rule.update(epoch, value)
        if rule.should_stop:
            stopped_at = epoch
            break
    assert stopped_at == 6 and rule.best_epoch == 3
    replayed = replay(curve, True, 0.0, 3)
    assert replayed["stopped_epoch"] == 6 and replayed["restored_epoch"] == 3 and replayed["best_epoch"] == 7
