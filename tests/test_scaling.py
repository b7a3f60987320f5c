import csv
from collections import defaultdict

import numpy as np
import pytest

from conftest import ROOT
from reuse.scaling import BNSL, M1, M2, M3, M4, ScalingError, chinchilla_fit, chinchilla_loss, data_constrained_loss
from reuse.scaling.benchmark import load_tasks, run_benchmark, summarize

X = np.logspace(3, 7, 12)


def noisy(y, scale, seed=0):
    return y * np.exp(np.random.default_rng(seed).normal(0, scale, len(y)))


@pytest.mark.parametrize("noise", [0.0, 0.005])
def test_m1_recovers_its_parameters(noise):
    y = noisy(30 * X ** -0.3, noise)
    p = M1().fit(X, y).params
    assert p["c"] == pytest.approx(-0.3, abs=0.01 + noise) and p["b"] == pytest.approx(30, rel=0.05 + 20 * noise)


@pytest.mark.parametrize("procedure", ["reference", "grid"])
@pytest.mark.parametrize("noise", [0.0, 0.002])
def test_m2_recovers_its_parameters(noise, procedure):
    y = noisy(1.5 + 40 * X ** -0.4, noise)
    p = M2(procedure).fit(X, y).params
    exact = 1e-9 if procedure == "reference" else 2e-3
    assert p["e_inf"] == pytest.approx(1.5, abs=exact + 2 * noise)
    assert p["c"] == pytest.approx(-0.4, abs=exact + 2 * noise)


@pytest.mark.parametrize("procedure", ["reference", "grid"])
@pytest.mark.parametrize("noise", [0.0, 0.002])
def test_m3_recovers_its_parameters(noise, procedure):
    y = noisy(2.0 * (1 / X + 1e-5) ** 0.25, noise)
    p = M3(procedure).fit(X, y).params
    exact = 1e-6 if procedure == "reference" else 1e-2  # the grid search stops at its tolerance
    assert p["c"] == pytest.approx(-0.25, abs=exact + noise)
    # the reference takes g from the values that fit one point exactly: with noise, one point's
    assert p["g"] == pytest.approx(1e-5, rel=exact + 25 * noise)


def m4_curve(x, b, c, a, e_inf, e_0):
    model = M4()
    model.params = {"b": b, "c": c, "a": a, "e_inf": e_inf, "e_0": e_0}
    return model.predict(x)


def test_m4_prediction_solves_its_equation():
    p = dict(b=200.0, c=-0.6, a=1.0, e_inf=0.1, e_0=0.9)
    e = m4_curve(X, **p)
    assert np.all((e > p["e_inf"]) & (e < p["e_0"])) and np.all(np.diff(e) < 0)
    np.testing.assert_allclose((e - p["e_inf"]) / (p["e_0"] - e) ** p["a"], p["b"] * X ** p["c"], rtol=1e-9)


@pytest.mark.parametrize("noise", [0.0, 0.001])
def test_m4_reference_procedure_recovers_its_parameters(noise):
    """The reference keeps log(e_0 - y) at e_0's start in its least squares, so it recovers a curve whose e_0 is
    that start: 1 for error rates, as the paper's notebook sets it up on image classification."""
    truth = dict(b=200.0, c=-0.6, a=1.0, e_inf=0.1, e_0=1.0)
    y = noisy(m4_curve(X, **truth), noise)
    model = M4(e_0=1.0, loss_bound=1.0).fit(X, y)
    for key, tol in (("c", 1e-9), ("a", 1e-9), ("e_inf", 1e-10), ("e_0", 1e-10), ("b", 1e-6)):
        assert model.params[key] == pytest.approx(truth[key], abs=tol + 50 * noise * max(1.0, truth[key])), key
    x_far = np.logspace(7.2, 8, 4)  # beyond the fitted range
    np.testing.assert_allclose(model.predict(x_far), m4_curve(x_far, **truth), rtol=1e-8 + 10 * noise)


@pytest.mark.parametrize("noise", [0.0, 0.001])
def test_m4_grid_procedure_recovers_its_parameters_and_extrapolates(noise):
    truth = dict(b=200.0, c=-0.6, a=1.0, e_inf=0.1, e_0=0.9)
    y = noisy(m4_curve(X, **truth), noise)
    model = M4("grid").fit(X, y)
    for key, tol in (("c", 0.01), ("a", 0.05), ("e_inf", 0.002), ("e_0", 0.02)):
        assert model.params[key] == pytest.approx(truth[key], abs=tol + 20 * noise * tol * 10), key
    x_far = np.logspace(7.2, 8, 4)  # beyond the fitted range
    np.testing.assert_allclose(model.predict(x_far), m4_curve(x_far, **truth), rtol=1e-6 + noise * 2)


