import csv
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from reuse.transfer import TransferError, analyse, effective_data, fit_transfer_law


def scratch_loss(d, n):
    """A from-scratch law L(N, D) that falls with data: the curves the analysis inverts."""
    return 1.8 + 300 / n ** 0.3 + 2e3 / d ** 0.35


def synthetic_table(k=1.9e4, alpha=0.18, beta=0.38):
    """Scratch curves over a wide D range, and fine-tuned runs whose loss equals scratch at D_F + k D_F^a N^b."""
    rows = []
    for n in (1e6, 4e6, 1.6e7):
        for d in np.logspace(4, 11, 30):
            rows.append({"run_id": f"s{n:g}-{d:g}", "method": "scratch", "parameters": n, "training_tokens": d,
                         "final_log_ppl": scratch_loss(d, n)})
        for d_f in (1e4, 1e5, 1e6):
            d_t = k * d_f ** alpha * n ** beta
            rows.append({"run_id": f"f{n:g}-{d_f:g}", "method": "finetune", "parameters": n,
                         "training_tokens": d_f, "final_log_ppl": scratch_loss(d_f + d_t, n)})
    return rows


def test_analysis_recovers_k_alpha_beta_from_synthetic_curves():
    table = analyse(synthetic_table())
    assert all(t["marker"] == "" for t in table)
    law = fit_transfer_law(table)
    assert law["alpha"] == pytest.approx(0.18, abs=0.01) and law["beta"] == pytest.approx(0.38, abs=0.01)
    assert law["k"] == pytest.approx(1.9e4, rel=0.2)
    assert law["alpha_low"] <= law["alpha"] <= law["alpha_high"]


def test_effective_data_interpolates_in_log_log_space():
    d = [1e3, 1e5]
    loss = [4.0, 2.0]
    # log L is linear in log D between the points: L = 3 sits at log D halfway in log(L) space
    d_e, marker = effective_data(d, loss, float(np.exp((np.log(4) + np.log(2)) / 2)))
    assert marker == "" and d_e == pytest.approx(1e4, rel=1e-9)


def test_loss_below_every_scratch_point_is_a_lower_bound_not_an_extrapolation():
    assert effective_data([1e3, 1e4, 1e5], [4.0, 3.0, 2.5], 2.0) == (1e5, ">=")
    assert effective_data([1e3, 1e4, 1e5], [4.0, 3.0, 2.5], 5.0) == (1e3, "<=")
    table = analyse([{"method": "scratch", "parameters": 1.0, "training_tokens": d, "final_log_ppl": l}
                     for d, l in ((1e3, 4.0), (1e4, 3.0))] +
                    [{"method": "finetune", "parameters": 1.0, "training_tokens": 1e3, "final_log_ppl": 2.0}])
    assert table[0]["marker"] == ">=" and table[0]["D_E"] == 1e4


def test_noisy_scratch_curve_is_made_monotone():
    # the third point is worse than the second (noise); the curve is flattened, not inverted twice
    d_e, marker = effective_data([1e3, 1e4, 1e5], [4.0, 3.0, 3.2], 3.0)
    assert marker == "" and d_e == pytest.approx(1e4)


def test_too_few_scratch_sizes_and_mismatched_model_sizes_are_marked():
    rows = [{"method": "scratch", "parameters": 1.0, "training_tokens": 1e3, "final_log_ppl": 4.0},
            {"method": "finetune", "parameters": 1.0, "training_tokens": 1e3, "final_log_ppl": 3.0},
            {"method": "finetune", "parameters": 2.0, "training_tokens": 1e3, "final_log_ppl": 3.0}]
    table = analyse(rows)
    assert table[0]["marker"] == "too-few" and "at least 2" in table[0]["note"]
    assert table[1]["marker"] == "no-scratch"
    with pytest.raises(TransferError, match="at least 4"):
        fit_transfer_law(table)


def test_cli_writes_table_and_figure(tmp_path):
    rows = [{**r, "train_flops": 6 * r["parameters"] * r["training_tokens"]} for r in synthetic_table()]
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    done = subprocess.run([sys.executable, "-m", "reuse.transfer", str(path), "--data-column", "training_tokens",
                           "--loss", "final_log_ppl"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "D_T = k D_F^alpha N^beta" in done.stdout
    out = list(csv.DictReader(open(tmp_path / "transfer.csv")))
    assert len(out) == 9 and all(float(r["D_T"]) > 0 for r in out)
    assert (tmp_path / "transfer.png").stat().st_size > 10_000
    bad = subprocess.run([sys.executable, "-m", "reuse.transfer", str(tmp_path / "none.csv")], capture_output=True,
                         text=True, cwd=ROOT)
    assert bad.returncode != 0 and "does not exist" in bad.stderr
