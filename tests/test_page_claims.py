"""The words of the pages that the manifest's numbers cannot write themselves.

A page quotes numbers through ``{{ figure.key }}`` placeholders, so a re-made figure updates
them. Words like "in every seed", "gone", "the seeds overlap" or "worse than guessing" are
prose: they are checked here against the published manifest (``docs/figures/manifest.json``).
When re-made figures break one of these, the failing test names the sentence to reword.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "docs" / "figures" / "manifest.json"


@pytest.fixture(scope="module")
def numbers() -> dict[str, dict[str, Any]]:
    figures = json.loads(MANIFEST.read_text(encoding="utf-8"))["figures"]
    return {name: entry["numbers"] for name, entry in figures.items()}


def page(name: str) -> str:
    return (ROOT / "docs" / name).read_text(encoding="utf-8")


def test_relu_vs_tanh_wording(numbers) -> None:
    n = numbers["relu_vs_tanh"]
    text = page("activations.md")
    assert "tanh is\nfaster on average and never slower in any seed" in text
    # "at 0.01 and 0.03 tanh is faster on average and never slower in any seed"
    assert n["speedup_std_lr_1_max"] <= 1 and n["speedup_std_lr_2_max"] <= 1
    assert n["speedup_std_lr_1"] < 1 and n["speedup_std_lr_2"] < 1
    # "the two are about equally fast at learning rate 0.003": the seeds straddle 1
    assert n["speedup_std_lr_0_min"] < 1 < n["speedup_std_lr_0_max"]
    assert abs(n["speedup_std_lr_0"] - 1) < 0.1
    # raw inputs: ReLU faster in every seed at 0.003, "its advantage shrinks ... gone at 0.03"
    assert n["speedup_raw_lr_0_min"] > 1
    assert n["speedup_raw_lr_0"] > n["speedup_raw_lr_1"] > n["speedup_raw_lr_2"]
    assert n["speedup_raw_lr_2_min"] < 1 < n["speedup_raw_lr_2_max"]
    assert abs(n["speedup_raw_lr_2"] - 1) < 0.1
    # "tanh reached 15 % in only 3 of the 5 seeds ... understates the gap": fewer than all
    assert n["reached_fine_tanh_raw"] < n["seeds"] == n["reached_fine_relu_raw"]
    assert [(n["lr_0"], n["lr_1"], n["lr_2"])] == [(0.003, 0.01, 0.03)]
    # "(ahead by 0 to 2 and by 1 to 2 of our measurements ...)": never behind, and the
    # resolution quoted is the sweep's
    assert n["apart_std_lr_1_min"] >= 0 and n["apart_std_lr_2_min"] >= 0
    assert 0 < n["resolution_epochs"] < 0.5
    # AlexNet's protocol: "Both were fastest at 0.03, the largest rate of the sweep, on both
    # kinds of input"; "our two nets are level": tanh faster on standardised inputs in every
    # seed, and on raw-scale ones the seeds straddle 1 around an average near it
    best = {n[f"best_lr_{act}_{kind}"] for act in ("relu", "tanh") for kind in ("std", "raw")}
    assert best == {n["lr_2"]}
    assert n["speedup_best_std_max"] < 1
    assert n["speedup_best_raw_min"] < 1 < n["speedup_best_raw_max"]
    assert abs(n["speedup_best_raw"] - 1) < 0.1


def test_gradient_flow_and_dead_relu_wording(numbers) -> None:
    g, d = numbers["activation_gradient_flow"], numbers["dead_relus"]
    # "yet only 3 of the 5 GELU seeds left chance level"; "GELU's forward signal ... varies
    # far more from seed to seed than ReLU's"
    assert g["learning_gelu_kaiming"] < g["seeds"]
    assert g["error_gelu_kaiming_max"] > g["learning_below"]
    spreads = {
        act: g[f"signal_{act}_kaiming_max"] / g[f"signal_{act}_kaiming_min"]
        for act in ("gelu", "relu", "tanh")
    }
    assert spreads["gelu"] > 3 * spreads["relu"] > 3 * spreads["tanh"]
    # exercise 3: "the forward signal would shrink the same way [6^-10 without biases], but
    # ... the last hidden layer's outputs are still [0.15 to 0.22] of the first's"
    assert g["signal_relu_default_min"] > 1e3 * 6.0 ** (-(g["depth"] - 1) / 2)
    # ReLU, leaky ReLU and GELU "are slower and vary more from seed to seed" than tanh
    for act in ("relu", "leaky_relu", "gelu"):
        assert g[f"error_{act}_kaiming_sd"] > 1.5 * g["error_tanh_kaiming_sd"]
    # "only tanh has learned much"
    others = ("relu", "leaky_relu", "gelu", "sigmoid")
    assert all(g["error_tanh_kaiming"] < g[f"error_{a}_kaiming_min"] for a in others)
    # "the others end with N % of their units dead", "2 of 5 seeds diverge"
    assert 0 < d["diverged_high"] < d["seeds"]
    assert d["dead_high_min"] > 10 * d["dead_normal_max"]


def test_batch_norm_and_residual_wording(numbers) -> None:
    b, r, c = numbers["bn_learning_rates"], numbers["residual_depth"], numbers["resnet_degradation"]
    # "no seed's loss becomes NaN where 10 did without BN ... a loss of 3.6 on average ...,
    # worse than the 2.30 of guessing"
    assert b["diverged_runs_relu_bn"] == 0 < b["diverged_runs_relu_no_bn"]
    assert b["top_lr_loss_relu_bn"] > math.log(10)
    # "sigmoid with batch norm trains well at 0.1 and 0.3"
    assert b["max_good_lr_sigmoid_bn"] == 0.3 and b["good_lrs_sigmoid_bn"] == 2
    # the residual ReLU + BN net "stays well below its plain twin's" at every depth shown
    for depth in (10, 20, 30):
        assert r[f"error_relu_bn_residual_{depth}_max"] < r[f"error_relu_bn_plain_{depth}_min"]
    # "rises from depth 10 on": every depth-30 seed above every depth-10 seed
    assert r["error_relu_bn_residual_30_min"] > r["error_relu_bn_residual_10_max"]
    # "both residual families keep the first layer's gradient within a factor of five of the
    # output layer's at every depth (geometric mean over the seeds)"
    for family in ("tanh", "relu_bn"):
        for depth in (2, 10, 20, 30):
            assert 1 / 5 <= r[f"ratio_{family}_residual_{depth}"] <= 5
    # ResNets: "no higher than the 8-layer ResNet's ... though the seeds overlap"
    assert c["error_residual_32"] <= c["error_residual_8"]
    assert c["error_residual_20"] <= c["error_residual_8"]
    assert c["error_min_residual_8"] < c["error_max_residual_32"]
    # the plain nets degrade: every 32-layer seed worse than every 8-layer seed
    assert c["error_min_plain_32"] > c["error_max_plain_8"]


def test_probabilistic_wording(numbers) -> None:
    e, dia, h = (
        numbers["deep_ensemble"],
        numbers["diabetes_nll"],
        numbers["heteroscedastic_regression"],
    )
    # "a single network's NLL in the gap varies widely ..., the ensemble's far less"
    single = e["gap_single_nll_max"] - e["gap_single_nll_min"]
    assert single > 3 * (e["gap_ensemble_nll_max"] - e["gap_ensemble_nll_min"])
    # "away from the data even the ensemble's 90 % interval covers far fewer than 90 %"
    assert e["gap_ensemble_cov_max"] < 50 and e["beyond_ensemble_cov_max"] < 50
    # diabetes: "the split-to-split spread ... is several times the difference of the two
    # means"; the paired t statistic "is short of" the critical value
    diff = abs(dia["nll_heteroscedastic_mean"] - dia["nll_homoscedastic_mean"])
    assert min(dia["nll_heteroscedastic_sd"], dia["nll_homoscedastic_sd"]) > 2.5 * diff
    assert abs(dia["nll_diff_t"]) < dia["nll_diff_t_critical"]
    # "what separates the models is the held-out NLL": no seed overlaps the other model's
    assert h["test_nll_heteroscedastic_max"] < h["test_nll_homoscedastic_min"]
    # diabetes: the paired differences are "about as spread as the splits themselves"
    assert dia["nll_diff_sd"] > 0.5 * min(
        dia["nll_heteroscedastic_sd"], dia["nll_homoscedastic_sd"]
    )
    # CO2: the ensemble's band widens "by a factor of ... on average over the seeds (the first
    # seed's, in the table, by less)"
    co2 = numbers["co2_forecast"]
    first = co2["ensemble_band_width_2001"] / co2["ensemble_band_width_1985"]
    assert 1 < first < co2["ensemble_band_growth_mean"]
    # "it has the best held-out NLL on average, though not in every seed: ... below its own
    # first member's in 3 of 5 seeds, and the single network's mean is pulled up by its worst"
    names = ("linear", "quadratic", "mlp")
    assert all(co2["ensemble_nll_mean"] < co2[f"{name}_nll_mean"] for name in names)
    assert 0 < co2["ensemble_nll_better"] < co2["n_seeds"]
    assert co2["mlp_nll_min"] < co2["ensemble_nll_min"] < co2["ensemble_nll_mean"]
    # "the only model whose band grows with the distance from the data in every seed"; the
    # caption: "the single network's on average narrows"
    assert co2["ensemble_band_widens"] == co2["n_seeds"] > co2["mlp_band_widens"]
    assert co2["mlp_band_growth_mean"] < 1
    # calibration caption: "the one-sigma model's PIT has a hump (KS ...), the sigma(x) model's
    # is closer to flat"; digits caption: "its error rate hardly moves"
    cal = numbers["regression_calibration"]
    assert cal["synthetic_heteroscedastic_ks"] < cal["synthetic_homoscedastic_ks"]
    digits = numbers["digits_calibration"]
    assert abs(digits["error_mean"] - digits["best_nll_error_mean"]) < 0.005
    # counts: "the central [whole-count interval] holds at least that" in both halves, in every
    # seed; randomised, "close to 90 % at every rate, where the Gaussian's error changes sign"
    p = numbers["poisson_counts"]
    level = p["level_percent"]
    for half in ("low", "high"):
        assert p[f"coverage_poisson_counts_{half}_rate_percent_min"] >= level
        assert abs(p[f"coverage_poisson_{half}_rate_percent_mean"] - level) < 1.5
    assert p["coverage_true_counts_percent_min"] >= level
    assert p["coverage_gaussian_low_rate_percent_min"] > level
    assert p["coverage_gaussian_high_rate_percent_max"] < level
    # "every seed's coverage of either half lies between 85 and 95 %" (the sigma(x) model)
    for half in ("left", "right"):
        assert cal[f"synthetic_heteroscedastic_cov90_{half}_min"] >= 85
        assert cal[f"synthetic_heteroscedastic_cov90_{half}_max"] <= 95
