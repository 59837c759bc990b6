"""Tests of stacked MLPs (block4.stacked via block4.models): exact conversion both ways."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from block4.models import ACTIVATIONS, INITS, MLP, StackedMLP, mlp, stack
from block4.stacked import StackedBatchNorm, StackedLayerNorm
from block4.stacked_optim import StackedAdam, StackedSGD


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.mark.parametrize("norm", [None, "batch", "layer"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("init", INITS)
def test_member_k_is_bit_identical_to_the_single_mlp_with_seed_k(norm, residual, init):
    options = dict(depth=3, width=6, norm=norm, residual=residual, init=init)
    stacked = mlp(6, 3, **options, members=3, seed=10)
    assert isinstance(stacked, StackedMLP) and stacked.members == 3
    for k in range(3):
        single = mlp(6, 3, **options, seed=10 + k)
        _assert_same_state(stacked.member(k), single)
    # and stacking the singles gives the same stack
    _assert_same_state(stack([mlp(6, 3, **options, seed=10 + k) for k in range(3)]), stacked)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("norm", [None, "batch", "layer"])
def test_stacked_forward_matches_each_member_shared_and_own_inputs(activation, norm):
    torch.manual_seed(0)
    stacked = mlp(5, 4, depth=3, width=5, activation=activation, norm=norm, members=3, seed=0)
    singles = [stacked.member(k) for k in range(3)]
    shared = torch.randn(9, 5)
    own = torch.randn(3, 9, 5)
    out_shared, out_own = stacked(shared), stacked(own)  # training mode: BN batch statistics
    assert out_shared.shape == (3, 9, 4)
    for k, single in enumerate(singles):
        torch.testing.assert_close(out_shared[k], single(shared), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out_own[k], single(own[k]), atol=1e-5, rtol=1e-5)
        # BatchNorm running statistics are per member, as each member's own would be
        torch.testing.assert_close(
            stacked.member(k).state_dict(), single.state_dict(), atol=1e-6, rtol=1e-6
        )
    stacked.eval()
    for single in singles:
        single.eval()
    out_eval = stacked(shared)
    for k, single in enumerate(singles):
        torch.testing.assert_close(out_eval[k], single(shared), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", [None, "batch"])
def test_plain_and_residual_members_share_a_stack_each_computing_its_own_block(norm):
    flags = [False, True, True, False]
    stacked = mlp(6, 3, depth=3, width=6, norm=norm, residual=flags, members=4, seed=0)
    assert stacked.residual == tuple(flags) and stacked.residuals == flags
    # block0 (6 -> 6 here) carries the per-member shortcut as well
    assert stacked.block1.residual == tuple(flags)
    singles = [mlp(6, 3, depth=3, width=6, norm=norm, residual=flags[k], seed=k) for k in range(4)]
    for k, single in enumerate(singles):
        member = stacked.member(k)
        assert member.residual is flags[k]
        _assert_same_state(member, single)
    _assert_same_state(stack(singles), stacked)
    x = torch.randn(4, 10, 6)
    stacked(x).square().sum().backward()
    for k, single in enumerate(singles):
        single(x[k]).square().sum().backward()
        # a plain member gets no gradient through the shortcut: every weight gradient is its own
        for (name, layer), (_, own) in zip(
            stacked.linear_layers(), single.linear_layers(), strict=True
        ):
            torch.testing.assert_close(
                layer.weight.grad[k], own.weight.grad.t(), atol=1e-5, rtol=1e-5, msg=name
            )
    # with a narrower input, block0 is plain for every member (no shortcut to add)
    narrow = mlp(4, 3, depth=2, width=6, residual=flags, members=4, seed=0)
    assert narrow.block0.residual is False and narrow.block0.shortcut_mask is None
    assert narrow.block1.residual == tuple(flags)


def test_per_member_init_and_seed_lists_and_global_rng():
    stacked = mlp(4, 2, depth=2, width=4, init=["kaiming", "normal"], members=2, seed=[7, 3])
    assert stacked.inits == ["kaiming", "normal"]
    _assert_same_state(stacked.member(0), mlp(4, 2, depth=2, width=4, init="kaiming", seed=7))
    _assert_same_state(stacked.member(1), mlp(4, 2, depth=2, width=4, init="normal", seed=3))
    # seed=None: members are the next MLPs the global RNG would build, one after another
    torch.manual_seed(5)
    from_global = mlp(4, 2, depth=2, width=4, members=2)
    torch.manual_seed(5)
    first, second = mlp(4, 2, depth=2, width=4), mlp(4, 2, depth=2, width=4)
    _assert_same_state(from_global.member(0), first)
    _assert_same_state(from_global.member(1), second)
    # a seed leaves the global RNG alone
    torch.manual_seed(1)
    before = torch.random.get_rng_state()
    mlp(4, 2, depth=2, width=4, members=3, seed=0)
    mlp(4, 2, depth=2, width=4, seed=0)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_member_is_independent_and_keeps_mode_and_structure():
    stacked = mlp(4, 2, depth=2, width=4, norm="batch", members=2, seed=0)
    net = stacked.member(1)
    assert isinstance(net, MLP) and net.block0.linear.bias is None
    with torch.no_grad():
        net.head.weight.add_(1.0)
    assert not torch.equal(stacked.member(1).head.weight, net.head.weight)
    assert stacked.eval().member(0).training is False
    assert isinstance(stacked.block0.norm, StackedBatchNorm)
    layer = mlp(4, 2, depth=1, width=4, norm="layer", members=2)
    assert isinstance(layer.block0.norm, StackedLayerNorm)
    assert [n for n, _ in stacked.linear_layers()] == ["block0", "block1", "head"]
    assert stacked.block0.linear.weight.shape == (2, 4, 4)


def test_bad_inputs_give_one_clear_error_each():
    with pytest.raises(ValueError, match="members must be an integer >= 1, got 0"):
        mlp(4, 2, depth=1, width=4, members=0)
    with pytest.raises(ValueError, match="seed has 2 entries but there are 3 members"):
        mlp(4, 2, depth=1, width=4, members=3, seed=[0, 1])
    with pytest.raises(ValueError, match="init has 1 entries but there are 2 members"):
        mlp(4, 2, depth=1, width=4, members=2, init=["kaiming"])
    with pytest.raises(ValueError, match="init 'he' is not supported"):
        mlp(4, 2, depth=1, width=4, members=2, init=["kaiming", "he"])
    with pytest.raises(ValueError, match="needs members"):
        mlp(4, 2, depth=1, width=4, init=["kaiming", "xavier"])
    with pytest.raises(ValueError, match="residual is a list, which needs members"):
        mlp(4, 2, depth=1, width=4, residual=[True, False])
    with pytest.raises(ValueError, match="residual has 3 entries but there are 2 members"):
        mlp(4, 2, depth=1, width=4, members=2, residual=[True, False, True])
    with pytest.raises(ValueError, match="residual must be True or False, or a list of them"):
        mlp(4, 2, depth=1, width=4, members=2, residual=[True, "yes"])
    stacked = mlp(4, 2, depth=1, width=4, members=2)
    for k in (2, -1, 1.0):
        with pytest.raises(IndexError, match=r"members 0\.\.1"):
            stacked.member(k)
    with pytest.raises(ValueError, match="differ in width: nets\\[1\\] has 5"):
        stack([mlp(4, 2, depth=1, width=4), mlp(4, 2, depth=1, width=5)])
    with pytest.raises(ValueError, match="differ in norm"):
        stack([mlp(4, 2, depth=1, width=4), mlp(4, 2, depth=1, width=4, norm="batch")])
    with pytest.raises(ValueError, match="differ in hidden bias"):
        stack([mlp(4, 2, depth=1, width=4), mlp(4, 2, depth=1, width=4, bias=False)])
    with pytest.raises(TypeError, match="must be a block4.models.MLP, got Linear"):
        stack([mlp(4, 2, depth=1, width=4), nn.Linear(4, 2)])
    with pytest.raises(ValueError, match="empty list"):
        stack([])
    with pytest.raises(ValueError, match=r"expects \(batch, 4\) shared by all members"):
        stacked(torch.zeros(3, 5, 4))


def test_stacked_optimisers_refuse_bad_learning_rates_and_shapes():
    stacked = mlp(4, 2, depth=1, width=4, members=2)
    with pytest.raises(ValueError, match="learning rate must be > 0"):
        StackedSGD(stacked.parameters(), member_lr=[0.1, 0.0])
    with pytest.raises(ValueError, match="first dimension is the member"):
        StackedAdam(stacked.parameters(), member_lr=[0.1, 0.1, 0.1])


@pytest.mark.parametrize(
    ("kind", "lrs"),
    [
        ("sgd", [0.05, 0.2, 0.01]),
        ("nesterov", [0.05, 0.2, 0.01]),
        ("adam", [0.05, 0.2, 0.01]),
        ("adamw", [0.05, 0.2, 0.01]),
        ("adam", [0.05, 0.05, 0.05]),  # one learning rate: the multi-tensor update
    ],
)
def test_stacked_optimisers_match_torch_member_by_member(kind, lrs):
    stacked = mlp(4, 3, depth=2, width=5, norm="batch", members=3, seed=0)
    singles = [stacked.member(k) for k in range(3)]
    wd = 0.01
    if kind in ("sgd", "nesterov"):
        opt = StackedSGD(
            stacked.parameters(), lrs, momentum=0.9, weight_decay=wd, nesterov=kind == "nesterov"
        )
        single_opts = [
            torch.optim.SGD(
                s.parameters(), lr=lr, momentum=0.9, weight_decay=wd, nesterov=kind == "nesterov"
            )
            for s, lr in zip(singles, lrs, strict=True)
        ]
    else:
        opt = StackedAdam(stacked.parameters(), lrs, weight_decay=wd, decoupled=kind == "adamw")
        cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
        single_opts = [
            cls(s.parameters(), lr=lr, weight_decay=wd) for s, lr in zip(singles, lrs, strict=True)
        ]
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        x, y = torch.randn(16, 4, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        opt.zero_grad()
        logits = stacked(x)
        loss = sum(nn.functional.cross_entropy(logits[k], y) for k in range(3))
        loss.backward()
        opt.step()
        for s, o in zip(singles, single_opts, strict=True):
            o.zero_grad()
            nn.functional.cross_entropy(s(x), y).backward()
            o.step()
    for k, s in enumerate(singles):
        torch.testing.assert_close(
            stacked.member(k).state_dict(), s.state_dict(), atol=1e-6, rtol=1e-5
        )
