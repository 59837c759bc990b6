"""Many small MLPs trained as one: stacked parameters, batched matmuls, per-member optimisers.

A `StackedMLP` holds ``E`` independent members of the same shape. Every parameter carries the
member as its first dimension (a hidden weight is ``[E, in, out]``), so one batched matmul
(``torch.baddbmm``) runs all members at once: a step costs about as much as one member's
step, which is dominated by Python and kernel-launch overhead for nets this small.

- Input ``[E, B, F]`` (each member its own batch) or ``[B, F]`` (one batch shared by all);
  output ``[E, B, out]``.
- Member ``k`` is exactly the `MLP` you would build alone: `stack` and `StackedMLP.member`
  convert both ways without changing a bit, and ``mlp(..., members=E, seed=s)`` gives member
  ``k`` the initial weights of ``mlp(..., seed=s + k)``.
- BatchNorm keeps statistics per member (``StackedBatchNorm``): the same numbers as each
  member's own ``nn.BatchNorm1d``.
- `StackedSGD` and `StackedAdam` step every member with its own learning rate (one optimiser
  param group cannot hold per-member rates of one tensor) and leave frozen members untouched.

This module does not import Lightning.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from block4.models import MLP, check_options, make_activation, mlp

__all__ = [
    "StackedAdam",
    "StackedBatchNorm",
    "StackedHiddenBlock",
    "StackedLayerNorm",
    "StackedLinear",
    "StackedMLP",
    "StackedSGD",
    "member_values",
    "stack",
]


def member_values(name: str, value: Any, members: int) -> list[Any]:
    """``value`` repeated for every member, or a per-member list/tuple checked for its length.

    Raises:
        ValueError: when a list or tuple does not have one entry per member.
    """
    if isinstance(value, (list, tuple)):
        if len(value) != members:
            raise ValueError(
                f"{name} has {len(value)} entries but there are {members} members; pass one "
                f"value for all members or a list of exactly {members}"
            )
        return list(value)
    return [value] * members


def _check_members(members: object) -> int:
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ValueError(f"members must be an integer >= 1, got {members!r}")
    return members


class StackedLinear(nn.Module):
    """``E`` independent affine maps: ``y[k] = x[k] @ weight[k] + bias[k]``.

    Attributes:
        weight: ``[E, in_features, out_features]`` (member ``k``'s ``nn.Linear.weight``
            transposed).
        bias: ``[E, out_features]`` or ``None``.
    """

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.zeros(members, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(members, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # one batch shared by all members
            x = x.unsqueeze(0).expand(self.members, -1, -1)
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)

    def extra_repr(self) -> str:
        return (
            f"members={self.members}, in_features={self.in_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}"
        )


class StackedBatchNorm(nn.Module):
    """BatchNorm with statistics per member and feature (``E`` ``nn.BatchNorm1d`` side by side).

    The ``[E, B, F]`` input is viewed as ``[B, E*F]`` and normalised by one
    ``F.batch_norm`` call: each (member, feature) column gets its own batch mean and variance
    and its own running statistics, exactly as member ``k``'s own ``BatchNorm1d`` would.

    Attributes:
        track_previous: keep the running statistics from before the last training forward
            (``previous_mean``/``previous_var``) so that a member found diverged after that
            forward can be rolled back with `restore_members`.
    """

    def __init__(self, members: int, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.members, self.num_features = members, num_features
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(members, num_features))
        self.bias = nn.Parameter(torch.zeros(members, num_features))
        self.register_buffer("running_mean", torch.zeros(members, num_features))
        self.register_buffer("running_var", torch.ones(members, num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.track_previous = False
        self._previous: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e, b, f = x.shape
        flat = x.transpose(0, 1).reshape(b, e * f)
        if self.training:
            if self.track_previous:
                self._previous = (self.running_mean.clone(), self.running_var.clone())
            self.num_batches_tracked.add_(1)
        out = F.batch_norm(
            flat,
            self.running_mean.view(-1),
            self.running_var.view(-1),
            self.weight.reshape(-1),
            self.bias.reshape(-1),
            self.training,
            self.momentum,
            self.eps,
        )
        return out.reshape(b, e, f).transpose(0, 1)

    @torch.no_grad()
    def restore_members(self, keep: torch.Tensor) -> None:
        """Roll the running statistics of members where ``keep`` is False back to before the
        last training forward (needs `track_previous`)."""
        if self._previous is None:
            return
        mask = keep.view(-1, 1)
        self.running_mean.copy_(torch.where(mask, self.running_mean, self._previous[0]))
        self.running_var.copy_(torch.where(mask, self.running_var, self._previous[1]))

    def extra_repr(self) -> str:
        return f"members={self.members}, num_features={self.num_features}, eps={self.eps}"


class StackedLayerNorm(nn.Module):
    """LayerNorm over the feature dimension with a per-member affine ``[E, F]``."""

    def __init__(self, members: int, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.members, self.num_features, self.eps = members, num_features, eps
        self.weight = nn.Parameter(torch.ones(members, num_features))
        self.bias = nn.Parameter(torch.zeros(members, num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.layer_norm(x, (self.num_features,), None, None, self.eps)
        return torch.addcmul(self.bias.unsqueeze(1), z, self.weight.unsqueeze(1))


class StackedHiddenBlock(nn.Module):
    """``E`` `HiddenBlock`s: ``linear -> norm -> act`` (``+ x`` when residual)."""

    def __init__(
        self,
        members: int,
        in_features: int,
        out_features: int,
        activation: str,
        norm: str | None,
        residual: bool,
        bias: bool,
    ) -> None:
        super().__init__()
        self.linear = StackedLinear(members, in_features, out_features, bias=bias)
        if norm == "batch":
            self.norm: nn.Module = StackedBatchNorm(members, out_features)
        elif norm == "layer":
            self.norm = StackedLayerNorm(members, out_features)
        else:
            self.norm = nn.Identity()
        self.act = make_activation(activation)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm(self.linear(x)))
        return x + out if self.residual else out

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


# The options that must agree for MLPs to be stacked (shape and computation).
_SHARED = ("in_features", "out_features", "depth", "width", "activation", "norm", "residual")


class StackedMLP(nn.Module):
    """``E`` independent `MLP`s of one shape, held as stacked parameters.

    Build it with ``mlp(..., members=E)`` or `stack`; get member ``k`` back as a plain `MLP`
    with `member`. Children mirror `MLP` (``block0 .. block{depth-1}``, ``head``), so the
    diagnostics callbacks find the same layer names, with one row per member.

    Args:
        members: number of members ``E``.
        in_features, out_features, depth, width, activation, norm, residual: as in `mlp`
            (shared by all members).
        init: per-member initialisation names (recorded for `member`; the weights are set by
            `stack`).
        init_std: per-member ``init_std``.
        bias: bias of the hidden linear layers (``None``: off before BatchNorm).

    Attributes:
        members: ``E``.
        inits, init_stds: per-member initialisation scheme and ``init_std``.
    """

    def __init__(
        self,
        members: int,
        in_features: int,
        out_features: int,
        depth: int,
        width: int,
        activation: str = "relu",
        norm: str | None = None,
        residual: bool = False,
        init: Sequence[str] | str = "default",
        bias: bool | None = None,
        init_std: Sequence[float] | float = 0.01,
    ) -> None:
        super().__init__()
        self.members = _check_members(members)
        check_options(in_features, out_features, depth, width, activation, norm)
        self.in_features, self.out_features = in_features, out_features
        self.depth, self.width = depth, width
        self.activation, self.norm, self.residual = activation, norm, residual
        self.inits = member_values("init", init, members)
        self.init_stds = member_values("init_std", init_std, members)
        for k in range(members):
            check_options(
                in_features,
                out_features,
                depth,
                width,
                init=self.inits[k],
                init_std=self.init_stds[k],
            )
        hidden_bias = (norm != "batch") if bias is None else bool(bias)
        self.hidden_bias = hidden_bias
        fan_in = in_features
        for i in range(depth):
            block = StackedHiddenBlock(
                members, fan_in, width, activation, norm, residual and fan_in == width, hidden_bias
            )
            self.add_module(f"block{i}", block)
            fan_in = width
        self.head = StackedLinear(members, width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[E, B, in_features]`` or shared ``[B, in_features]`` -> ``[E, B, out_features]``."""
        if (
            x.dim() not in (2, 3)
            or x.shape[-1] != self.in_features
            or (x.dim() == 3 and x.shape[0] != self.members)
        ):
            raise ValueError(
                f"input has shape {tuple(x.shape)}; a stack of {self.members} members expects "
                f"(batch, {self.in_features}) shared by all members or "
                f"({self.members}, batch, {self.in_features})"
            )
        return self.head(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The output of the last hidden block, ``[E, B, width]``."""
        for _, block in self.hidden_blocks():
            x = block(x)
        return x

    def hidden_blocks(self) -> Iterator[tuple[str, StackedHiddenBlock]]:
        """Yield ``(name, block)`` for the hidden blocks, from the input side."""
        for name, module in self.named_children():
            if isinstance(module, StackedHiddenBlock):
                yield name, module

    def linear_layers(self) -> Iterator[tuple[str, StackedLinear]]:
        """Yield ``(name, linear)``: ``block0 ..``, then ``head`` (as `MLP.linear_layers`)."""
        for name, block in self.hidden_blocks():
            yield name, block.linear
        yield "head", self.head

    def options(self, k: int) -> dict[str, Any]:
        """The keyword arguments of `mlp` that rebuild member ``k``'s architecture and init."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "depth": self.depth,
            "width": self.width,
            "activation": self.activation,
            "norm": self.norm,
            "residual": self.residual,
            "init": self.inits[k],
            "bias": self.hidden_bias,
            "init_std": self.init_stds[k],
        }

    def _check_index(self, k: object) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.members:
            raise IndexError(
                f"member index {k!r} is out of range; this stack has members 0..{self.members - 1}"
            )
        return k

    @torch.no_grad()
    def member(self, k: int) -> MLP:
        """Member ``k`` as a plain, independent `MLP` (parameters and BatchNorm statistics
        copied exactly; the stack is not changed).

        Raises:
            IndexError: when ``k`` is not in ``0 .. members - 1``.
        """
        k = self._check_index(k)
        with torch.random.fork_rng(devices=[]):  # building consumes random numbers
            single = mlp(**self.options(k))
        single.load_state_dict(_member_state(self, k))
        p = next(self.parameters())
        return single.to(device=p.device, dtype=p.dtype).train(self.training)

    def extra_repr(self) -> str:
        return f"members={self.members}"


