"""The convolutional ResNet (block4.resnet) and its stacked training.

- shapes, depth counting (2 * blocks + 2) and the plain twin's identical layers;
- a StackedResNet's member k is bit-identical at init to the single net of seed k, and its
  forward pass and gradients equal the single net's (to 1e-5), shared or per-member input;
- member(k) / stack_resnets round-trip; bad inputs give one clear error each;
- the figure's stacked Lightning training equals single nets trained one by one, and the
  figure runs in the smoke profile.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _helpers import trainer

from block4.data import MemberBatches, pass_generator
from block4.figures.registry import FigureContext
from block4.figures.residual_networks import (
    StackedConvClassifier,
    block_grad_norms,
    degradation_runs,
    member_losses,
    resnet_degradation,
)
from block4.resnet import (
    ResNet,
    StackedResNet,
    blocks_for_depth,
    resnet,
    stack_resnets,
    stacked_resnet,
)

SMOKE = FigureContext(profile="smoke", accelerator="cpu", devices=1)
SEEDS = [3, 11, 4]


def _images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# --- shapes and structure ---------------------------------------------------------------------


@pytest.mark.parametrize(("depth", "blocks"), [(4, 1), (8, 3), (20, 9), (32, 15), (56, 27)])
def test_depth_counts_conv_and_fc_layers(depth, blocks):
    assert blocks_for_depth(depth) == blocks
    net = resnet(depth, width=4, seed=0)
    convs = sum(1 for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    linears = sum(1 for m in net.modules() if isinstance(m, torch.nn.Linear))
    assert (net.n_blocks, convs + linears) == (blocks, depth)


@pytest.mark.parametrize("stem_stride", [1, 2])
def test_shapes(stem_stride):
    net = resnet(8, width=6, n_classes=7, stem_stride=stem_stride, seed=0)
    x = _images(5)
    assert net(x).shape == (5, 7)
    assert net.features(x).shape == (5, 6)
    stacked = stacked_resnet(8, 3, width=6, n_classes=7, stem_stride=stem_stride)
    assert stacked(x).shape == (3, 5, 7)
    assert stacked(torch.randn(3, 5, 1, 8, 8)).shape == (3, 5, 7)
    assert stacked.features(x).shape == (5, 3, 6)


def test_three_input_channels():
    net = resnet(6, width=4, in_channels=3, seed=0)
    stacked = stacked_resnet(6, 2, width=4, in_channels=3, seeds=[0, 1])
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(stacked(x)[0], net(x), rtol=0, atol=1e-5)


def test_plain_twin_has_the_same_layers_and_weights_but_no_shortcut():
    res, plain = resnet(8, width=4, seed=5), resnet(8, width=4, seed=5, residual=False)
    assert res.state_dict().keys() == plain.state_dict().keys()
    for a, b in zip(res.state_dict().values(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x = _images()
    block = res.blocks[0]
    h = res.stem(x)
    branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(h)))))
    torch.testing.assert_close(block(h), torch.relu(h + branch))
    torch.testing.assert_close(plain.blocks[0](h), torch.relu(branch))


def test_seed_builds_the_same_net_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = resnet(8, width=4, seed=7)
    stacked_resnet(8, 2, width=4)
    assert torch.equal(torch.rand(3), expected)
    b = resnet(8, width=4, seed=7)
    c = resnet(8, width=4, seed=8)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.stem.conv.weight, c.stem.conv.weight)


# --- stacked members equal single nets --------------------------------------------------------


def test_member_initial_weights_are_bit_identical_to_single_nets():
    stacked = stacked_resnet(8, len(SEEDS), width=4, seeds=SEEDS)
    for k, seed in enumerate(SEEDS):
        single = resnet(8, width=4, seed=seed).state_dict()
        member = stacked.member(k).state_dict()
        assert single.keys() == member.keys()
        for name in single:
            assert torch.equal(single[name], member[name]), name


@pytest.mark.parametrize("residual", [True, False, [False, True, False]])
@pytest.mark.parametrize("per_member_input", [False, True])
def test_forward_and_gradients_equal_single_nets(residual, per_member_input):
    kw = {"width": 4, "stem_stride": 2}
    flags = residual if isinstance(residual, list) else [residual] * len(SEEDS)
    stacked = stacked_resnet(8, len(SEEDS), seeds=SEEDS, residual=residual, **kw)
    singles = [resnet(8, seed=s, residual=r, **kw) for s, r in zip(SEEDS, flags, strict=True)]
    assert [stacked.member(k).residual for k in range(len(SEEDS))] == flags
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(len(SEEDS), 16, 1, 8, 8, generator=gen)
    y = torch.randint(0, 10, (len(SEEDS), 16), generator=gen)
    if not per_member_input:
        x, y = x[0], y[0].expand(len(SEEDS), -1)
    logits = stacked(x)
    member_losses(logits, y).sum().backward()
    grads = {n: p.grad for n, p in stacked.named_parameters()}
    for k, net in enumerate(singles):
        out = net(x[k] if per_member_input else x)
        torch.testing.assert_close(logits[k], out, rtol=0, atol=1e-5)
        F.cross_entropy(out, y[k]).backward()
        for name, p in net.named_parameters():
            theirs = grads[name].reshape(-1, *p.shape)[k]
            torch.testing.assert_close(theirs, p.grad, rtol=0, atol=1e-5, msg=name)
    # BN running statistics are per member too
    for k, net in enumerate(singles):
        torch.testing.assert_close(
            stacked.member(k).stem.bn.running_var, net.stem.bn.running_var, rtol=0, atol=1e-6
        )


def test_eval_mode_members_equal_single_nets():
    stacked = stacked_resnet(6, 2, width=4, seeds=[0, 1])
    stacked(_images(8))  # move the running statistics away from their initial values
    stacked.eval()
    x = _images(5, seed=1)
    for k in range(2):
        member = stacked.member(k)
        assert not member.training
        torch.testing.assert_close(stacked(x)[k], member(x), rtol=0, atol=1e-5)


def test_plain_and_residual_twins_in_one_stack():
    stacked = stacked_resnet(6, 4, width=4, seeds=[0, 1, 0, 1], residual=[False, False, True, True])
    assert stacked.residual == (False, False, True, True)
    assert type(stacked.blocks[0]).__name__ == "MixedShortcutBlock"
    # the twins of one seed start from the same weights; only the shortcut differs
    for a, b in zip(
        stacked.member(0).state_dict().values(),
        stacked.member(2).state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    x = _images()
    out = stacked(x)
    assert not torch.allclose(out[0], out[2])
    again = stack_resnets([stacked.member(k) for k in range(4)])
    assert again.residual == stacked.residual
    torch.testing.assert_close(again(x), out, rtol=0, atol=1e-6)
    uniform = stacked_resnet(6, 2, width=4, residual=[True, True])
    assert uniform.residual is True and type(uniform.blocks[0]).__name__ == "BasicBlock"


def test_member_and_stack_round_trip():
    stacked = stacked_resnet(6, 3, width=4, seeds=[0, 1, 2])
    with torch.no_grad():
        for p in stacked.parameters():
            p.add_(torch.randn_like(p))
    again = stack_resnets([stacked.member(k) for k in range(3)])
    for (name, a), b in zip(stacked.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert isinstance(again, StackedResNet) and isinstance(stacked.member(0), ResNet)


def test_block_grad_norms_are_each_members_own():
    stacked = stacked_resnet(6, 2, width=4, seeds=[0, 1])
    x, y = _images(8), torch.randint(0, 10, (8,))
    member_losses(stacked(x), y.expand(2, -1)).sum().backward()
    norms = block_grad_norms(stacked)
    assert norms.shape == (2, 2)
    for k in range(2):
        net = resnet(6, width=4, seed=k)
        F.cross_entropy(net(x), y).backward()
        for i, block in enumerate(net.blocks):
            expected = torch.cat(
                [block.conv1.weight.grad.flatten(), block.conv2.weight.grad.flatten()]
            )
            assert norms[k, i].item() == pytest.approx(expected.norm().item(), rel=1e-4)


# --- bad inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [7, 2, 0, -4, 8.0, True, "20"])
def test_depth_not_of_the_form_2n_plus_2(depth):
    with pytest.raises(ValueError, match=r"depth must be 2 \* blocks \+ 2 with blocks >= 1"):
        resnet(depth)
    with pytest.raises(ValueError, match=r"depth must be 2 \* blocks \+ 2"):
        stacked_resnet(depth, 2)


@pytest.mark.parametrize("members", [0, -1, 1.5, True])
def test_members_below_one(members):
    with pytest.raises(ValueError, match="members must be an integer >= 1"):
        stacked_resnet(8, members)
    with pytest.raises(ValueError, match="members must be an integer >= 1"):
        StackedResNet(8, members)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        resnet(8, width=0)
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2"):
        resnet(8, stem_stride=3)
    with pytest.raises(ValueError, match=r"one seed per member \(3\), got 2"):
        stacked_resnet(8, 3, seeds=[0, 1])
    with pytest.raises(
        ValueError, match=r"one flag for all members or one per member \(3\), got 2"
    ):
        stacked_resnet(8, 3, residual=[True, False])
    with pytest.raises(ValueError, match="residual must be True or False"):
        resnet(8, residual="yes")
    with pytest.raises(ValueError, match="stack_resnets needs at least one ResNet"):
        stack_resnets([])
    with pytest.raises(ValueError, match="net 1 has configuration"):
        stack_resnets([resnet(8, width=4), resnet(8, width=5)])
    stacked = stacked_resnet(6, 2, width=4)
    with pytest.raises(IndexError, match=r"member index must be an integer in \[0, 2\), got 2"):
        stacked.member(2)
    with pytest.raises(ValueError, match=r"expected images \[B, 1, H, W\], got \(5, 64\)"):
        resnet(6, width=4)(torch.zeros(5, 64))
    with pytest.raises(
        ValueError, match=r"expected images .*\[2, B, 1, H, W\], got \(3, 4, 1, 8, 8\)"
    ):
        stacked(torch.zeros(3, 4, 1, 8, 8))


def test_a_bad_call_changes_nothing():
    stacked = stacked_resnet(6, 2, width=4)
    before = copy.deepcopy(stacked.state_dict())
    with pytest.raises(ValueError):
        stacked.load_members([resnet(6, width=4), resnet(8, width=4)])
    with pytest.raises(ValueError):
        stacked(torch.zeros(3, 4, 1, 8, 8))
    for name, value in stacked.state_dict().items():
        assert torch.equal(value, before[name]), name


# --- training ---------------------------------------------------------------------------------


def test_stacked_lightning_training_equals_single_nets_trained_one_by_one():
    """Two epochs of SGD with momentum: every member ends where its own run ends (1e-5)."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=gen), torch.randint(0, 10, (40,), generator=gen)
    seeds, kw = [0, 1], {"width": 4, "stem_stride": 2}
    model = StackedConvClassifier(stacked_resnet(6, 2, seeds=seeds, **kw), lr=0.05)
    trainer(max_epochs=2).fit(model, train_dataloaders=MemberBatches(x, y, 16, seeds))
    assert len(model.epoch_errors) == 2 and len(model.epoch_errors[0]) == 2
    for k, seed in enumerate(seeds):
        net = resnet(6, seed=seed, **kw)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        wrong = 0
        for epoch in range(2):
            order = torch.randperm(40, generator=pass_generator(seed, epoch))
            wrong = 0
            for i in range(0, 40, 16):
                idx = order[i : i + 16]
                out = net(x[idx])
                wrong += int((out.argmax(1) != y[idx]).sum())
                opt.zero_grad()
                F.cross_entropy(out, y[idx]).backward()
                opt.step()
        member = model.net.member(k)
        for (name, a), b in zip(
            net.state_dict().items(), member.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5, msg=name)
        assert model.epoch_errors[-1][k] == pytest.approx(wrong / 40)


