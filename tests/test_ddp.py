"""A real two-process DDP run on CPU (gloo): same weights as one process with twice the batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import pytorch_lightning as pl
    import torch
    from block4.callbacks import GradientFlowMonitor
    from block4.data import DigitsDataModule
    from block4.modules import Classifier

    mode, out = sys.argv[1], sys.argv[2]
    ddp = mode == "ddp"
    # 1024 training images = 16 steps of 64 (one process) or 16 steps of 2 x 32 (two processes):
    # the union of the two ranks' batches at each step is the one-process batch.
    dm = DigitsDataModule(batch_size=32 if ddp else 64, n_train=1024, seed=3)
    model = Classifier(depth=2, width=32, seed=0, lr=3e-3)
    monitor = GradientFlowMonitor(steps=[0, 20])
    trainer = pl.Trainer(
        accelerator="cpu", devices=2 if ddp else 1, strategy="ddp" if ddp else "auto",
        max_epochs=3, logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=False, deterministic=True, callbacks=[monitor],
    )
    trainer.fit(model, dm)
    if trainer.global_rank == 0:
        params = torch.cat([p.detach().flatten() for p in model.parameters()])
        json.dump({
            "world_size": trainer.world_size,
            "steps": trainer.global_step,
            "params": params.tolist(),
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "grad_step0": monitor.grad_norms(0),
            "grad_step20": monitor.grad_norms(20),
        }, open(out, "w"))
    """
)


def run(script, mode, out, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, str(script), mode, str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    start = time.perf_counter()
    ddp = run(script, "ddp", tmp_path / "ddp.json", tmp_path)
    ddp_seconds = time.perf_counter() - start
    single = run(script, "single", tmp_path / "single.json", tmp_path)
    print(f"DDP (2 processes, gloo) wall time: {ddp_seconds:.1f} s")

    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["steps"] == single["steps"] == 48  # 3 epochs x 16 steps
    # gradients all-reduced across ranks = gradients of the full batch
    for step in ("grad_step0", "grad_step20"):
        for layer, g in single[step].items():
            assert ddp[step][layer] == pytest.approx(g, rel=1e-4), (step, layer)
    worst = max(abs(a - b) for a, b in zip(ddp["params"], single["params"], strict=True))
    assert worst < 1e-4, worst
    # epoch metrics are averaged over both processes
    assert ddp["metrics"]["train_loss"] == pytest.approx(single["metrics"]["train_loss"], rel=1e-4)
    assert ddp["metrics"]["val_acc"] == pytest.approx(single["metrics"]["val_acc"], abs=0.01)
    assert single["metrics"]["val_acc"] > 0.8
