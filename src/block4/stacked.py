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
- [`StackedSGD`][block4.stacked_optim.StackedSGD] and
  [`StackedAdam`][block4.stacked_optim.StackedAdam] step every member with its own learning
  rate and leave frozen members untouched.
- `ensemble_dist` mixes the members' predictive distributions; `aleatoric_variance` and
  `epistemic_variance` split the mixture's variance.

This module does not import Lightning.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import distributions as D
from torch import nn

from block4.models import MLP, _LinearNormAct, check_options, make_activation, mlp

__all__ = [
    "aleatoric_variance",
    "ensemble_dist",
    "epistemic_variance",
    "StackedBatchNorm",
    "StackedHiddenBlock",
    "StackedLayerNorm",
    "StackedLinear",
    "StackedMLP",
    "member_values",
    "residual_flags",
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


def residual_flags(residual: object, members: int) -> bool | tuple[bool, ...]:
    """``residual`` of a stack (of MLPs or ResNets): one flag when every member agrees, else a
    tuple with one per member.

    Raises:
        ValueError: for a list of the wrong length or an entry that is not True/False.
    """
    flags = member_values("residual", residual, members)
    if not all(isinstance(f, bool) for f in flags):
        raise ValueError(
            f"residual must be True or False, or a list of them with one per member; "
            f"got {residual!r}"
        )
    return flags[0] if len(set(flags)) == 1 else tuple(flags)


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


class StackedHiddenBlock(_LinearNormAct):
    """``E`` `HiddenBlock`s: ``linear -> norm -> act`` (``+ x`` when residual).

    ``residual`` is one flag for every member or one per member; with mixed flags the block
    returns ``x + out`` for the residual members and ``out`` for the others (a
    ``torch.where`` per member: each member computes exactly its own block, and a plain
    member gets no gradient through the shortcut).
    """

    def __init__(
        self,
        members: int,
        in_features: int,
        out_features: int,
        activation: str,
        norm: str | None,
        residual: bool | Sequence[bool],
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
        self.residual = residual_flags(residual, members)  # type: ignore[assignment]
        mask = (
            None if isinstance(self.residual, bool) else torch.tensor(self.residual)[:, None, None]
        )
        # not persistent: the state dict keeps the names and shapes of the members' own
        self.register_buffer("shortcut_mask", mask, persistent=False)

    def add_shortcut(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.shortcut_mask is None:
            return super().add_shortcut(x, out)
        return torch.where(self.shortcut_mask, x + out, out)


# The options that must agree for MLPs to be stacked (shape and computation); ``residual``
# and the initialisation may differ per member.
_SHARED = ("in_features", "out_features", "depth", "width", "activation", "norm")


class StackedMLP(nn.Module):
    """``E`` independent `MLP`s of one shape, held as stacked parameters.

    Build it with ``mlp(..., members=E)`` or `stack`; get member ``k`` back as a plain `MLP`
    with `member`. Children mirror `MLP` (``block0 .. block{depth-1}``, ``head``), so the
    diagnostics callbacks find the same layer names, with one row per member.

    Args:
        members: number of members ``E``.
        in_features: as in `mlp` (shared by all members, like the next six).
        out_features: as in `mlp`.
        depth: as in `mlp`.
        width: as in `mlp`.
        activation: as in `mlp`.
        norm: as in `mlp`.
        residual: as in `mlp`: one flag, or one per member (plain and residual members of
            one shape).
        init: per-member initialisation names (recorded for `member`; the weights are set by
            `stack`).
        init_std: per-member ``init_std``.
        bias: bias of the hidden linear layers (``None``: off before BatchNorm).

    Attributes:
        members: ``E``.
        residual: ``True``/``False`` when all members agree, else one flag per member.
        inits: per-member initialisation scheme.
        init_stds: per-member ``init_std``.
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
        residual: bool | Sequence[bool] = False,
        init: Sequence[str] | str = "default",
        bias: bool | None = None,
        init_std: Sequence[float] | float = 0.01,
    ) -> None:
        super().__init__()
        self.members = _check_members(members)
        check_options(in_features, out_features, depth, width, activation, norm)
        self.in_features, self.out_features = in_features, out_features
        self.depth, self.width = depth, width
        self.activation, self.norm = activation, norm
        self.residual = residual_flags(residual, members)
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
            flags = [r and fan_in == width for r in self.residuals]
            block = StackedHiddenBlock(members, fan_in, width, activation, norm, flags, hidden_bias)
            self.add_module(f"block{i}", block)
            fan_in = width
        self.head = StackedLinear(members, width, out_features)

    @property
    def residuals(self) -> list[bool]:
        """Per-member ``residual``."""
        r = self.residual
        return [r] * self.members if isinstance(r, bool) else list(r)

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
            "residual": self.residuals[k],
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
            activation, norm, hidden bias); they may differ in ``residual`` and ``init``.
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
        residual=[n.residual for n in nets],
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

    ``residual``, ``init`` and ``init_std`` in ``options`` may be per-member lists.
    """
    members = _check_members(members)
    per_member = {"seed": member_values("seed", seeds, members)}
    for name, default in (("residual", False), ("init", "default"), ("init_std", 0.01)):
        per_member[name] = member_values(name, options.pop(name, default), members)
    nets = [mlp(**options, **{n: v[k] for n, v in per_member.items()}) for k in range(members)]
    return stack(nets)


# --- ensembles ------------------------------------------------------------------------------


def ensemble_dist(dist: D.Distribution, members: int) -> D.Distribution:
    """The ensemble's predictive distribution: the equal-weight mixture over the member
    dimension (dim 0) of ``dist`` (a ``Categorical`` of the mean probabilities for classes)."""
    if isinstance(dist, D.Categorical):
        return D.Categorical(probs=dist.probs.mean(0), validate_args=False)
    batch = dist.batch_shape
    # MixtureSameFamily mixes over the rightmost batch dimension: move the members there
    moved = _move_member_dim(dist)
    logits = moved.mean.new_zeros(*batch[1:], members)
    return D.MixtureSameFamily(D.Categorical(logits=logits), moved, validate_args=False)


def _move_member_dim(dist: D.Distribution) -> D.Distribution:
    """The same distribution with the member dimension moved from first to last."""
    if isinstance(dist, D.Normal):
        return D.Normal(dist.loc.movedim(0, -1), dist.scale.movedim(0, -1), validate_args=False)
    if isinstance(dist, D.StudentT):
        df, loc, scale = (t.movedim(0, -1) for t in (dist.df, dist.loc, dist.scale))
        return D.StudentT(df, loc, scale, validate_args=False)
    if isinstance(dist, D.Poisson):
        return D.Poisson(dist.rate.movedim(0, -1), validate_args=False)
    raise ValueError(
        f"the members' {type(dist).__name__} distributions have no ensemble mixture here; "
        "use member_dists() for them one by one"
    )


def aleatoric_variance(member_dists: D.Distribution) -> torch.Tensor:
    """Mean over members (dim 0) of each member's predictive variance: the noise in the data
    that every member sees."""
    return member_dists.variance.mean(0)


def epistemic_variance(member_dists: D.Distribution) -> torch.Tensor:
    """Variance over members (dim 0) of their predictive means: how much the members disagree
    (large where there were no data). ``aleatoric + epistemic`` is the mixture's variance."""
    return member_dists.mean.var(0, unbiased=False)
