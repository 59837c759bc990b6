"""Command line: train any block4 module on any block4 datamodule with LightningCLI.

Examples:

    python -m block4 fit --model Classifier --data DigitsDataModule --trainer.max_epochs 5
    python -m block4 fit --model ProbabilisticRegressor --model.head gaussian \\
        --data HeteroscedasticDataModule --trainer.max_epochs 20
    python -m block4 fit --config my_run.yaml
    python -m block4 fit --print_config --model Classifier --data DigitsDataModule > run.yaml
    python -m block4 test --config my_run.yaml --ckpt_path path/to/checkpoint.ckpt

Subcommands are Lightning's: ``fit``, ``validate``, ``test``, ``predict``. Any
``LightningModule`` / ``LightningDataModule`` importable by its full path works too
(``--model my_package.MyModule``); block4's classes and callbacks can be named by their
short names (``--trainer.callbacks+=GradientFlowMonitor``).
"""

from __future__ import annotations

from typing import Any


def main(args: list[str] | None = None, run: bool = True) -> Any:
    """Run LightningCLI over every LightningModule and LightningDataModule (block4's included).

    Args:
        args: command-line arguments (default: ``sys.argv[1:]``).
        run: ``False`` only instantiates the model, data and trainer (for tests and notebooks).

    Returns:
        The ``LightningCLI`` object (its ``model``, ``datamodule`` and ``trainer``).
    """
    import pytorch_lightning as pl
    from pytorch_lightning.cli import LightningCLI

    # Imported so that their classes can be named by short names on the command line.
    import block4.callbacks  # noqa: F401
    import block4.data  # noqa: F401
    import block4.modules  # noqa: F401

    return LightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    main()
