"""What does Lightning cost? The same MLP on digits, trained by a plain loop and by a Trainer.

Both runs use the same initial weights (same seed), the same mini-batches in the same order
(`block4.data.TensorBatches` with the same seed) and the same Adam settings; the
Trainer has logging, checkpointing, progress bar, model summary and validation off. We
report the median seconds per epoch over all epochs of several repeats (the first epoch of
each run is a warm-up and is dropped), their ratio, the per-step overhead in microseconds,
and how far the final losses and weights are apart.

The cost of the Trainer loop itself is measured with an empty ``training_step``
(``trainer_floor_us_per_step``, manual optimisation): no LightningModule can have less
overhead than that. ``trainer_floor_automatic_optimization_us_per_step`` is the same loop with
automatic optimisation around a step with no work in it: the overhead any module that lets
Lightning run the optimiser pays (ours does).

A second measurement compares where the batches come from: in-memory shuffled slices
(`TensorBatches`, the datamodules' default) against a default
``torch.utils.data.DataLoader`` over a ``TensorDataset`` (``num_workers=0``), both with the
plain loop, both with the Trainer.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/lightning_overhead.py            # CPU, writes the JSON
    python benchmarks/lightning_overhead.py --accelerator gpu --out results/gpu.json

Writes ``benchmarks/results/lightning_overhead.json`` (machine information included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from block4.data import DigitsDataModule, TensorBatches
from block4.heads import CategoricalHead, nll
from block4.models import mlp
from block4.modules import Classifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result  # noqa: E402
from benchmarks.training import EpochTimer, bare_trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, kind: str
) -> TensorBatches | DataLoader:
    if kind == "memory":
        return TensorBatches(x, y, batch_size, shuffle=True, seed=seed)
    return DataLoader(
        TensorDataset(x, y),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )


def plain_loop(cfg: dict[str, Any], x, y, device, epochs: int, batching: str):
    """Train with a hand-written loop; returns (epoch seconds, per-epoch losses, weights)."""
    torch.manual_seed(cfg["seed"])  # the same initial weights as Classifier(seed=...)
    body = mlp(x.shape[1], 10, cfg["depth"], cfg["width"]).to(device)
    head = CategoricalHead(10)
    opt = torch.optim.Adam(body.parameters(), lr=cfg["lr"])
    batches = make_batches(x, y, cfg["batch_size"], cfg["seed"], batching)
    times, losses = [], []
    for epoch in range(epochs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        if isinstance(batches, TensorBatches):
            batches.set_epoch(epoch)
        total, count = torch.zeros((), device=device), 0
        for xb, yb in batches:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = nll(head(body(xb)), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(yb)
            count += len(yb)
        losses.append(float(total / count))  # one sync per epoch, like the module
        times.append(time.perf_counter() - t0)
    weights = torch.cat([p.detach().flatten().cpu() for p in body.parameters()])
    return times, losses, weights


def lightning_run(cfg: dict[str, Any], x, y, accelerator: str, epochs: int, batching: str):
    """Train with Classifier + Trainer; returns (epoch seconds, per-epoch losses, weights)."""
    model = Classifier(
        in_features=x.shape[1],
        n_classes=10,
        depth=cfg["depth"],
        width=cfg["width"],
        lr=cfg["lr"],
        seed=cfg["seed"],
    )
    trainer = bare_trainer(accelerator, epochs)
    device = trainer.strategy.root_device
    timer = EpochTimer(device)
    losses: list[float] = []

    class LossRecorder(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch > 0:
                losses.append(float(trainer.callback_metrics["train_loss"]))

        def on_train_end(self, trainer, pl_module):
            losses.append(float(trainer.callback_metrics["train_loss"]))

    trainer.callbacks.extend([timer, LossRecorder()])
    xd, yd = (x.to(device), y.to(device)) if batching == "memory" else (x, y)
    trainer.fit(
        model, train_dataloaders=make_batches(xd, yd, cfg["batch_size"], cfg["seed"], batching)
    )
    weights = torch.cat([p.detach().flatten().cpu() for p in model.body.parameters()])
    return timer.epoch_seconds, losses, weights


class _NullModule(pl.LightningModule):
    """Does (almost) nothing per step: what remains is the Trainer's own per-step cost.

    With ``automatic=False`` the step is empty (manual optimisation: no closure, no
    backward). With ``automatic=True`` it returns a loss on one parameter, so Lightning's
    automatic optimisation runs its whole machinery (closure, ``backward``, ``zero_grad``,
    ``optimizer.step``) on a model with no work in it.
    """

    def __init__(self, automatic: bool = False) -> None:
        super().__init__()
        self.automatic_optimization = automatic
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        return (self.anchor * 0.0).sum() if self.automatic_optimization else None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def trainer_floor_us_per_step(
    x, y, accelerator: str, batch_size: int, epochs: int, automatic: bool = False
) -> float:
    """Median cost of one training step of the Trainer loop around a step with no work."""
    trainer = bare_trainer(accelerator, epochs)
    timer = EpochTimer(trainer.strategy.root_device)
    trainer.callbacks.append(timer)
    batches = TensorBatches(x, y, batch_size, shuffle=True)
    trainer.fit(_NullModule(automatic), train_dataloaders=batches)
    return statistics.median(timer.epoch_seconds[1:]) / len(batches) * 1e6


def median_after_warmup(runs: list[list[float]]) -> float:
    return statistics.median(t for run in runs for t in run[1:])


def min_after_warmup(runs: list[list[float]]) -> float:
    return min(t for run in runs for t in run[1:])


def measure(cfg, x, y, accelerator, device, epochs, repeats, batching) -> dict[str, Any]:
    plain_times, light_times = [], []
    for _ in range(repeats):  # interleaved, so that machine load hits both alike
        t, plain_losses, plain_w = plain_loop(cfg, x, y, device, epochs, batching)
        plain_times.append(t)
        t, light_losses, light_w = lightning_run(cfg, x, y, accelerator, epochs, batching)
        light_times.append(t)
    steps = len(make_batches(x, y, cfg["batch_size"], 0, "memory"))
    plain_s, light_s = median_after_warmup(plain_times), median_after_warmup(light_times)
    # The minimum is the estimate least disturbed by other processes on a shared machine.
    plain_min, light_min = min_after_warmup(plain_times), min_after_warmup(light_times)
    return {
        "steps_per_epoch": steps,
        "plain_s_per_epoch": plain_s,
        "lightning_s_per_epoch": light_s,
        "ratio": light_s / plain_s,
        "overhead_us_per_step": (light_s - plain_s) / steps * 1e6,
        "plain_s_per_epoch_min": plain_min,
        "lightning_s_per_epoch_min": light_min,
        "ratio_of_minima": light_min / plain_min,
        "plain_final_loss": plain_losses[-1],
        "lightning_final_loss": light_losses[-1],
        "final_loss_abs_diff": abs(plain_losses[-1] - light_losses[-1]),
        "max_loss_abs_diff_all_epochs": max(
            abs(a - b) for a, b in zip(plain_losses, light_losses, strict=True)
        ),
        "max_weight_abs_diff": float((plain_w - light_w).abs().max()),
    }


def machine_info(device: torch.device) -> dict[str, Any]:
    """What this benchmark adds to ``benchmarks.common.machine_info`` (CPU, versions, GPU)."""
    info = {
        "torch_num_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "device": str(device),
        "load_average_1min_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def summary_rows(configs: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per configuration and batching mode: the numbers the Performance page shows."""
    rows = []
    for name, entry in configs.items():
        for batching in ("memory", "dataloader"):
            m = entry[batching]
            rows.append(
                {
                    "config": name,
                    "batching": "in-memory" if batching == "memory" else "DataLoader",
                    "plain_ms_per_epoch": round(m["plain_s_per_epoch"] * 1e3, 2),
                    "lightning_ms_per_epoch": round(m["lightning_s_per_epoch"] * 1e3, 2),
                    "ratio": round(m["ratio"], 3),
                    "overhead_us_per_step": round(m["overhead_us_per_step"]),
                    "final_loss_abs_diff": m["final_loss_abs_diff"],
                }
            )
    return rows


