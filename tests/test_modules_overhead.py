"""The Lightning-overhead benchmark runs and its two training paths agree bit for bit."""

from __future__ import annotations

import importlib.util
import json

import pytest


@pytest.mark.slow
def test_overhead_benchmark_quick_run(root, tmp_path):
    spec = importlib.util.spec_from_file_location(
        "lightning_overhead", root / "benchmarks" / "lightning_overhead.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "overhead.json"
    bench.main(["--quick", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["benchmark"] == "lightning_overhead" and data["machine"]["torch"]
    result = data["results"]
    assert result["n_train"] == 1079
    assert [(r["config"], r["batching"]) for r in result["summary"]] == [
        ("small_mlp_2x64_batch64", "in-memory"),
        ("small_mlp_2x64_batch64", "DataLoader"),
    ]
    entry = result["_configs"]["small_mlp_2x64_batch64"]
    for batching in ("memory", "dataloader"):
        m = entry[batching]
        # same seed, same batches: the Trainer reproduces the plain loop exactly
        assert m["final_loss_abs_diff"] <= 1e-5 and m["max_weight_abs_diff"] <= 1e-5
        assert m["plain_s_per_epoch"] > 0 and m["lightning_s_per_epoch"] > 0
        assert m["steps_per_epoch"] == 17


def test_committed_results_record_machine_and_agreement(root):
    for name in ("lightning_overhead.json", "lightning_overhead_gpu.json"):
        data = json.loads((root / "benchmarks" / "results" / name).read_text())
        assert {"cpu", "cores", "python", "torch", "pytorch_lightning", "device"} <= set(
            data["machine"]
        )
        for row in data["results"]["summary"]:
            assert row["final_loss_abs_diff"] <= 1e-5
        for entry in data["results"]["_configs"].values():
            for batching in ("memory", "dataloader"):
                assert entry[batching]["final_loss_abs_diff"] <= 1e-5
