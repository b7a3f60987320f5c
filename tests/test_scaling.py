import csv
from collections import defaultdict

import numpy as np
import pytest

from conftest import ROOT
from reuse.scaling import M1, ScalingError, data_constrained_loss

X = np.logspace(3, 7, 12)


def noisy(y, scale, seed=0):
    return y * np.exp(np.random.default_rng(seed).normal(0, scale, len(y)))


@pytest.mark.parametrize("noise", [0.0, 0.005])
def test_m1_recovers_its_parameters(noise):
    y = noisy(30 * X ** -0.3, noise)
    p = M1().fit(X, y).params
    assert p["c"] == pytest.approx(-0.3, abs=0.01 + noise) and p["b"] == pytest.approx(30, rel=0.05 + 20 * noise)


def test_m1_reproduces_table_2_of_the_paper_on_nmt():
    """Alabdulmohsin et al. 2022, Table 2, M1 column: fit on Training = 1, RMSE of log predictions on Training = 0."""
    points = defaultdict(set)
    with open(ROOT.parent / "shared" / "benchmarks" / "benchmark.lang.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["Domain"] == "NMT":
                points[r["Model"]].add((float(r["Seen Examples"]), float(r["Loss"]), int(r["Training"])))
    expected = {"6 Enc, 6 Dec": 0.26, "28 Enc, 6 Dec": 0.17, "6 Enc, 28 Dec": 0.23, "Dec-only": 0.25,
                "TEnc-LSTM": 0.19}
    for model, rows in points.items():
        train = np.array(sorted((x, y) for x, y, t in rows if t == 1))
        test = np.array(sorted((x, y) for x, y, t in rows if t == 0))
        pred = M1().fit(train[:, 0], train[:, 1]).predict(test[:, 0])
        rmse = np.sqrt(np.mean((np.log(pred) - np.log(test[:, 1])) ** 2))
        assert round(rmse, 2) == expected[model], model


def test_data_constrained_law_gives_the_published_value():
    assert data_constrained_loss(6.34e9, 242e9, 25e9) == pytest.approx(2.2256440889984477, rel=1e-12)
    # Without repetition (D = U) it is the plain Chinchilla form.
    fresh = data_constrained_loss(1e9, 2e10, 2e10)
    assert fresh == pytest.approx(np.exp(0.6254804) + np.exp(6.255414) / 1e9 ** 0.3526596
                                  + np.exp(7.3049974) / 2e10 ** 0.3526596, rel=1e-12)


@pytest.mark.parametrize("estimator", [M1])
def test_bad_inputs_are_refused(estimator):
    with pytest.raises(ScalingError, match="cannot determine"):
        estimator().fit([1.0], [1.0])
    with pytest.raises(ScalingError, match="positive"):
        estimator().fit(X, -np.ones_like(X))
    with pytest.raises(ScalingError, match="NaN"):
        estimator().fit(X, np.where(X > 1e5, np.nan, 1.0))