def test_fit_many_matches_one_fit_per_curve():
    """A batch pads shorter curves; the padding must not change any curve's answer."""
    long_y, short_x = 0.5 + 20 * X ** -0.5, X[:8]
    short_y = 0.8 + 5 * short_x ** -0.3
    for est in (M2(), M3(), M4(e_0=5.0)):
        together = est.fit_many([X, short_x], [long_y, short_y])
        alone = [type(est)(**est._options()).fit(x, y) for x, y in ((X, long_y), (short_x, short_y))]
        for a, b in zip(together, alone):
            assert a.rounds == b.rounds
            for key in a.params:
                assert a.params[key] == pytest.approx(b.params[key], rel=1e-9, abs=1e-12), (est.name, key)


# Extrapolation RMSE of the authors' code (google-research/google-research, revisiting_neural_scaling_laws,
# methods/m2.py, m3.py, m4.py, set up per domain as in its notebook), run on these tasks outside this repository
# (Python 3.11, numpy 2.4, scipy 1.17 nnls in place of scikit-learn's positive LinearRegression, which wraps it).
REFERENCE_RMSE = {
    ("NMT", "Dec-only", "M2"): 0.010335380059617871,
    ("NMT", "Dec-only", "M3"): 0.03280004516543966,
    ("NMT", "Dec-only", "M4"): 0.008429343564504088,
    ("NMT", "TEnc-LSTM", "M2"): 0.012570779441012814,
    ("NMT", "TEnc-LSTM", "M3"): 0.06316677321590958,
    ("NMT", "TEnc-LSTM", "M4"): 0.012570779441014368,
    ("LM", "1.68e+07", "M3"): 0.0015618771220523191,
    ("BB", "('date', '1-shot')", "M3"): 0.004674703985566198,
}


@pytest.mark.parametrize("method", ["M2", "M3", "M4"])
def test_benchmark_tasks_match_the_reference_implementation(method):
    from reuse.scaling.benchmark import estimator_for, score

    cases = [(d, name) for d, name, m in REFERENCE_RMSE if m == method]
    tasks = {(t.domain, t.model if t.domain != "BB" else t.task): t for t in load_tasks()}
    for domain, name in cases:
        task = tasks[(domain, name)]
        est = estimator_for(method, domain).fit(task.train_x, task.train_y)
        rmse, _ = score(est.predict(task.test_x), task.test_y)
        # M4's prediction solves its equation exactly; the reference takes the best of 10,000 grid points.
        assert rmse == pytest.approx(REFERENCE_RMSE[(domain, name, method)], rel=1e-3 if method != "M4" else 1e-2)


@pytest.mark.parametrize("breaks", [1, 2])
def test_bnsl_recovers_a_broken_curve(breaks):
    theta = np.array([0.2, np.log(50), 0.1, 0.4, np.log(1e5), np.log(0.5)])
    y = BNSL._curve(theta, X, 1)
    model = BNSL(breaks).fit(X, y)
    np.testing.assert_allclose(model.predict(X), y, rtol=1e-4)
    x_far = np.logspace(7.2, 8, 3)
    np.testing.assert_allclose(model.predict(x_far), BNSL._curve(theta, x_far, 1), rtol=0.02)
    if breaks == 1:
        assert model.params["c1"] == pytest.approx(0.4, abs=1e-3) and model.params["a"] == pytest.approx(0.2, abs=1e-3)


def test_chinchilla_fit_recovers_the_published_law():
    """Hoffmann et al. 2022's fitted constants, on a grid of (N, D); a small grid of starts keeps the test fast."""
    truth = {"A": 406.4, "B": 410.7, "E": 1.69, "alpha": 0.34, "beta": 0.28}
    n = np.repeat(np.logspace(7, 9, 6), 5)
    d = np.tile(np.logspace(8, 10, 5), 6)
    fit = chinchilla_fit(n, d, chinchilla_loss(truth, n, d),
                         starts={"a": [0, 10], "b": [0, 10], "e": [0], "alpha": [0.2, 0.6], "beta": [0.2, 0.6]})
    for key, value in truth.items():
        assert fit[key] == pytest.approx(value, rel=1e-3), key
    with pytest.raises(ScalingError, match="cannot determine 5 parameters"):
        chinchilla_fit(n[:3], d[:3], np.ones(3))


