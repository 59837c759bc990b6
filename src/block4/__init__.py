"""block4: a living deep-learning course, as a reusable PyTorch + Lightning package.

Submodules (imported on demand, so ``import block4`` stays cheap):

- `block4.autograd` -- a scalar reverse-mode autodiff engine (standard library only).
- `block4.graph_drawing` -- layout of small graphs, drawn with matplotlib or as SVG.
- `block4.style` -- the plot style shared by every figure.
- `block4.models` -- the MLP builder (depth, width, activation, norm, residual).
- `block4.heads` -- probabilistic output heads returning ``torch.distributions``.
- `block4.modules` -- LightningModules: ``Classifier``, ``ProbabilisticRegressor``.
- `block4.data` -- LightningDataModules (digits, MNIST IDX, synthetic and real regression).
- `block4.callbacks` -- gradient-flow and activation diagnostics as Lightning callbacks.
- `block4.training` -- the Trainer factory and the training runs the chapters share.
- `block4.figures` -- the figure functions behind every page of the course.
- `block4.pipeline` -- fingerprints, manifest and the freshness contract of the figures.
- `block4.make_figures` -- the command line that makes the figures (``scripts/make_figures.py``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
