"""Lightning callbacks that look inside training: gradient flow, activations, loss guards.

- `GradientFlowMonitor`: per-layer gradient norms at chosen steps, starting *before
  the first update* (the gradient at the initial weights).
- `ActivationStats`: per-layer pre-activation mean, standard deviation and histogram.
- `FiniteLossGuard` (alias `NaNGuard`): stops training with an error naming the
  epoch and step at which the loss became NaN or infinite.
- `MetricHistory`: the logged metrics of every epoch, for learning curves.
- `TrainingCurve`: a classifier's error and loss on the whole training split.
- `DeadUnitTracker`: the fraction of hidden ReLU units that never activate.
- `BestValidationState`: the weights of the epoch with the lowest ``val_loss`` (early
  stopping in hindsight), kept without checkpoint files.

Layers are found by name. For a body built by [`mlp`][block4.models.mlp] they are the hidden
blocks ``block0, block1, ...`` and the output layer ``head`` (``depth_index`` 0, 1, ...,
counting from the input). For any other body, every ``nn.Linear`` is a layer, named by its
module path. The recorded rows are plain dicts, ready for ``pandas.DataFrame(rows)``.
"""

from block4.callbacks.curves import BestValidationState, DeadUnitTracker, TrainingCurve
from block4.callbacks.gradients import ActivationStats, GradientFlowMonitor
from block4.callbacks.guards import FiniteLossGuard, MetricHistory, NaNGuard, NonFiniteLossError
from block4.callbacks.tables import Table, linear_layers, log_rows

__all__ = [
    "ActivationStats",
    "BestValidationState",
    "DeadUnitTracker",
    "FiniteLossGuard",
    "GradientFlowMonitor",
    "MetricHistory",
    "NaNGuard",
    "NonFiniteLossError",
    "Table",
    "TrainingCurve",
    "linear_layers",
    "log_rows",
]
