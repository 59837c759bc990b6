"""A small convolutional ResNet for 8x8 images, its plain twin, and many of them trained as one.

The design follows He et al. (2016), "Deep Residual Learning for Image Recognition", scaled
down to the 8x8 digits:

    ResNet(
      (stem): Stem(conv 3x3 -> BN -> ReLU)             # in_channels -> width
      (blocks): Sequential(                              # `blocks` basic blocks
        (0): BasicBlock(conv 3x3 -> BN -> ReLU -> conv 3x3 -> BN, + x, ReLU)
        ...
      )
      (head): Linear(width -> n_classes)                 # after global average pooling
    )

A *basic block* computes \\( \\mathrm{relu}(x + F(x)) \\) with
\\( F(x) = \\mathrm{BN}(W_2 * \\mathrm{relu}(\\mathrm{BN}(W_1 * x))) \\): two 3x3 convolutions with
batch norm, an identity shortcut, and the ReLU *after* the addition. Its *plain twin*
(``residual=False``) has exactly the same layers and computes \\( \\mathrm{relu}(F(x)) \\).

Every block keeps the width and the resolution of the stem, so every shortcut is an identity
and no 1x1 projection is needed (He et al.'s ImageNet nets change width at stage boundaries
and project there; at 8x8 pixels there is nothing to gain from stages). The stem may halve the
resolution (``stem_stride=2``: 8x8 -> 4x4), as the ImageNet ResNets' stem does.

Depth is counted as in the paper, convolutional and fully connected layers:
``depth = 2 * blocks + 2`` (the stem, two convolutions per block, the classifier), so the
paper's CIFAR nets ResNet-20, -32, -56 have 9, 15 and 27 blocks here.

**Many nets as one.** `StackedResNet` holds ``E`` independent members in one network:
every convolution is a grouped convolution (``groups=E``) whose channels are member-major
(member k owns channels ``k*width .. (k+1)*width - 1``), so member k only ever sees its own
channels; ``BatchNorm2d`` normalises each channel separately, so batch statistics are per
member without anything extra; the classifier is a batched (grouped) linear layer. Member k
starts from weights bit-identical to ``resnet(..., seed=seeds[k])`` and `StackedResNet.member`
extracts it again as a plain `ResNet`. Members may differ in having shortcuts (``residual`` per
member): a plain net and its residual twin then train in the same network, each block adding
its input only to the channels of the residual members.

This module does not import Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from block4.stacked import residual_flags

__all__ = [
    "BasicBlock",
    "GroupedLinear",
    "MixedShortcutBlock",
    "ResNet",
    "StackedResNet",
    "Stem",
    "blocks_for_depth",
    "resnet",
    "stack_resnets",
    "stacked_resnet",
]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def blocks_for_depth(depth: int) -> int:
    """The number of basic blocks of a net with ``depth`` layers: ``(depth - 2) / 2``.

    Raises:
        ValueError: unless ``depth`` is ``2 * blocks + 2`` with ``blocks >= 1`` (4, 6, 8, ...).
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 4 or depth % 2:
        raise ValueError(
            f"depth must be 2 * blocks + 2 with blocks >= 1 (4, 6, 8, ..., e.g. 8, 20, 32, 56: "
            f"the stem, two convolutions per block and the classifier), got {depth!r}"
        )
    return (depth - 2) // 2


