"""The results cache: a figure's expensive part computed once, re-plotted in seconds.

A figure keeps its training runs and sweeps in a plain function that returns data, and calls
it through its context:

    def depth_runs(ctx: FigureContext, depth: int) -> dict:
        ...  # train, measure
        return {"losses": np.array(losses), "final": float(losses[-1])}

    @figure("depth_study", chapter="normalization")
    def depth_study(ctx: FigureContext):
        data = ctx.compute(depth_runs, depth=20)
        ...  # plot from data

When the pipeline makes the figure, `ResultsCache.compute` keeps the data under
``<repository>/.cache/results/``, keyed by the code of ``depth_runs`` and everything it uses
(function by function, as figure fingerprints are), its arguments, the profile, the seed and
the accelerator. Editing only the plotting code re-plots from the cache; editing the code
that computes re-computes. Outside the pipeline ``ctx.compute(f, **kw)`` is ``f(ctx, **kw)``.

Data may be nested ``dict`` / ``list`` / ``tuple`` of ``None``, ``bool``, ``int``, ``float``,
``str``, NumPy arrays and scalars, and torch tensors. An entry is one ``.npz`` file: the arrays,
plus the structure and its provenance as JSON; it is read with ``allow_pickle=False`` (no code
runs when it is loaded). Every result passes through this encoding, also when it was just
computed, so a figure sees the same values from the cache as from a fresh run. Entries are
written atomically; a corrupt or partial one is ignored and computed again. Deleting the
folder is always safe.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from block4.code_closure import Unit
from block4.pipeline_sources import PACKAGE, Sources, atomic_write

__all__ = ["CACHE_FORMAT", "ResultsCache", "decode", "encode"]

#: Bumped when the entry layout or the key recipe changes (every entry is then computed anew).
CACHE_FORMAT = 1

_ARGUMENT_TYPES = (type(None), bool, int, float, str)


def _check_arguments(value: Any, where: str) -> None:
    """Arguments are part of the key: plain values only (their text must be stable)."""
    if isinstance(value, _ARGUMENT_TYPES):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_arguments(item, where)
        return
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        for item in value.values():
            _check_arguments(item, where)
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}; ctx.compute passes only plain values (None, "
        "bool, int, float, str and lists/tuples/dicts of them) so they can key the cache"
    )


def encode(data: Any) -> tuple[Any, list[Any]]:
    """``data`` as a JSON-able tree plus the NumPy arrays it holds (tensors become arrays).

    Raises:
        TypeError: naming the path of a value that is not allowed in results.
    """
    import numpy as np

    arrays: list[Any] = []

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, bool | int | str) or value is None:
            return value
        if isinstance(value, float):
            return {"float": repr(value)}  # NaN and infinities survive, exactly
        if isinstance(value, np.ndarray | np.generic):
            if np.asarray(value).dtype.hasobject:
                raise TypeError(f"results{path}: an array of Python objects cannot be cached")
            arrays.append(np.asarray(value))
            return {"array": len(arrays) - 1, "scalar": isinstance(value, np.generic)}
        if type(value).__module__ == "torch" and type(value).__name__ == "Tensor":
            dtype = str(value.dtype).removeprefix("torch.")
            tensor = value.detach().cpu()
            if dtype == "bfloat16":  # no NumPy dtype: stored as float32 (exact), restored
                tensor = tensor.float()
            arrays.append(tensor.numpy())
            return {"tensor": len(arrays) - 1, "dtype": dtype}
        if isinstance(value, list | tuple):
            items = [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
            return {"list" if isinstance(value, list) else "tuple": items}
        if isinstance(value, dict):
            if not all(isinstance(k, str | int) for k in value):
                raise TypeError(f"results{path}: dict keys must be str or int")
            return {"dict": [[k, walk(v, f"{path}[{k!r}]")] for k, v in value.items()]}
        raise TypeError(
            f"results{path} is a {type(value).__module__}.{type(value).__qualname__}; a "
            "cached computation returns nested dict/list/tuple of numbers, str, None, NumPy "
            "arrays and torch tensors (return a model's numbers, not the model)"
        )

    return walk(data, ""), arrays


def decode(tree: Any, arrays: list[Any]) -> Any:
    """The inverse of `encode`."""
    if not isinstance(tree, dict):
        return tree
    if "float" in tree:
        return float(tree["float"])
    if "array" in tree:
        array = arrays[tree["array"]]
        return array[()] if tree["scalar"] else array
    if "tensor" in tree:
        import torch

        return torch.from_numpy(arrays[tree["tensor"]].copy()).to(getattr(torch, tree["dtype"]))
    if "list" in tree:
        return [decode(v, arrays) for v in tree["list"]]
    if "tuple" in tree:
        return tuple(decode(v, arrays) for v in tree["tuple"])
    return {k: decode(v, arrays) for k, v in tree["dict"]}


def _pack(tree: Any, arrays: list[Any], meta: dict[str, Any]) -> bytes:
    import numpy as np

    text = json.dumps({"format": CACHE_FORMAT, "meta": meta, "tree": tree}, sort_keys=True)
    buffer = io.BytesIO()
    np.savez(buffer, __json__=np.array(text), **{f"a{i}": a for i, a in enumerate(arrays)})
    return buffer.getvalue()


def _unpack(path: Path) -> tuple[Any, list[Any], dict[str, Any]] | None:
    """An entry's tree, arrays and provenance; None when it is missing, partial or corrupt."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            header = json.loads(str(npz["__json__"]))
            if header.get("format") != CACHE_FORMAT:
                return None
            count = sum(1 for name in npz.files if name != "__json__")
            arrays = [npz[f"a{i}"] for i in range(count)]
        return header["tree"], arrays, header["meta"]
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None