def test_member_batches_give_each_member_its_own_order():
    x, y = torch.arange(10.0).reshape(10, 1, 1, 1), torch.arange(10)
    batches = MemberBatches(x, y, 4, seeds=[0, 5])
    first = list(batches)
    assert len(first) == len(batches) == 3
    xb, yb = first[0]
    assert xb.shape == (2, 4, 1, 1, 1) and yb.shape == (2, 4)
    for k, seed in enumerate([0, 5]):
        expected = torch.randperm(10, generator=pass_generator(seed, 0))
        assert torch.equal(torch.cat([b[1][k] for b in first]), expected)
    batches.set_epoch(0)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, list(batches), strict=True))


def test_resnet_degradation_figure_smoke():
    fig, numbers = resnet_degradation(
        SMOKE, depths=[8, 20, 32], width=8, stem_stride=2, batch_size=64, lr=0.05
    )
    assert len(fig.axes) == 2
    assert numbers["seeds"] == 1 and numbers["deepest"] == 6
    for kind in ("plain", "residual"):
        for depth in (4, 6):
            assert 0.0 <= numbers[f"error_{kind}_{depth}"] <= 1.0
            assert numbers[f"grad_ratio_{kind}_{depth}"] > 0


@pytest.mark.slow
def test_the_pages_degradation_claims_hold_in_the_quick_profile():
    """The page's sentences, on the quick profile's runs (2 seeds, the figure's settings)."""
    quick = FigureContext(profile="quick", accelerator="cpu", devices=1)
    data = degradation_runs(quick, depths=[8, 20, 32], seeds=[0, 1], width=8, stem_stride=2,
                            epochs=5, batch_size=64, lr=0.05)  # fmt: skip
    mean = {k: [sum(e) / len(e) for e in data["errors"][k]] for k in ("plain", "residual")}
    assert mean["plain"][0] < mean["plain"][1] < mean["plain"][2]  # deeper plain: worse
    assert max(mean["residual"][1:]) < mean["residual"][0]  # deeper ResNet: not worse
    assert all(r < p for r, p in zip(mean["residual"], mean["plain"], strict=True))
    ratio = {k: [g[0] / g[-1] for g in data["grads"][k][-1]] for k in ("plain", "residual")}
    assert min(ratio["plain"]) > 10 > max(ratio["residual"])