class Stem(nn.Module):
    """The first layer: a 3x3 convolution, batch norm and ReLU (``groups`` members side by side)."""

    def __init__(self, in_channels: int, width: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            groups * in_channels,
            groups * width,
            3,
            stride=stride,
            padding=1,
            groups=groups,
            bias=False,  # batch norm follows and removes any constant shift
        )
        self.bn = nn.BatchNorm2d(groups * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm; ``relu(x + F(x))``, or ``relu(F(x))`` when plain.

    Args:
        width: channels in and out (per member).
        residual: add the identity shortcut (``False``: the plain twin, same layers).
        groups: members side by side (channels member-major); 1 for a single net.
    """

    def __init__(self, width: int, residual: bool = True, groups: int = 1) -> None:
        super().__init__()
        channels = groups * width
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.residual = residual

    # --8<-- [start:basic_block]
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))  # F(x)
        if self.residual:
            out = out + x  # the identity shortcut
        return F.relu(out)  # ReLU after the addition

    # --8<-- [end:basic_block]

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


class MixedShortcutBlock(BasicBlock):
    """A `BasicBlock` of a stack whose members differ: the shortcut only where ``residual[k]``.

    The shortcut is multiplied by a 0/1 mask per channel (member-major): a plain member's
    channels get ``relu(F(x) + 0)``, exactly its plain block, and no gradient through the
    shortcut.
    """

    def __init__(self, width: int, residual: Sequence[bool], groups: int) -> None:
        super().__init__(width, True, groups)
        self.residual = tuple(residual)  # type: ignore[assignment]
        mask = torch.tensor(self.residual, dtype=torch.float32).repeat_interleave(width)
        # not persistent: the state dict keeps the names and shapes of a single net's
        self.register_buffer("shortcut_mask", mask.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x * self.shortcut_mask)


class GroupedLinear(nn.Module):
    """``members`` independent linear layers applied at once: ``[B, E, in] -> [E, B, out]``.

    Attributes:
        weight: ``[E, out_features, in_features]``; ``weight[k]`` is member k's ``nn.Linear``
            weight.
        bias: ``[E, out_features]``.
    """

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features))
        bound = 1 / math.sqrt(in_features)  # nn.Linear's default, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [E, B, in] @ [E, in, out] + [E, 1, out]
        return torch.baddbmm(self.bias.unsqueeze(1), x.transpose(0, 1), self.weight.transpose(1, 2))

    def extra_repr(self) -> str:
        return f"members={self.members}, in_features={self.in_features}, out_features={self.out_features}"


class _ResNetBase(nn.Module):
    """The layers shared by `ResNet` and `StackedResNet` (``groups`` members side by side)."""

    def __init__(
        self,
        depth: int,
        width: int,
        in_channels: int,
        n_classes: int,
        residual: bool | Sequence[bool],
        stem_stride: int,
        groups: int,
    ) -> None:
        super().__init__()
        n_blocks = blocks_for_depth(depth)
        _check_int("width", width, 1)
        _check_int("in_channels", in_channels, 1)
        _check_int("n_classes", n_classes, 1)
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
        residual = residual_flags(residual, groups)  # all alike: plain blocks, no mask
        self.depth, self.width, self.in_channels = depth, width, in_channels
        self.n_classes, self.residual, self.stem_stride = n_classes, residual, stem_stride
        self.stem = Stem(in_channels, width, stem_stride, groups)
        self.blocks = nn.Sequential(
            *(
                BasicBlock(width, residual, groups)
                if isinstance(residual, bool)
                else MixedShortcutBlock(width, residual, groups)
                for _ in range(n_blocks)
            )
        )

    @property
    def n_blocks(self) -> int:
        """The number of basic blocks, ``(depth - 2) / 2``."""
        return len(self.blocks)

    def _check_images(self, x: torch.Tensor, leading: tuple[int, ...], what: str) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != len(leading) + 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected images {what}, got {shape}")
        if any(a != b for a, b in zip(x.shape[: len(leading)], leading, strict=True)) or (
            x.shape[len(leading) + 1] != self.in_channels
        ):
            raise ValueError(f"expected images {what}, got {tuple(x.shape)}")

    def _reset(self) -> None:
        # He et al.'s init ("MSRA", fan_out, as torchvision's ResNets); BN starts as identity.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


class ResNet(_ResNetBase):
    """A small convolutional ResNet (or its plain twin). Build it with `resnet`.

    ``forward(x)`` takes images ``[B, in_channels, H, W]`` and returns logits
    ``[B, n_classes]``.

    Attributes:
        depth: convolutional + fully connected layers, ``2 * n_blocks + 2``.
        width: channels of the stem and of every block.
        residual: whether the blocks add their identity shortcut.
        stem: `Stem`; blocks: ``nn.Sequential`` of `BasicBlock`; head: ``nn.Linear``.
    """

    def __init__(
        self,
        depth: int,
        width: int = 16,
        in_channels: int = 1,
        n_classes: int = 10,
        residual: bool = True,
        stem_stride: int = 1,
    ) -> None:
        super().__init__(depth, width, in_channels, n_classes, residual, stem_stride, groups=1)
        self.head = nn.Linear(width, n_classes)
        self._reset()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features ``[B, width]`` (the input of ``head``)."""
        self._check_images(x, (), f"[B, {self.in_channels}, H, W]")
        return self.blocks(self.stem(x)).mean(dim=(2, 3))  # global average pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class StackedResNet(_ResNetBase):
    """``members`` independent `ResNet` s in one network (grouped convolutions, member-major).

    Build it with `stacked_resnet` (member k seeded ``seeds[k]``) or `stack_resnets`.

    ``forward(x)`` takes images ``[B, in_channels, H, W]`` shared by every member, or
    ``[members, B, in_channels, H, W]`` (member k gets ``x[k]``), and returns logits
    ``[members, B, n_classes]``: ``out[k]`` equals ``member(k)(x or x[k])``, its gradients
    those of the single net (to float rounding).

    Attributes:
        members: the number of members E.
        residual: ``True``/``False`` when all members agree, else one flag per member.
        head: `GroupedLinear`; the others as in `ResNet`, ``members`` times as wide.
    """

    def __init__(
        self,
        depth: int,
        members: int,
        width: int = 16,
        in_channels: int = 1,
        n_classes: int = 10,
        residual: bool | Sequence[bool] = True,
        stem_stride: int = 1,
    ) -> None:
        _check_int("members", members, 1)
        super().__init__(
            depth, width, in_channels, n_classes, residual, stem_stride, groups=members
        )
        self.members = members
        self.head = GroupedLinear(members, width, n_classes)
        self._reset()

    def member_residual(self, k: int) -> bool:
        """Whether member ``k`` has shortcuts."""
        return self.residual if isinstance(self.residual, bool) else self.residual[k]

    def config(self, k: int = 0) -> dict[str, object]:
        """The arguments of `resnet` that build member ``k``."""
        return {
            "depth": self.depth,
            "width": self.width,
            "in_channels": self.in_channels,
            "n_classes": self.n_classes,
            "residual": self.member_residual(k),
            "stem_stride": self.stem_stride,
        }

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features ``[B, members, width]``."""
        e, c = self.members, self.in_channels
        if isinstance(x, torch.Tensor) and x.ndim == 5:
            self._check_images(x, (e,), f"[B, {c}, H, W] or [{e}, B, {c}, H, W]")
            # [E, B, C, H, W] -> [B, E*C, H, W], member-major channels
            x = x.transpose(0, 1).reshape(x.shape[1], e * c, *x.shape[3:])
        else:
            self._check_images(x, (), f"[B, {c}, H, W] or [{e}, B, {c}, H, W]")
            x = x.repeat(1, e, 1, 1)
        h = self.blocks(self.stem(x)).mean(dim=(2, 3))  # [B, E*width]
        return h.view(h.shape[0], e, self.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def member(self, k: int) -> ResNet:
        """Member ``k`` as a separate `ResNet` (a copy: weights, BN statistics, mode).

        Raises:
            IndexError: unless ``0 <= k < members``.
        """
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.members:
            raise IndexError(f"member index must be an integer in [0, {self.members}), got {k!r}")
        net = ResNet(**self.config(k))  # type: ignore[arg-type]
        ours = self.state_dict()
        net.load_state_dict(
            {name: _member_slice(ours[name], value, k) for name, value in net.state_dict().items()}
        )
        net.to(device=self.head.weight.device)
        return net.train(self.training)

    @torch.no_grad()
    def load_members(self, nets: Sequence[ResNet]) -> StackedResNet:
        """Copy ``nets`` (one per member, same configuration) into this stack; returns self.

        Raises:
            ValueError: for the wrong number of nets or a net of another configuration.
        """
        nets = list(nets)
        if len(nets) != self.members:
            raise ValueError(f"expected {self.members} nets (one per member), got {len(nets)}")
        for i, net in enumerate(nets):
            if not isinstance(net, ResNet):
                raise ValueError(f"net {i} is a {type(net).__name__}, not a ResNet")
            if _config(net) != self.config(i):
                raise ValueError(
                    f"net {i} has configuration {_config(net)}, member {i} of the stack "
                    f"{self.config(i)}"
                )
        states = [net.state_dict() for net in nets]
        merged = {}
        for name, value in self.state_dict().items():
            parts = [s[name] for s in states]
            if value.ndim == 0:  # num_batches_tracked: one counter for every member
                merged[name] = parts[0].clone()
            else:
                merged[name] = torch.stack(parts).reshape(value.shape)
        self.load_state_dict(merged)
        return self


def _member_slice(stacked: torch.Tensor, single: torch.Tensor, k: int) -> torch.Tensor:
    """Member k's part of a stacked tensor: its leading dimension is member-major."""
    if single.ndim == 0:
        return stacked.clone()
    return stacked.reshape(-1, *single.shape)[k].clone()


def _config(net: ResNet) -> dict[str, object]:
    return {
        "depth": net.depth,
        "width": net.width,
        "in_channels": net.in_channels,
        "n_classes": net.n_classes,
        "residual": net.residual,
        "stem_stride": net.stem_stride,
    }


def resnet(
    depth: int,
    width: int = 16,
    *,
    in_channels: int = 1,
    n_classes: int = 10,
    residual: bool = True,
    stem_stride: int = 1,
    seed: int | None = None,
) -> ResNet:
    """Build a small convolutional ResNet (``residual=False``: its plain twin).

    Args:
        depth: convolutional + fully connected layers, ``2 * blocks + 2`` (e.g. 8, 20, 32).
        width: channels of the stem and every block (constant: every shortcut is an identity).
        in_channels: channels of the input images (1 for the digits).
        n_classes: outputs of the classifier.
        residual: identity shortcuts in every block; ``False`` gives the plain twin.
        stem_stride: 1 keeps the input resolution, 2 halves it (8x8 -> 4x4).
        seed: build the initial weights from ``torch.manual_seed(seed)`` without touching the
            global random state; ``None`` draws from the global generator.

    Raises:
        ValueError: for a depth not of the form ``2 * blocks + 2`` or a size below 1.

    Examples:
        >>> net = resnet(8, width=4, seed=0)
        >>> net.n_blocks, net(torch.zeros(2, 1, 8, 8)).shape
        (3, torch.Size([2, 10]))
    """
    kwargs = {
        "depth": depth,
        "width": width,
        "in_channels": in_channels,
        "n_classes": n_classes,
        "residual": residual,
        "stem_stride": stem_stride,
    }
    if seed is None:
        return ResNet(**kwargs)  # type: ignore[arg-type]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ResNet(**kwargs)  # type: ignore[arg-type]


def stacked_resnet(
    depth: int,
    members: int,
    width: int = 16,
    *,
    seeds: Sequence[int] | None = None,
    in_channels: int = 1,
    n_classes: int = 10,
    residual: bool | Sequence[bool] = True,
    stem_stride: int = 1,
) -> StackedResNet:
    """``members`` ResNets in one `StackedResNet`; member k starts as ``resnet(..., seed=seeds[k])``.

    Args:
        depth: as in `resnet` (shared by all members, like the next four).
        members: the number of members E (>= 1).
        width: as in `resnet`.
        in_channels: as in `resnet`.
        n_classes: as in `resnet`.
        stem_stride: as in `resnet`.
        seeds: one seed per member; default ``0, 1, ..., members - 1``.
        residual: shortcuts for every member, or one flag per member (plain nets and their
            residual twins side by side; a twin of the same seed starts from the same weights).

    Raises:
        ValueError: for ``members < 1``, a seeds or residual list of another length, or a
            bad `resnet` argument.

    Examples:
        >>> nets = stacked_resnet(8, members=3, width=4)
        >>> nets(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([3, 2, 10])
    """
    _check_int("members", members, 1)
    seeds = list(range(members)) if seeds is None else list(seeds)
    if len(seeds) != members:
        raise ValueError(f"seeds must give one seed per member ({members}), got {len(seeds)}")
    for s in seeds:
        _check_int("every seed", s, 0)
    flags = [residual] * members if isinstance(residual, bool) else list(residual)
    if len(flags) != members:
        raise ValueError(
            f"residual must be one flag for all members or one per member ({members}), "
            f"got {len(flags)}"
        )
    config = {
        "depth": depth,
        "width": width,
        "in_channels": in_channels,
        "n_classes": n_classes,
        "stem_stride": stem_stride,
    }
    nets = [
        resnet(**config, residual=r, seed=s)  # type: ignore[arg-type]
        for s, r in zip(seeds, flags, strict=True)
    ]
    with torch.random.fork_rng(devices=[]):  # its own init is overwritten: leave no trace
        stacked = StackedResNet(members=members, residual=flags, **config)  # type: ignore[arg-type]
    return stacked.load_members(nets)


def stack_resnets(nets: Sequence[ResNet]) -> StackedResNet:
    """Stack ResNets of one configuration into a `StackedResNet` (copies of their weights).

    The nets may differ in ``residual`` (plain nets and residual twins); everything else must
    agree.

    Raises:
        ValueError: for an empty list or nets of different configurations.
    """
    nets = list(nets)
    if not nets:
        raise ValueError("stack_resnets needs at least one ResNet (members must be >= 1)")
    for i, net in enumerate(nets):
        if not isinstance(net, ResNet):
            raise ValueError(f"net {i} is a {type(net).__name__}, not a ResNet")
    config = _config(nets[0])
    config["residual"] = [net.residual for net in nets]
    with torch.random.fork_rng(devices=[]):  # its own init is overwritten: leave no trace
        stacked = StackedResNet(members=len(nets), **config)  # type: ignore[arg-type]
    return stacked.load_members(nets).train(nets[0].training)
