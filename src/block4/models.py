"""The MLP builder behind every network of the course.

`mlp` builds a multi-layer perceptron whose hidden layers are *named*, so that callbacks
and figures can address them:

    MLP(
      (block0): HiddenBlock(linear, norm, act)    # in_features -> width
      (block1): HiddenBlock(linear, norm, act)    # width -> width (residual if asked)
      ...
      (head): Linear(width -> out_features)
    )

Each `HiddenBlock` has three children, always present so that code can rely on them:

- ``linear``: the affine map (``nn.Linear``),
- ``norm``: ``nn.BatchNorm1d``, ``nn.LayerNorm`` or ``nn.Identity``,
- ``act``: the activation module (``nn.Identity`` for ``"identity"``).

The *pre-activation* of a block is the input of ``act`` (the output of ``norm``). With
``residual=True`` a block whose input and output widths agree computes
\\( H(x) = x + F(x) \\) with \\( F(x) = \\mathrm{act}(\\mathrm{norm}(W x + b)) \\); the first block
maps ``in_features`` to ``width`` and is therefore residual only when the two are equal.

This module does not import Lightning.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import torch
from torch import nn

if TYPE_CHECKING:
    from block4.stacked import StackedMLP, stack

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "NORMS",
    "BodyOptions",
    "MLP",
    "HiddenBlock",
    "StackedMLP",
    "check_options",
    "make_activation",
    "mlp",
    "stack",
]

#: Activation names accepted by `mlp`, mapped to their ``torch.nn`` classes.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}

#: Normalisation choices accepted by `mlp` (``None`` means no normalisation).
NORMS: tuple[str | None, ...] = (None, "batch", "layer")

#: Initialisation schemes accepted by `mlp`.
#:
#: - ``"default"``: PyTorch's own ``nn.Linear`` init (uniform, scaled by ``1/sqrt(fan_in)``;
#:   its variance is a third of He's, so deep ReLU stacks shrink their signal layer by layer).
#: - ``"kaiming"``: He normal init, ``std = gain / sqrt(fan_in)`` with the gain of the
#:   activation (``sqrt(2)`` for ReLU); biases zero.
#: - ``"xavier"``: Glorot normal init, ``std = gain * sqrt(2 / (fan_in + fan_out))``; biases zero.
#: - ``"normal"``: weights from ``N(0, init_std**2)``; biases zero (useful to show saturation
#:   and exploding/vanishing signals on purpose).
INITS: tuple[str, ...] = ("default", "kaiming", "xavier", "normal")

# Names torch.nn.init.calculate_gain understands, per activation.
_GAIN_NAME = {
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "gelu": "relu",  # GELU behaves like ReLU for large |x|; the common choice
    "identity": "linear",
}


class BodyOptions(TypedDict, total=False):
    """The options of an [`mlp`][block4.models.mlp] body, as the LightningModules take them.

    `Classifier` and `ProbabilisticRegressor` accept these as keyword arguments (on the command
    line ``--model.depth 3``); they are saved with the other hyperparameters.

    Attributes:
        depth: hidden layers (0 = a linear model, no hidden layer).
        width: units per hidden layer.
        activation: ``sigmoid, tanh, relu, leaky_relu, gelu`` or ``identity``.
        norm: ``None``, ``"batch"`` or ``"layer"``.
        residual: skip connections in the hidden blocks (with several members: one flag, or
            a list with one per member).
        init: ``"default"``, ``"kaiming"``, ``"xavier"`` or ``"normal"`` (with several
            members: one name, or a list with one per member).
        bias: bias of the hidden layers (``None``: off when followed by BatchNorm).
        init_std: standard deviation of ``init="normal"`` (or one per member).
    """

    depth: int
    width: int
    activation: str
    norm: Literal["batch", "layer"] | None
    residual: bool | list[bool]
    init: str | list[str]
    bias: bool | None
    init_std: float | list[float]


def _choices(options: object) -> str:
    return ", ".join("None" if o is None else str(o) for o in options)  # type: ignore[attr-defined]


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module for ``name``.

    Args:
        name: one of `ACTIVATIONS` (``sigmoid, tanh, relu, leaky_relu, gelu, identity``).

    Raises:
        ValueError: if ``name`` is not a supported activation.
    """
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"activation {name!r} is not supported; choose one of: {_choices(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]()


