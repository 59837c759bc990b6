"""Mini-batches for stacked training: each member its own data order, or one order for all.

`MemberBatches` yields ``x`` of shape ``[E, B, ...]`` and ``y`` of shape ``[E, B, ...]``
where member ``k``'s slice is exactly the batch that a single
[`TensorBatches`][block4.data.TensorBatches] with ``seed=seeds[k]`` yields at the same step
(the same permutation per pass, drawn from ``seed_k + epoch``). With ``shared_order=True``
every member sees the batches of ``seeds[0]`` and the batches stay ``[B, ...]``, which a
[`StackedMLP`][block4.stacked.StackedMLP] broadcasts: use it when only the initialisation
should differ between members.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from block4.data.batches import TensorBatches, pass_generator

__all__ = ["MemberBatches"]


class MemberBatches:
    """An iterable of stacked ``(x, y)`` mini-batches, one data order per member.

    Args:
        x: inputs, first dimension = examples.
        y: targets, same first dimension.
        batch_size: examples per batch (the last batch may be smaller unless ``drop_last``).
        seeds: one base seed per member (member ``k`` sees what ``TensorBatches(seed=seeds[k])``
            sees); an integer ``s`` with ``members=E`` means ``s, s + 1, ..., s + E - 1``
            (unrelated orders: see `block4.data.pass_generator`).
        members: number of members when ``seeds`` is an integer.
        shuffle: draw a new permutation every pass (as `TensorBatches`).
        drop_last: drop the last incomplete batch.
        shared_order: all members see the batches of the first seed (yielded unstacked).

    Examples:
        >>> batches = MemberBatches(torch.arange(10.0)[:, None], torch.arange(10), 4,
        ...                         seeds=0, members=3, shuffle=True)
        >>> xb, yb = next(iter(batches))
        >>> tuple(xb.shape), tuple(yb.shape)
        ((3, 4, 1), (3, 4))
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seeds: int | Sequence[int] = 0,
        members: int | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        shared_order: bool = False,
    ) -> None:
        if isinstance(seeds, (list, tuple)):
            if members is not None and members != len(seeds):
                raise ValueError(
                    f"seeds has {len(seeds)} entries but members={members}; pass one seed per "
                    "member"
                )
            seeds = [int(s) for s in seeds]
        else:
            if isinstance(members, bool) or not isinstance(members, int) or members < 1:
                raise ValueError(
                    f"with one base seed, members must be an integer >= 1, got {members!r}"
                )
            seeds = [int(seeds) + k for k in range(members)]
        if not seeds:
            raise ValueError("seeds must name at least one member, got an empty list")
        # one TensorBatches checks x, y and batch_size with the usual messages
        self._single = TensorBatches(x, y, batch_size, shuffle=shuffle, drop_last=drop_last)
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seeds = seeds
        self.members = len(seeds)
        self.shared_order = shared_order
        self.epoch = 0
        self.sampler = self  # Lightning calls sampler.set_epoch(epoch), as for TensorBatches
        self.batch_sampler = None

    @classmethod
    def like(
        cls, batches: TensorBatches, seeds: int | Sequence[int], members: int | None = None, **kw
    ) -> MemberBatches:
        """Member batches over the data and settings of a single-run ``TensorBatches``."""
        return cls(
            batches.x,
            batches.y,
            batches.batch_size,
            seeds=seeds,
            members=members,
            shuffle=batches.shuffle,
            drop_last=batches.drop_last,
            **kw,
        )

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use the permutations of pass ``epoch`` next (called automatically after each pass)."""
        self.epoch = epoch

    def _orders(self) -> torch.Tensor:
        """``[E, n]`` example indices of this pass, row ``k`` as `TensorBatches` draws them."""
        n = len(self.x)
        if not self.shuffle:
            return torch.arange(n).expand(self.members, n)
        seeds = self.seeds[:1] if self.shared_order else self.seeds
        rows = [torch.randperm(n, generator=pass_generator(s, self.epoch)) for s in seeds]
        return torch.stack(rows)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        orders = self._orders().to(self.x.device)
        self.epoch += 1
        bs = self.batch_size
        for i in range(len(self)):
            j = orders[:, i * bs : (i + 1) * bs]
            if self.shared_order or not self.shuffle:
                yield self.x[j[0]], self.y[j[0]]
            else:
                yield self.x[j], self.y[j]