def _single_to_stacked(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A single MLP's state dict with linear weights transposed to the stacked layout."""
    out = {}
    for name, value in state.items():
        if name.endswith("linear.weight") or name == "head.weight":
            value = value.t()
        out[name] = value
    return out


def _member_state(stacked: StackedMLP, k: int) -> dict[str, torch.Tensor]:
    state = {}
    for name, value in stacked.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = value.clone()
            continue
        value = value[k]
        if name.endswith("linear.weight") or name == "head.weight":
            value = value.t()
        state[name] = value.clone()
    return state


def _options_of(net: object, what: str) -> dict[str, Any]:
    if not isinstance(net, MLP):
        raise TypeError(f"{what} must be a block4.models.MLP, got {type(net).__name__}")
    options = {o: getattr(net, o) for o in _SHARED}
    options["hidden bias"] = net.block0.linear.bias is not None
    return options


def stack(nets: Sequence[MLP]) -> StackedMLP:
    """Stack MLPs of one shape into a `StackedMLP` (parameters and BatchNorm statistics
    copied exactly; member ``k`` is ``nets[k]``).

    Raises:
        ValueError: for an empty list, or MLPs that differ in shape or options (depth, width,
            activation, norm, residual, hidden bias).
        TypeError: for anything that is not an `MLP`.

    Examples:
        >>> nets = [mlp(4, 2, depth=2, width=8, seed=s) for s in range(3)]
        >>> stacked = stack(nets)
        >>> stacked(torch.zeros(5, 4)).shape
        torch.Size([3, 5, 2])
        >>> torch.equal(stacked.member(1).head.weight, nets[1].head.weight)
        True
    """
    nets = list(nets)
    if not nets:
        raise ValueError("stack needs at least one MLP, got an empty list")
    reference = _options_of(nets[0], "nets[0]")
    for i, net in enumerate(nets[1:], start=1):
        options = _options_of(net, f"nets[{i}]")
        for name, value in options.items():
            if value != reference[name]:
                raise ValueError(
                    f"cannot stack MLPs that differ in {name}: nets[{i}] has {value!r}, "
                    f"nets[0] has {reference[name]!r}; the members of a stack share "
                    f"{', '.join(_SHARED)} and the hidden bias"
                )
    first = nets[0]
    p = next(first.parameters())
    stacked = StackedMLP(
        len(nets),
        **{o: reference[o] for o in _SHARED},
        init=[n.init for n in nets],
        bias=reference["hidden bias"],
        init_std=[n.init_std for n in nets],
    )
    states = [_single_to_stacked(n.state_dict()) for n in nets]
    merged = {}
    for name in states[0]:
        if name.endswith("num_batches_tracked"):
            merged[name] = states[0][name].clone()
        else:
            merged[name] = torch.stack([s[name] for s in states]).contiguous()
    stacked.load_state_dict(merged)
    return stacked.to(device=p.device, dtype=p.dtype).train(first.training)


def stacked_mlp(members: int, seeds: Sequence[int | None], **options: Any) -> StackedMLP:
    """Build member ``k`` as ``mlp(**options, seed=seeds[k])`` and stack the members.

    ``init`` and ``init_std`` in ``options`` may be per-member lists.
    """
    members = _check_members(members)
    seeds = member_values("seed", seeds, members)
    inits = member_values("init", options.pop("init", "default"), members)
    stds = member_values("init_std", options.pop("init_std", 0.01), members)
    nets = [mlp(**options, init=inits[k], init_std=stds[k], seed=seeds[k]) for k in range(members)]
    return stack(nets)


# --- optimisers -----------------------------------------------------------------------------


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
        if self.active is not None and params:
            zero = torch.zeros((), dtype=params[0].dtype, device=params[0].device)
            grads = [torch.where(self._view(self.active, g), g, zero) for g in grads]
        return params, grads

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

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = self._gather(group)
            if not params:
                continue
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
                if group["nesterov"]:
                    grads = torch._foreach_add(grads, bufs, alpha=momentum)
                else:
                    grads = bufs
            neg_lr = self._per_member([-group["lr"] * v for v in group["member_lr"]], params)
            torch._foreach_add_(params, torch._foreach_mul(grads, neg_lr))
        return loss


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

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = self._gather(group)
            if not params:
                continue
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
            step_size = self._per_member([-lr / bias_correction1 for lr in lrs], params)
            denom = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denom, bias_correction2_sqrt)
            torch._foreach_add_(denom, group["eps"])
            update = torch._foreach_mul(exp_avgs, step_size)
            torch._foreach_div_(update, denom)
            torch._foreach_add_(params, update)
        return loss