def check_options(
    in_features: int,
    out_features: int,
    depth: int,
    width: int,
    activation: str = "relu",
    norm: str | None = None,
    init: str = "default",
    init_std: float = 0.01,
) -> None:
    """Raise ``ValueError`` (what was wrong, what is allowed) for an invalid `mlp` option."""
    for name, value in (
        ("in_features", in_features),
        ("out_features", out_features),
        ("depth", depth),
        ("width", width),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    make_activation(activation)  # validates the name with the standard message
    if norm not in NORMS:
        raise ValueError(f"norm {norm!r} is not supported; choose one of: {_choices(NORMS)}")
    if init not in INITS:
        raise ValueError(f"init {init!r} is not supported; choose one of: {_choices(INITS)}")
    if isinstance(init_std, bool) or not isinstance(init_std, (int, float)) or not init_std > 0:
        raise ValueError(f"init_std must be a number > 0, got {init_std!r}")


class _LinearNormAct(nn.Module):
    """The computation of a hidden block, ``act(norm(linear(x)))`` (``+ x`` when residual);
    shared by `HiddenBlock` and its stacked form, so the two cannot drift apart."""

    linear: nn.Module
    norm: nn.Module
    act: nn.Module
    residual: bool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_shortcut(x, self.act(self.norm(self.linear(x))))

    def add_shortcut(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The block's output from its input ``x`` and ``out = act(norm(linear(x)))``."""
        return x + out if self.residual else out

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


class HiddenBlock(_LinearNormAct):
    """One hidden layer: ``linear -> norm -> act``, optionally with a skip connection.

    Attributes:
        linear: the affine map ``in_features -> out_features``.
        norm: ``nn.BatchNorm1d``, ``nn.LayerNorm`` or ``nn.Identity``.
        act: the activation module.
        residual: whether the block returns ``x + act(norm(linear(x)))``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "relu",
        norm: str | None = None,
        residual: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if residual and in_features != out_features:
            raise ValueError(
                f"a residual block needs equal input and output widths, got {in_features} and "
                f"{out_features}"
            )
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        if norm is None:
            self.norm: nn.Module = nn.Identity()
        elif norm == "batch":
            self.norm = nn.BatchNorm1d(out_features)
        elif norm == "layer":
            self.norm = nn.LayerNorm(out_features)
        else:
            raise ValueError(f"norm {norm!r} is not supported; choose one of: {_choices(NORMS)}")
        self.act = make_activation(activation)
        self.residual = residual


class MLP(nn.Sequential):
    """A multi-layer perceptron: hidden blocks ``block0 .. block{depth-1}`` and a ``head``.

    Build it with `mlp`. It is an ``nn.Sequential``, so ``model[:-1]`` is the feature
    extractor (all hidden blocks) and ``model.head`` the final linear layer.

    Attributes:
        in_features: input width.
        out_features: output width (the number of outputs of ``head``).
        depth: number of hidden blocks.
        width: width of every hidden block.
        activation: activation name.
        norm: normalisation name or ``None``.
        residual: whether hidden blocks of equal in/out width carry skip connections.
        init: initialisation scheme (see `INITS`).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        depth: int,
        width: int,
        activation: str = "relu",
        norm: str | None = None,
        residual: bool = False,
        init: str = "default",
        bias: bool | None = None,
        init_std: float = 0.01,
    ) -> None:
        check_options(in_features, out_features, depth, width, activation, norm, init, init_std)
        # A linear layer followed by BatchNorm needs no bias: BatchNorm subtracts the batch mean
        # (removing any constant shift) and adds its own learnable shift beta.
        hidden_bias = (norm != "batch") if bias is None else bool(bias)

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        fan_in = in_features
        for i in range(depth):
            layers[f"block{i}"] = HiddenBlock(
                fan_in,
                width,
                activation=activation,
                norm=norm,
                residual=residual and fan_in == width,
                bias=hidden_bias,
            )
            fan_in = width
        layers["head"] = nn.Linear(width, out_features)
        super().__init__(layers)

        self.in_features = in_features
        self.out_features = out_features
        self.depth = depth
        self.width = width
        self.activation = activation
        self.norm = norm
        self.residual = residual
        self.init = init
        self.init_std = init_std
        if init != "default":  # the layers already carry PyTorch's default init
            self.reset_parameters()

    def __getitem__(self, idx: int | slice) -> nn.Module:  # type: ignore[override]
        # A slice of an MLP is a plain ``nn.Sequential`` sharing the same layers.
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))  # type: ignore[arg-type]
        return super().__getitem__(idx)

    def hidden_blocks(self) -> Iterator[tuple[str, HiddenBlock]]:
        """Yield ``(name, block)`` for the hidden blocks, from the input side."""
        for name, module in self.named_children():
            if isinstance(module, HiddenBlock):
                yield name, module

    def linear_layers(self) -> Iterator[tuple[str, nn.Linear]]:
        """Yield ``(name, linear)`` for every affine layer, input side first, ``head`` last.

        Names are ``"block0"``, ``"block1"``, ... and ``"head"``; these are the layer names
        used by [`GradientFlowMonitor`][block4.callbacks.GradientFlowMonitor].
        """
        for name, block in self.hidden_blocks():
            yield name, block.linear
        yield "head", self.head

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """(Re-)initialise every linear layer with the scheme in `init`."""
        gain_name = _GAIN_NAME[self.activation]
        for name, layer in self.linear_layers():
            if self.init == "default":
                layer.reset_parameters()
                continue
            # The head feeds no activation: it gets the linear gain.
            g_name = "linear" if name == "head" else gain_name
            gain = nn.init.calculate_gain(g_name, 0.01 if g_name == "leaky_relu" else None)
            if self.init == "kaiming":
                fan_in = layer.weight.shape[1]
                nn.init.normal_(layer.weight, 0.0, gain / fan_in**0.5)
            elif self.init == "xavier":
                nn.init.xavier_normal_(layer.weight, gain=gain)
            else:  # "normal"
                nn.init.normal_(layer.weight, 0.0, self.init_std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The output of the last hidden block (the input of ``head``)."""
        for _, block in self.hidden_blocks():
            x = block(x)
        return x


def mlp(
    in_features: int,
    out_features: int,
    depth: int,
    width: int,
    activation: str = "relu",
    norm: Literal["batch", "layer"] | None = None,
    residual: bool | Sequence[bool] = False,
    init: str | Sequence[str] = "default",
    bias: bool | None = None,
    init_std: float | Sequence[float] = 0.01,
    *,
    members: int | None = None,
    seed: int | Sequence[int] | None = None,
) -> MLP | StackedMLP:
    """Build a multi-layer perceptron with ``depth`` named hidden blocks (or a stack of them).

    Args:
        in_features: width of the input.
        out_features: width of the output (logits, or the parameters a head expects).
        depth: number of hidden layers (>= 1).
        width: units per hidden layer (>= 1).
        activation: one of ``sigmoid, tanh, relu, leaky_relu, gelu, identity``.
        norm: ``None``, ``"batch"`` (``BatchNorm1d``) or ``"layer"`` (``LayerNorm``), placed
            between each hidden linear layer and its activation.
        residual: add skip connections, \\( H(x) = x + F(x) \\), to every hidden block whose
            input and output widths agree (all but ``block0`` unless
            ``in_features == width``). With ``members``, a list gives each member its own.
        init: ``"default"`` (PyTorch's), ``"kaiming"`` (He), ``"xavier"`` (Glorot) or
            ``"normal"`` (``N(0, init_std**2)``); see `INITS`. With ``members``, a list gives
            each member its own.
        bias: bias of the hidden linear layers; ``None``: none before BatchNorm, else yes.
        init_std: standard deviation for ``init="normal"`` (a list: one per member).
        members: ``None`` (default) builds one `MLP`; an integer ``E >= 1`` builds a
            [`StackedMLP`][block4.stacked.StackedMLP] of ``E`` independent members.
        seed: seed of the initial weights; ``None`` draws from the global RNG. A seed is
            applied in a forked RNG, so the global RNG is left alone. With ``members``,
            member ``k`` gets seed ``seed + k`` (or ``seed[k]`` for a list): it is
            bit-for-bit the MLP that ``mlp(..., seed=seed + k)`` builds.

    Returns:
        An `MLP` (an ``nn.Sequential`` with children ``block0 .. block{depth-1}``,
        ``head``), or a ``StackedMLP`` with the same children names.

    Raises:
        ValueError: for an unknown activation, norm or init, a size below 1, ``members < 1``,
            or a per-member list whose length is not ``members``.

    Examples:
        >>> net = mlp(64, 10, depth=2, width=32, norm="batch")
        >>> [name for name, _ in net.named_children()]
        ['block0', 'block1', 'head']
        >>> net.block0.linear.bias is None   # followed by BatchNorm
        True
        >>> stacked = mlp(64, 10, depth=2, width=32, members=4, seed=0)
        >>> stacked(torch.zeros(8, 64)).shape   # [members, batch, out]
        torch.Size([4, 8, 10])
    """
    options = dict(
        in_features=in_features,
        out_features=out_features,
        depth=depth,
        width=width,
        activation=activation,
        norm=norm,
        residual=residual,
        init=init,
        bias=bias,
        init_std=init_std,
    )
    if members is not None:
        return _stacked_mlp(options, members, seed)
    for name in ("residual", "init", "init_std", "seed"):
        if isinstance(options.get(name, seed), (list, tuple)):
            raise ValueError(f"{name} is a list, which needs members=len({name}); got members=None")
    if seed is None:
        return MLP(**options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_check_seed(seed))
        return MLP(**options)


def _stacked_mlp(options: dict[str, Any], members: int, seed: Any) -> StackedMLP:
    """`mlp` with ``members``: member ``k`` seeded with ``seed + k`` (or ``seed[k]``)."""
    from block4.stacked import _check_members, member_values, stacked_mlp

    members = _check_members(members)
    if seed is None:
        seeds: list[int | None] = [None] * members
    elif isinstance(seed, (list, tuple)):
        seeds = member_values("seed", seed, members)
    else:
        seeds = [_check_seed(seed) + k for k in range(members)]
    return stacked_mlp(members, seeds, **options)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, a list of integers or None, got {seed!r}")
    return seed


def __getattr__(name: str) -> object:
    # The stacked classes live in block4.stacked (which builds on this module); they are
    # offered here too, loaded on first use to keep the import one-way.
    if name in ("StackedMLP", "stack"):
        from block4 import stacked

        return getattr(stacked, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
