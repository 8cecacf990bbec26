"""Weights in, fp32 delta out: ``new − base`` per tensor, after checking that the trained
weights have exactly the global model's tensor names and shapes and a float dtype.

Weights may be a mapping of numpy arrays, a PyTorch state dict, or a module with
``state_dict()``; torch is never imported: a tensor is anything with ``.detach()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import ModelMismatchError


def as_state(weights: Any) -> Mapping[str, Any]:
    """A mapping of name → tensor from a mapping, or from anything with ``state_dict()`` (a torch module)."""
    if isinstance(weights, Mapping):
        return weights
    state_dict = getattr(weights, "state_dict", None)
    if callable(state_dict):
        return state_dict()
    raise TypeError(
        f"weights must be a mapping of name → array (or a module with state_dict()), not {type(weights).__name__}"
    )


def to_numpy(tensor: Any) -> np.ndarray:
    """A numpy view or copy of a numpy array, a torch tensor (any device, bf16 included), or a sequence."""
    if isinstance(tensor, np.ndarray):
        return tensor
    if hasattr(tensor, "detach"):
        t = tensor.detach()
        if hasattr(t, "cpu"):
            t = t.cpu()
        try:
            return t.numpy()
        except (TypeError, RuntimeError):
            # numpy has no bfloat16 (and torch may refuse other dtypes): widen to fp32 first.
            return t.float().numpy()
    return np.asarray(tensor)


def _kind(array: np.ndarray) -> str:
    return array.dtype.kind


def check_weights(weights: Mapping[str, Any], base: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Numpy arrays for `weights`, in `base`'s order; ``ModelMismatch`` listing every difference."""
    names = list(weights.keys())
    missing = [n for n in base if n not in weights]
    unexpected = [n for n in names if n not in base]
    arrays: dict[str, np.ndarray] = {}
    different: list[str] = []
    for name, shape in base.items():
        if name not in weights:
            continue
        array = to_numpy(weights[name])
        if tuple(array.shape) != tuple(shape):
            different.append(f"'{name}' has shape {list(array.shape)}, the global model's is {list(shape)}")
        elif _kind(array) != "f" and str(array.dtype) != "bfloat16":
            different.append(f"'{name}' is {array.dtype}, not a float type (the global model's is fp32)")
        else:
            arrays[name] = array
    if missing or unexpected or different:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) of the global model: {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} tensor(s) the global model does not have: {_few(unexpected)}")
        if different:
            parts.append("; ".join(different[:5]) + (f" (+{len(different) - 5} more)" if len(different) > 5 else ""))
        raise ModelMismatchError(
            "the trained weights do not match the global model: "
            + "; ".join(parts)
            + ". Train the architecture the run distributes and pass its full state dict (buffers the global model "
            "does not carry must be left out)",
            missing=missing,
            unexpected=unexpected,
            different=different,
        )
    return arrays


def _few(names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:5])
    return shown + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")


def delta_of(new: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``new − base`` in fp32 (new is first rounded to fp32 if it is wider or narrower)."""
    return np.subtract(np.asarray(new, dtype=np.float32), np.asarray(base, dtype=np.float32), dtype=np.float32)
