"""Optimisers for stacked parameters: one learning rate per member, frozen members kept still.

One optimiser param group cannot hold per-member learning rates of one stacked tensor, so
`StackedSGD` and `StackedAdam` implement PyTorch's SGD and Adam/AdamW steps with a learning
rate per member (the first dimension of every parameter). A member stepped this way follows
the same arithmetic as its own ``torch.optim`` run (``tests/test_stacked_models.py``).

This module does not import Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["StackedAdam", "StackedSGD"]


class _StackedOptimizer(torch.optim.Optimizer):
    """Base: every parameter's first dimension is the member; ``lr`` is per member.

    ``group["lr"]`` stays a plain float multiplier (1.0 unless a scheduler changes it), so
    learning-rate schedulers and monitors work; member ``k`` steps with
    ``group["lr"] * group["member_lr"][k]``. Members whose entry in ``active`` (a bool tensor
    ``[E]``, shared with the caller) is False are not moved, and their gradients are ignored.
    The arithmetic is PyTorch's single-tensor algorithm, run on all parameters at once with
    ``torch._foreach_*`` kernels (the Python loop over parameters is what costs here).
    """

    def __init__(
        self,
        params: Any,
        member_lr: Sequence[float],
        defaults: dict[str, Any],
        active: torch.Tensor | None = None,
    ) -> None:
        member_lr = [float(v) for v in member_lr]
        bad = [v for v in member_lr if not v > 0]
        if bad:
            raise ValueError(f"every member's learning rate must be > 0, got {member_lr}")
        super().__init__(params, dict(defaults, lr=1.0, member_lr=tuple(member_lr)))
        self.active = active
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() == 0 or p.shape[0] != len(member_lr):
                    raise ValueError(
                        f"a stacked optimiser needs parameters whose first dimension is the "
                        f"member ({len(member_lr)}), got shape {tuple(p.shape)}"
                    )

    def _gather(self, group: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The parameters with gradients, and their gradients with frozen members zeroed."""
        params = [p for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        if self.active is not None and params and not bool(self.active.all()):
            zero = torch.zeros((), dtype=params[0].dtype, device=params[0].device)
            grads = [torch.where(self._view(self.active, g), g, zero) for g in grads]
        return params, grads

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = self._gather(group)
            if params:
                self._step_group(group, params, grads)
        return loss

    def _step_group(
        self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> None:
        """One step of the algorithm on the parameters of ``group`` that have gradients."""
        raise NotImplementedError

    @staticmethod
    def _view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.view(-1, *[1] * (like.dim() - 1))

    def _per_member(self, values: list[float], params: list[torch.Tensor]) -> list[torch.Tensor]:
        """``values`` (one per member, zero for frozen members) shaped to broadcast against
        each parameter."""
        p = params[0]
        v = torch.tensor(values, dtype=p.dtype, device=p.device)
        if self.active is not None:
            v = v * self.active.to(p.dtype)
        views = {d: v.view(-1, *[1] * (d - 1)) for d in {q.dim() for q in params}}
        return [views[q.dim()] for q in params]


class StackedSGD(_StackedOptimizer):
    """``torch.optim.SGD`` (momentum, dampening, Nesterov, weight decay) with a learning rate
    per member; the same arithmetic as PyTorch's single-tensor SGD, member by member."""

    def __init__(
        self,
        params: Any,
        member_lr: Sequence[float],
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        active: torch.Tensor | None = None,
    ) -> None:
        defaults = dict(
            momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov
        )
        super().__init__(params, member_lr, defaults, active)

    def _step_group(
        self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> None:
        if group["weight_decay"] != 0:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        momentum = group["momentum"]
        if momentum != 0:
            bufs = [self.state[p].get("momentum_buffer") for p in params]
            if any(b is None for b in bufs):
                bufs = [torch.clone(g).detach() for g in grads]
                for p, b in zip(params, bufs, strict=True):
                    self.state[p]["momentum_buffer"] = b
            else:
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads, alpha=1 - group["dampening"])
            grads = torch._foreach_add(grads, bufs, alpha=momentum) if group["nesterov"] else bufs
        neg_lr = self._per_member([-group["lr"] * v for v in group["member_lr"]], params)
        torch._foreach_add_(params, torch._foreach_mul(grads, neg_lr))


class StackedAdam(_StackedOptimizer):
    """``torch.optim.Adam`` (or AdamW with ``decoupled=True``) with a learning rate per member;
    the same arithmetic as PyTorch's single-tensor Adam, member by member."""

    def __init__(
        self,
        params: Any,
        member_lr: Sequence[float],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
        active: torch.Tensor | None = None,
    ) -> None:
        defaults = dict(betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled)
        super().__init__(params, member_lr, defaults, active)

    def _step_group(
        self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> None:
        beta1, beta2 = group["betas"]
        lrs = [group["lr"] * v for v in group["member_lr"]]
        states = [self.state[p] for p in params]
        for p, state in zip(params, states, strict=True):
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        torch._foreach_add_([s["step"] for s in states], 1.0)
        wd = group["weight_decay"]
        if wd != 0 and group["decoupled"]:
            shrink = self._per_member([lr * wd for lr in lrs], params)
            torch._foreach_sub_(params, torch._foreach_mul(params, shrink))
        elif wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        step = float(states[0]["step"])
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, group["eps"])
        if len(set(lrs)) == 1 and (self.active is None or bool(self.active.all())):
            # one learning rate, every member moving: PyTorch's multi-tensor Adam update
            torch._foreach_addcdiv_(params, exp_avgs, denom, value=-lrs[0] / bias_correction1)
            return
        # param + (step * exp_avg) / denom, as addcdiv computes it, with a step per member
        # (0 for a frozen one)
        step_size = self._per_member([-lr / bias_correction1 for lr in lrs], params)
        torch._foreach_addcdiv_(params, torch._foreach_mul(exp_avgs, step_size), denom)
