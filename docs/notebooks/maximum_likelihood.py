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
# # Maximum likelihood — companion notebook
#
# Three small experiments from the chapter [Maximum likelihood](../maximum-likelihood.md), in
# plain PyTorch, each a few lines long. Change the numbers and run again.
#
# 1. The likelihood of five training points, and that its mean negative log is the
#    cross-entropy.
# 2. The Gaussian likelihood of every woman in the blood-pressure data.
# 3. Fitting the line by gradient descent on the negative log-likelihood.

# %%
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from block4.data import load_blood_pressure

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Five points: likelihood, log-likelihood, NLL, cross-entropy
#
# Three points of class 0, two of class 1, and a logistic model $p_1(x) = \sigma(w x + b)$
# written as a two-class softmax over the logits $(0, w x + b)$.

# %%
x = torch.tensor([-2.0, -1.0, 0.6, 0.2, 1.5], dtype=torch.float64)
y = torch.tensor([0, 0, 0, 1, 1])
w, b = 1.0, 0.0  # try other values

z = w * x + b
logits = torch.stack([torch.zeros_like(z), z], dim=1)
p = torch.softmax(logits, dim=1)
p_observed = p[torch.arange(5), y]
likelihood = p_observed.prod()
nll = -p_observed.log().mean()
print("p(observed class):", [round(v, 4) for v in p_observed.tolist()])
print(f"likelihood      {likelihood:.6f}")
print(f"log-likelihood  {likelihood.log():.6f}")
print(f"mean NLL        {nll:.12f}")
print(f"cross_entropy   {F.cross_entropy(logits, y):.12f}")

# %% [markdown]
# ## 2. The Gaussian likelihood of every woman
#
# The course's textbook values for the 22-year-old: $\mu = 111$, $\sigma = 20$ (close to the
# fit below, not a rounding of it). Then the least-squares line for everybody, and the likelihood of each observation under it.

# %%
print(f"f(131; 111, 20) = {Normal(111.0, 20.0).log_prob(torch.tensor(131.0)).exp():.6f}")

age, sbp = (torch.as_tensor(v, dtype=torch.float64) for v in load_blood_pressure())
X = torch.stack([torch.ones_like(age), age], dim=1)
a, slope = torch.linalg.lstsq(X, sbp[:, None]).solution[:, 0]
residual = sbp - (a + slope * age)
sigma = residual.pow(2).sum().div(len(sbp) - 2).sqrt()
lik = Normal(a + slope * age, sigma).log_prob(sbp).exp()
print(f"line: sbp = {a:.2f} + {slope:.4f} * age,  sigma = {sigma:.2f} mmHg")
print(" age  sbp  residual  likelihood")
for i in torch.argsort(lik)[:8].tolist():
    print(f"{age[i]:4.0f} {sbp[i]:4.0f} {residual[i]:9.1f} {lik[i]:11.5f}")

# %% [markdown]
# ## 3. The line by gradient descent on the NLL
#
# With a fixed $\sigma$ the NLL is the mean squared error up to constants, so gradient
# descent must land on the least-squares line. Ages are standardised first (the optimiser
# likes inputs of order one); the coefficients are mapped back at the end. Plain gradient
# descent with the chapter's learning rate $0.3\,\sigma^2$ takes each weight about 30 % of its
# remaining way per step; try other rates (above $2\sigma^2$ it diverges).

# %%
m, s = age.mean(), age.std()
u = (age - m) / s
params = torch.zeros(2, dtype=torch.float64, requires_grad=True)
sigma_fixed = 20.0
opt = torch.optim.SGD([params], lr=0.3 * sigma_fixed**2)  # the chapter's learning rate
for _step in range(80):
    opt.zero_grad()
    loss = -Normal(params[0] + params[1] * u, sigma_fixed).log_prob(sbp).mean()
    loss.backward()
    opt.step()
slope_gd = params[1].item() / s.item()
a_gd = params[0].item() - slope_gd * m.item()
print(f"gradient descent: a = {a_gd:.4f}, b = {slope_gd:.5f}")
print(f"least squares:    a = {a.item():.4f}, b = {slope.item():.5f}")

# %% [markdown]
# ## Your turn
#
# **Task 1.** In section 1, find by hand (or with a few runs) a pair $(w, b)$ with a higher
# likelihood than $w = 1, b = 0$. Then let gradient descent find the best pair: minimise
# the mean NLL over `w` and `b` as tensors with `requires_grad=True`.
#
# <details><summary>Solution</summary>
#
# ```python
# wb = torch.zeros(2, dtype=torch.float64, requires_grad=True)
# opt = torch.optim.SGD([wb], lr=0.5)
# for _ in range(2000):
#     opt.zero_grad()
#     z = wb[0] * x + wb[1]
#     loss = F.cross_entropy(torch.stack([torch.zeros_like(z), z], dim=1), y)
#     loss.backward()
#     opt.step()
# print(wb.tolist(), loss.item())  # about [1.90, -0.71], mean NLL about 0.399
# ```
#
# A steeper slope and a negative intercept move the threshold between the third point
# ($x = 0.6$, class 0) and the fourth ($x = 0.2$, class 1) as well as the overlap allows.
#
# </details>
#
# **Task 2.** Which woman has the highest likelihood under the fitted line, and what is the
# ratio of the lowest to the highest likelihood?
#
# <details><summary>Solution</summary>
#
# ```python
# best, worst = torch.argmax(lik).item(), torch.argmin(lik).item()
# print(age[best].item(), sbp[best].item(), residual[best].item())
# print(f"{lik[worst] / lik[best]:.3f}")
# ```
#
# The highest likelihood belongs to the smallest absolute residual: that woman sits almost on
# the line. The ratio is $e^{-(r_\mathrm{worst}^2 - r_\mathrm{best}^2)/2\sigma^2}$.
#
# </details>
#
# **Task 3.** In section 3, learn $\sigma$ as well: add a third parameter $\log\sigma$ and
# minimise the NLL over all three with Adam. Compare the learned $\sigma$ with
# $\sqrt{\mathrm{RSS}/n}$.
#
# <details><summary>Solution</summary>
#
# ```python
# theta = torch.tensor([sbp.mean().item(), 0.0, 3.0], dtype=torch.float64, requires_grad=True)
# opt = torch.optim.Adam([theta], lr=0.1)
# for _ in range(3000):
#     opt.zero_grad()
#     loss = -Normal(theta[0] + theta[1] * u, theta[2].exp()).log_prob(sbp).mean()
#     loss.backward()
#     opt.step()
# print(f"{theta[2].exp():.3f}", f"{residual.pow(2).mean().sqrt():.3f}")
# ```
#
# The two agree: the maximum likelihood $\hat\sigma^2$ is the mean squared residual, divided by
# $n$ rather than $n - 2$.
#
# </details>
