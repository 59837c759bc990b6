"""GPU paths of the training core; skipped without CUDA (run them wherever a GPU is available)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from _helpers import trainer

from block4.callbacks import ActivationStats, FiniteLossGuard, GradientFlowMonitor, MetricHistory
from block4.data import DigitsDataModule, HeteroscedasticDataModule
from block4.modules import Classifier, ProbabilisticRegressor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def gpu_trainer(**kw) -> pl.Trainer:
    return trainer(**{"accelerator": "gpu", "max_epochs": 3, **kw})


def test_classifier_on_gpu_with_batches_in_gpu_memory(tmp_path):
    dm = DigitsDataModule()
    model = Classifier(depth=2, width=64, norm="batch", lr=3e-3)
    monitor, stats = GradientFlowMonitor(steps=[0, 10]), ActivationStats(steps=[0])
    devices = set()

    class DeviceProbe(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            devices.add((batch[0].device.type, pl_module.device.type))

    tr = gpu_trainer(callbacks=[monitor, stats, FiniteLossGuard(), DeviceProbe()])
    tr.fit(model, dm)
    assert devices == {("cuda", "cuda")}
    assert dm.tensors("train")[0].device.type == "cuda"  # no host-to-device copy per batch
    model.cuda()  # Lightning hands the module back on the CPU after fit
    assert float(tr.callback_metrics["val_acc"]) > 0.85
    assert all(isinstance(r["grad_norm"], float) and r["grad_norm"] > 0 for r in monitor.table)
    assert len(stats.table) == 2 and sum(stats.table[0]["hist"]) > 0
    # predict_dist moves CPU inputs to the module's device
    x_cpu = dm.tensors("test")[0].cpu()
    probs = model.predict_dist(x_cpu).probs
    assert probs.device.type == "cuda" and probs.shape == (len(x_cpu), 10)
    # a checkpoint written on the GPU loads on the CPU, weights only
    tr.save_checkpoint(tmp_path / "gpu.ckpt")
    cpu_model = Classifier.load_from_checkpoint(
        tmp_path / "gpu.ckpt", map_location="cpu", weights_only=True
    )
    torch.testing.assert_close(
        cpu_model.predict_dist(x_cpu).probs, probs.cpu(), atol=1e-4, rtol=1e-4
    )


def test_same_seed_same_metrics_on_gpu():
    def run():
        history = MetricHistory()
        gpu_trainer(callbacks=[history]).fit(
            ProbabilisticRegressor(in_features=1, seed=0),
            HeteroscedasticDataModule(n_train=500, n_val=200, n_test=0, seed=0),
        )
        return history.table.to_dicts()

    assert run() == run()


def test_dataloader_batching_on_gpu_matches_memory_batching():
    losses = {}
    for batching in ("memory", "dataloader"):
        tr = gpu_trainer(max_epochs=2, limit_val_batches=0)
        tr.fit(
            Classifier(depth=1, width=32, seed=1, lr=1e-2),
            DigitsDataModule(batching=batching, seed=1),
        )
        losses[batching] = float(tr.callback_metrics["train_loss"])
    assert all(v < 0.6 for v in losses.values()), losses  # log(10) = 2.3 at the start
