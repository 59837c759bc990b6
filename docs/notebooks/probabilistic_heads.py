# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Probabilistic heads — companion notebook
#
# A heteroscedastic Gaussian head on the synthetic data of the chapter
# [Probabilistic heads](../probabilistic-heads.md), trained with Lightning in a few seconds on a
# CPU, then checked with the calibration helpers of `block4.calibration`. Change the head
# (`"student_t"`, `"mixture"`), the data size or the epochs and run again (for a head other
# than the Gaussian, `heteroscedastic` does not apply, and Task 2 needs
# `block4.calibration.cdf(d, y)`: not every `torch.distributions` class has a `cdf`).

# %%
import logging
import warnings

import matplotlib.pyplot as plt
import pytorch_lightning as pl
import torch

from block4.calibration import interval_coverage, pit, pit_histogram
from block4.data import HeteroscedasticDataModule
from block4.heads import GaussianHead
from block4.modules import Classifier, ProbabilisticRegressor

warnings.filterwarnings("ignore", ".*treespec.*")  # a deprecation notice inside Lightning
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
_ = pl.seed_everything(0, verbose=False)

# %% [markdown]
# ## Train: the head sees targets only, never a true σ

# %%
data = HeteroscedasticDataModule(n_train=2000, n_val=0, n_test=1000, batch_size=250, seed=0)
model = ProbabilisticRegressor(
    in_features=1,
    head="gaussian",
    heteroscedastic=True,
    depth=2,
    width=32,
    activation="tanh",
    lr=5e-3,
)
trainer = pl.Trainer(
    max_epochs=80,
    accelerator="cpu",
    devices=1,
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    limit_val_batches=0,
)
trainer.fit(model, data)

# %% [markdown]
# ## The prediction is a `torch.distributions.Normal`

# %%
x = torch.linspace(-2, 2, 200)[:, None]
dist = model.predict_dist(x)
print(type(dist).__name__, tuple(dist.mean.shape))

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(x[:, 0], data.true_sigma(x[:, 0]), "k--", label=r"true $\sigma(x)$")
ax.plot(x[:, 0], dist.stddev, label=r"learned $\sigma(x)$")
ax.set_xlabel("x")
ax.set_ylabel(r"$\sigma$")
ax.legend()
plt.show()

bulk = (x[:, 0] > -1.8) & (x[:, 0] < 1.8)
rel = (dist.stddev / data.true_sigma(x[:, 0]) - 1).abs()[bulk]
print(f"sigma(x) vs truth over the bulk: median error {rel.median():.1%}, max {rel.max():.1%}")

# %% [markdown]
# ## Calibration on held-out points
#
# PIT values $u_i = F_i(y_i)$ should be uniform; the central $L$ intervals should cover a
# share $L$ of the targets.

# %%
x_test, y_test = data.tensors("test")
test_dist = model.predict_dist(x_test)
density, ks = pit_histogram(pit(test_dist, y_test), bins=10)
print("PIT histogram (1.0 = uniform):", [round(v, 2) for v in density.tolist()])
print(f"Kolmogorov-Smirnov distance from uniform: {ks:.3f}")
for level, coverage in interval_coverage(test_dist, y_test).items():
    print(f"{level:.0%} interval covers {coverage:.1%} of the test points")

# %% [markdown]
# ## Bad inputs stop with one clear message

# %%
counts_model = ProbabilisticRegressor(in_features=1, head="poisson", depth=1, width=8)
digits_model = Classifier(in_features=64, n_classes=10, depth=1, width=8)
attempts = {
    "features of the wrong width": lambda: GaussianHead(heteroscedastic=True)(torch.zeros(4, 3)),
    "a negative count": lambda: counts_model.training_step(
        (torch.zeros(2, 1), torch.tensor([1.0, -2.0])), 0
    ),
    "a class index out of range": lambda: digits_model.training_step(
        (torch.zeros(2, 64), torch.tensor([3, 10])), 0
    ),
}
for what, attempt in attempts.items():
    try:
        attempt()
    except (ValueError, TypeError) as err:
        print(f"{what}:\n  {type(err).__name__}: {err}\n")

# %% [markdown]
# ## Your turn
#
# **Task 1.** Train the same body with `heteroscedastic=False` and compare the test NLL of the
# two models, `-dist.log_prob(y).mean()`, on `x_test, y_test`.
#
# <details><summary>Solution</summary>
#
# ```python
# homo = ProbabilisticRegressor(in_features=1, head="gaussian", heteroscedastic=False,
#                               depth=2, width=32, activation="tanh", lr=5e-3)
# pl.Trainer(max_epochs=80, accelerator="cpu", devices=1, logger=False,
#            enable_checkpointing=False, enable_progress_bar=False,
#            enable_model_summary=False, limit_val_batches=0).fit(homo, data)
# for name, m in [("one sigma", homo), ("sigma(x)", model)]:
#     print(name, f"{-m.predict_dist(x_test).log_prob(y_test).mean():.3f}")
# ```
#
# The heteroscedastic model has the lower test NLL: one shared $\sigma$ is too wide where the
# noise is small and too narrow where it is large, and the likelihood charges for both.
#
# </details>
#
# **Task 2.** Use the prediction to answer a question a point estimate cannot: for
# $x = 1.5$, what is the probability that $y$ exceeds $2$?
#
# <details><summary>Solution</summary>
#
# ```python
# d = model.predict_dist(torch.tensor([[1.5]]))
# print(f"{1 - d.cdf(torch.tensor([2.0])).item():.3f}")
# ```
#
# `1 - cdf(2)` of the predicted Normal. The same mean with a smaller $\sigma$ would give a
# very different answer: the uncertainty is part of the prediction.
#
# </details>
#
# **Task 3.** Train a deep ensemble: `ProbabilisticRegressor(members=5, ...)` with the
# chapter's ensemble body (two hidden ReLU layers of 50 units, learning rate 0.01), on `block4.data.make_gap_data(600, seed=0)` (no training inputs in the gap
# $(-1, 1)$). Split its predictive variance at $x = 0$ and at $x = 2$ into aleatoric and
# epistemic parts.
#
# <details><summary>Solution</summary>
#
# ```python
# from block4.data import InMemoryDataModule, make_gap_data
# from block4.modules import aleatoric_variance, epistemic_variance
#
# ens = ProbabilisticRegressor(in_features=1, head="gaussian", heteroscedastic=True,
#                              depth=2, width=50, lr=1e-2, members=5)
# pl.Trainer(max_epochs=100, accelerator="cpu", devices=1, logger=False,
#            enable_checkpointing=False, enable_progress_bar=False,
#            enable_model_summary=False, limit_val_batches=0).fit(
#     ens, InMemoryDataModule(make_gap_data(600, seed=0), batch_size=100))
# members = ens.member_dists(torch.tensor([[0.0], [2.0]]))
# print("aleatoric", aleatoric_variance(members), "epistemic", epistemic_variance(members))
# print("their sum is the mixture's variance:", ens.predict_dist(torch.tensor([[0.0], [2.0]])).variance)
# ```
#
# At $x = 2$ (inside the data) the members agree: the epistemic part is almost 0 and the
# aleatoric part is all of the variance. At $x = 0$ (in the gap) the epistemic part, the
# members' disagreement, grows by a factor of about a hundred, to about the size of the
# aleatoric part. Yet the members' means there all miss the true mean (1.0) by several
# predictive standard deviations: the ensemble is still overconfident in the gap, as the
# chapter's coverage table shows.
#
# </details>