#: Where the results cache lives, relative to the repository root.
RESULTS_DIR = Path(".cache") / "results"


def holds(directory: Path, short_key: str) -> bool:
    """Whether ``directory`` holds an entry whose key starts with ``short_key`` (the 16 hex
    digits a manifest records): the figure that recorded it will re-use it."""
    if len(short_key) < 2 or not all(c in "0123456789abcdef" for c in short_key):
        return False
    return any((directory / short_key[:2]).glob(f"{short_key}*.npz"))


def expected_seconds(entry: dict[str, Any], directory: Path | None) -> float:
    """How long re-making the figure of manifest ``entry`` should take: its last wall time,
    plus the compute time of every result it re-used that ``directory`` no longer holds
    (``None``: the cache is off). A figure last made from the cache in 0.1 s may need
    minutes of training."""
    seconds = float(entry.get("wall_time_s", 0.0))
    for result in entry.get("results", []):
        if result.get("reused") and (
            directory is None or not holds(directory, str(result.get("key")))
        ):
            seconds += float(result.get("seconds", 0.0))
    return seconds


@dataclass
class ResultsCache:
    """The results of ``ctx.compute`` calls, on disk (see the module docs).

    Args:
        directory: where entries live (``<repository>/.cache/results``).
        sources: the package's sources (to fingerprint the computing code).
        device: where this process computes (recorded with every new entry).
        enabled: False computes every result afresh and neither reads nor writes entries.
        allowed: asked once, at the first computation, whether entries may be used here
            (the pipeline says no in a distributed run, where every process must compute).
    """

    directory: Path
    sources: Sources
    device: str = "cpu"
    enabled: bool = True
    allowed: Callable[[], bool] | None = None
    used: list[dict[str, Any]] = field(default_factory=list)

    def key(self, ctx: Any, fn: Callable[..., Any], kwargs: dict[str, Any]) -> str:
        """The entry's key: sha256 of the code closure of ``fn`` and the run's inputs."""
        module, name = getattr(fn, "__module__", ""), getattr(fn, "__qualname__", "")
        if not (module.startswith(PACKAGE + ".") and name.isidentifier()):
            raise TypeError(
                f"ctx.compute needs a function defined at the top level of a {PACKAGE} module "
                f"(its code keys the cache); got {module}.{name}"
            )
        for arg, value in kwargs.items():
            _check_arguments(value, f"argument {arg!r} of {name}")
        code = self.sources.closure([Unit(module, name)])
        if f"{module}:{name}" not in code:
            raise TypeError(f"{module}.{name} is not defined at the top level of {module}")
        header = {
            "format": CACHE_FORMAT,
            "function": f"{module}:{name}",
            "kwargs": kwargs,
            "profile": ctx.profile,
            "seed": ctx.seed,
            "accelerator": ctx.accelerator,
            "code": code,
        }
        return hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npz"

    def compute(self, ctx: Any, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """``fn(ctx, **kwargs)``, from the cache when the same code computed it before."""
        key = self.key(ctx, fn, kwargs)
        if self.enabled and self.allowed is not None:
            self.enabled, self.allowed = self.allowed(), None
        found = _unpack(self.path(key)) if self.enabled else None
        if found is not None:
            tree, arrays, meta = found
            self.used.append({**meta, "key": key[:16], "reused": True})
            return decode(tree, arrays)
        start = time.perf_counter()
        tree, arrays = encode(fn(ctx, **kwargs))
        meta = {
            "function": f"{fn.__module__}:{fn.__qualname__}",
            "computed": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "device": self.device,
            "seconds": round(time.perf_counter() - start, 2),
        }
        if self.enabled:
            with contextlib.suppress(OSError):  # a read-only checkout still makes figures
                atomic_write(self.path(key), _pack(tree, arrays, meta))
        self.used.append({**meta, "key": key[:16], "reused": False})
        return decode(tree, arrays)
