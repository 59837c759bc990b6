"""Tests of the LightningCLI entry point ``python -m block4`` (block4.__main__)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from block4.__main__ import main
from block4.data import DigitsDataModule, HeteroscedasticDataModule
from block4.modules import Classifier, ProbabilisticRegressor


def test_yaml_config_trains_and_checkpoints(root, tmp_path):
    config = root / "docs" / "examples" / "cli_digits.yaml"
    cli = main(
        [
            "fit",
            "--config",
            str(config),
            "--trainer.max_epochs",
            "2",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.logger",
            "false",
            "--trainer.enable_model_summary",
            "false",
        ]
    )
    assert isinstance(cli.model, Classifier) and isinstance(cli.datamodule, DigitsDataModule)
    assert cli.model.hparams["depth"] == 3 and cli.model.hparams["norm"] == "batch"
    assert cli.trainer.current_epoch == 2
    assert float(cli.trainer.callback_metrics["val_acc"]) > 0.8
    ckpts = sorted(tmp_path.rglob("best-*.ckpt"))
    assert ckpts, list(tmp_path.rglob("*"))
    loaded = Classifier.load_from_checkpoint(ckpts[0], weights_only=True)
    # LightningCLI adds private keys (_class_path, _instantiator) to the live module only
    public = {k: v for k, v in cli.model.hparams.items() if not k.startswith("_")}
    assert dict(loaded.hparams) == public
    assert (tmp_path / "config.yaml").is_file()  # the run's full config, for reproducing it


def test_short_class_names_and_overrides(tmp_path):
    cli = main(
        [
            "--model",
            "ProbabilisticRegressor",
            "--model.head",
            "student_t",
            "--model.head_options",
            "{df: 3.0}",
            "--data",
            "HeteroscedasticDataModule",
            "--data.n_train",
            "64",
            "--trainer.default_root_dir",
            str(tmp_path),
        ],
        run=False,
    )
    assert isinstance(cli.model, ProbabilisticRegressor)
    assert isinstance(cli.datamodule, HeteroscedasticDataModule) and cli.datamodule.n_train == 64
    dist = cli.model.predict_dist(torch.zeros(2, 1))
    assert type(dist).__name__ == "StudentT" and float(dist.df[0]) == 3.0


def test_unknown_model_name_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model", "NoSuchModule", "--data", "DigitsDataModule"])
    assert "NoSuchModule" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_block4_from_the_shell(root, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "block4",
            "fit",
            "--config",
            str(root / "docs" / "examples" / "cli_digits.yaml"),
            "--trainer.max_epochs",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(tmp_path.rglob("*.ckpt"))