def write_envelope(results: dict[str, Any], out: Path) -> None:
    """Write ``results`` in the envelope every benchmark uses (see ``benchmarks/common.py``)."""
    body = {
        "summary": summary_rows(results["configs"]),
        "goal_ratio": 1.10,
        "trainer_floor_us_per_step": round(results.get("trainer_floor_us_per_step", 0.0)),
        "trainer_floor_automatic_optimization_us_per_step": round(
            results.get("trainer_floor_automatic_us_per_step", 0.0)
        ),
        "epochs": results["epochs"],
        "repeats": results["repeats"],
        "n_train": results["n_train"],
        "_configs": results["configs"],  # full detail; "_" keys are not rendered on the page
    }
    write_result(
        "lightning_overhead", body, out.parent, filename=out.name, machine_extra=results["machine"]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/lightning_overhead.json"
    )
    parser.add_argument("--quick", action="store_true", help="one small configuration, 3 epochs")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    dm = DigitsDataModule()
    dm.setup("fit")
    x, y = dm.tensors("train")

    configs = {
        # the size the chapters train: 2 x 64 units, batches of 64 (17 steps per epoch)
        "small_mlp_2x64_batch64": {"depth": 2, "width": 64, "batch_size": 64},
        # a wider and deeper net: per-step compute grows, Lightning's fixed cost does not
        "wide_mlp_4x512_batch64": {"depth": 4, "width": 512, "batch_size": 64},
    }
    if args.quick:
        configs = {"small_mlp_2x64_batch64": configs["small_mlp_2x64_batch64"]}
        args.epochs, args.repeats = 3, 1
    results: dict[str, Any] = {
        "machine": machine_info(device),
        "epochs": args.epochs,
        "repeats": args.repeats,
        "n_train": len(x),
        "configs": {},
    }
    for name, c in configs.items():
        cfg = {"seed": 0, "lr": 1e-3, **c}
        entry = {"config": cfg}
        for batching in ("memory", "dataloader"):
            entry[batching] = measure(
                cfg, x, y, args.accelerator, device, args.epochs, args.repeats, batching
            )
            m = entry[batching]
            print(
                f"{name:24s} {batching:10s} plain {m['plain_s_per_epoch'] * 1e3:7.2f} ms/epoch  "
                f"lightning {m['lightning_s_per_epoch'] * 1e3:7.2f} ms/epoch  ratio "
                f"{m['ratio']:.3f} (of minima {m['ratio_of_minima']:.3f})  overhead {m['overhead_us_per_step']:6.0f} us/step  "
                f"|dloss| {m['final_loss_abs_diff']:.1e}",
                flush=True,
            )
        entry["dataloader_over_memory_plain"] = (
            entry["dataloader"]["plain_s_per_epoch"] / entry["memory"]["plain_s_per_epoch"]
        )
        entry["dataloader_over_memory_lightning"] = (
            entry["dataloader"]["lightning_s_per_epoch"] / entry["memory"]["lightning_s_per_epoch"]
        )
        results["configs"][name] = entry
    # The per-step cost of the Trainer loop itself (empty training_step, manual optimisation):
    # a lower bound on the overhead of any LightningModule.
    results["trainer_floor_us_per_step"] = trainer_floor_us_per_step(
        x.to(device), y.to(device), args.accelerator, 64, max(args.epochs, 3)
    )
    results["trainer_floor_automatic_us_per_step"] = trainer_floor_us_per_step(
        x.to(device), y.to(device), args.accelerator, 64, max(args.epochs, 3), automatic=True
    )
    print(
        f"Trainer loop floor: {results['trainer_floor_us_per_step']:.0f} us/step (manual "
        f"optimisation), {results['trainer_floor_automatic_us_per_step']:.0f} us/step "
        "(automatic optimisation)",
        flush=True,
    )
    if hasattr(os, "getloadavg"):
        results["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    write_envelope(results, args.out)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