def test_benchmark_data_is_read_as_the_paper_describes():
    tasks = load_tasks()
    assert len(tasks) == 92
    assert {d: sum(t.domain == d for t in tasks) for d in ("IC", "NMT", "LM", "BB")} == \
        {"IC": 72, "NMT": 5, "LM": 5, "BB": 10}
    lm = next(t for t in tasks if t.domain == "LM" and t.model == "1.68e+07")
    assert len(np.unique(lm.train_x)) == len(lm.train_x) and np.all(np.diff(lm.train_x) > 0)
    assert any(t.task == "('date', '1-shot')" for t in tasks)


@pytest.mark.slow  # 72 tasks x 4 estimators, the reference iteration up to 10,000 rounds: ~80 s on 2 shared cores
def test_m4_is_the_best_estimator_on_image_classification():
    """The paper's headline in vision: M4 best of M1-M4 on most IC tasks (the reference code: 54 of 72, so at least
    65% is asked, 47), with every median RMSE within 1.1x the reference's on the same tasks (issue 11's table)."""
    rows = [r for r in run_benchmark(("M1", "M2", "M3", "M4"), ("IC",)) if r["RMSE"] != ""]
    summary = {s["Method"]: s for s in summarize(rows)}
    assert all(s["tasks"] == 72 for s in summary.values())
    assert summary["M4"]["wins"] >= 47
    for method, reference in (("M2", 0.0822), ("M3", 0.0500), ("M4", 0.0302)):
        assert summary[method]["median_RMSE"] <= 1.1 * reference, method


def test_m1_reproduces_table_2_of_the_paper_on_nmt():
    """Alabdulmohsin et al. 2022, Table 2, M1 column: fit on Training = 1, RMSE of log predictions on Training = 0."""
    points = defaultdict(set)
    with open(ROOT / "reuse" / "scaling" / "data" / "benchmark.lang.csv", newline="") as f:
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


@pytest.mark.parametrize("estimator", [M1, M2, M3, M4, BNSL])
def test_bad_inputs_are_refused(estimator):
    with pytest.raises(ScalingError, match="cannot determine"):
        estimator().fit([1.0], [1.0])
    with pytest.raises(ScalingError, match="positive"):
        estimator().fit(X, -np.ones_like(X))
    with pytest.raises(ScalingError, match="NaN"):
        estimator().fit(X, np.where(X > 1e5, np.nan, 1.0))


@pytest.mark.parametrize("procedure", ["reference", "grid"])
def test_m4_refuses_e0_below_an_observed_loss(procedure):
    y = m4_curve(X, 200.0, -0.6, 1.0, 0.1, 0.9)
    with pytest.raises(ScalingError, match="not above the largest observed loss"):
        M4(procedure, e_0=0.5).fit(X, y)


def test_reference_procedure_refuses_what_it_cannot_fit():
    with pytest.raises(ScalingError, match="unknown procedure"):
        M2("global")
    with pytest.raises(ScalingError, match="must exceed 0.001"):
        M2().fit(X, 1e-4 + X ** -0.5)  # the reference keeps e_inf 1e-3 below the smallest loss
    with pytest.raises(ScalingError, match="exceeds loss_bound"):
        M4(loss_bound=1.0).fit(X, 1.5 + X ** -0.5)


@pytest.mark.slow  # on 4-point curves M2's reference iteration runs all its 10,000 rounds: ~60 s on 2 shared cores
def test_fit_cli_on_a_results_table(tmp_path):
    import subprocess
    import sys

    table = tmp_path / "results.csv"
    lines = ["run_id,parameters,fraction,method,final_log_ppl"]
    for f, scale in ((0.1, 1.0), (0.5, 0.9)):
        for i, n in enumerate((1e6, 2e6, 4e6, 8e6)):
            lines.append(f"r{f}{i},{n},{f},scratch,{scale * (2.0 + 50 * n ** -0.3):.6f}")
    table.write_text("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, "-m", "reuse.scaling", "fit", str(table), "--bootstrap", "50"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "4 points < 5 parameters: not fitted" in done.stdout  # M4 is never fitted on too few points
    assert "L(N, D) = E + A/N^alpha" in done.stdout and (tmp_path / "fits.png").stat().st_size > 10_000
    (tmp_path / "bad.csv").write_text("run_id,parameters\na,1\n")
    bad = subprocess.run([sys.executable, "-m", "reuse.scaling", "fit", str(tmp_path / "bad.csv")],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "lacks the columns" in bad.stderr and "Traceback" not in bad.stderr
