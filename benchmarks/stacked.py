"""Many small networks at once: a stacked Lightning run against one plain loop per member.

Digits (8x8, 10 classes), an MLP of depth 20 and width 32 (Kaiming init), batch 64, Adam.
For each E in ``--members`` we train ``Classifier(members=E)`` for a few epochs in one
Trainer (each member its own data order, `MemberBatches`) and report the median seconds of
one epoch divided by E: the cost of one *member-epoch* (median of ``--repeats`` runs, with the
spread of the ratio). The baseline is the plainest
PyTorch loop there is, one network at a time over the same in-memory batches (its cost per
member-epoch does not depend on E, so it is measured once, over a few members). E=1 is the
ordinary single-network module, the one the course used before stacking.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/stacked.py                 # writes results/stacked.json
    python benchmarks/stacked.py --members 1 4 --epochs 2 --out /tmp/s.json   # quick check

Writes ``benchmarks/results/stacked.json`` (machine information included).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from block4.data import DigitsDataModule, MemberBatches, TensorBatches
from block4.heads import CategoricalHead, nll
from block4.models import mlp
from block4.modules import Classifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result  # noqa: E402
from benchmarks.training import EpochTimer, bare_trainer  # noqa: E402

CONFIG = {"depth": 20, "width": 32, "batch_size": 64, "lr": 1e-3, "init": "kaiming"}


def plain_member_epochs(x: torch.Tensor, y: torch.Tensor, members: int, epochs: int) -> list[float]:
    """Seconds of each epoch (after the first) of ``members`` plain loops, one after another."""
    times = []
    for seed in range(members):
        body = mlp(x.shape[1], 10, CONFIG["depth"], CONFIG["width"], init=CONFIG["init"], seed=seed)
        head = CategoricalHead(10)
        opt = torch.optim.Adam(body.parameters(), lr=CONFIG["lr"])
        batches = TensorBatches(x, y, CONFIG["batch_size"], shuffle=True, seed=seed)
        for epoch in range(epochs):
            t0 = time.perf_counter()
            total = torch.zeros(())
            for xb, yb in batches:
                loss = nll(head(body(xb)), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach()
            float(total)
            if epoch > 0:  # the first epoch is a warm-up
                times.append(time.perf_counter() - t0)
    return times


def stacked_epochs(x: torch.Tensor, y: torch.Tensor, members: int, epochs: int) -> list[float]:
    """Seconds of each epoch (after the first) of one Lightning run of ``members`` members."""
    model = Classifier(
        in_features=x.shape[1],
        n_classes=10,
        members=members,
        lr=CONFIG["lr"],
        depth=CONFIG["depth"],
        width=CONFIG["width"],
        init=CONFIG["init"],
    )
    if members == 1:
        batches: Any = TensorBatches(x, y, CONFIG["batch_size"], shuffle=True, seed=0)
    else:
        batches = MemberBatches(x, y, CONFIG["batch_size"], seeds=0, members=members)
    timer = EpochTimer()
    trainer = bare_trainer("cpu", epochs, callbacks=[timer])
    trainer.fit(model, train_dataloaders=batches)
    assert bool(model.member_active.all()), "a member diverged in the benchmark"
    return timer.epoch_seconds[1:]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (first = warm-up)")
    parser.add_argument("--plain-members", type=int, default=3)
    parser.add_argument(
        "--repeats", type=int, default=3, help="measurements of every E (median, spread)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> Path:
    pl.seed_everything(0, verbose=False)
    data = DigitsDataModule(batch_size=CONFIG["batch_size"], seed=0)
    data.setup("fit")
    x, y = data.train_dataloader().x, data.train_dataloader().y

    # Each repeat measures every E once, each stacked run right next to its own plain
    # baseline (both see the same load on a shared machine); a row reports the median over
    # the repeats and the spread of the ratio.
    runs: dict[int, list[tuple[float, float]]] = {m: [] for m in args.members}
    for repeat in range(args.repeats):
        for members in args.members:
            plain = statistics.median(plain_member_epochs(x, y, args.plain_members, args.epochs))
            epoch = statistics.median(stacked_epochs(x, y, members, args.epochs))
            runs[members].append((plain, epoch))
            print(f"repeat {repeat + 1}, E = {members}: {epoch / members / plain:.3f}x", flush=True)
    rows, plains = [], []
    for members, pairs in runs.items():
        ratios = [epoch / members / plain for plain, epoch in pairs]
        plain = statistics.median(p for p, _ in pairs)
        epoch = statistics.median(e for _, e in pairs)
        plains.append(plain)
        rows.append(
            {
                "members": members,
                "stacked_s_per_epoch": round(epoch, 4),
                "stacked_s_per_member_epoch": round(epoch / members, 5),
                "plain_s_per_member_epoch": round(plain, 5),
                "ratio_to_plain": round(statistics.median(ratios), 3),
                "ratio_min": round(min(ratios), 3),
                "ratio_max": round(max(ratios), 3),
            }
        )
        print(rows[-1], flush=True)
    plain = statistics.median(plains)
    results = {
        "config": {
            **CONFIG,
            "examples": len(x),
            "steps_per_epoch": -(-len(x) // CONFIG["batch_size"]),
        },
        "threads": torch.get_num_threads(),
        "epochs_per_run": args.epochs,
        "repeats": args.repeats,
        "plain_s_per_member_epoch": round(plain, 5),
        "rows": rows,
    }
    out = args.out
    return write_result(
        "stacked", results, out_dir=None if out is None else out.parent,
        filename=None if out is None else out.name,
    )  # fmt: skip


if __name__ == "__main__":
    print(main())
